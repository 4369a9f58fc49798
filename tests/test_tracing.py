"""One trace per process, from the publisher's span through route, decide,
task and commit to ProcessCompleted, on every backend."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider

from procession import TaskError
from procession.examples import RebaseFailed, rebase_saga
from procession.publish import Publisher
from procession.topics import ProcessCompleted
from tests.conftest import Backend
from tests.test_cli import ROOT


class Collect(SpanProcessor):
    """Keeps ended spans while a test listens (the provider is global, once per session)."""

    def __init__(self) -> None:
        self.spans: list[ReadableSpan] | None = None

    def on_end(self, span: ReadableSpan) -> None:
        if self.spans is not None:
            self.spans.append(span)


_COLLECT = Collect()


@pytest.fixture
def spans() -> Iterator[list[ReadableSpan]]:
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider()
        provider.add_span_processor(_COLLECT)
        trace.set_tracer_provider(provider)
    _COLLECT.spans = []
    yield _COLLECT.spans
    _COLLECT.spans = None


def hex_id(n: int, width: int) -> str:
    return format(n, f"0{width}x")


async def test_one_trace_runs_from_the_publisher_to_process_completed(
    backend: Backend, spans: list[ReadableSpan]
) -> None:
    app = backend.app([rebase_saga()], {"CloseInstance": lambda call: {"closed": True}})
    rt = await backend.runtime(app)
    tracer = trace.get_tracer("the caller")
    async with Publisher(app.topics, backend.transport()) as publisher:
        with tracer.start_as_current_span("place rebase") as root:
            await publisher.publish(RebaseFailed(rebase_id="t1", instances=["A", "B"]))
    state = await rt.wait("rebase:t1", timeout_s=30)
    assert state is not None and state.status == "completed"
    await rt.settle()

    trace_id = root.get_span_context().trace_id
    ours = [s for s in spans if s.name.startswith("procession ")]
    by_id = {s.context.span_id: s for s in ours}
    by_name: dict[str, list[ReadableSpan]] = {}
    for s in ours:
        by_name.setdefault(s.name, []).append(s)
    hops = [s for s in ours if s.name != "procession commit"]
    assert {s.context.trace_id for s in hops} == {trace_id}

    (route,) = by_name["procession route"]
    assert route.parent is not None and route.parent.span_id == root.get_span_context().span_id
    tasks = by_name["procession task"]
    assert sorted(s.attributes["procession.machine_id"] for s in tasks) == [  # type: ignore[index]
        "instance:A",
        "instance:B",
    ]
    assert {s.attributes["procession.attempt"] for s in tasks} == {1}  # type: ignore[index]
    decides = by_name["procession decide"]
    # the event's decision follows the route; each result's follows its task
    assert sorted(by_id[d.parent.span_id].name for d in decides if d.parent is not None) == [
        "procession route",
        "procession task",
        "procession task",
    ]
    for task in tasks:
        assert task.parent is not None and by_id[task.parent.span_id].name == "procession decide"
    # the commits link the decisions they wrote
    linked = {link.context.span_id for c in by_name["procession commit"] for link in c.links}
    assert {d.context.span_id for d in decides} <= linked

    # and the records say so: ProcessCompleted carries the last decision's span
    history = await backend.records(app.topics.process)
    (done,) = [
        m
        for m in history
        if dict(m.headers).get("procession-type") == ProcessCompleted.TYPE.encode()
    ]
    _, tid, sid, _ = dict(done.headers)["traceparent"].decode().split("-")
    assert tid == hex_id(trace_id, 32)
    assert by_id[int(sid, 16)].name == "procession decide"


def test_without_the_otel_extra_records_keep_their_id_derived_traceparent() -> None:
    code = """
import asyncio, sys
sys.modules["opentelemetry"] = None  # the otel extra is not installed
from procession import App, Runtime
from procession import _tracing
from procession import TaskError
from procession.examples import RebaseFailed, rebase_saga
from procession.topics._codec import traceparent

async def main():
    app = App([rebase_saga()], {"CloseInstance": lambda call: None})
    async with Runtime(app) as rt:
        await rt.publish(RebaseFailed(rebase_id="plain", instances=["A"]))
        await rt.wait("rebase:plain")
        records = rt.transport.log.records(app.topics.process)
    assert _tracing.trace is None and records
    for m in records:
        h = dict(m.headers)
        derived = traceparent(h["correlation-id"].decode(), h["event-id"].decode())
        assert h["traceparent"].decode() == derived, (h, derived)
    print("derived", len(records))

asyncio.run(main())
"""
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.startswith("derived ")


async def test_a_retry_after_its_backoff_stays_in_the_trace(
    backend: Backend, spans: list[ReadableSpan]
) -> None:
    tries: list[str] = []

    def close(call: Any) -> dict[str, bool]:
        tries.append(call.payload["instance"])
        if len(tries) == 1:
            raise TaskError("busy (injected)", retryable=True)
        return {"closed": True}

    app = backend.app([rebase_saga(backoff=timedelta(seconds=1))], {"CloseInstance": close})
    rt = await backend.runtime(app)
    tracer = trace.get_tracer("the caller")
    async with Publisher(app.topics, backend.transport()) as publisher:
        with tracer.start_as_current_span("place rebase") as root:
            await publisher.publish(RebaseFailed(rebase_id="t2", instances=["A"]))
    async with asyncio.timeout(60):
        while (state := await rt.state("rebase:t2")) is None or not state.terminal:
            await rt.advance(timedelta(seconds=1))  # the retry's durable timer comes due
    assert state.status == "completed" and tries == ["A", "A"]
    await rt.settle()
    trace_id = root.get_span_context().trace_id
    hops = [s for s in spans if s.name.startswith("procession ") and s.name != "procession commit"]
    inputs = [s.attributes["procession.input"] for s in hops if s.name == "procession decide"]  # type: ignore[index]
    assert "procession.TimerFired" in inputs
    assert {s.context.trace_id for s in hops} == {trace_id}
    history = await backend.records(app.topics.process)
    (done,) = [
        m
        for m in history
        if dict(m.headers).get("procession-type") == ProcessCompleted.TYPE.encode()
    ]
    assert dict(done.headers)["traceparent"].decode().split("-")[1] == hex_id(trace_id, 32)


def test_tracing_is_off_until_a_provider_is_installed_then_on() -> None:
    code = """
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from procession._tracing import tracing
before = [tracing(), tracing()]
trace.set_tracer_provider(TracerProvider())
print(before, tracing(), tracing())
"""
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.split() == ["[False,", "False]", "True", "True"]

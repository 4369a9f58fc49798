"""Publishing from any Python service: ids and trace context on the wire,
redelivery recognised, batches all or nothing, sync and async."""

from __future__ import annotations

import asyncio

import pytest

from procession._errors import RecordTooLargeError
from procession.examples import RebaseFailed, rebase_saga
from procession.publish import Encoded, Event, Publisher, SyncPublisher
from procession.topics import DomainEvent, InputIgnored, ProcessStarted
from tests.conftest import Backend, kafka_servers


def app_of(backend: Backend):  # type: ignore[no-untyped-def]
    return backend.app([rebase_saga()], {"CloseInstance": lambda call: None})


async def test_a_redelivered_event_is_decided_once_and_its_ids_travel(backend: Backend) -> None:
    app = app_of(backend)
    rt = await backend.runtime(app)
    async with Publisher(app.topics, backend.transport()) as publisher:
        for _ in range(2):  # an outbox that delivered twice
            await publisher.publish(
                RebaseFailed(rebase_id="p1", instances=["A"]),
                event_id="stored-event-7",
                correlation_id="request-99",
                causation_id="command-3",
            )
    state = await rt.wait("rebase:p1", timeout_s=30)
    assert state is not None and state.status == "completed"
    history = await rt.history("rebase:p1")
    events = [r for r in history if isinstance(r, DomainEvent)]
    assert [(e.event_id, e.correlation_id, e.causation_id) for e in events] == [
        ("stored-event-7", "request-99", "command-3")
    ] * 2
    ignored = [r for r in history if isinstance(r, InputIgnored)]
    assert [(r.input_id, r.reason) for r in ignored] == [("stored-event-7", "duplicate")]
    assert {r.correlation_id for r in history} == {"request-99"}


async def test_encoded_events_and_batches_all_or_nothing(backend: Backend) -> None:
    app = app_of(backend)
    rt = await backend.runtime(app)
    async with Publisher(app.topics, backend.transport()) as publisher:
        await publisher.publish(Encoded("RebaseFailed", {"rebase_id": "p2", "instances": ["A"]}))
        huge = Encoded(
            "RebaseFailed", b'{"rebase_id": "p4", "instances": ["' + b"x" * 2_000_000 + b'"]}'
        )
        with pytest.raises(RecordTooLargeError, match=app.topics.inputs):
            await publisher.publish_many(
                [Event(RebaseFailed(rebase_id="p3", instances=["A"])), Event(huge)]
            )
    assert (await rt.wait("rebase:p2", timeout_s=30)).status == "completed"  # type: ignore[union-attr]
    await rt.settle()
    assert await rt.history("rebase:p3") == []  # the batch's good event is not visible either


async def test_the_callers_trace_context_is_on_the_record(backend: Backend) -> None:
    from opentelemetry import trace  # noqa: PLC0415
    from opentelemetry.sdk.trace import TracerProvider  # noqa: PLC0415

    app = app_of(backend)
    await backend.transport().create_topics(app.topics.specs(app.task_types()))
    tracer = TracerProvider().get_tracer("test")
    async with Publisher(app.topics, backend.transport()) as publisher:
        with tracer.start_as_current_span("place order") as span:
            await publisher.publish(RebaseFailed(rebase_id="p5", instances=["A"]), event_id="e5")
            trace_id = format(span.get_span_context().trace_id, "032x")
    (msg,) = await backend.records(app.topics.inputs)
    headers = dict(msg.headers)
    assert headers["traceparent"].decode().split("-")[1] == trace_id
    assert trace.get_current_span().get_span_context().is_valid is False  # nothing leaked


@pytest.mark.backends("kafka")
async def test_sync_code_publishes_through_its_own_loop(backend: Backend) -> None:
    app = app_of(backend)
    rt = await backend.runtime(app)

    def from_a_web_handler() -> None:
        with SyncPublisher(app.topics, kafka_servers()) as publisher:
            publisher.publish(RebaseFailed(rebase_id="p6", instances=["A"]), event_id="e6")

    await asyncio.to_thread(from_a_web_handler)
    state = await rt.wait("rebase:p6", timeout_s=30)
    assert state is not None and state.status == "completed"
    assert any(isinstance(r, ProcessStarted) for r in await rt.history("rebase:p6"))

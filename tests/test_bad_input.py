"""Bad input never stops a partition, on every backend: dead letters and parked processes.

Each case writes something the runtime cannot take, then a good process, and
checks that the bad one left a reason (a dead letter, or ``ProcessParked``),
that nothing of it was committed beside the reason, and that the good one
completed.
"""

from __future__ import annotations

import asyncio
import gc
import itertools
from collections.abc import Awaitable
from dataclasses import replace
from typing import Any

import orjson
import pytest
from pydantic import BaseModel

from procession import Machine, Saga, State, Task
from procession._errors import TopicsError
from procession.examples import RebaseFailed, rebase_saga
from procession.sagas import Decider, Parked, Planner
from procession.topics import (
    DEFAULT_CODEC,
    DomainEvent,
    ProcessCompleted,
    ProcessParked,
    ProcessStarted,
    TaskCompleted,
    TaskFailed,
    TransitionPlanned,
)
from procession.workers import App, Batch, Message, Outgoing, Runtime
from procession.workers._port import partition_for
from procession.workers._wire import encode, state_of
from tests.conftest import Backend, until
from tests.records import task_request, task_result
from tests.sagas import InvoiceSent, PaymentReceived, payment_saga

LIMIT = 20_000  # max.message.bytes of the topics a case shrinks


class Job(BaseModel):
    job_id: str
    blob: str = ""
    bad: bool = False


def job_saga(payload: Any = None, guard: Any = None) -> Saga:
    todo, done = State("Todo", initial=True), State("Done", final=True)
    task = Task("Run", payload=payload or (lambda c: {"job": c.event.job_id}))
    return Saga(
        "job",
        machines=[
            Machine(
                "job",
                states=[todo, done],
                transitions=[todo.to(done, on=Job, task=task, guard=guard)],
            )
        ],
        correlate={Job: lambda e: 1 // 0 if e.bad else e.job_id},
        starts=[Job],
    )


async def start(
    backend: Backend, app: App, small: tuple[str, ...] = (), limit: int = LIMIT, **kw: Any
) -> Runtime:
    """A runtime whose ``small`` topics refuse records over ``limit`` bytes."""
    specs = app.topics.specs(app.task_types())
    await backend.transport().create_topics(
        [replace(s, max_message_bytes=limit) if s.name in small else s for s in specs]
    )
    return await backend.runtime(app, **kw)


async def reasons(backend: Backend, app: App) -> list[str]:
    dead = await backend.records(app.topics.dead_letter)
    return [dict(m.headers)["dlq-reason"].decode() for m in dead]


async def parked(rt: Runtime, pid: str) -> ProcessParked:
    (rec,) = [r for r in await rt.history(pid) if isinstance(r, ProcessParked)]
    return rec  # type: ignore[return-value]


async def completes(rt: Runtime, pid: str) -> None:
    await rt.settle()
    assert isinstance((await rt.history(pid))[-1], ProcessCompleted)


async def test_an_input_too_large_to_route_is_dead_lettered(backend: Backend) -> None:
    app = backend.app([job_saga()], {"Run": lambda call: None})
    rt = await start(backend, app, small=(app.topics.process,))
    await rt.publish(Job(job_id="big", blob="x" * (LIMIT + 1)))
    await rt.publish(Job(job_id="ok"))
    await completes(rt, "job:ok")
    (reason,) = await reasons(backend, app)
    assert reason.startswith("routed record of ") and f"max.message.bytes ({LIMIT})" in reason
    assert await rt.history("job:big") == []


async def test_a_raising_correlation_rule_is_dead_lettered(backend: Backend) -> None:
    app = backend.app([job_saga()], {"Run": lambda call: None})
    rt = await start(backend, app)
    await rt.publish(Job(job_id="x", bad=True))
    await rt.publish(Job(job_id="ok"))
    await completes(rt, "job:ok")
    assert await reasons(backend, app) == [
        "correlation rule for Job raised ZeroDivisionError('integer division or modulo by zero')"
    ]


async def test_a_decision_too_large_parks_its_process(backend: Backend) -> None:
    big = job_saga(payload=lambda c: {"blob": "x" * (LIMIT + 1)} if c.event.blob else {})
    app = backend.app([big], {"Run": lambda call: None})
    rt = await start(backend, app, small=(app.topics.process,))
    await rt.publish(Job(job_id="big", blob="y"))
    await rt.publish(Job(job_id="ok"))
    await completes(rt, "job:ok")
    rec = await parked(rt, "job:big")
    assert rec.input_type == "Job" and f"over '{app.topics.process}'" in rec.reason
    assert not [r for r in await rt.history("job:big") if isinstance(r, TransitionPlanned)]


async def test_a_task_request_too_large_for_its_task_topic_parks_its_process(
    backend: Backend,
) -> None:
    big = job_saga(payload=lambda c: {"blob": "x" * (LIMIT + 1)} if c.event.blob else {})
    app = backend.app([big], {"Run": lambda call: None})
    rt = await start(backend, app, small=(app.topics.tasks("Run"),))
    await rt.publish(Job(job_id="big", blob="y"))
    await rt.publish(Job(job_id="ok"))
    await completes(rt, "job:ok")
    assert f"over '{app.topics.tasks('Run')}'" in (await parked(rt, "job:big")).reason
    assert len(await backend.records(app.topics.tasks("Run"))) == 1  # the good one's request


def wide_saga(machines: int) -> Saga:
    """``machines`` machines that each plan a task carrying the event's blob at the start."""
    todo, done = State("Todo", initial=True), State("Done", final=True)
    task = Task("Run", payload=lambda c: {"blob": c.event.blob})
    return Saga(
        "wide",
        machines=[
            Machine(f"m{i}", states=[todo, done], transitions=[todo.to(done, on=Job, task=task)])
            for i in range(machines)
        ],
        correlate={Job: lambda e: e.job_id},
        starts=[Job],
    )


async def test_decisions_that_fit_the_process_topic_alone_are_not_refused_as_one_batch(
    backend: Backend,
) -> None:
    app = backend.app([wide_saga(8)], {"Run": lambda call: None})
    rt = await start(backend, app, small=(app.topics.process,))
    await rt.publish(Job(job_id="w", blob="x" * (LIMIT // 6)))  # 8 of these: over the limit
    await completes(rt, "wide:w")
    planned = [r for r in await rt.history("wide:w") if isinstance(r, TransitionPlanned)]
    assert len(planned) == 8
    assert await reasons(backend, app) == []


async def test_a_process_larger_than_the_changelog_limit_completes_part_by_part(
    backend: Backend,
) -> None:
    app = backend.app([rebase_saga()], {"CloseInstance": lambda call: None}, keep_completed=True)
    rt = await start(backend, app, small=(app.topics.changelog,))
    wide = [f"i{n}" for n in range(1000)]  # ~90 KB of state, every part well under 20 KB
    await rt.publish(RebaseFailed(rebase_id="wide", instances=wide))
    await completes(rt, "rebase:wide")
    sizes = [len(m.value or b"") for m in await backend.records(app.topics.changelog)]
    assert sum(sizes) > 4 * LIMIT and max(sizes) < LIMIT


async def test_a_topic_taking_less_than_a_producer_batch_is_refused_at_start(
    backend: Backend,
) -> None:
    # records that each fit would be refused as one batch, and never committed
    app = backend.app([rebase_saga()], {"CloseInstance": lambda call: None})
    with pytest.raises(TopicsError) as refused:
        await start(backend, app, small=(app.topics.changelog,), limit=4_000)
    assert f"{app.topics.changelog}: max.message.bytes 4000 is below 16384" in str(refused.value)
    gc.collect()  # a connection the failed start left open warns now, failing this test


async def test_a_state_part_too_large_for_the_changelog_parks_and_holds_later_inputs(
    backend: Backend,
) -> None:
    app = backend.app([rebase_saga()], {"CloseInstance": lambda call: None})
    rt = await start(backend, app, small=(app.topics.changelog,))
    many = [f"instance-{n:04}" for n in range(2000)]  # the event alone is over 20 KB
    await rt.publish(RebaseFailed(rebase_id="big", instances=many))
    await rt.publish(RebaseFailed(rebase_id="ok", instances=["A"]))
    await completes(rt, "rebase:ok")
    rec = await parked(rt, "rebase:big")
    assert "part 'c:RebaseFailed' of the state of " in rec.reason
    assert f"over '{app.topics.changelog}'" in rec.reason
    await rt.publish(RebaseFailed(rebase_id="big", instances=["late"]))
    await until(lambda: _held(rt, 1))
    history = await rt.history("rebase:big")
    assert [type(r).__name__ for r in history] == ["DomainEvent", "ProcessParked", "DomainEvent"]
    heads = [m for m in await backend.records(app.topics.changelog) if "\x00" not in (m.key or "")]
    states = [state_of(m.value) for m in heads]
    assert Parked(rec.reason, rec.input_id, _offset(states)) in states


async def test_a_decision_over_its_budget_parks_its_process_and_the_partition_goes_on(
    backend: Backend,
) -> None:
    app = backend.app([rebase_saga()], {"CloseInstance": lambda call: None})
    rt = await start(backend, app, decision_budget_s=0.1)
    wide = [f"env-{n:05}" for n in range(20_000)]  # a fan-out of ~1 s on this machine kind
    await rt.publish(RebaseFailed(rebase_id="wide", instances=wide))
    await rt.publish(RebaseFailed(rebase_id="ok", instances=["A"]))
    await completes(rt, "rebase:ok")
    rec = await parked(rt, "rebase:wide")
    assert rec.reason.startswith("decision over its budget of 0.1 s after ")
    assert not [r for r in await rt.history("rebase:wide") if isinstance(r, TransitionPlanned)]


def _offset(states: list[Any]) -> int:
    return next(s.offset for s in states if isinstance(s, Parked))


async def _held(rt: Runtime, n: int) -> bool:
    return rt.processor.metrics["held"] >= n


@pytest.mark.parametrize(
    ("payload", "why"),
    [
        (
            lambda c: {"tags": {c.event.job_id}},  # a set: JSON cannot carry it
            "procession.TransitionPlanned cannot be encoded: Type is not JSON",
        ),
        (
            lambda c: [c.event.job_id],  # JSON, but a reader takes only a dict
            "decision failed: TypeError(\"the payload of task 'Run' is a list, not a dict\")",
        ),
    ],
)
async def test_a_payload_that_cannot_be_written_parks_its_process(
    backend: Backend, payload: Any, why: str
) -> None:
    bad = job_saga(payload=lambda c: payload(c) if c.event.blob else {})
    app = backend.app([bad], {"Run": lambda call: None})
    rt = await start(backend, app)
    await rt.publish(Job(job_id="bad", blob="y"))
    await rt.publish(Job(job_id="ok"))
    await completes(rt, "job:ok")
    assert (await parked(rt, "job:bad")).reason.startswith(why)


async def test_a_decision_that_raises_parks_its_process(backend: Backend) -> None:
    def guard(c: Any) -> bool:
        if c.event.blob:
            raise ValueError("guard bug")
        return True

    app = backend.app([job_saga(guard=guard)], {"Run": lambda call: None})
    rt = await start(backend, app)
    await rt.publish(Job(job_id="bug", blob="y"))
    await rt.publish(Job(job_id="ok"))
    await completes(rt, "job:ok")
    assert (await parked(rt, "job:bug")).reason == "decision failed: ValueError('guard bug')"


async def test_a_record_on_the_wrong_partition_is_dead_lettered(backend: Backend) -> None:
    app = backend.app([rebase_saga()], {"CloseInstance": lambda call: None})
    rt = await start(backend, app)
    pid = "rebase:r1"
    home = partition_for(pid, 3)
    result = task_result(pid, machine_id="instance:A", task_type="CloseInstance")
    stray = replace(
        encode(app.topics.process, pid, result, DEFAULT_CODEC), partition=(home + 1) % 3
    )
    await _write(backend, stray)
    await rt.publish(RebaseFailed(rebase_id="r1", instances=["A"]))
    await completes(rt, pid)
    (reason,) = await reasons(backend, app)
    assert reason == (
        f"key 'rebase:r1' belongs on partition {home}, found on {(home + 1) % 3} "
        "(written with another partitioner than murmur2?)"
    )


async def test_a_changelog_value_that_cannot_be_restored_parks_only_its_process(
    backend: Backend,
) -> None:
    app = backend.app([rebase_saga()], {"CloseInstance": lambda call: None})
    specs = app.topics.specs(app.task_types())
    await backend.transport().create_topics(specs)
    pid = "rebase:broken"
    part = partition_for(pid, 3)
    await _write(backend, Outgoing(app.topics.changelog, pid, b"{not json", partition=part))
    rt = await backend.runtime(app)
    await rt.publish(RebaseFailed(rebase_id="ok", instances=["A"]))
    await completes(rt, "rebase:ok")
    (reason,) = await reasons(backend, app)
    assert reason.startswith("cannot decode record: changelog value: JSONDecodeError")
    assert (await parked(rt, pid)).reason == reason


async def test_a_changelog_of_a_newer_schema_parks_only_its_process(backend: Backend) -> None:
    """docs/versioning.md: a process whose changelog header a newer Procession
    wrote (schema 3) is parked at restore with what to do, not guessed at; its
    later input is held, and a process of the same partition goes on."""
    app = backend.app([payment_saga()], {})
    newer = "payment:new"
    part = partition_for(newer, 3)
    other = next(
        f"payment:i{n}" for n in itertools.count() if partition_for(f"payment:i{n}", 3) == part
    )
    first = await backend.runtime(app)
    for pid in (newer, other):
        await first.publish(InvoiceSent(invoice_id=pid.partition(":")[2]))

    async def headers() -> list[Message]:
        return [m for m in await backend.records(app.topics.changelog) if m.key == newer]

    await until(lambda: _some(headers()))
    await first.stop()
    backend.runtimes.remove(first)
    value = orjson.loads((await headers())[-1].value or b"")
    value["state"]["v"] = 3  # the header a newer release writes
    await _write(
        backend, Outgoing(app.topics.changelog, newer, orjson.dumps(value), partition=part)
    )
    rt = await backend.runtime(app)
    for pid in (newer, other):
        await rt.publish(PaymentReceived(invoice_id=pid.partition(":")[2], amount=5))
    assert (await rt.wait(other, timeout_s=30)).status == "completed"  # type: ignore[union-attr]

    async def payment_taken() -> bool:  # held, as it should be, or decided
        return rt.processor.metrics["held"] > 0 or any(
            isinstance(r, ProcessCompleted) for r in await rt.history(newer)
        )

    await until(payment_taken)
    await rt.settle()
    reason = (
        "cannot decode record: changelog schema 3 is newer than this version of Procession"
        " reads (2); run the newer version or rebuild the changelog"
    )
    history = await rt.history(newer)
    parks = [r for r in history if isinstance(r, ProcessParked)]
    assert [p.reason for p in parks] == [reason]
    assert await reasons(backend, app) == [reason]
    assert not [r for r in history[history.index(parks[0]) + 1 :] if r.IS_DECISION]
    inputs = [r.event_type for r in history if isinstance(r, DomainEvent)]
    assert inputs == ["InvoiceSent", "PaymentReceived"] and rt.processor.metrics["held"] == 1


async def _some(found: Awaitable[list[Message]]) -> bool:
    return bool(await found)


async def _write(backend: Backend, out: Outgoing) -> None:
    producer = backend.transport().producer(f"{backend.prefix}.test-writer")
    await producer.start()
    try:
        await producer.commit(Batch(records=[out]))
    finally:
        await producer.stop()


async def test_a_result_too_large_to_record_fails_its_task_for_good(backend: Backend) -> None:
    app = backend.app([job_saga()], {"Run": lambda call: {"blob": "x" * (LIMIT + 1)}})
    rt = await start(backend, app, small=(app.topics.process,))
    await rt.publish(Job(job_id="big"))
    await until(lambda: _failed(rt, "job:big"))
    (failed,) = [r for r in await rt.history("job:big") if isinstance(r, TaskFailed)]
    assert not failed.retryable and failed.error_type == "RecordTooLargeError"
    assert failed.reason.startswith("result of ") and f"({LIMIT})" in failed.reason
    assert (await reasons(backend, app))[0].startswith("non-retryable failure: result of ")


async def _failed(rt: Runtime, pid: str) -> bool:
    return any(isinstance(r, TaskFailed) for r in await rt.history(pid))


async def test_a_decision_just_under_the_topic_limit_is_written_by_either_client(
    backend: Backend,
) -> None:
    # over 1,000,000 bytes (librdkafka's own default cap on a message) and under
    # the topics' 1,048,588: the topic's limit is the one that counts
    blob = "x" * 1_010_000
    big = job_saga(payload=lambda c: {"blob": blob} if c.event.blob else {})
    app = backend.app([big], {"Run": lambda call: None})
    rt = await start(backend, app)
    await rt.publish(Job(job_id="big", blob="y"))
    await completes(rt, "job:big")
    (request,) = await backend.records(app.topics.tasks("Run"))
    assert 1_000_000 < len(request.value or b"") < 1_048_588


async def test_records_of_megabytes_go_through_topics_that_take_them(backend: Backend) -> None:
    # above the clients' default request and fetch sizes (about 1 MB) both ways:
    # a task request, its result and the state that holds the request
    blob = "x" * 3_000_000
    big = job_saga(payload=lambda c: {"blob": blob} if c.event.blob else {})
    app = backend.app([big], {"Run": lambda call: {"echo": call.payload.get("blob", "")}})
    t = app.topics
    roomy = (t.process, t.tasks("Run"), t.changelog)
    rt = await start(backend, app, small=roomy, limit=8 << 20)
    await rt.publish(Job(job_id="big", blob="y"))
    await completes(rt, "job:big")
    (done,) = [r for r in await rt.history("job:big") if isinstance(r, TaskCompleted)]
    assert done.result == {"echo": blob}


async def test_a_process_id_with_a_nul_is_refused_by_the_router_and_the_processor(
    backend: Backend,
) -> None:
    # NUL separates a process id from a part in changelog keys: "job:x\0m:job"
    # would be restored as a part of process "job:x"
    app = backend.app([job_saga()], {"Run": lambda call: None})
    rt = await start(backend, app)
    await rt.publish(Job(job_id="x\x00m:job"))
    pid = "job:y\x00m:job"
    result = task_result(pid, machine_id="job", task_type="Run")
    await _write(backend, encode(app.topics.process, pid, result, DEFAULT_CODEC))
    await rt.publish(Job(job_id="ok"))
    await completes(rt, "job:ok")
    await until(lambda: _dead_count(backend, app, 2))
    routed, straight = sorted(await reasons(backend, app))
    why = "holds a NUL, which changelog keys keep for parts"
    assert routed == f"correlation rule for Job: process id 'job:x\\x00m:job' {why}"
    assert straight == f"process id 'job:y\\x00m:job' {why}"
    assert await rt.history("job:x") == []


async def _dead_count(backend: Backend, app: App, n: int) -> bool:
    return len(await backend.records(app.topics.dead_letter)) >= n


async def test_a_record_field_of_the_wrong_type_is_dead_lettered_where_it_is_read(
    backend: Backend,
) -> None:
    # a number for a process id, a list for a task type: the processor and the
    # worker used them as strings and stopped, and again after every restart
    app = backend.app([job_saga()], {"Run": lambda call: None})
    rt = await start(backend, app)
    pid = "job:w"
    result = task_result(pid, machine_id="job", task_type="Run")
    request = task_request(
        pid, machine_id="job", from_state="Todo", to_state="Done", task_type="Run"
    )
    for topic, rec, field, wrong in [
        (app.topics.process, result, "process_id", 5),
        (app.topics.tasks("Run"), request, "task_type", ["Run"]),
        (app.topics.tasks("Run"), request, "process_id", 7),
    ]:
        good = encode(topic, pid, rec, DEFAULT_CODEC)
        body = {**orjson.loads(good.value or b""), field: wrong}
        await _write(backend, replace(good, value=orjson.dumps(body)))
    await rt.publish(Job(job_id="ok"))
    await completes(rt, "job:ok")
    await until(lambda: _dead_count(backend, app, 3))
    assert sorted(await reasons(backend, app)) == [
        "cannot decode record (procession.TaskCompleted): field 'process_id' holds int 5, "
        "expected str",
        "cannot decode record (procession.TransitionPlanned): field 'process_id' holds int 7, "
        "expected str",
        "cannot decode record (procession.TransitionPlanned): field 'task_type' holds list "
        "['Run'], expected str or null",
    ]


async def test_a_handler_raising_cancelled_error_fails_its_task_and_the_partition_goes_on(
    backend: Backend,
) -> None:
    # its attempt stayed pending for ever, silently: no result, no commit past it
    async def handler(call: Any) -> None:
        if call.payload["job"] == "bad":
            raise asyncio.CancelledError  # an awaited call of the handler's own, cancelled

    app = backend.app([job_saga()], {"Run": handler})
    rt = await start(backend, app)
    await rt.publish(Job(job_id="bad"))
    await rt.publish(Job(job_id="ok"))
    await completes(rt, "job:ok")
    (failed,) = [r for r in await rt.history("job:bad") if isinstance(r, TaskFailed)]
    assert (failed.error_type, failed.retryable) == ("CancelledError", False)


class Count(BaseModel):
    job_id: str
    n: int


async def test_an_event_json_cannot_carry_on_is_dead_lettered_by_the_router(
    backend: Backend,
) -> None:
    # an integer over 64 bits is valid JSON and a valid int, but orjson writes
    # none: the router stopped on it, and again after every restart
    todo, done = State("Todo", initial=True), State("Done", final=True)
    count = Saga(
        "count",
        machines=[Machine("m", states=[todo, done], transitions=[todo.to(done, on=Count)])],
        correlate={Count: lambda e: e.job_id},
        starts=[Count],
    )
    app = backend.app([count, job_saga()], {"Run": lambda call: None})
    rt = await start(backend, app)
    await rt.publish(Count(job_id="c", n=2**70))
    await rt.publish(Job(job_id="ok"))
    await completes(rt, "job:ok")
    assert await reasons(backend, app) == ["Count cannot be written: Integer exceeds 64-bit range"]
    assert await rt.history("count:c") == []


async def test_a_decider_record_no_reader_would_take_back_parks_its_process(
    backend: Backend,
) -> None:
    def decide(state: Any, record: Any) -> list[Any]:
        p = Planner(state, record)
        if state is None:
            bad = record.data["job_id"] == "bad"
            p.emit(ProcessStarted, saga="hand", version="1" if bad else 1, machines={})
            if not bad:
                p.emit(ProcessCompleted)
        return p.records

    hand = Decider("hand", decide, correlate={Job: lambda e: e.job_id})
    app = backend.app([hand], {})
    rt = await start(backend, app)
    await rt.publish(Job(job_id="bad"))
    await rt.publish(Job(job_id="ok"))
    await completes(rt, "hand:ok")
    reason = (await parked(rt, "hand:bad")).reason
    assert (
        "'hand' decided a procession.ProcessStarted whose field 'version' holds str '1'" in reason
    )

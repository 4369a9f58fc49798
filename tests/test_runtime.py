"""The behavioural suite: the same scenarios on every backend (memory, Kafka)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest
from pydantic import BaseModel

from procession import (
    CoPartitionError,
    ForEach,
    Machine,
    RetryPolicy,
    Saga,
    State,
    Task,
    TaskCall,
    TaskError,
    TransactionAbortedError,
)
from procession.examples import RebaseFailed, rebase_saga
from procession.examples.apps import FlakyCloser
from procession.publish import Event, Publisher
from procession.sagas import ProcessState, fold
from procession.sagas._state import Ended
from procession.testing import records_of
from procession.topics import (
    DEFAULT_CODEC,
    CompensationPlanned,
    InputIgnored,
    ProcessCancelled,
    ProcessCompleted,
    ProcessFailed,
    ProcessStarted,
    Record,
    TaskCompleted,
    TaskFailed,
    TimerFired,
    TimerScheduled,
    TransitionPlanned,
)
from procession.topics._layout import TopicSpec
from procession.workers import (
    App,
    Batch,
    Outgoing,
    Processor,
    Router,
    Runtime,
    TopicPartition,
    Worker,
)
from procession.workers import _kafka as kafka_settings
from procession.workers import _loop as worker_loop
from procession.workers._memory import Crash, MemoryTransport
from procession.workers._partition import PartitionProcessor
from procession.workers._rebuild import rebuild
from procession.workers._wire import encode
from procession.workers._writers import Writers
from tests.conftest import KAFKA_BACKENDS, Backend, until
from tests.sagas import Deploy, InvoiceSent, PaymentReceived, deploy_saga, payment_saga

REBASE = RebaseFailed(rebase_id="r1", instances=["A", "B", "C"])


def decisions_once(history: list[Record]) -> Counter[tuple[Any, ...]]:
    return Counter(
        (r.machine_id, r.transition, r.attempt) for r in history if isinstance(r, TransitionPlanned)
    )


async def ended(rt: Any, pid: str) -> bool:
    state = await rt.state(pid)
    return isinstance(state, ProcessState) and state.terminal


async def test_demo_scenario_retries_with_backoff_and_completes(backend: Backend) -> None:
    closer = FlakyCloser(flaky="B")
    app = backend.app([rebase_saga()], {"CloseInstance": closer}, keep_completed=True)
    rt = await backend.runtime(app)
    await rt.publish(REBASE)
    await rt.settle()
    history = await rt.history("rebase:r1")
    failed = records_of(history, TaskFailed)
    assert [(f.machine_id, f.attempt) for f in failed] == [("instance:B", 1)]  # type: ignore[attr-defined]
    retry = [r for r in records_of(history, TimerScheduled) if r.purpose == "retry"]  # type: ignore[attr-defined]
    assert len(retry) == 1
    await rt.advance(timedelta(milliseconds=retry[0].due_ms - backend.clock.now_ms()))  # type: ignore[attr-defined]
    history = await rt.history("rebase:r1")
    assert isinstance(history[-1], ProcessCompleted)
    assert sorted(closer.calls) == [("A", 1), ("B", 1), ("B", 2), ("C", 1)]
    fired = records_of(history, TimerFired)[0]
    assert fired.time_ms == retry[0].due_ms  # type: ignore[attr-defined]
    assert all(n == 1 for n in decisions_once(history).values())
    held = rt.processor.partitions
    states = [p.store["rebase:r1"] for p in held.values() if "rebase:r1" in p.store]
    assert states == [fold(history)]


async def test_duplicate_input_record_produces_no_second_decision(backend: Backend) -> None:
    release = asyncio.Event()

    async def close(call: TaskCall) -> None:
        await release.wait()  # the process stays open until the copy has been decided

    rt = await backend.runtime(backend.app([rebase_saga()], {"CloseInstance": close}))
    await rt.publish(REBASE, event_id="evt-1")
    await rt.publish(REBASE, event_id="evt-1")
    await until(lambda: _has(rt, "rebase:r1", InputIgnored))
    release.set()
    await rt.settle()
    history = await rt.history("rebase:r1")
    assert isinstance(history[-1], ProcessCompleted)
    assert len(records_of(history, ProcessStarted)) == 1
    ignored = records_of(history, InputIgnored)
    assert [(i.input_id, i.reason) for i in ignored] == [("evt-1", "duplicate")]  # type: ignore[attr-defined]
    assert all(n == 1 for n in decisions_once(history).values())


async def test_late_result_after_completion_and_stale_attempt_are_recorded(
    backend: Backend,
) -> None:
    app = backend.app([rebase_saga()], {"CloseInstance": FlakyCloser(flaky="A")})
    rt = await backend.runtime(app)
    await rt.publish(REBASE)
    await rt.settle()
    first = records_of(await rt.history("rebase:r1"), TaskFailed)[0]
    stale = TaskCompleted(
        **{
            k: getattr(first, k)
            for k in (
                "process_id",
                "correlation_id",
                "machine_id",
                "task_id",
                "task_type",
                "attempt",
            )
        },
        event_id="stale-1",
        time_ms=backend.clock.now_ms(),
    )
    await rt.inject(stale)
    await rt.settle()
    await rt.advance(timedelta(seconds=1))
    history = await rt.history("rebase:r1")
    assert isinstance(history[-1], ProcessCompleted)
    late = replace(stale, event_id="late-1")
    await rt.inject(late)
    await rt.settle()
    reasons = {
        (i.input_id, i.reason) for i in records_of(await rt.history("rebase:r1"), InputIgnored)
    }  # type: ignore[attr-defined]
    assert reasons == {
        ("stale-1", "attempt 1 already failed or timed out"),
        ("late-1", "after completion"),
    }


async def test_exhausted_retries_compensate_in_reverse_order(backend: Backend) -> None:
    def roll_out(call: TaskCall) -> None:
        if call.payload["region"] == "ap":
            raise TaskError("no capacity in ap", retryable=False)

    handlers = {"RollOut": roll_out, "RollBack": lambda call: {"rolled_back": call.machine_id}}
    rt = await backend.runtime(backend.app([deploy_saga()], handlers))
    await rt.publish(Deploy(deploy_id="d1", regions=["eu", "us", "ap"]))
    await until(lambda: ended(rt, "deploy:d1"))
    history = await rt.history("deploy:d1")
    done = [
        r.machine_id
        for r in records_of(history, TaskCompleted)  # type: ignore[attr-defined]
        if r.task_type == "RollOut"
    ]  # type: ignore[attr-defined]
    undone = [r.machine_id for r in records_of(history, CompensationPlanned)]  # type: ignore[attr-defined]
    assert sorted(done) == ["region:eu", "region:us"]
    assert undone == list(reversed(done))
    assert isinstance(history[-1], ProcessFailed)
    assert "no capacity in ap" in history[-1].reason
    dead = await backend.records(rt.app.topics.dead_letter)
    assert [dict(m.headers)["dlq-reason"] for m in dead] == [
        b"non-retryable failure: no capacity in ap"
    ]


async def test_timeout_fires_at_virtual_time_and_the_late_result_is_ignored(
    backend: Backend,
) -> None:
    release = asyncio.Event()
    attempts: list[int] = []

    async def roll_out(call: TaskCall) -> None:
        attempts.append(call.attempt)
        if call.attempt == 1:
            await release.wait()

    rt = await backend.runtime(
        backend.app([deploy_saga()], {"RollOut": roll_out, "RollBack": print})
    )
    start = backend.clock.now_ms()
    await rt.publish(Deploy(deploy_id="d1", regions=["eu"]))
    await until(lambda: _has(rt, "deploy:d1", TransitionPlanned))
    await until(lambda: _equals(attempts, [1]))  # the worker holds attempt 1
    backend.clock.advance(timedelta(seconds=9.999))
    await rt.settle(workers=False)
    assert not await _has(rt, "deploy:d1", TimerFired)
    backend.clock.advance(timedelta(milliseconds=1))
    await until(lambda: _has(rt, "deploy:d1", TimerFired))
    fired = records_of(await rt.history("deploy:d1"), TimerFired)[0]
    assert fired.time_ms - start == 10_000  # type: ignore[attr-defined]
    release.set()
    await rt.settle()
    await rt.advance(timedelta(seconds=2))
    history = await rt.history("deploy:d1")
    ignored = records_of(history, InputIgnored)
    assert [i.reason for i in ignored] == ["attempt 1 already failed or timed out"]  # type: ignore[attr-defined]
    assert isinstance(history[-1], ProcessCompleted)
    assert attempts == [1, 2]


@pytest.mark.backends("memory")  # injected crash; on Kafka a subprocess is killed instead
async def test_processor_crash_between_produce_and_commit_leaves_no_duplicate(
    backend: Backend,
) -> None:
    app = backend.app([rebase_saga()], {"CloseInstance": lambda call: None})
    rt = await backend.runtime(app)
    rt.transport.log.faults.crash_before_commit(f"{app.topics.prefix}.processor")  # type: ignore[attr-defined]
    await rt.publish(REBASE)
    crashed = rt.processor.crashed
    assert crashed is not None
    assert isinstance(await asyncio.wait_for(crashed, 10), Crash)
    assert await rt.history("rebase:r1") == [records_of(await rt.history("rebase:r1"), Record)[0]]
    await rt.processor.stop()  # the dead processor leaves the group, as a session timeout would
    rt.processor = Processor(app, rt.transport, backend.clock)
    await rt.processor.start()
    await rt.settle()
    history = await rt.history("rebase:r1")
    assert isinstance(history[-1], ProcessCompleted)
    assert decisions_once(history) == Counter(
        {(f"instance:{m}", "Working->Closing", 1): 1 for m in "ABC"}
    )
    assert len(records_of(history, ProcessStarted)) == 1


async def test_restart_restores_state_and_timers_from_the_changelog(backend: Backend) -> None:
    app = backend.app([payment_saga()], {})
    first = await backend.runtime(app)
    await first.publish(InvoiceSent(invoice_id="i1"))
    await first.settle()
    await first.stop()
    backend.runtimes.remove(first)
    second = await backend.runtime(app)
    await second.advance(timedelta(minutes=15))
    history = await second.history("payment:i1")
    assert [type(r).__name__ for r in history[-3:]] == [
        "TimerFired",
        "TransitionPlanned",
        "ProcessCompleted",
    ]
    assert history[-2].to_state == "Expired"  # type: ignore[attr-defined]


async def test_inline_tasks_run_in_the_processor(backend: Backend) -> None:
    retry = RetryPolicy(max_attempts=2, initial=timedelta(0))
    saga = _inline_close_saga(Task("CloseInline", mode="inline", retry=retry))
    calls: list[str] = []

    def handler(call: TaskCall) -> str:
        calls.append(call.machine_id)
        if len(calls) == 1:
            raise RuntimeError("first call fails")
        return "ok"

    rt = await backend.runtime(backend.app([saga], {"CloseInline": handler}))
    await rt.publish(RebaseFailed(rebase_id="x", instances=["A", "B"]))
    await until(lambda: ended(rt, "inline:x"))
    history = await rt.history("inline:x")
    assert isinstance(history[-1], ProcessCompleted)
    assert len(calls) == 3 and rt.workers[0].metrics["completed"] == 0


def _inline_close_saga(close: Task | None = None) -> Saga:
    """One machine per instance, Working -> Closed through the inline ``CloseInline``."""
    working, closed = State("Working", initial=True), State("Closed", final=True)
    close = close or Task("CloseInline", mode="inline")
    return Saga(
        "inline",
        machines=[
            Machine(
                "i",
                states=[working, closed],
                transitions=[working.to(closed, on=RebaseFailed, task=close)],
                per=ForEach(RebaseFailed, lambda e: e.instances),
            )
        ],
        correlate={RebaseFailed: lambda e: e.rebase_id},
        starts=[RebaseFailed],
    )


async def test_an_inline_task_in_flight_when_its_processor_stops_runs_again_on_the_next(
    backend: Backend,
) -> None:
    """docs/runtime.md: on assignment a processor re-runs the inline tasks in
    flight. The first processor stops while its inline task runs; the next one
    runs it again (same task id, same attempt) and the process completes."""
    calls: list[tuple[str, int]] = []
    running = asyncio.Event()

    async def close(call: TaskCall) -> dict[str, str]:
        calls.append((call.task_id, call.attempt))
        if len(calls) == 1:  # the first run waits until its processor stops (cancelled)
            running.set()
            async with asyncio.timeout(60):
                await asyncio.Event().wait()
        return {"closed": call.machine_id}

    app = backend.app([_inline_close_saga()], {"CloseInline": close})
    first = await backend.runtime(app)
    await first.publish(RebaseFailed(rebase_id="x", instances=["A"]))
    async with asyncio.timeout(30):
        await running.wait()  # run after its request committed: it is in the changelog
    await first.stop()
    backend.runtimes.remove(first)
    assert len(calls) == 1 and not await ended(first, "inline:x")
    second = await backend.runtime(app)
    await second.wait("inline:x", timeout_s=30)
    history = await second.history("inline:x")
    (planned,) = records_of(history, TransitionPlanned)
    assert calls == [(planned.task_id, 1), (planned.task_id, 1)]  # type: ignore[attr-defined]
    (done,) = records_of(history, TaskCompleted)
    assert (done.task_id, done.attempt) == (planned.task_id, 1)  # type: ignore[attr-defined]
    assert isinstance(history[-1], ProcessCompleted)


async def test_hard_cancel_from_a_client(backend: Backend) -> None:
    app = backend.app([payment_saga()], {})
    rt = await backend.runtime(app)
    await rt.publish(InvoiceSent(invoice_id="i9"))
    await rt.settle()
    await rt.cancel("payment:i9", "hard", "fraud")
    await rt.settle()
    history = await rt.history("payment:i9")
    assert isinstance(history[-1], ProcessCancelled) and history[-1].reason == "fraud"


async def test_bad_input_goes_to_the_dead_letter_topic_and_the_partition_keeps_moving(
    backend: Backend,
) -> None:

    app = backend.app([rebase_saga()], {"CloseInstance": lambda call: None})
    rt = await backend.runtime(app)
    topics = app.topics
    bad = [
        Outgoing(topics.inputs, "k", b"{oops", (("procession-type", b"RebaseFailed"),)),
        Outgoing(topics.inputs, "k", b"{}", (("procession-type", b"Martian"),)),
        Outgoing(topics.inputs, "k", b'{"rebase_id": 5}', (("procession-type", b"RebaseFailed"),)),
        Outgoing(topics.process, "rebase:r1", b"\x00garbage"),
        encode(
            topics.process,
            "nosaga:1",
            TaskCompleted(
                event_id="e",
                process_id="nosaga:1",
                correlation_id="c",
                machine_id="m",
                task_id="t",
                task_type="T",
                attempt=1,
            ),
            DEFAULT_CODEC,
        ),
    ]
    producer = rt.transport.producer("test-bad")
    await producer.start()
    await producer.commit(Batch(records=bad))
    await producer.stop()
    await rt.publish(REBASE)
    await rt.settle()
    assert isinstance((await rt.history("rebase:r1"))[-1], ProcessCompleted)
    dead = await backend.records(topics.dead_letter)
    reasons = sorted(dict(m.headers)["dlq-reason"].decode() for m in dead)
    assert len(reasons) == 5
    assert any("RebaseFailed" in r and "JSON" in r for r in reasons)
    assert "no saga knows the event type 'Martian'" in reasons
    assert any("instances" in r and "Field required" in r for r in reasons)
    assert any(r.startswith("cannot decode record: not JSON") for r in reasons)
    assert "no saga for process 'nosaga:1'" in reasons
    assert all(dict(m.headers)["dlq-topic"] for m in dead)
    assert {m.value for m in dead} >= {b"{oops", b"\x00garbage"}


async def _equals(seen: list[int], expected: list[int]) -> bool:
    return seen == expected


async def _has(rt: Any, pid: str, kind: type) -> bool:
    return bool(records_of(await rt.history(pid), kind))


async def test_a_component_that_dies_is_reported_not_waited_for(backend: Backend) -> None:
    app = backend.app([rebase_saga()], {"CloseInstance": lambda call: None})
    rt = await backend.runtime(app)
    boom = RuntimeError("injected router bug")

    def broken(msg: object) -> None:
        raise boom

    rt.router._route = broken  # type: ignore[method-assign]
    await rt.publish(REBASE)
    with pytest.raises(RuntimeError, match="the router stopped") as err:
        await rt.settle(timeout_s=10)
    assert err.value.__cause__ is boom


async def test_a_changelog_not_co_partitioned_is_refused_at_start(backend: Backend) -> None:
    app = backend.app([rebase_saga()], {"CloseInstance": lambda call: None})
    transport = backend.transport()
    specs = [s for s in app.topics.specs(app.task_types()) if s.name != app.topics.changelog]
    await transport.create_topics([*specs, TopicSpec(app.topics.changelog, 2, compacted=True)])
    with pytest.raises(CoPartitionError) as err:
        await Processor(app, transport).start()
    assert str(err.value) == (
        f"topic '{app.topics.changelog}' has 2 partitions but '{app.topics.process}' has 3: "
        "they must be co-partitioned"
    )


async def test_a_slow_task_does_not_hold_back_the_results_of_fast_ones(backend: Backend) -> None:
    """Results commit as tasks finish: the fast machines move on while the slow one runs."""
    release = asyncio.Event()

    async def close(call: TaskCall) -> None:
        if call.payload["instance"] == "slow":
            await release.wait()

    rt = await backend.runtime(backend.app([rebase_saga()], {"CloseInstance": close}))
    await rt.publish(RebaseFailed(rebase_id="r1", instances=["slow", "fast-1", "fast-2"]))
    await until(lambda: _results(rt, "rebase:r1", 2))
    done = {r.machine_id for r in records_of(await rt.history("rebase:r1"), TaskCompleted)}  # type: ignore[attr-defined]
    assert done == {"instance:fast-1", "instance:fast-2"}  # all three tasks share a partition
    release.set()
    await rt.settle()
    assert isinstance((await rt.history("rebase:r1"))[-1], ProcessCompleted)


async def _results(rt: Any, pid: str, n: int) -> bool:
    return len(records_of(await rt.history(pid), TaskCompleted)) >= n


class Close(BaseModel):
    job_id: str


def _timed_close_saga(timeout: timedelta) -> Saga:
    """One ``Close`` task per job, under ``timeout``, one attempt: a failure fails
    the process."""
    todo, done = State("Todo", initial=True), State("Done", final=True)
    close = Task(
        "Close",
        payload=lambda c: {"job": c.event.job_id},
        retry=RetryPolicy(max_attempts=1),
        timeout=timeout,
    )
    return Saga(
        "close",
        machines=[
            Machine("job", states=[todo, done], transitions=[todo.to(done, on=Close, task=close)])
        ],
        correlate={Close: lambda e: e.job_id},
        starts=[Close],
    )


async def test_a_sync_handler_past_its_timeout_frees_its_slot_and_its_late_return_writes_nothing(
    backend: Backend,
) -> None:
    """docs/runtime.md: a sync handler past its task's timeout fails its attempt
    ("handler timed out"), and its one slot runs the next task while the
    handler's thread still runs; what that thread returns later is discarded."""
    entered, release, returned = threading.Event(), threading.Event(), threading.Event()
    ran: list[str] = []

    def close(call: TaskCall) -> dict[str, str]:
        ran.append(call.payload["job"])
        if call.payload["job"] == "stuck":
            entered.set()
            try:
                release.wait(60)  # bounded: never outlives the test
            finally:
                returned.set()
        return {"closed": call.payload["job"]}

    app = backend.app([_timed_close_saga(timedelta(seconds=1))], {"Close": close})
    rt = await backend.runtime(app, concurrency=1)
    try:
        await rt.publish(Close(job_id="stuck"))
        await until(lambda: asyncio.sleep(0, entered.is_set()))
        await rt.publish(Close(job_id="quick"))  # waits for the one slot
        await rt.wait("close:quick", timeout_s=20)  # its slot freed by the timeout
        await rt.wait("close:stuck", timeout_s=20)
        assert not returned.is_set()  # both ended while the stuck handler's thread runs
    finally:
        release.set()
    assert isinstance((await rt.history("close:quick"))[-1], ProcessCompleted)
    (failed,) = records_of(await rt.history("close:stuck"), TaskFailed)
    assert (failed.reason, failed.error_type, failed.retryable, failed.attempt) == (  # type: ignore[attr-defined]
        "handler timed out after 1s",
        "TimeoutError",
        True,
        1,
    )
    await until(lambda: asyncio.sleep(0, returned.is_set()))
    await rt.settle()
    history = await rt.history("close:stuck")
    results = [r for r in history if isinstance(r, TaskCompleted | TaskFailed)]
    assert results == [failed] and not records_of(history, InputIgnored)
    assert isinstance(history[-1], ProcessFailed)
    worker = rt.workers[0]
    assert (worker.metrics["completed"], worker.metrics["failed"]) == (1, 1)
    assert ran == ["stuck", "quick"]


async def test_worker_rebalances_run_no_finished_task_again(backend: Backend) -> None:
    """Workers joining and leaving hand partitions over at the committed offset;
    a partition that got nothing new must not move its offset back."""
    rt = await backend.runtime(backend.app([rebase_saga()], {"CloseInstance": lambda call: None}))
    app = rt.app
    for round_ in range(4):
        extra = Worker(app, rt.transport, backend.clock, concurrency=4)
        await extra.start()
        await rt.publish(RebaseFailed(rebase_id=f"r{round_}", instances=["A", "B", "C"]))
        pid = f"rebase:r{round_}"
        await until(lambda pid=pid: ended(rt, pid))  # type: ignore[misc] # settle() knows no `extra`
        await extra.stop()
    await rt.publish(RebaseFailed(rebase_id="last", instances=["A"]))
    await until(lambda: ended(rt, "rebase:last"))  # the group may still be rebalancing
    await rt.settle()
    results: Counter[tuple[str, int]] = Counter()
    for pid in [*(f"rebase:r{n}" for n in range(4)), "rebase:last"]:
        for r in records_of(await rt.history(pid), TaskCompleted):
            results[(r.task_id, r.attempt)] += 1  # type: ignore[attr-defined]
    assert len(results) == 13 and set(results.values()) == {1}, results


async def test_a_partition_assigned_again_does_not_run_its_running_task_twice(
    backend: Backend,
) -> None:
    """An assignment repeated while a task runs rewinds the partition to its
    committed offset: the record read again must not start the task again."""
    started: list[str] = []
    release = asyncio.Event()

    async def close(call: Any) -> None:
        started.append(call.task_id)
        await release.wait()

    rt = await backend.runtime(backend.app([rebase_saga()], {"CloseInstance": close}))
    await rt.publish(RebaseFailed(rebase_id="again", instances=["A"]))

    async def running() -> bool:
        return len(started) == 1

    await until(running)
    worker = rt.workers[0]
    await worker._on_assign(list(worker.parts))  # told again, as a rebalance may
    await until(lambda: asyncio.sleep(0, not worker.unclaimed))  # rewound and read again
    await until(lambda: asyncio.sleep(0, worker._consumer.caught_up()))  # type: ignore[union-attr]
    release.set()
    state = await rt.wait("rebase:again", timeout_s=30)
    assert state is not None and state.status == "completed"
    assert len(started) == 1


async def test_wait_returns_once_a_process_ended_retries_included() -> None:

    tries: list[str] = []

    def close(call: Any) -> dict[str, str]:
        tries.append(call.payload["instance"])
        if tries.count(call.payload["instance"]) == 1:
            raise RuntimeError("busy")  # the first attempt of each fails: a retry timer
        return {"closed": call.payload["instance"]}

    app = App([rebase_saga(backoff=timedelta(milliseconds=20))], {"CloseInstance": close})
    async with Runtime(app) as rt:  # the system clock: retry timers come due by themselves
        await rt.publish(RebaseFailed(rebase_id="w", instances=["A", "B"]))
        state = await rt.wait("rebase:w", timeout_s=20)
    assert state is not None and state.status == "completed"
    assert sorted(tries) == ["A", "A", "B", "B"]


async def test_wait_names_what_a_process_waits_for_when_it_does_not_end() -> None:

    def fail(call: Any) -> None:
        raise RuntimeError("busy")

    app = App([rebase_saga(backoff=timedelta(hours=1))], {"CloseInstance": fail})
    async with Runtime(app) as rt:
        await rt.publish(RebaseFailed(rebase_id="s", instances=["A"]))
        with pytest.raises(TimeoutError, match=r"'rebase:s' has not ended after 0.5 s: running"):
            await rt.wait("rebase:s", timeout_s=0.5)
        with pytest.raises(TimeoutError, match="no such process"):
            await rt.wait("rebase:nope", timeout_s=0.05)


async def test_wait_returns_the_streams_end_even_when_its_markers_lag() -> None:
    """On Kafka a commit returns before the broker has written its markers: the
    processor holds the end while a reader does not see it yet."""
    app = App([rebase_saga()], {"CloseInstance": lambda call: None})
    async with Runtime(app) as rt:
        history, reads = rt.history, 0

        async def lagging(process_id: str) -> list[Any]:
            nonlocal reads
            reads += 1
            found = await history(process_id)
            return found if reads > 3 else [r for r in found if not isinstance(r, ProcessCompleted)]

        await rt.publish(RebaseFailed(rebase_id="lag", instances=["A"]))
        await until(lambda: _ended_here(rt, "rebase:lag"))
        rt.history = lagging  # type: ignore[method-assign]
        state = await rt.wait("rebase:lag", timeout_s=5)
    assert state is not None and state.status == "completed" and reads == 4


async def _ended_here(rt: Runtime, process_id: str) -> bool:
    return isinstance(rt._held(process_id), Ended)


@pytest.mark.parametrize("role", ["worker", "router"])
async def test_a_member_slow_to_claim_its_partitions_still_lets_its_group_rebalance(
    backend: Backend, monkeypatch: pytest.MonkeyPatch, role: str
) -> None:
    """A claim can wait seconds (a killed owner's transaction to end); workers and
    routers fetch on meanwhile, so a member joining gets its partitions without
    waiting for it (on librdkafka a member serves rebalances only from inside a
    fetch). The first member's claim is held while a second one joins."""
    app = backend.app([rebase_saga()], {"CloseInstance": lambda call: None})
    await backend.transport().create_topics(app.topics.specs(app.task_types()))
    member = _Member(role, app, backend)
    first = member.make()
    gate, held = asyncio.Event(), asyncio.Event()
    real_claim = worker_loop.claim

    async def slow_claim(unclaimed: Any, writers: Any, consumer: Any) -> None:
        if writers is member.writers(first):
            held.set()
            await gate.wait()
        await real_claim(unclaimed, writers, consumer)

    monkeypatch.setattr(worker_loop, "claim", slow_claim)
    await first.start()
    second = member.make()
    try:
        async with asyncio.timeout(30):
            await held.wait()  # the first owns every partition, none claimed
        await second.start()
        await until(lambda: member.serving(second), timeout_s=30)  # a claim inline: held here
        assert not gate.is_set() and member.unclaimed(first)  # the first is still claiming
        assert not member.owned(first) & member.owned(second)
        gate.set()
        await until(lambda: member.serving(first), timeout_s=30)
    finally:
        gate.set()
        await second.stop()
        await first.stop()


async def _has_partitions(worker: Worker) -> bool:
    return bool(worker.parts) and worker.ready()


class _Member:
    """A worker or a router, and where each keeps its writers and partitions."""

    def __init__(self, role: str, app: App, backend: Backend) -> None:
        self.role, self.app, self.backend = role, app, backend

    def make(self) -> Worker | Router:
        t, clock = self.backend.transport(), self.backend.clock
        return (
            Worker(self.app, t, clock, concurrency=4)
            if self.role == "worker"
            else Router(self.app, t, clock)
        )

    @staticmethod
    def writers(m: Worker | Router) -> object:
        return m.writers if isinstance(m, Worker) else m._writers

    @staticmethod
    def unclaimed(m: Worker | Router) -> set[TopicPartition]:
        return m.unclaimed if isinstance(m, Worker) else m._unclaimed

    @staticmethod
    def owned(m: Worker | Router) -> set[TopicPartition]:
        return set(m.parts) if isinstance(m, Worker) else set(m._owned)

    async def serving(self, m: Worker | Router) -> bool:
        """Owns partitions, every one of them claimed."""
        return bool(self.owned(m)) and m.ready()


def _waiting_closer() -> tuple[Any, list[str], asyncio.Event]:
    """A CloseInstance handler that waits to be released; the task ids it ran."""
    runs: list[str] = []
    release = asyncio.Event()

    async def close(call: Any) -> dict[str, Any]:
        runs.append(call.task_id)
        async with asyncio.timeout(60):
            await release.wait()
        return {}

    return close, runs, release


async def test_a_worker_with_every_slot_busy_still_lets_a_member_join(backend: Backend) -> None:
    """Its one slot runs a task that waits; it goes on polling, taking nothing, so
    a second worker joins and gets partitions without waiting for that task (on
    librdkafka a member serves rebalances only inside a poll)."""
    close, runs, release = _waiting_closer()
    app = backend.app([rebase_saga()], {"CloseInstance": close})
    rt = await backend.runtime(app, workers=0)
    first = Worker(app, backend.transport(), backend.clock, concurrency=1, revoke_deadline_s=1)
    second = Worker(app, backend.transport(), backend.clock, concurrency=1, revoke_deadline_s=1)
    await first.start()
    try:
        await rt.publish(REBASE)  # three tasks for one slot
        await until(lambda: _ran(runs), timeout_s=30)
        await second.start()
        await until(lambda: _has_partitions(second), timeout_s=15)
        assert not release.is_set() and not set(first.parts) & set(second.parts)
        release.set()
        await until(lambda: _ended_here(rt, "rebase:r1"), timeout_s=60)
    finally:
        release.set()
        await second.stop()
        await first.stop()


@pytest.mark.backends(*KAFKA_BACKENDS)
async def test_a_worker_busy_past_the_poll_interval_stays_a_member_and_runs_its_task_once(
    backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both Kafka clients leave the group after max.poll.interval.ms without a
    poll; a worker whose every slot is busy for longer keeps polling (taking
    nothing), so its task is not handed to anyone again."""
    monkeypatch.setattr(kafka_settings, "MAX_POLL_INTERVAL_MS", 10_000)  # librdkafka's least
    close, runs, release = _waiting_closer()
    app = backend.app([rebase_saga()], {"CloseInstance": close})
    rt = await backend.runtime(app, workers=0)
    worker = Worker(app, backend.transport(), backend.clock, concurrency=1)
    await worker.start()
    try:
        await rt.publish(RebaseFailed(rebase_id="r1", instances=["A"]))
        await until(lambda: _ran(runs), timeout_s=30)
        busy_since, held = time.monotonic(), set(worker.parts)
        async with asyncio.timeout(30):  # one and a half poll intervals, the task running
            while time.monotonic() - busy_since < 15:
                assert set(worker.parts) == held and len(runs) == 1
                await asyncio.sleep(0.2)
        release.set()
        await until(lambda: _ended_here(rt, "rebase:r1"), timeout_s=60)
        assert len(runs) == 1
    finally:
        release.set()
        await worker.stop()


async def _ran(runs: list[str]) -> bool:
    return bool(runs)


async def test_a_processor_with_a_full_partition_queue_still_lets_a_member_join(
    backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its partitions restore slowly while their records pile up past the queue's
    limit: it takes no more but goes on polling, so a second processor joins and
    gets partitions meanwhile."""
    gate = asyncio.Event()
    real_restore = PartitionProcessor._restore
    slow: list[Processor] = []

    async def slow_restore(self: PartitionProcessor, committed: int) -> None:
        if self.owner in slow:
            async with asyncio.timeout(60):
                await gate.wait()
        await real_restore(self, committed)

    monkeypatch.setattr(PartitionProcessor, "_restore", slow_restore)
    app = backend.app([rebase_saga()], {"CloseInstance": lambda call: None})
    transport = backend.transport()
    await transport.create_topics(app.topics.specs(app.task_types()))
    first = Processor(app, transport, backend.clock, max_batch=1, revoke_deadline_s=1)
    second = Processor(app, transport, backend.clock, max_batch=1)
    slow.append(first)
    await first.start()
    try:
        async with Publisher(app.topics, transport, route=app) as publisher:
            await publisher.publish_many(
                [Event(RebaseFailed(rebase_id=f"q{n}", instances=["A"])) for n in range(30)]
            )
        await until(lambda: _queue_full(first, 4), timeout_s=30)
        await second.start()
        await until(lambda: _taken_over(second), timeout_s=15)
        assert not gate.is_set() and not set(first.partitions) & set(second.partitions)
    finally:
        gate.set()
        await second.stop()
        await first.stop()


async def _taken_over(processor: Processor) -> bool:
    return bool(processor.partitions) and processor.ready()


async def _queue_full(processor: Processor, limit: int) -> bool:
    return any(p.full(limit) for p in processor.partitions.values())


def _held_starts(
    monkeypatch: pytest.MonkeyPatch,
    transport: MemoryTransport,
    hold: Callable[[int], Awaitable[None]],
) -> list[Any]:
    """The producers ``transport`` makes from now on; each one's start first
    awaits ``hold(n)``, ``n`` counting the producers made, from 1."""
    made: list[Any] = []
    real_producer = transport.producer

    def producer(transactional_id: str) -> Any:
        made.append(p := real_producer(transactional_id))
        real_start, n = p.start, len(made)

        async def start() -> None:
            await hold(n)
            await real_start()

        p.start = start
        return p

    monkeypatch.setattr(transport, "producer", producer)
    return made


async def test_producers_of_different_partitions_start_side_by_side(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each start may wait for the broker to abort the previous owner's
    transaction; a claim of many partitions must not wait for them in turn.
    Two asks for the same partition still make one producer."""
    transport = MemoryTransport()
    writers = Writers(transport, "t.router")
    tps = [TopicPartition("t.events", p) for p in range(3)]
    all_starting, gate = asyncio.Event(), asyncio.Event()

    async def hold(n: int) -> None:
        if n == len(tps):
            all_starting.set()
        await gate.wait()

    made = _held_starts(monkeypatch, transport, hold)
    asks = [asyncio.create_task(writers.get(tp)) for tp in [*tps, tps[0]]]
    async with asyncio.timeout(5):
        await all_starting.wait()  # every partition's start is under way at once
    gate.set()
    got = await asyncio.wait_for(asyncio.gather(*asks), 5)
    assert len(made) == len(tps) and got[0] is got[-1] and len(set(map(id, got))) == len(tps)


async def test_a_partition_revoked_and_given_back_while_its_producer_starts_is_claimed_afresh(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Revoked while its producer started, then assigned again: another owner
    may have started a producer with the same id in between, fencing this one,
    so the claim drops it and the next claim starts a new one (the old one
    would be fenced at its first commit, and its component would stop)."""
    transport = MemoryTransport()
    writers = Writers(transport, "t.router")
    tp = TopicPartition("t.events", 0)
    gate, starting = asyncio.Event(), asyncio.Event()

    async def hold(n: int) -> None:
        if n == 1:
            starting.set()
            await gate.wait()

    made = _held_starts(monkeypatch, transport, hold)

    class Rewinds:
        async def rewind(self, tp: TopicPartition) -> int | None:
            return 0

    unclaimed = {tp}
    claiming = asyncio.create_task(worker_loop.claim(unclaimed, writers, Rewinds()))  # type: ignore[arg-type]
    async with asyncio.timeout(5):
        await starting.wait()
    await writers.drop([tp])  # the revoke listener; the partition comes back: still unclaimed
    gate.set()
    await asyncio.wait_for(claiming, 5)
    assert unclaimed == {tp}  # not taken with the producer started before the revoke
    await asyncio.wait_for(worker_loop.claim(unclaimed, writers, Rewinds()), 5)  # type: ignore[arg-type]
    assert not unclaimed and len(made) == 2 and await writers.get(tp) is made[1]
    await writers.close()


@pytest.mark.parametrize("batches", [True, False], ids=["batched", "one-per-decision"])
async def test_the_decisions_of_one_input_are_one_process_topic_record(
    backend: Backend, batches: bool
) -> None:
    """docs/wire.md: a start deciding four records writes one batch; with
    ``PROCESSION_DECISION_BATCHES=0`` it writes four. Readers see the same stream."""

    async def close(call: TaskCall) -> None:
        return None

    app = backend.app([rebase_saga()], {"CloseInstance": close}, keep_completed=True)
    rt = await backend.runtime(app)
    rt.processor.decision_batches = batches
    await rt.publish(REBASE)
    await rt.settle()
    pid = "rebase:r1"
    mine = [m for m in await backend.records(app.topics.process) if m.key == pid]
    kinds = [dict(m.headers)["procession-type"].decode() for m in mine]
    start = ["procession.ProcessStarted"] + ["procession.TransitionPlanned"] * 3
    assert kinds[0] == "RebaseFailed"
    if batches:  # the three results decide nothing, nothing, and the completion
        assert kinds[1] == "procession.Decisions"
        assert kinds.count("procession.Decisions") == 1
    else:
        assert kinds[1:5] == start
        assert "procession.Decisions" not in kinds
    history = await rt.history(pid)
    assert [r.type_name for r in history[:5]] == ["RebaseFailed", *start]
    assert isinstance(history[-1], ProcessCompleted)
    if batches:
        (batch,) = [
            m for m in mine if dict(m.headers)["procession-type"] == b"procession.Decisions"
        ]
        inside = DEFAULT_CODEC.decode_all(batch.value or b"")
        assert inside == history[1:5]
        assert dict(batch.headers)["event-id"] == inside[0].event_id.encode()
        assert dict(batch.headers)["causation-id"] == history[0].event_id.encode()
    else:
        assert len(mine) == len(history)
    held = [p.store[pid] for p in rt.processor.partitions.values() if pid in p.store]
    assert held == [fold(history)]
    tp = TopicPartition(app.topics.process, mine[0].partition)
    stream = await backend.transport().read_partition(tp)
    assert (
        rebuild(stream, stream[-1].offset + 1, DEFAULT_CODEC, keep_completed=True)[pid] == held[0]
    )


class _FirstCommitHeld:
    """A partition's producer whose first commit holding ``pid``'s records waits
    for ``gate`` and then aborts, as a transaction the broker aborted (nothing
    written; the runtime commits the same batch again)."""

    def __init__(self, real: Any, pid: str, gate: asyncio.Event) -> None:
        self.real, self.pid, self.gate = real, pid, gate
        self.batches: list[Batch] = []
        self.held = asyncio.Event()

    async def start(self) -> None:
        await self.real.start()

    async def commit(self, batch: Batch) -> None:
        if any(r.key == self.pid for r in batch.records):
            self.batches.append(batch)
            if not self.held.is_set():
                self.held.set()
                await self.gate.wait()
                raise TransactionAbortedError("aborted while the next batch was decided")
        await self.real.commit(batch)

    def idle(self) -> None:
        self.real.idle()

    async def stop(self) -> None:
        await self.real.stop()


async def test_a_partition_decides_while_its_last_batch_commits_and_commits_in_order(
    backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An input that arrives while its partition's last batch commits is decided
    at once, against the state that batch left (not yet in the changelog), and
    goes out only once that batch has landed: here after its transaction
    aborted and was committed again."""
    pid, gate = "payment:i1", asyncio.Event()
    wrapped: list[_FirstCommitHeld] = []
    producer_for = Processor.producer_for

    def held(self: Processor, transactional_id: str) -> Any:
        wrapped.append(_FirstCommitHeld(producer_for(self, transactional_id), pid, gate))
        return wrapped[-1]

    monkeypatch.setattr(Processor, "producer_for", held)
    app = backend.app([payment_saga()], {})
    rt = await backend.runtime(app)
    await rt.publish(InvoiceSent(invoice_id="i1"))

    async def one_held() -> bool:
        return any(w.held.is_set() for w in wrapped)

    await until(one_held)
    (mine,) = [w for w in wrapped if w.held.is_set()]
    (part,) = [p for p in rt.processor.partitions.values() if p.producer is mine]
    await rt.publish(PaymentReceived(invoice_id="i1", amount=5))

    async def decided_ahead() -> bool:
        return part._open is not None and part._open.read > 0

    await until(decided_ahead)  # while the first batch is still held
    assert len(mine.batches) == 1
    gate.set()
    await rt.settle()
    first, again, second = mine.batches
    assert again is first  # the aborted batch, committed again before the next one
    tp = TopicPartition(app.topics.process, part.tp.partition)
    assert second.offsets[tp] > first.offsets[tp]
    assert rt.processor.metrics["aborted"] == 1
    history = await rt.history(pid)
    assert [r.type_name for r in history if r.IS_DECISION][-2:] == [
        "procession.TransitionPlanned",
        "procession.ProcessCompleted",
    ]
    assert history[-2].to_state == "Paid"  # type: ignore[attr-defined]
    assert not records_of(history, InputIgnored)
    assert len(records_of(history, ProcessStarted)) == 1

"""Exactly-once on a real broker: many processes, killed processors and workers, rebalances."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from procession.examples import RebaseFailed
from procession.topics import (
    Codec,
    DomainEvent,
    InputIgnored,
    ProcessCompleted,
    Record,
    TaskCompleted,
    TransitionPlanned,
)
from procession.workers import Batch, Outgoing, Processor, Router, Runtime, Worker
from procession.workers._router import event_headers
from tests import kafka_app
from tests.conftest import CLIENTS, KAFKA_BACKENDS, Backend, until

pytestmark = pytest.mark.backends(*KAFKA_BACKENDS)
ROOT = Path(__file__).parent.parent


async def stream(backend: Backend, app: Any) -> list[Record]:
    codec = Codec()
    return [r for m in await backend.records(app.topics.process) for r in codec.decode_all(m.value)]


def exactly_once(records: list[Record], processes: int) -> None:
    """Every process completed once; no decision recorded twice, no input decided
    twice, no domain event routed twice."""
    planned = Counter(
        (r.process_id, r.machine_id, r.transition, r.attempt)
        for r in records
        if isinstance(r, TransitionPlanned)
    )
    completed = Counter(r.process_id for r in records if isinstance(r, ProcessCompleted))
    assert len(completed) == processes, f"{len(completed)} of {processes} completed"
    assert set(completed.values()) == {1}
    duplicated = {k: n for k, n in planned.items() if n > 1}
    assert not duplicated, f"decisions recorded more than once: {list(duplicated.items())[:5]}"
    first = {k for k in planned if k[3] == 1}
    assert len(first) == 3 * processes
    decisions = Counter(r.event_id for r in records if r.IS_DECISION)
    twice = [e for e, n in decisions.items() if n > 1]
    assert not twice, f"inputs decided twice (same decision ids): {twice[:5]}"
    routed = Counter((r.process_id, r.event_id) for r in records if isinstance(r, DomainEvent))
    again = [k for k, n in routed.items() if n > 1]
    assert not again, f"domain events routed twice: {again[:5]}"
    copies = [r for r in records if isinstance(r, InputIgnored) and r.reason == "duplicate"]
    assert not copies, f"inputs decided as duplicates: {copies[:5]}"


def make_app(backend: Backend, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("PROCESSION_TEST_PREFIX", backend.prefix)
    return kafka_app.app()


#: A spawned component dies with the test process, even one that is killed:
#: setpriv sets the parent-death signal and execs, which keeps it.
DIES_WITH_US = ("setpriv", "--pdeathsig", "KILL") if shutil.which("setpriv") else ()


def spawn(
    role: str, backend: Backend, *args: str, wrap: Sequence[str] = (), **env: str
) -> subprocess.Popen[bytes]:
    """``procession ROLE tests.kafka_app:app ARGS`` in a subprocess (``wrap`` goes first)."""
    return subprocess.Popen(
        [
            *DIES_WITH_US,
            *wrap,
            sys.executable,
            "-m",
            "procession._cli",
            "--log-level",
            "WARNING",
            role,
            "tests.kafka_app:app",
            *args,
        ],
        cwd=ROOT,
        env={
            **os.environ,
            "PROCESSION_TEST_PREFIX": backend.prefix,
            "PROCESSION_KAFKA_CLIENT": CLIENTS[backend.name],
            **env,
        },
    )


def kill(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)


async def completed_count(backend: Backend, app: Any) -> int:
    return sum(isinstance(r, ProcessCompleted) for r in await stream(backend, app))


async def test_a_thousand_concurrent_processes_each_decided_exactly_once(
    backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = make_app(backend, monkeypatch)
    rt = Runtime(app, backend.transport(), workers=2, concurrency=64)
    await rt.start()
    backend.runtimes.append(rt)
    start = time.perf_counter()
    for chunk in range(0, 1000, 100):
        await rt.publish_many(
            [
                RebaseFailed(rebase_id=str(n), instances=["A", "B", "C"])
                for n in range(chunk, chunk + 100)
            ]
        )
    await until(lambda: _done(rt, 1000), timeout_s=180)
    rate = 1000 / (time.perf_counter() - start)
    print(f"\n1,000 rebase processes on Kafka: {rate:.0f} completed/s")
    exactly_once(await stream(backend, app), 1000)


async def _done(rt: Runtime, n: int) -> bool:
    return rt.processor.metrics["ProcessCompleted"] >= n


async def test_processor_killed_mid_run_and_restarted_loses_and_repeats_nothing(
    backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = make_app(backend, monkeypatch)
    monkeypatch.setenv("PROCESSION_TEST_SLOW_S", "0.05")  # 900 tasks take over 5 s, not less
    transport = backend.transport()
    await transport.create_topics(app.topics.specs(app.task_types()))
    router, worker = Router(app, transport), Worker(app, transport, concurrency=8)
    await router.start()
    await worker.start()
    first = spawn("processor", backend)
    try:
        await publish(app, transport, range(300))
        await until(lambda: _at_least(backend, app, 20), timeout_s=60)
        kill(first)  # mid-run: most processes are still open
        assert await completed_count(backend, app) < 300
        second = spawn("processor", backend)
        try:
            await until(lambda: _at_least(backend, app, 300), timeout_s=120)
        finally:
            second.terminate()
            second.wait(timeout=30)
    finally:
        if first.poll() is None:
            kill(first)
        await router.stop()
        await worker.stop()
    exactly_once(await stream(backend, app), 300)


async def _at_least(backend: Backend, app: Any, n: int) -> bool:
    return await completed_count(backend, app) >= n


async def publish(app: Any, transport: Any, numbers: range) -> None:
    """Domain events for ``numbers``, straight to the input topic, in one transaction."""
    producer = transport.producer(f"{app.topics.prefix}.publisher")
    await producer.start()
    try:
        outs = []
        for n in numbers:
            event = RebaseFailed(rebase_id=str(n), instances=["A", "B", "C"])
            value = event.model_dump_json().encode()
            outs.append(
                Outgoing(app.topics.inputs, str(n), value, event_headers(event, None, None))
            )
        await producer.commit(Batch(records=outs))
    finally:
        await producer.stop()


def part_of(role: str, app: Any, transport: Any) -> Any:
    """A runtime part of ``role``, in this process."""
    if role == "processor":
        return Processor(app, transport)
    if role == "router":
        return Router(app, transport)
    return Worker(app, transport, concurrency=8)


@contextlib.asynccontextmanager
async def all_but(role: str, app: Any, transport: Any) -> AsyncIterator[None]:
    """Every runtime part but ``role`` running in this process, stopped after."""
    healthy = [part_of(r, app, transport) for r in ("processor", "router", "worker") if r != role]
    for part in healthy:
        await part.start()
    try:
        yield
    finally:
        for part in healthy:
            await part.stop()


async def exited(proc: subprocess.Popen[bytes], timeout_s: float = 60) -> None:
    async with asyncio.timeout(timeout_s):
        while proc.poll() is None:
            await asyncio.sleep(0.01)


async def test_worker_killed_mid_task_the_task_is_delivered_again(
    backend: Backend, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    app = make_app(backend, monkeypatch)
    transport = backend.transport()
    await transport.create_topics(app.topics.specs(app.task_types()))
    started = tmp_path / "started"
    slow = spawn(
        "worker", backend, PROCESSION_TEST_SLOW_S="600", PROCESSION_TEST_STARTED_FILE=str(started)
    )
    try:
        async with all_but("worker", app, transport):
            await publish(app, transport, range(1, 2))
            await until(lambda: _lines(started, 3), timeout_s=60)  # it holds all three tasks now
            kill(slow)
            worker = Worker(app, transport, concurrency=8)
            await worker.start()
            try:
                await until(lambda: _at_least(backend, app, 1), timeout_s=90)
            finally:
                await worker.stop()
    finally:
        if slow.poll() is None:
            kill(slow)
    records = await stream(backend, app)
    results = [r for r in records if isinstance(r, TaskCompleted)]
    assert sorted(r.machine_id for r in results) == ["instance:A", "instance:B", "instance:C"]
    assert {r.attempt for r in results} == {1}  # delivered again, not retried
    exactly_once(records, 1)


@pytest.mark.parametrize(
    ("slow", "runs"),
    [("C", {"A": 1, "B": 1, "C": 2}), ("A", {"A": 2, "B": 2, "C": 2})],
    ids=["slow-last", "slow-first"],
)
async def test_a_killed_worker_is_given_again_the_tasks_from_its_oldest_unfinished_one(
    backend: Backend,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    slow: str,
    runs: dict[str, int],
) -> None:
    """Tasks A, B and C of one process share a task partition, in that order; one
    runs for minutes, the other two finish and their results commit. The worker
    is SIGKILLed and started again: the committed offset cannot pass the slow
    task, so it and every task after it run again (same task id and attempt,
    a second result recorded as ignored), and those before it run once."""
    app = make_app(backend, monkeypatch)
    transport = backend.transport()
    await transport.create_topics(app.topics.specs(app.task_types()))
    started = tmp_path / "started"
    marker = {"PROCESSION_TEST_STARTED_FILE": str(started)}
    first = spawn(
        "worker", backend, PROCESSION_TEST_SLOW_S="600", PROCESSION_TEST_SLOW_ONLY=slow, **marker
    )
    again: subprocess.Popen[bytes] | None = None
    try:
        async with all_but("worker", app, transport):
            await publish(app, transport, range(1, 2))
            await until(lambda: _results(backend, app, 2), timeout_s=60)  # committed
            await until(lambda: _lines(started, 3), timeout_s=30)  # the slow one runs
            kill(first)  # while SLOW runs
            again = spawn("worker", backend, **marker)
            await until(lambda: _at_least(backend, app, 1), timeout_s=60)
    finally:
        for proc in (first, again):
            if proc is not None and proc.poll() is None:
                kill(proc)
    records = await stream(backend, app)
    results = {r.task_id: r for r in records if isinstance(r, TaskCompleted)}
    started_runs = Counter(started.read_text().splitlines())
    ran = {results[t].machine_id.removeprefix("instance:"): n for t, n in started_runs.items()}
    assert ran == runs, f"runs per task: {ran}"
    assert {r.attempt for r in results.values()} == {1}  # delivered again, not retried
    ignored = [r for r in records if isinstance(r, InputIgnored)]
    # results: every run but the one killed; all but the first of each ignored
    assert len(ignored) == sum(runs.values()) - 1 - 3, ignored
    late = {"task not pending (duplicate or late result)", "after completion"}
    assert {r.reason for r in ignored} <= late, ignored
    exactly_once(records, 1)


async def _results(backend: Backend, app: Any, n: int) -> bool:
    return sum(isinstance(r, TaskCompleted) for r in await stream(backend, app)) >= n


async def _lines(path: Path, n: int) -> bool:
    return await asyncio.to_thread(
        lambda: path.exists() and len(path.read_text().splitlines()) >= n
    )


async def test_a_second_processor_joining_rebalances_without_duplicates(
    backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = make_app(backend, monkeypatch)
    rt = Runtime(app, backend.transport(), workers=1, concurrency=32)
    await rt.start()
    backend.runtimes.append(rt)
    second = Processor(app, backend.transport())
    try:
        for n in range(400):
            await rt.publish(RebaseFailed(rebase_id=str(n), instances=["A", "B", "C"]))
            if n == 100:
                await second.start()
        await until(
            lambda: _total(rt, second, 400),
            timeout_s=120,
        )
        assert second.metrics["decided"] > 0 and rt.processor.metrics["decided"] > 0
    finally:
        await second.stop()
    exactly_once(await stream(backend, app), 400)


async def _total(rt: Runtime, other: Processor, n: int) -> bool:
    return rt.processor.metrics["ProcessCompleted"] + other.metrics["ProcessCompleted"] >= n

"""What only a real broker does: replicas as pid 1, writers killed mid-transaction,
graceful stops, fencing. Each test names the figure it bounds."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from asyncio.subprocess import PIPE
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer

from procession import FencedError
from procession.examples import RebaseFailed
from procession.topics import TaskCompleted
from procession.workers import Processor, Router, Runtime, TopicPartition, Worker
from procession.workers._port import partition_for
from tests.conftest import KAFKA_BACKENDS, Backend, kafka_servers, until
from tests.test_kafka import (
    _at_least,
    _lines,
    all_but,
    exactly_once,
    exited,
    make_app,
    part_of,
    publish,
    spawn,
    stream,
)

pytestmark = pytest.mark.backends(*KAFKA_BACKENDS)

#: The bound the issue sets for the next input on a partition whose writer was killed.
RECOVERY_S = 15.0

#: The same on librdkafka when another member takes over (no restart under the
#: killed one's instance id): exactly-once v2 has no partition-level id to fence
#: the dead writer by, so its open transaction holds read_committed readers up
#: until the broker aborts it: transaction.timeout.ms (10 s) plus up to the
#: broker's scan interval (transaction.abort.timed.out.transaction.cleanup.interval.ms,
#: 10 s by default), beside the session timeout (10 s) that moves its partitions.
TAKEOVER_V2_S = 25.0

#: The bound for a static member (librdkafka, an instance id) killed and started
#: again under the same id: it gets its partitions back without a rebalance, and
#: its producer, same id, aborts the transaction the killed one left open.
RESTART_S = 3.0


#: Each process pid 1 of a namespace of its own; if unshare dies, so does it.
PID_NAMESPACE = ("unshare", "--pid", "--fork", "--kill-child", "--mount-proc")


def terminate_all(procs: list[subprocess.Popen[bytes]], timeout_s: float = 60) -> list[int]:
    """SIGTERM to each CLI process (inside ``unshare``, to its child), then their
    exit codes; one still running at the deadline is killed (its code: -9)."""
    for proc in procs:
        children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children")
        pids = children.read_text().split() if children.exists() else []
        for pid in pids or [str(proc.pid)]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    codes = []
    for proc in procs:
        try:
            codes.append(proc.wait(timeout=max(0.0, deadline - time.monotonic())))
        except subprocess.TimeoutExpired:
            proc.kill()  # unshare: --kill-child takes its namespace with it
            proc.wait()
            codes.append(-signal.SIGKILL)
    return codes


async def test_two_processors_and_two_workers_all_pid_1_complete_every_process(
    backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    probe = await asyncio.create_subprocess_exec(
        *PID_NAMESPACE, sys.executable, "-c", "import os; print(os.getpid())", stdout=PIPE
    )
    assert (await probe.communicate())[0].strip() == b"1"
    app = make_app(backend, monkeypatch)
    await backend.transport().create_topics(app.topics.specs(app.task_types()))
    roles = ("processor", "processor", "worker", "worker")
    procs = [spawn(r, backend, wrap=PID_NAMESPACE) for r in roles]
    try:
        await publish(app, backend.transport(), range(60))
        await until(lambda: _at_least(backend, app, 60), timeout_s=120)
        assert all(p.poll() is None for p in procs), [p.poll() for p in procs]
    finally:
        codes = terminate_all(procs)
    assert codes == [0, 0, 0, 0]
    exactly_once(await stream(backend, app), 60)


@pytest.mark.parametrize("role", ["worker", "router", "processor"])
async def test_a_writer_killed_mid_transaction_holds_its_partitions_up_for_seconds(
    backend: Backend, monkeypatch: pytest.MonkeyPatch, role: str
) -> None:
    """aiokafka: the killed writer's replacement fences it and aborts its open
    transaction; the next input on its partitions is decided within RECOVERY_S.
    librdkafka: the broker aborts it, within TAKEOVER_V2_S."""
    app = make_app(backend, monkeypatch)
    transport = backend.transport()
    await transport.create_topics(app.topics.specs(app.task_types()))
    args = ("--no-router",) if role == "processor" else ()
    doomed = spawn(role, backend, *args, PROCESSION_TEST_DIE_IN_TXN=role)
    replacement: Any = None
    try:
        async with all_but(role, app, transport):
            await publish(app, transport, range(3))
            await exited(doomed)
            assert doomed.returncode == -signal.SIGKILL  # it died inside its transaction
            killed = time.monotonic()
            replacement = part_of(role, app, transport)
            await replacement.start()
            await until(lambda: _at_least(backend, app, 3), timeout_s=60)
            recovered = time.monotonic() - killed
    finally:
        if doomed.poll() is None:
            doomed.kill()
        if replacement is not None:
            await replacement.stop()
    print(f"\n{role} killed mid-transaction: every process completed {recovered:.1f} s later")
    assert recovered < (RECOVERY_S if backend.name == "kafka" else TAKEOVER_V2_S)
    exactly_once(await stream(backend, app), 3)


@pytest.mark.backends("rdkafka")
@pytest.mark.parametrize("role", ["worker", "router", "processor"])
async def test_a_static_member_killed_mid_transaction_resumes_within_seconds_of_its_restart(
    backend: Backend, monkeypatch: pytest.MonkeyPatch, role: str
) -> None:
    """Killed inside a transaction, started again at once with the same
    PROCESSION_INSTANCE_ID: every process completes within RESTART_S of the kill,
    interpreter start included."""
    app = make_app(backend, monkeypatch)
    transport = backend.transport()
    await transport.create_topics(app.topics.specs(app.task_types()))
    args = ("--no-router",) if role == "processor" else ()
    instance = {"PROCESSION_INSTANCE_ID": f"{backend.prefix}-{role}-0"}
    doomed = spawn(role, backend, *args, PROCESSION_TEST_DIE_IN_TXN=role, **instance)
    restarted: Any = None
    try:
        async with all_but(role, app, transport):
            await publish(app, transport, range(3))
            await exited(doomed)
            killed = time.monotonic()
            restarted = spawn(role, backend, *args, **instance)
            assert doomed.returncode == -signal.SIGKILL  # it died inside its transaction
            await until(lambda: _at_least(backend, app, 3), timeout_s=60)
            recovered = time.monotonic() - killed
    finally:
        for proc in (doomed, restarted):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
    print(f"\n{role} killed mid-transaction, restarted: all completed {recovered:.1f} s later")
    assert recovered < RESTART_S
    exactly_once(await stream(backend, app), 3)


async def test_a_graceful_stop_mid_work_leaves_nothing_to_wait_for(
    backend: Backend, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """SIGTERM: running tasks finish, results commit, the group moves on at once;
    the next owner runs none of the tasks the stopped worker had started."""
    app = make_app(backend, monkeypatch)
    transport = backend.transport()
    await transport.create_topics(app.topics.specs(app.task_types()))
    started, rerun = tmp_path / "started", tmp_path / "rerun"
    worker = spawn(
        "worker", backend, PROCESSION_TEST_SLOW_S="0.5", PROCESSION_TEST_STARTED_FILE=str(started)
    )
    monkeypatch.setenv("PROCESSION_TEST_STARTED_FILE", str(rerun))  # the replacement's tasks
    replacement = Worker(app, transport, concurrency=64)
    try:
        async with all_but("worker", app, transport):
            await publish(app, transport, range(20))
            await until(lambda: _lines(started, 3), timeout_s=60)
            rest = await _handed_over(worker, replacement, backend, app, 20)
    finally:
        if worker.poll() is None:
            worker.kill()
        await replacement.stop()
    first = started.read_text().splitlines()
    then = rerun.read_text().splitlines() if rerun.exists() else []
    print(
        f"\nworker stopped with SIGTERM after starting {len(first)} of 60 tasks: "
        f"the rest completed {rest:.1f} s later"
    )
    assert worker.returncode == 0
    assert rest < 5.0  # a partition left behind would cost the 10 s session timeout
    records = await stream(backend, app)
    exactly_once(records, 20)
    again = sorted(set(first) & set(then))
    assert not again, f"{len(again)} of {len(first)} tasks started before SIGTERM ran again"
    assert len(set(first)) == len(first) and len(set(then)) == len(then)
    done = {r.task_id for r in records if isinstance(r, TaskCompleted)}
    assert len(done) == 60 and set(first) | set(then) == done  # each task ran once


async def test_a_processor_stopped_mid_work_hands_its_partitions_over_at_once(
    backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SIGTERM to a processor deciding: it commits or aborts what it has, leaves
    its group and exits 0; the next processor decides within seconds, and
    nothing is decided twice."""
    app = make_app(backend, monkeypatch)
    transport = backend.transport()
    await transport.create_topics(app.topics.specs(app.task_types()))
    monkeypatch.setenv("PROCESSION_TEST_SLOW_S", "0.2")  # tasks of this process's worker
    processor = spawn("processor", backend, "--no-router")
    replacement = Processor(app, transport)
    try:
        async with all_but("processor", app, transport):
            await publish(app, transport, range(20))
            await until(lambda: _at_least(backend, app, 1), timeout_s=60)  # it decides
            rest = await _handed_over(processor, replacement, backend, app, 20)
    finally:
        if processor.poll() is None:
            processor.kill()
        await replacement.stop()
    print(f"\nprocessor stopped with SIGTERM mid-work: the rest completed {rest:.1f} s later")
    assert processor.returncode == 0
    assert rest < 5.0  # a partition left behind would cost the 10 s session timeout
    exactly_once(await stream(backend, app), 20)


async def _handed_over(
    proc: subprocess.Popen[bytes],
    replacement: Processor | Worker,
    backend: Backend,
    app: Any,
    n: int,
) -> float:
    """SIGTERM ``proc``, wait for its exit and start ``replacement``: the seconds
    from the exit until ``n`` processes have completed."""
    proc.send_signal(signal.SIGTERM)
    await exited(proc, 30)
    stopped = time.monotonic()
    await replacement.start()
    await until(lambda: _at_least(backend, app, n), timeout_s=60)
    return time.monotonic() - stopped


@pytest.mark.parametrize("role", ["processor", "router", "worker"])
async def test_a_writer_fenced_while_it_owns_the_partition_stops_loudly(
    backend: Backend, monkeypatch: pytest.MonkeyPatch, role: str
) -> None:
    """A newer producer under a writer's transactional id, while the group still
    gives it the partition: its next commit stops the component with FencedError."""
    app = make_app(backend, monkeypatch)
    transport = backend.transport()
    await transport.create_topics(app.topics.specs(app.task_types()))
    router = Router(app, transport)
    processor = Processor(app, transport)
    worker = Worker(app, transport, concurrency=8)
    part = {"processor": processor, "router": router, "worker": worker}[role]
    parts: list[Any] = [router] if role == "router" else [router, processor]
    if role == "worker":
        parts.append(worker)
    for each in parts:
        await each.start()
    try:
        await publish(app, transport, range(1, 2))  # starts the producers of its partitions
        if role == "worker":  # its results committed: rebase 1 completed
            await until(lambda: _at_least(backend, app, 1), timeout_s=60)
        await until(lambda: _busy_over(part), timeout_s=60)
        # the transactional id its partition's commits go out under: the partition's
        # own (aiokafka, EOS v1) or the member's (librdkafka, EOS v2)
        if role == "processor":
            tp = TopicPartition(app.topics.process, partition_for("rebase:1", 3))
            zombie_of = processor.partitions[tp].producer.transactional_id
        elif role == "router":
            tp = TopicPartition(app.topics.inputs, partition_for("1", 3))
            zombie_of = router._writers._producers[tp].transactional_id
        else:
            tp = TopicPartition(app.topics.tasks("CloseInstance"), partition_for("rebase:1", 3))
            zombie_of = worker.writers._producers[tp].transactional_id
        usurper = transport.producer(zombie_of)
        await usurper.start()  # a newer owner of the same id, while the group says it is ours
        await usurper.stop()
        again = range(1, 2)  # the same event again: a commit on the fenced partition
        if role == "worker":  # a new process, whose tasks land on the fenced partition
            n = next(n for n in range(2, 100) if partition_for(f"rebase:{n}", 3) == tp.partition)
            again = range(n, n + 1)
        await publish(app, transport, again)
        assert part.crashed is not None
        try:
            error = await asyncio.wait_for(asyncio.shield(part.crashed), 30)
        except TimeoutError:
            pytest.fail(f"the {role} still runs 30 s after {zombie_of!r} was fenced")
    finally:
        for each in parts:
            await each.stop()
    assert isinstance(error, FencedError) and error.transactional_id == zombie_of


async def _busy_over(part: Any) -> bool:
    return not part.busy()


async def test_keys_and_headers_that_are_not_utf8_are_dead_lettered(
    backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Bytes no decoder accepts never stop a component: each record is a dead letter."""
    app = make_app(backend, monkeypatch)
    rt = Runtime(app, backend.transport(), workers=1)
    await rt.start()
    backend.runtimes.append(rt)
    raw = AIOKafkaProducer(bootstrap_servers=kafka_servers())
    await raw.start()
    try:
        body = b'{"rebase_id": "x", "instances": ["A"]}'
        good = [("procession-type", b"RebaseFailed")]
        await raw.send_and_wait(app.topics.inputs, body, key=b"\xff", headers=good)
        await raw.send_and_wait(app.topics.inputs, body, headers=[("procession-type", b"\xff")])
        await raw.send_and_wait(app.topics.inputs, body, headers=[*good, ("event-id", b"\xfe")])
        await raw.send_and_wait(app.topics.process, b"{}", key=b"\xff\xfe", partition=0)
    finally:
        await raw.stop()
    await rt.publish(RebaseFailed(rebase_id="ok", instances=["A"]))
    await until(lambda: _completed(rt, 2), timeout_s=60)  # "x" and "ok"
    dead = await backend.records(app.topics.dead_letter)
    reasons = sorted(dict(m.headers)["dlq-reason"].decode() for m in dead)
    assert [r.split(":")[:2] for r in reasons] == [
        ["cannot decode record (None)", " unknown record type None"],
        ["cannot decode record", " event-id header is not UTF-8"],
        ["cannot decode record", " procession-type header is not UTF-8"],
    ]
    (stray,) = [m for m in dead if m.value == b"{}"]  # its key kept byte for byte
    assert stray.key is not None and stray.key.encode("utf-8", "surrogateescape") == b"\xff\xfe"


async def _completed(rt: Runtime, n: int) -> bool:
    return rt.processor.metrics["ProcessCompleted"] >= n

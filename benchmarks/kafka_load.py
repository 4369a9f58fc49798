"""Drive order processes through a Kafka deployment and watch them complete.

Used for Procession on Kafka and for the floor alike: both read order events
from ``<prefix>.events`` and write a ``ProcessCompleted`` record (keyed by the
process id) to ``<prefix>.process``. Their processor and worker run in
subprocesses, so each has its own interpreter and its peak RSS is its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from benchmarks import order_app
from benchmarks.load import Result, closed_loop, peak_rss_mib
from benchmarks.order_app import order, process_id
from procession.workers._kafka import KafkaTransport

ROOT = Path(__file__).parent.parent
COMPLETED, FAILED = b"procession.ProcessCompleted", b"procession.ProcessFailed"
BATCH = b"procession.Decisions"


class Procs:
    """Subprocesses of one run; their peak RSS is read before they stop."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = {**os.environ, **env}
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def spawn(self, name: str, argv: Sequence[str]) -> None:
        prof = os.environ.get("BENCH_PROFILE_DIR")  # each subprocess under cProfile
        if prof:
            argv = ["-m", "cProfile", "-o", f"{prof}/{name}.prof", *argv]
        self.procs[name] = subprocess.Popen(
            [sys.executable, *argv], cwd=ROOT, env=self.env, stdin=subprocess.DEVNULL
        )

    def check(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited with {proc.returncode}")

    def peak_rss_mib(self) -> dict[str, float]:
        return {name: peak_rss_mib(proc.pid) for name, proc in self.procs.items()}

    def cpu_s(self) -> dict[str, float]:
        """CPU seconds (user and system) each subprocess has used so far."""
        return {name: cpu_s(proc.pid) for name, proc in self.procs.items()}

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def cpu_s(pid: int) -> float:
    """CPU seconds, user and system, process ``pid`` has used (Linux ``/proc``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def create_topics(servers: str, prefix: str) -> None:
    """The order app's topics under ``prefix`` (both deployments use the same)."""
    app = order_app.app(prefix)
    transport = KafkaTransport(servers)
    try:
        await transport.create_topics(app.topics.specs(app.task_types()))
    finally:
        await transport.close()


@contextlib.contextmanager
def running(env: dict[str, str]) -> Iterator[Procs]:
    procs = Procs(env)
    try:
        yield procs
    finally:
        procs.stop()


async def drive(
    servers: str,
    prefix: str,
    n: int,
    window: int,
    *,
    procs: Procs,
    system: str,
    warmup: int | None = None,
    place: Callable[[int], Awaitable[None]] | None = None,
) -> Result:
    """Publish ``n`` orders, at most ``window`` open; wait for every ProcessCompleted.

    ``warmup`` orders go first, unmeasured (by default twice the window, at
    least 20), so group joins and producer starts are not counted: with 20, the
    first measured window of every system, floors included, took 550-700 ms and
    was the whole p99 at 50 in flight. Records are counted over all orders,
    per order. ``place``
    starts order ``i`` some other way than producing its event (a command to
    an event-sourced service, whose outbox publishes it).
    """
    process_topic, events_topic = f"{prefix}.process", f"{prefix}.events"
    warmup = max(20, 2 * window) if warmup is None else warmup
    loop = asyncio.get_running_loop()
    waiting: dict[bytes, asyncio.Future[None]] = {}
    producer = AIOKafkaProducer(
        bootstrap_servers=servers, acks="all", enable_idempotence=True, linger_ms=2
    )
    consumer = AIOKafkaConsumer(
        bootstrap_servers=servers, isolation_level="read_committed", enable_auto_commit=False
    )
    await producer.start()
    await consumer.start()
    try:
        parts = consumer.partitions_for_topic(process_topic) or set()
        if not parts:
            await consumer._client.force_metadata_update()
            parts = consumer.partitions_for_topic(process_topic) or set()
        tps = [TopicPartition(process_topic, p) for p in sorted(parts)]
        consumer.assign(tps)
        for tp, off in (await consumer.beginning_offsets(tps)).items():
            consumer.seek(tp, off)
        watcher = asyncio.create_task(_watch(consumer, waiting, procs))
        watcher.add_done_callback(lambda t: _fail_all(t, waiting))

        async def one(i: int) -> None:
            if watcher.done():  # it failed: _fail_all told the open orders why
                raise RuntimeError("the completion watcher stopped")
            fut = waiting[process_id(i).encode()] = loop.create_future()
            if place is not None:
                await place(i)
                await fut
                return
            event = order(i)
            await producer.send(
                events_topic,
                value=event.model_dump_json().encode(),
                key=event.order_id.encode(),
                headers=[("procession-type", b"OrderPlaced")],
            )
            await fut

        try:
            async with asyncio.timeout(max(60.0, n / 5)):
                await closed_loop(warmup, window, lambda k: one(n + k))
                before = {**procs.cpu_s(), "driver": cpu_s(os.getpid())}
                seconds, latencies = await closed_loop(n, window, one)
                after = {**procs.cpu_s(), "driver": cpu_s(os.getpid())}
                cpu = {k: (v - before[k]) * 1000 / n for k, v in after.items()}
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
        rss = procs.peak_rss_mib()
    finally:
        await producer.stop()
        await consumer.stop()
    records = await count_records(servers, prefix)
    per_order = records / (n + warmup)
    return Result(
        system, n, seconds, latencies, records_per_order=per_order, rss_mib=rss, cpu_ms=cpu
    )


def _fail_all(task: asyncio.Task[None], waiting: dict[bytes, asyncio.Future[None]]) -> None:
    exc = None if task.cancelled() else task.exception()
    for fut in waiting.values():
        if exc is not None and not fut.done():
            fut.set_exception(exc)


async def _watch(
    consumer: AIOKafkaConsumer, waiting: dict[bytes, asyncio.Future[None]], procs: Procs
) -> None:
    while True:
        got = await consumer.getmany(timeout_ms=200, max_records=5000)
        if not got:
            procs.check()
        for records in got.values():
            for r in records:
                kind = next((v for k, v in r.headers if k == "procession-type"), b"")
                if kind == BATCH:  # decisions of one input: the completion may be inside
                    kind = next((k for k in (COMPLETED, FAILED) if k in (r.value or b"")), kind)
                if kind == COMPLETED:
                    fut = waiting.pop(r.key, None)
                    if fut is not None and not fut.done():
                        fut.set_result(None)
                elif kind == FAILED:
                    raise RuntimeError(f"process {r.key!r} failed")


async def count_records(servers: str, prefix: str) -> int:
    """Every committed record in the run's topics (transaction markers not counted)."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=servers, isolation_level="read_committed", enable_auto_commit=False
    )
    await consumer.start()
    try:
        return await _count(consumer, prefix)
    finally:
        await consumer.stop()


async def _count(consumer: AIOKafkaConsumer, prefix: str) -> int:
    topics = sorted(t for t in await consumer.topics() if t.startswith(f"{prefix}."))
    await consumer._client.force_metadata_update()
    tps = [
        TopicPartition(t, p) for t in topics for p in sorted(consumer.partitions_for_topic(t) or ())
    ]
    consumer.assign(tps)
    ends = await consumer.end_offsets(tps)
    for tp, off in (await consumer.beginning_offsets(tps)).items():
        consumer.seek(tp, off)
    count, deadline = 0, time.monotonic() + 120
    while [tp for tp in tps if await consumer.position(tp) < ends[tp]]:
        if time.monotonic() > deadline:
            raise TimeoutError("counting records took over 120 s")
        got = await consumer.getmany(timeout_ms=500, max_records=10000)
        count += sum(len(v) for v in got.values())
    return count

"""Procession on the in-memory runtime: the cost of our own code with no broker."""

from __future__ import annotations

import asyncio
import contextlib

from benchmarks import order_app
from benchmarks.load import Result, closed_loop, peak_rss_mib
from procession.topics._codec import DEFAULT_CODEC
from procession.topics._records import ProcessCompleted, ProcessFailed
from procession.workers import MemoryLog, MemoryTransport, Runtime
from procession.workers._wire import record_of


async def run(n: int, window: int, warmup: int = 20) -> Result:
    """``n`` orders, at most ``window`` open, through router, processor and a worker."""
    app = order_app.app("bench")
    log = MemoryLog()
    transport = MemoryTransport(log)
    loop = asyncio.get_running_loop()
    waiting: dict[str, asyncio.Future[None]] = {}
    async with Runtime(app, transport, concurrency=256) as rt:
        watch = await transport.consumer("bench.watch", [app.topics.process])

        async def watcher() -> None:
            while True:
                for msg in await watch.fetch(0.1, 5000):
                    kind = dict(msg.headers).get("procession-type")
                    if kind not in (ProcessCompleted.TYPE.encode(), ProcessFailed.TYPE.encode()):
                        continue
                    rec = record_of(msg, DEFAULT_CODEC)
                    if isinstance(rec, ProcessCompleted | ProcessFailed):
                        fut = waiting.pop(rec.process_id, None)
                        if isinstance(rec, ProcessFailed) and fut is not None:
                            fut.set_exception(RuntimeError(f"{rec.process_id} failed"))
                        elif fut is not None:
                            fut.set_result(None)

        async def one(i: int) -> None:
            fut = waiting[order_app.process_id(i)] = loop.create_future()
            await rt.publish(order_app.order(i))
            await fut

        task = asyncio.create_task(watcher())
        try:
            await closed_loop(warmup, window, lambda k: one(n + k))
            seconds, latencies = await closed_loop(n, window, one)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await watch.stop()
        names = [spec.name for spec in app.topics.specs(app.task_types())]
        records = sum(log.end_offset(tp) for tp in log.topic_partitions(names))
    rss = {"processor and worker": peak_rss_mib()}
    return Result(
        "Procession in memory", n, seconds, latencies, records / (n + warmup), rss_mib=rss
    )

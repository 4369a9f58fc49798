"""Completed demo processes per second on the in-memory runtime, and memory after many.

A closed loop: at most ``window`` processes are in flight, as a steady load
would keep them; publishing everything at once would only measure a backlog
(and let the saga's task timeouts fire, as they should).
"""

from __future__ import annotations

import asyncio
import gc
import time
from typing import Any

import psutil

from procession.examples import RebaseFailed, rebase_saga
from procession.workers import App, MemoryLog, MemoryTransport, Runtime, TaskCall


async def close(call: TaskCall) -> dict[str, Any]:
    return {"closed": call.payload["instance"]}


async def run_memory(
    processes: int, *, window: int = 2000, retain_records: int | None = None
) -> dict[str, float]:
    """Run ``processes`` rebase processes to completion; report rate and memory."""
    app = App([rebase_saga()], {"CloseInstance": close})
    transport = MemoryTransport(MemoryLog(retain_records=retain_records))
    async with Runtime(app, transport) as rt:
        metrics = rt.processor.metrics
        start = time.perf_counter()
        for n in range(processes):
            while n - metrics["ProcessCompleted"] - metrics["ProcessFailed"] >= window:
                await asyncio.sleep(0.001)
            await rt.publish(RebaseFailed(rebase_id=str(n), instances=["A", "B", "C"]))
        await rt.settle(timeout_s=3600)
        seconds = time.perf_counter() - start
        completed, failed = metrics["ProcessCompleted"], metrics["ProcessFailed"]
        stored = sum(len(p.store) for p in rt.processor.partitions.values())
    gc.collect()
    rss = psutil.Process().memory_info().rss / 2**20
    if completed != processes:
        raise RuntimeError(f"{completed} of {processes} processes completed, {failed} failed")
    return {
        "processes": processes,
        "seconds": seconds,
        "processes_per_s": processes / seconds,
        "rss_mib": rss,
        "stored_states": stored,
    }


if __name__ == "__main__":
    print(asyncio.run(run_memory(5000)))

"""Completed demo processes per second on Kafka (needs KAFKA_BOOTSTRAP_SERVERS)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from procession.examples import RebaseFailed, rebase_saga
from procession.topics._layout import Topics
from procession.workers import App, Runtime, TaskCall
from procession.workers._kafka import KafkaTransport


async def close(call: TaskCall) -> dict[str, Any]:
    return {"closed": call.payload["instance"]}


async def run_kafka(servers: str, processes: int, *, batch: int = 200) -> dict[str, float]:
    """Publish ``processes`` rebase events in batches; time until all are completed."""
    topics = Topics(f"bench-{int(time.time())}", partitions=6, task_partitions=6)
    app = App([rebase_saga()], {"CloseInstance": close}, topics=topics)
    transport = KafkaTransport(servers)
    try:
        async with Runtime(app, transport, workers=2, concurrency=64) as rt:
            metrics = rt.processor.metrics
            start = time.perf_counter()
            for first in range(0, processes, batch):
                events = [
                    RebaseFailed(rebase_id=str(n), instances=["A", "B", "C"])
                    for n in range(first, min(first + batch, processes))
                ]
                await rt.publish_many(events)
            async with asyncio.timeout(600):
                while metrics["ProcessCompleted"] < processes:
                    await asyncio.sleep(0.01)
            seconds = time.perf_counter() - start
            transactions = metrics["transactions"]
    finally:
        await transport.close()
    return {
        "processes": processes,
        "seconds": seconds,
        "processes_per_s": processes / seconds,
        "processor_transactions": transactions,
    }


if __name__ == "__main__":
    import os

    print(asyncio.run(run_kafka(os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092"), 2000)))

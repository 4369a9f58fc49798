"""Procession on Kafka: ``procession processor`` and ``procession worker`` subprocesses."""

from __future__ import annotations

import uuid

from benchmarks.kafka_load import create_topics, drive, running
from benchmarks.load import Result


async def run(servers: str, n: int, window: int, *, concurrency: int = 256) -> Result:
    """The order saga for ``n`` orders; one processor (with its router) and one worker."""
    prefix = f"bench-{uuid.uuid4().hex[:8]}"
    await create_topics(servers, prefix)
    cli = ["-m", "procession._cli", "--log-level", "WARNING"]
    target = ["benchmarks.order_app:app", "--bootstrap-servers", servers]
    with running({"BENCH_PREFIX": prefix}) as procs:
        procs.spawn("processor", [*cli, "processor", *target])
        procs.spawn("worker", [*cli, "worker", *target, "--concurrency", str(concurrency)])
        return await drive(servers, prefix, n, window, procs=procs, system="Procession on Kafka")

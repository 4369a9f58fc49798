"""Procession on Kafka: ``procession processor`` and ``procession worker`` subprocesses."""

from __future__ import annotations

import uuid

from benchmarks import order_app
from benchmarks.kafka_load import drive, running
from benchmarks.load import Result
from procession.workers._kafka import KafkaTransport


async def run(servers: str, n: int, window: int, *, concurrency: int = 256) -> Result:
    """The order saga for ``n`` orders; one processor (with its router) and one worker."""
    prefix = f"bench-{uuid.uuid4().hex[:8]}"
    app = order_app.app(prefix)
    transport = KafkaTransport(servers)
    try:
        await transport.create_topics(app.topics.specs(app.task_types()))
    finally:
        await transport.close()
    cli = ["-m", "procession._cli", "--log-level", "WARNING"]
    target = ["benchmarks.order_app:app", "--bootstrap-servers", servers]
    with running({"BENCH_PREFIX": prefix}) as procs:
        procs.spawn("processor", [*cli, "processor", *target])
        procs.spawn("worker", [*cli, "worker", *target, "--concurrency", str(concurrency)])
        return await drive(servers, prefix, n, window, procs=procs, system="Procession on Kafka")

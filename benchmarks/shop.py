"""The event-sourced shop end to end on Kafka: command -> store and outbox ->
relay -> topic -> saga -> tasks on the aggregates -> completed.

The processor and the worker run ``procession.examples.shop:app`` as
subprocesses (the same commands as the bare Procession-on-Kafka run); this
process places the orders (the aggregate's command, in a thread pool), relays
the outbox and watches for each order's ``ProcessCompleted``. Latency is from
the command to the completion.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor

from benchmarks.kafka_load import create_topics, drive, running
from benchmarks.load import Result
from benchmarks.order_app import PARTITIONS
from procession.eventsourcery import OutboxRelay
from procession.examples.shop import Shop
from procession.publish import SyncPublisher
from procession.topics._layout import Topics


async def run(
    servers: str, n: int, window: int, db: str, *, concurrency: int = 32, workers: int = 1
) -> Result:
    prefix = f"shop-{uuid.uuid4().hex[:8]}"
    await create_topics(servers, prefix)
    shop = Shop(db, topics=Topics(prefix, partitions=PARTITIONS, task_partitions=PARTITIONS))
    cli = ["-m", "procession._cli", "--log-level", "WARNING"]
    target = ["procession.examples.shop:app", "--bootstrap-servers", servers]
    env = {"SHOP_DB": db, "SHOP_PREFIX": prefix, "SHOP_PARTITIONS": str(PARTITIONS)}
    stop = threading.Event()
    loop = asyncio.get_running_loop()
    commands = ThreadPoolExecutor(max_workers=8, thread_name_prefix="shop-command")

    async def place(i: int) -> None:
        def command() -> None:
            items = [f"sku-{i % 200}", f"sku-{(i + 7) % 200}"]
            shop.place_order(f"o-{i}", customer=f"c-{i % 500}", amount=100 + i % 50, items=items)

        await loop.run_in_executor(commands, command)

    with running(env) as procs, SyncPublisher(shop.topics, servers) as publisher:
        procs.spawn("processor", [*cli, "processor", *target])
        for w in range(workers):
            argv = [*cli, "worker", *target, "--concurrency", str(concurrency)]
            procs.spawn("worker" if workers == 1 else f"worker-{w + 1}", argv)
        relay = OutboxRelay(shop.unit_of_work, publisher)
        relaying = asyncio.create_task(asyncio.to_thread(relay.run, stop, idle_s=0.005))
        try:
            result = await drive(
                servers, prefix, n, window, procs=procs, system="shop", place=place
            )
        finally:
            stop.set()
            await relaying
            commands.shutdown()
    shop.engine.dispose()
    return result


def store_cost(n: int = 200) -> dict[str, float]:
    """Milliseconds of one thread's time per command and per task handler on SQLite,
    with no Kafka and no saga: what the event store itself costs per order."""
    import tempfile  # noqa: PLC0415
    import time  # noqa: PLC0415

    from procession.workers import TaskCall  # noqa: PLC0415

    def call(task: str, i: int, payload: dict[str, object]) -> TaskCall:
        return TaskCall(task, f"{task}-{i}", 1, payload, f"order:o-{i}", "m", "c")

    with tempfile.TemporaryDirectory() as tmp:
        shop = Shop(f"sqlite:///{tmp}/shop.db")
        steps = {
            "place the order": lambda i: shop.place_order(
                f"o-{i}", customer=f"c-{i % 500}", amount=10, items=[f"sku-{i % 200}"]
            ),
            "ReserveStock": lambda i: shop.reserve_stock(
                call("ReserveStock", i, {"order": f"o-{i}", "items": [f"sku-{i % 200}"]})
            ),
            "ChargeCard": lambda i: shop.charge_card(
                call("ChargeCard", i, {"order": f"o-{i}", "amount": 10})
            ),
            "Ship": lambda i: shop.ship(call("Ship", i, {"order": f"o-{i}"})),
        }
        out = {}
        for name, step in steps.items():
            started = time.perf_counter()
            for i in range(n):
                step(i)
            out[name] = (time.perf_counter() - started) / n * 1000
        shop.engine.dispose()
    return out

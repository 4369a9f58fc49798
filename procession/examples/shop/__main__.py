"""``python -m procession.examples.shop``: the event-sourced shop end to end.

Places orders through the aggregate, relays the outbox, runs the order saga
and its workers against the same database, waits for every order to complete
and checks the aggregates: each order shipped, charged once, its stock held
once. In memory by default; ``--bootstrap-servers`` (or
``KAFKA_BOOTSTRAP_SERVERS``) runs it on Kafka.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter

from procession.eventsourcery import OutboxRelay
from procession.publish import Publisher, SyncPublisher
from procession.topics._layout import Topics
from procession.workers import Runtime
from procession.workers._port import Transport

from . import STOCK, Shop


def order_items(i: int) -> list[str]:
    return [f"sku-{i % 50}", f"sku-{(i + 7) % 50}"]


async def run(shop: Shop, orders: int, transport: Transport | None) -> str:
    app = shop.app()
    async with Runtime(app, transport, concurrency=32) as rt:
        publisher = Publisher(app.topics, rt.transport)
        await publisher.start()
        loop = asyncio.get_running_loop()
        relay = OutboxRelay(shop.unit_of_work, SyncPublisher.on_loop(publisher, loop))
        stop = threading.Event()
        relaying = asyncio.create_task(asyncio.to_thread(relay.run, stop))
        started = time.perf_counter()
        try:

            def place() -> None:
                for i in range(orders):
                    shop.place_order(
                        f"o-{i}", customer=f"c-{i % 10}", amount=10 + i % 90, items=order_items(i)
                    )

            await asyncio.to_thread(place)
            for i in range(orders):
                state = await rt.wait(f"order:o-{i}", timeout_s=max(60.0, orders / 5))
                if state is None or state.status != "completed":
                    raise SystemExit(f"order o-{i} did not complete: {state}")
            seconds = time.perf_counter() - started
        finally:
            stop.set()
            await relaying
            await publisher.close()
    return report(shop, orders, seconds, relay.published)


def report(shop: Shop, orders: int, seconds: float, published: int) -> str:
    charges = sum(shop.wallet(f"c-{c}").charges for c in range(10))
    held = Counter(s for i in range(orders) for s in set(order_items(i)))
    stock_ok = all(shop.stock(s).available == STOCK - n for s, n in held.items())
    shipped = sum(shop.order(f"o-{i}").shipped for i in range(orders))
    ok = charges == orders and stock_ok and shipped == orders and shop.outbox_size() == 0
    lines = [
        f"{orders} orders completed in {seconds:.1f} s ({orders / seconds:.0f} orders/s), "
        f"{published} events relayed from the outbox",
        f"aggregates: {shipped} shipped, {charges} card charges, stock held once per order: "
        f"{'yes' if stock_ok else 'NO'}, outbox left: {shop.outbox_size()}",
        "every effect applied once" if ok else "MISMATCH: an effect was lost or applied twice",
    ]
    if not ok:
        raise SystemExit("\n".join(lines))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m procession.examples.shop")
    parser.add_argument("--orders", type=int, default=200)
    parser.add_argument("--db", help="SQLAlchemy URL (default: SQLite in a fresh temp dir)")
    parser.add_argument("--bootstrap-servers", default=os.environ.get("KAFKA_BOOTSTRAP_SERVERS"))
    args = parser.parse_args(argv)
    if args.orders < 1:
        parser.error("--orders must be at least 1")
    db = args.db or f"sqlite:///{tempfile.mkdtemp(prefix='shop-')}/shop.db"
    prefix = f"shop-{uuid.uuid4().hex[:8]}"  # a durable log keeps earlier runs' orders
    shop = Shop(db, topics=Topics(prefix, partitions=6, task_partitions=6))
    where = f"Kafka at {args.bootstrap_servers}" if args.bootstrap_servers else "in memory"
    print(f"shop: {args.orders} orders, database {db}, {where}, topics {prefix}.*", flush=True)
    print(asyncio.run(_main(shop, args.orders, args.bootstrap_servers)))
    return 0


async def _main(shop: Shop, orders: int, servers: str | None) -> str:
    if not servers:
        return await run(shop, orders, None)
    from procession.workers._kafka_client import kafka_transport  # noqa: PLC0415 - a Kafka extra

    transport = kafka_transport(servers)
    try:
        return await run(shop, orders, transport)
    finally:
        await transport.close()


if __name__ == "__main__":
    sys.exit(main())

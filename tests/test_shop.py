"""The event-sourced shop end to end: store -> outbox -> topic -> saga -> task ->
store, with the outbox publishing a batch twice and tasks delivered again after
their effect committed."""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import subprocess
import threading
from collections import Counter
from collections.abc import Iterator, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from procession import TaskError
from procession.eventsourcery import OutboxRelay
from procession.examples.shop import STOCK, Shop
from procession.publish import Event, Publisher, SyncPublisher
from procession.topics import DomainEvent, InputIgnored, ProcessCompleted, TransitionPlanned
from procession.workers import App, Runtime, TaskCall
from tests.conftest import Backend, kafka_servers, until

ORDERS = 40
_databases = itertools.count(1)
TASKS = ("ReserveStock", "ReleaseStock", "ChargeCard", "RefundCard", "Ship")


class AckedThenLost:
    """A publisher whose first batch reaches the broker but whose caller then
    fails, as a relay that died between the broker's ack and the database commit."""

    def __init__(self, inner: SyncPublisher) -> None:
        self.inner, self.lost = inner, 0

    def publish_many(self, events: Sequence[Event]) -> None:
        self.inner.publish_many(events)
        if self.lost == 0:
            self.lost = len(events)
            raise ConnectionError("relay lost before its outbox commit (injected)")


def effect_then_failure(shop: Shop) -> tuple[dict[str, Any], Counter[str]]:
    """Handlers whose first run of each task commits its effect and then fails,
    so every task runs again with the same task id."""
    runs: Counter[str] = Counter()
    lock = threading.Lock()

    def wrap(handler: Any) -> Any:
        def run(call: TaskCall) -> Any:
            result = handler(call)
            with lock:
                runs[call.task_id] += 1
                first = runs[call.task_id] == 1
            if first:
                raise TaskError("connection lost after the commit (injected)", retryable=True)
            return result

        return run

    return {name: wrap(h) for name, h in shop.handlers().items()}, runs


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """One throwaway PostgreSQL server for the session (the benchmark's helper)."""
    from benchmarks.peers import postgres  # noqa: PLC0415

    with postgres.postgres() as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty database of each kind."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/shop.db"
        return
    import sqlalchemy  # noqa: PLC0415

    server: str = request.getfixturevalue("postgres_server")
    name = f"shop_{os.getpid()}_{next(_databases)}"
    admin = sqlalchemy.create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f"CREATE DATABASE {name}")
    try:
        yield f"{server.rsplit('/', 1)[0]}/{name}"
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f"DROP DATABASE {name} WITH (FORCE)")
        admin.dispose()


async def test_every_order_completes_each_event_decided_once_each_effect_applied_once(
    backend: Backend, database: str
) -> None:
    shop = Shop(database, topics=backend.topics())
    handlers, runs = effect_then_failure(shop)
    app = App(shop.app().sagas.values(), handlers, topics=shop.topics)  # type: ignore[arg-type]
    rt = await backend.runtime(app)
    publisher = Publisher(app.topics, backend.transport())
    await publisher.start()
    flaky = AckedThenLost(SyncPublisher.on_loop(publisher, asyncio.get_running_loop()))
    relay = OutboxRelay(shop.unit_of_work, flaky, batch=15)

    def place() -> None:
        for i in range(ORDERS):
            items = [f"sku-{i % 5}", f"sku-{(i + 2) % 5}"]
            shop.place_order(f"o-{i}", customer=f"c-{i % 3}", amount=10 + i, items=items)

    await asyncio.to_thread(place)  # a backlog: the relay's first batch is full
    assert shop.outbox_size() == ORDERS
    stop = threading.Event()
    relaying = asyncio.create_task(asyncio.to_thread(relay.run, stop, backoff_s=(0.01, 0.05)))
    try:
        async with asyncio.timeout(120):
            for i in range(ORDERS):  # retries wait on backoff timers: move the clock on
                while (state := await rt.state(f"order:o-{i}")) is None or state.status != (
                    "completed"
                ):
                    assert not relaying.done(), "the relay stopped"
                    await rt.advance(timedelta(seconds=1))
    finally:
        stop.set()
        await relaying
        await publisher.close()

    assert flaky.lost == 15 and relay.failures == 1 and shop.outbox_size() == 0
    decided: Counter[tuple[str, str, str, int]] = Counter()
    copies: Counter[str] = Counter()
    duplicates = 0
    for i in range(ORDERS):
        history = await rt.history(f"order:o-{i}")
        assert sum(isinstance(r, ProcessCompleted) for r in history) == 1
        events = [r for r in history if isinstance(r, DomainEvent)]
        copies.update(e.event_id for e in events)
        duplicates += sum(isinstance(r, InputIgnored) and r.reason == "duplicate" for r in history)
        for r in history:
            if isinstance(r, TransitionPlanned):
                decided[(r.process_id, r.machine_id, r.transition, r.attempt)] += 1
    # the first batch reached the topic twice and was decided once
    assert sorted(Counter(copies.values()).items()) == [(1, ORDERS - 15), (2, 15)]
    assert duplicates == 15
    # each transition planned once per attempt: the injected failure, then the retry
    assert set(decided.values()) == {1} and len(decided) == 2 * 3 * ORDERS
    assert {key[3] for key in decided} == {1, 2}
    # every task ran twice (the first run's effect committed) and applied once
    assert len(runs) == 3 * ORDERS and set(runs.values()) == {2}
    wallets = [shop.wallet(f"c-{c}") for c in range(3)]
    assert sum(w.charges for w in wallets) == ORDERS
    assert {o for w in wallets for o in w.charged} == {f"o-{i}" for i in range(ORDERS)}
    held = Counter(s for i in range(ORDERS) for s in {f"sku-{i % 5}", f"sku-{(i + 2) % 5}"})
    for sku, n in held.items():
        assert shop.stock(sku).available == STOCK - n
    assert all(shop.order(f"o-{i}").shipped for i in range(ORDERS))
    shop.engine.dispose()


def test_a_relay_refuses_a_nonsense_batch() -> None:
    with pytest.raises(ValueError, match="batch must be at least 1"):
        OutboxRelay(Shop("sqlite://").unit_of_work, object(), batch=0)  # type: ignore[arg-type]


@pytest.mark.backends("kafka")
async def test_a_worker_killed_after_its_effect_committed_does_not_charge_twice(
    backend: Backend, tmp_path: Path
) -> None:
    from tests.test_cli import has, spawn  # noqa: PLC0415

    db, marker = f"sqlite:///{tmp_path}/shop.db", tmp_path / "crashed"
    shop = Shop(db, topics=backend.topics())
    app = App(shop.app().sagas.values(), {}, topics=shop.topics, external=TASKS)  # type: ignore[arg-type]
    await backend.transport().create_topics(app.topics.specs(app.task_types()))
    for i in range(10):
        shop.place_order(f"o-{i}", customer="c-1", amount=5, items=["sku-1"])
    env = {"SHOP_DB": db, "SHOP_CRASH_MARKER": str(marker)}

    def start_worker(n: int) -> subprocess.Popen[bytes]:
        args = ("worker", "tests.shop_app:app", "--bootstrap-servers", kafka_servers())
        os.environ.update(env)  # spawn passes the test's environment on
        try:
            return spawn(*args, prefix=backend.prefix, stderr=tmp_path / f"worker-{n}.log")
        finally:
            for name in env:
                del os.environ[name]

    worker = start_worker(1)
    rt = Runtime(app, backend.transport(), workers=0)  # the router and the processor
    await rt.start()
    try:
        with SyncPublisher(app.topics, kafka_servers()) as publisher:
            assert (
                await asyncio.to_thread(OutboxRelay(shop.unit_of_work, publisher).relay_once) == 10
            )
        await until(lambda: has(marker, "-"), timeout_s=60)
        assert await asyncio.to_thread(worker.wait, 30) == -signal.SIGKILL
        worker = start_worker(2)
        for i in range(10):
            try:
                state = await rt.wait(f"order:o-{i}", timeout_s=60)
            except TimeoutError as exc:  # what the workers said is the diagnosis
                logs = {n: (tmp_path / f"worker-{n}.log").read_text()[-3000:] for n in (1, 2)}
                raise AssertionError(f"{exc}; the workers' logs: {logs}") from exc
            assert state is not None and state.status == "completed", (i, state)
        charged = marker.read_text()
        plans = [
            r
            for i in range(10)
            for r in await rt.history(f"order:o-{i}")
            if isinstance(r, TransitionPlanned) and r.task_type == "ChargeCard"
        ]
    finally:
        await rt.stop()
        worker.terminate()
        await asyncio.to_thread(worker.wait, 30)
    # the killed task was delivered again (attempt 1, not a retry) and charged once
    assert charged in {p.task_id for p in plans} and {p.attempt for p in plans} == {1}
    wallet = shop.wallet("c-1")
    assert wallet.charges == 10 and sorted(wallet.charged) == sorted(f"o-{i}" for i in range(10))

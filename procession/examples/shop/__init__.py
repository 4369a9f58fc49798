"""An event-sourced shop driven by the order saga: the whole loop.

A command (:meth:`Shop.place_order`) stores ``OrderPlaced`` in the order's
stream and, in the same database transaction, in the outbox. An
:class:`~procession.eventsourcery.OutboxRelay` publishes the outbox to the
app's input topic; the order saga (``procession.examples.order_saga``) plans
``ReserveStock`` and ``ChargeCard``, then ``Ship``; their handlers load the
stock, wallet and order aggregates with :func:`~procession.eventsourcery.once`
and save what they emitted, tagged with the task id, so a task delivered again
changes nothing.

Run it end to end (in memory, or on Kafka with ``--bootstrap-servers``)::

    python -m procession.examples.shop --orders 200

or serve it with the ``procession`` command (``SHOP_DB`` names the database)::

    SHOP_DB=sqlite:///shop.db procession worker procession.examples.shop:app
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any, TypeVar

from event_sourcery import StreamUUID
from event_sourcery.event_sourcing import Aggregate, Repository
from event_sourcery.exceptions import ConcurrentStreamWriteError
from event_sourcery_sqlalchemy import SQLAlchemyBackend, configure_models
from event_sourcery_sqlalchemy.models.default import DefaultOutboxEntry
from sqlalchemy import Engine, create_engine, event, func, select
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import DeclarativeBase, Session

from procession.eventsourcery import once, publishes
from procession.examples.order import order_saga
from procession.topics._layout import Topics
from procession.workers import App, TaskCall

from .domain import (
    Order,
    OrderPlaced,
    Stock,
    Wallet,
    order_stream,
    stock_stream,
    wallet_stream,
)

A = TypeVar("A", bound=Aggregate)
T = TypeVar("T")

#: Units of each SKU the shop starts with.
STOCK = 1_000_000


class Base(DeclarativeBase):
    """The shop's tables: python-event-sourcery's events, streams and outbox."""


configure_models(Base)


class Shop:
    """The order service: its database, its one command, and its task handlers.

    Example:
        >>> shop = Shop("sqlite://")  # an in-memory database
        >>> shop.place_order("o-1", customer="c-1", amount=30, items=["sku-1"])
        >>> shop.order("o-1").placed.amount
        30
        >>> shop.outbox_size()
        1
    """

    def __init__(self, url: str = "sqlite:///shop.db", *, topics: Topics | None = None) -> None:
        self.url = url
        self.topics = topics or Topics("shop")
        self.engine = _engine(url)
        self._writer: AbstractContextManager[Any] = (
            threading.Lock() if url.startswith("sqlite") else nullcontext()
        )
        Base.metadata.create_all(self.engine)

    @contextmanager
    def unit_of_work(self) -> Iterator[SQLAlchemyBackend]:
        """One database transaction, and an event store (with the outbox) on it."""
        # SQLite has one writer at a time and makes the others sleep and poll;
        # this process's own writers queue here instead, woken as soon as it is free
        with self._writer, Session(self.engine) as session, session.begin():
            yield SQLAlchemyBackend().configure(session).with_outbox(publishes(OrderPlaced))

    # -- the command ----------------------------------------------------------

    def place_order(self, order_id: str, *, customer: str, amount: int, items: list[str]) -> None:
        """Store ``OrderPlaced`` (and its outbox entry) in one transaction."""
        with self.unit_of_work() as backend:
            repo = Repository[Order](backend.event_store)
            with repo.aggregate(order_stream(order_id), Order()) as order:
                order.aggregate.place(order_id, customer, amount, items)

    # -- the task handlers: each effect once per task id ------------------------

    def reserve_stock(self, call: TaskCall) -> dict[str, Any]:
        order_id, items = call.payload["order"], call.payload["items"]

        def reserve(backend: SQLAlchemyBackend) -> None:
            for sku in sorted(set(items)):
                with once(backend.event_store, Stock(STOCK), stock_stream(sku), call.task_id) as s:
                    if not s.applied_before:
                        s.aggregate.reserve(order_id)

        self._retrying(reserve)
        return {"order": order_id, "reserved": sorted(set(items))}

    def release_stock(self, call: TaskCall) -> dict[str, Any]:
        order_id = _order_id(call)
        items: list[str] = []

        def release(backend: SQLAlchemyBackend) -> None:
            items[:] = _order(backend, order_id).items()
            for sku in items:
                with once(backend.event_store, Stock(STOCK), stock_stream(sku), call.task_id) as s:
                    if not s.applied_before:
                        s.aggregate.release(order_id)

        self._retrying(release)
        return {"order": order_id, "released": items}

    def charge_card(self, call: TaskCall) -> dict[str, Any]:
        order_id, amount = call.payload["order"], call.payload["amount"]

        def charge(backend: SQLAlchemyBackend) -> None:
            customer = _order(backend, order_id).customer()
            with once(backend.event_store, Wallet(), wallet_stream(customer), call.task_id) as w:
                if not w.applied_before:
                    w.aggregate.charge(order_id, amount)

        self._retrying(charge)
        return {"order": order_id, "charged": amount}

    def refund_card(self, call: TaskCall) -> dict[str, Any]:
        order_id = _order_id(call)

        def refund(backend: SQLAlchemyBackend) -> None:
            customer = _order(backend, order_id).customer()
            with once(backend.event_store, Wallet(), wallet_stream(customer), call.task_id) as w:
                if not w.applied_before:
                    w.aggregate.refund(order_id)

        self._retrying(refund)
        return {"order": order_id, "refunded": True}

    def ship(self, call: TaskCall) -> dict[str, Any]:
        order_id = call.payload["order"]

        def ship(backend: SQLAlchemyBackend) -> None:
            with once(backend.event_store, Order(), order_stream(order_id), call.task_id) as o:
                if not o.applied_before:
                    o.aggregate.ship()

        self._retrying(ship)
        return {"order": order_id, "shipped": True}

    def handlers(self) -> dict[str, Callable[[TaskCall], dict[str, Any]]]:
        return {
            "ReserveStock": self.reserve_stock,
            "ReleaseStock": self.release_stock,
            "ChargeCard": self.charge_card,
            "RefundCard": self.refund_card,
            "Ship": self.ship,
        }

    def app(self) -> App:
        """The order saga on ``OrderPlaced`` from the store, with these handlers."""
        return App([order_saga(placed=OrderPlaced)], self.handlers(), topics=self.topics)

    # -- reads ------------------------------------------------------------------

    def order(self, order_id: str) -> Order:
        return self._load(Order(), order_stream(order_id).name)

    def stock(self, sku: str) -> Stock:
        return self._load(Stock(STOCK), stock_stream(sku).name)

    def wallet(self, customer: str) -> Wallet:
        return self._load(Wallet(), wallet_stream(customer).name)

    def outbox_size(self) -> int:
        with Session(self.engine) as session:
            return int(session.scalar(select(func.count()).select_from(DefaultOutboxEntry)) or 0)

    def _load(self, aggregate: A, name: str | None) -> A:
        with self.unit_of_work() as backend:
            return _read(backend, aggregate, StreamUUID(name=name))

    def _retrying(self, work: Callable[[SQLAlchemyBackend], None], attempts: int = 20) -> None:
        """Run ``work`` in a transaction; a concurrent write to the same stream (a
        version conflict, or two transactions creating one stream), or a busy
        database, makes it load and try again, up to ``attempts`` times."""
        for n in range(attempts):
            try:
                with self.unit_of_work() as backend:
                    work(backend)
                return
            except (ConcurrentStreamWriteError, OperationalError, IntegrityError):
                if n == attempts - 1:
                    raise
                time.sleep(0.005 * (n + 1))


def _read(backend: SQLAlchemyBackend, aggregate: A, uuid: StreamUUID) -> A:
    with Repository[A](backend.event_store).aggregate(uuid, aggregate) as wrapped:
        return wrapped.aggregate


def _order(backend: SQLAlchemyBackend, order_id: str) -> Order:
    """The order, read in the handler's own transaction."""
    return _read(backend, Order(), order_stream(order_id))


def _order_id(call: TaskCall) -> str:
    """Compensations carry no payload: the order is the process's key."""
    return str(call.payload.get("order") or call.process_id.partition(":")[2])


def _engine(url: str) -> Engine:
    if not url.startswith("sqlite"):
        return create_engine(url, pool_size=20, max_overflow=20)
    memory = url in ("sqlite://", "sqlite:///:memory:")
    kwargs: dict[str, Any] = {"connect_args": {"check_same_thread": False, "timeout": 30}}
    if memory:  # one shared connection, so every session sees the same database
        from sqlalchemy.pool import StaticPool  # noqa: PLC0415

        kwargs["poolclass"] = StaticPool
    engine = create_engine(url, **kwargs)

    @event.listens_for(engine, "connect")
    def _connect(dbapi: Any, _record: Any) -> None:
        dbapi.isolation_level = None  # transactions begin below, not in the driver
        if not memory:
            dbapi.execute("PRAGMA journal_mode=WAL")
            dbapi.execute("PRAGMA synchronous=NORMAL")

    @event.listens_for(engine, "begin")
    def _begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")  # one writer at a time: no lost updates

    return engine


def app() -> App:
    """The shop's app for ``procession processor|worker`` (``SHOP_DB``,
    ``SHOP_PREFIX``)."""
    shop = Shop(os.environ.get("SHOP_DB", "sqlite:///shop.db"), topics=_topics())
    return shop.app()


def _topics() -> Topics:
    prefix = os.environ.get("SHOP_PREFIX", "shop")
    partitions = int(os.environ.get("SHOP_PARTITIONS", "6"))
    return Topics(prefix, partitions=partitions, task_partitions=partitions)


__all__ = ["Shop", "app"]

"""The shop's event-sourced aggregates: orders, stock per SKU, wallets per customer.

Each aggregate is a plain python-event-sourcery ``Aggregate``: commands check
the state and emit events; ``__apply__`` folds events into state.
"""

from __future__ import annotations

from typing import ClassVar

from event_sourcery import StreamCategory, StreamUUID
from event_sourcery.event import Event
from event_sourcery.event_sourcing import Aggregate


class OrderPlaced(Event):
    """A customer placed an order (the event the order saga starts on)."""

    order_id: str
    customer: str
    amount: int
    items: list[str]


class OrderShipped(Event):
    order_id: str


class StockReserved(Event):
    order_id: str


class StockReleased(Event):
    order_id: str


class CardCharged(Event):
    order_id: str
    amount: int


class CardRefunded(Event):
    order_id: str
    amount: int


class DomainError(Exception):
    """A command the aggregate's state refuses."""


class Order(Aggregate):
    category: ClassVar[StreamCategory] = StreamCategory("order")

    def __init__(self) -> None:
        self.placed: OrderPlaced | None = None
        self.shipped = False

    def __apply__(self, event: Event) -> None:
        if isinstance(event, OrderPlaced):
            self.placed = event
        elif isinstance(event, OrderShipped):
            self.shipped = True

    def place(self, order_id: str, customer: str, amount: int, items: list[str]) -> None:
        if self.placed is not None:
            raise DomainError(f"order {order_id} is placed already")
        if amount <= 0 or not items:
            raise DomainError(f"order {order_id} needs a positive amount and an item")
        self._emit(OrderPlaced(order_id=order_id, customer=customer, amount=amount, items=items))

    def customer(self) -> str:
        if self.placed is None:
            raise DomainError("the order was never placed")
        return self.placed.customer

    def items(self) -> list[str]:
        return sorted(set(self.placed.items)) if self.placed else []

    def ship(self) -> None:
        if self.placed is None:
            raise DomainError("an order that was never placed cannot ship")
        if self.shipped:
            raise DomainError(f"order {self.placed.order_id} has shipped already")
        self._emit(OrderShipped(order_id=self.placed.order_id))


class Stock(Aggregate):
    """One SKU's stock: a quantity and the orders holding a unit of it."""

    category: ClassVar[StreamCategory] = StreamCategory("stock")

    def __init__(self, quantity: int) -> None:
        self.available = quantity
        self.holders: set[str] = set()

    def __apply__(self, event: Event) -> None:
        if isinstance(event, StockReserved):
            self.available -= 1
            self.holders.add(event.order_id)
        elif isinstance(event, StockReleased):
            self.available += 1
            self.holders.discard(event.order_id)

    def reserve(self, order_id: str) -> None:
        if self.available <= 0:
            raise DomainError(f"out of stock for order {order_id}")
        self._emit(StockReserved(order_id=order_id))

    def release(self, order_id: str) -> None:
        if order_id in self.holders:
            self._emit(StockReleased(order_id=order_id))


class Wallet(Aggregate):
    """A customer's card: what has been charged, per order."""

    category: ClassVar[StreamCategory] = StreamCategory("wallet")

    def __init__(self) -> None:
        self.charged: dict[str, int] = {}
        self.charges = 0

    def __apply__(self, event: Event) -> None:
        if isinstance(event, CardCharged):
            self.charged[event.order_id] = event.amount
            self.charges += 1
        elif isinstance(event, CardRefunded):
            self.charged.pop(event.order_id, None)

    def charge(self, order_id: str, amount: int) -> None:
        self._emit(CardCharged(order_id=order_id, amount=amount))

    def refund(self, order_id: str) -> None:
        if order_id in self.charged:
            self._emit(CardRefunded(order_id=order_id, amount=self.charged[order_id]))


def order_stream(order_id: str) -> StreamUUID:
    return StreamUUID(name=f"order-{order_id}")


def stock_stream(sku: str) -> StreamUUID:
    return StreamUUID(name=f"stock-{sku}")


def wallet_stream(customer: str) -> StreamUUID:
    return StreamUUID(name=f"wallet-{customer}")

"""An order saga: reserve stock and charge the card in parallel, then ship.

Reservations and charges have compensations, so a failed shipment (or a
cancel) releases the stock and refunds the card, in reverse order.
"""

from __future__ import annotations

from datetime import timedelta

from pydantic import BaseModel

from procession.sagas import Machine, RetryPolicy, Saga, State, Task, all_of


class OrderPlaced(BaseModel):
    """A customer placed an order."""

    order_id: str
    amount: int
    items: list[str] = []


def order_saga(
    backoff: timedelta = timedelta(milliseconds=100), placed: type[BaseModel] = OrderPlaced
) -> Saga:
    """Three tasks in three machines; ``ship`` waits for a join of the other two.

    ``placed`` is the event that starts an order: any model with ``order_id``,
    ``amount`` and ``items`` (the event-sourced shop brings its own).
    """
    retry = RetryPolicy(max_attempts=3, initial=backoff)
    idle, reserved = State("Idle", initial=True), State("Reserved", final=True)
    unpaid, charged = State("Unpaid", initial=True), State("Charged", final=True)
    waiting, shipped = State("Waiting", initial=True), State("Shipped", final=True)
    stock = Machine(
        "stock",
        states=[idle, reserved],
        transitions=[
            idle.to(
                reserved,
                on=placed,
                task=Task(
                    "ReserveStock",
                    payload=lambda c: {"order": c.event.order_id, "items": c.event.items},
                    retry=retry,
                    compensation=Task("ReleaseStock", retry=retry),
                ),
            )
        ],
    )
    payment = Machine(
        "payment",
        states=[unpaid, charged],
        transitions=[
            unpaid.to(
                charged,
                on=placed,
                task=Task(
                    "ChargeCard",
                    payload=lambda c: {"order": c.event.order_id, "amount": c.event.amount},
                    retry=retry,
                    compensation=Task("RefundCard", retry=retry),
                ),
            )
        ],
    )
    shipping = Machine(
        "shipping",
        states=[waiting, shipped],
        transitions=[
            waiting.to(
                shipped,
                when=all_of(stock, reserved) & all_of(payment, charged),
                task=Task(
                    "Ship",
                    payload=lambda c: {"order": c.last(placed).order_id},  # type: ignore[union-attr]
                    retry=retry,
                ),
            )
        ],
    )
    return Saga(
        "order",
        machines=[stock, payment, shipping],
        correlate={placed: lambda e: e.order_id},
        starts=[placed],
    )

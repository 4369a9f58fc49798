"""Sagas used across the tests (beside the shipped examples)."""

from __future__ import annotations

from datetime import timedelta

from pydantic import BaseModel

from procession import ForEach, Machine, RetryPolicy, Saga, State, Task, any_of, at_least


class InvoiceSent(BaseModel):
    invoice_id: str


class PaymentReceived(BaseModel):
    invoice_id: str
    amount: int = 0


class InvoiceVoided(BaseModel):
    invoice_id: str


def payment_saga() -> Saga:
    """No PaymentReceived within 15 minutes -> Expired."""
    awaiting, paid, expired = (
        State("Awaiting", initial=True),
        State("Paid", final=True),
        State("Expired", final=True),
    )
    invoice = Machine(
        "invoice",
        states=[awaiting, paid, expired],
        transitions=[
            awaiting.to(paid, on=PaymentReceived, guard=lambda c: c.event.amount > 0),
            awaiting.to(expired, after=timedelta(minutes=15)),
        ],
    )
    return Saga(
        "payment",
        machines=[invoice],
        correlate={
            InvoiceSent: lambda e: e.invoice_id,
            PaymentReceived: lambda e: e.invoice_id,
            InvoiceVoided: lambda e: e.invoice_id,
        },
        starts=[InvoiceSent],
        cancel_on={InvoiceVoided: "hard"},
    )


class Deploy(BaseModel):
    deploy_id: str
    regions: list[str]


def deploy_saga(quorum: int | None = None, *, on_failure: bool = False) -> Saga:
    """One machine per region; done when all (or ``quorum``) regions are live."""
    pending, live, broken = (
        State("Pending", initial=True),
        State("Live", final=True),
        State("Broken", final=True),
    )
    roll_out = Task(
        "RollOut",
        payload=lambda c: {"region": c.key},
        retry=RetryPolicy(max_attempts=2, initial=timedelta(seconds=1), jitter=0),
        timeout=timedelta(seconds=10),
        compensation=Task("RollBack", retry=RetryPolicy(max_attempts=1)),
    )
    region = Machine(
        "region",
        states=[pending, live, broken],
        transitions=[
            pending.to(live, on=Deploy, task=roll_out, on_failure=broken if on_failure else None),
            pending.to(broken, after=timedelta(hours=1)),
        ],
        per=ForEach(Deploy, lambda e: e.regions),
    )
    done = at_least(quorum, region, live) if quorum else None
    return Saga(
        "deploy",
        machines=[region],
        correlate={Deploy: lambda e: e.deploy_id},
        starts=[Deploy],
        completes_when=done,
    )


def any_region_saga() -> Saga:
    pending, live = State("Pending", initial=True), State("Live", final=True)
    region = Machine(
        "region",
        states=[pending, live],
        transitions=[pending.to(live, on=Deploy, task=Task("RollOut"))],
        per=ForEach(Deploy, lambda e: e.regions),
    )
    return Saga(
        "anyregion",
        machines=[region],
        correlate={Deploy: lambda e: e.deploy_id},
        starts=[Deploy],
        completes_when=any_of(region, live),
    )

"""Scenarios whose recorded histories are kept as fixtures and replayed in CI.

``python -m tests.histories`` rewrites the fixtures: do that only for a change
that is meant to decide differently. In an application, such a change is a
new saga version registered beside the old one (docs/versioning.md), so the
histories saved from running processes keep replaying against their own
version and a divergence still points at the change that caused it.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

from procession.examples import OrderPlaced, RebaseFailed, order_saga, rebase_saga
from procession.sagas import Saga
from procession.testing import SagaTest
from procession.topics import Codec, Record
from tests.sagas import Deploy, InvoiceSent, PaymentReceived, deploy_saga, payment_saga

HERE = Path(__file__).parent / "fixtures" / "histories"


def rebase_with_retry() -> SagaTest:
    t = SagaTest(rebase_saga(), start_ms=1_700_000_000_000)
    t.given(RebaseFailed(rebase_id="r-1042", instances=["A", "B", "C"]))
    t.when(t.complete("instance:A", {"closed": "A"}))
    t.when(t.fail("instance:B", "instance B is busy"))
    t.when(t.complete("instance:C", {"closed": "C"}))
    t.advance(timedelta(seconds=1))
    t.when(t.complete("instance:B", {"closed": "B"}))
    return t


def order_cancelled() -> SagaTest:
    t = SagaTest(order_saga(), start_ms=1_700_000_000_000)
    t.given(OrderPlaced(order_id="o-7", amount=42, items=["book"]))
    t.when(t.complete("stock", {"reservation": "s-1"}))
    t.when(t.cancel("cooperative", "customer cancelled"))
    t.when(t.complete("payment", {"charge": "c-1"}))
    t.when(t.complete("payment"))
    t.when(t.complete("stock"))
    return t


def deploy_failed() -> SagaTest:
    t = SagaTest(deploy_saga(), start_ms=1_700_000_000_000)
    t.given(Deploy(deploy_id="d-3", regions=["eu", "us", "ap"]))
    t.when(t.complete("region:eu"))
    t.when(t.complete("region:us"))
    t.advance(timedelta(seconds=10))
    t.advance(timedelta(seconds=2))
    t.when(t.fail("region:ap", "quota", retryable=False))
    t.when(t.complete("region:us"))
    t.when(t.complete("region:eu"))
    return t


def payment_expired() -> SagaTest:
    t = SagaTest(payment_saga(), start_ms=1_700_000_000_000)
    t.given(InvoiceSent(invoice_id="inv-1"))
    t.when(PaymentReceived(invoice_id="inv-1", amount=0))
    t.advance(timedelta(minutes=20))
    return t


SCENARIOS: dict[str, tuple[Callable[[], SagaTest], Callable[[], Saga]]] = {
    "rebase_with_retry": (rebase_with_retry, rebase_saga),
    "order_cancelled": (order_cancelled, order_saga),
    "deploy_failed": (deploy_failed, deploy_saga),
    "payment_expired": (payment_expired, payment_saga),
}


def load(name: str) -> list[Record]:
    codec = Codec()
    lines = (HERE / f"{name}.jsonl").read_bytes().splitlines()
    return [codec.decode(line) for line in lines if line.strip()]


def write_all() -> None:
    codec = Codec()
    HERE.mkdir(parents=True, exist_ok=True)
    for name, (scenario, _) in SCENARIOS.items():
        history = scenario().history
        (HERE / f"{name}.jsonl").write_bytes(b"\n".join(codec.encode(r) for r in history) + b"\n")


if __name__ == "__main__":
    write_all()

"""The app the Kafka tests run in subprocesses (``procession processor tests.kafka_app:app``).

Its topic prefix comes from ``PROCESSION_TEST_PREFIX``; ``PROCESSION_TEST_SLOW_S``
makes every task take that long (to kill a worker mid-task), or only the tasks
of the instances listed in ``PROCESSION_TEST_SLOW_ONLY`` (``C`` or ``A,B``), and
``PROCESSION_TEST_STARTED_FILE`` gets a line per task a handler has started.
"""

from __future__ import annotations

import asyncio
import os
import signal
from typing import Any

from procession.examples import rebase_saga
from procession.topics._layout import Topics
from procession.workers import App, TaskCall


async def close(call: TaskCall) -> dict[str, Any]:
    started = os.environ.get("PROCESSION_TEST_STARTED_FILE")
    if started:  # tells a test that this handler holds the task now
        with open(started, "a") as f:  # noqa: ASYNC230 - a tiny test-only marker write
            f.write(f"{call.task_id}\n")
    slow = float(os.environ.get("PROCESSION_TEST_SLOW_S", "0"))
    only = os.environ.get("PROCESSION_TEST_SLOW_ONLY")
    if only and call.payload["instance"] not in only.split(","):
        slow = 0.0
    await asyncio.sleep(slow)
    return {"closed": call.payload["instance"], "attempt": call.attempt}


def app() -> App:
    prefix = os.environ.get("PROCESSION_TEST_PREFIX", "procession-test")
    return App(
        [rebase_saga()],
        {"CloseInstance": close},
        topics=Topics(prefix, partitions=3, task_partitions=3),
    )


def renamed() -> App:
    """The app with its saga's states renamed under the same version: what a
    replay check must catch before a deploy."""
    from tests.test_versions import rebase_v2  # noqa: PLC0415

    prefix = os.environ.get("PROCESSION_TEST_PREFIX", "procession-test")
    return App(
        [rebase_v2(version=1)],
        {"CloseInstance": close},
        topics=Topics(prefix, partitions=3, task_partitions=3),
    )


def _die_in_transaction(role: str) -> None:
    """Make this process SIGKILL itself inside its first transaction of ``role``
    (after the records were sent, before the commit): a writer killed mid-transaction,
    on either client."""
    from procession.workers import _kafka  # noqa: PLC0415 - test-only fault injection

    send_all = _kafka.send_all

    async def send_then_die(producer: Any, records: Any, partitions: Any) -> None:
        await send_all(producer, records, partitions)
        if f".{role}." in producer._txn_manager.transactional_id:
            os.kill(os.getpid(), signal.SIGKILL)

    _kafka.send_all = send_then_die  # type: ignore[assignment]

    from procession.workers._rdkafka_producer import TransactionalProducer  # noqa: PLC0415

    transact = TransactionalProducer._transact

    def produce_then_die(self: TransactionalProducer, p: Any, batches: Any) -> None:
        if f".{role}" not in self.transactional_id:
            return transact(self, p, batches)
        p.begin_transaction()
        for b in batches:
            for out in b.records:
                self._produce(p, out)
        p.flush(30)  # every record acknowledged, none committed
        os.kill(os.getpid(), signal.SIGKILL)
        return None

    TransactionalProducer._transact = produce_then_die  # type: ignore[method-assign]


if os.environ.get("PROCESSION_TEST_DIE_IN_TXN"):
    _die_in_transaction(os.environ["PROCESSION_TEST_DIE_IN_TXN"])

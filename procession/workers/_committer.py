"""Commit a batch, retrying aborted transactions with backoff; fencing is fatal."""

from __future__ import annotations

import logging
import os
import time
from collections import Counter

from procession._errors import TransactionAbortedError

from ._backoff import until_deadline
from ._port import Batch, Producer
from ._stats import Stats

log = logging.getLogger("procession.commit")


#: How long a batch may keep failing before its component gives up and stops
#: (its process exits and is restarted): retrying for ever would be a loop that
#: died while the process lives on.
COMMIT_DEADLINE_S = float(os.environ.get("PROCESSION_COMMIT_DEADLINE_S", "120"))


async def commit(
    producer: Producer, batch: Batch, metrics: Counter[str], what: str, stats: Stats | None = None
) -> None:
    """Commit ``batch``; an aborted transaction left nothing, so the same batch is
    retried with backoff, for at most ``COMMIT_DEADLINE_S``. ``stats`` gets the
    time to the successful commit (``commit_seconds``), retries included."""
    started = time.monotonic()

    def retrying(exc: BaseException, pause: float) -> None:
        log.warning("%s: %s; retrying in %.2fs", what, exc, pause)
        metrics["aborted"] += 1

    try:
        await until_deadline(
            lambda: producer.commit(batch), TransactionAbortedError, COMMIT_DEADLINE_S, retrying
        )
    except TransactionAbortedError as exc:
        raise TransactionAbortedError(
            f"{what}: still failing after {COMMIT_DEADLINE_S:g} s: {exc.reason}"
        ) from exc
    if stats is not None:
        stats.observe("commit_seconds", time.monotonic() - started)

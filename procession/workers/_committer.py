"""Commit a batch, retrying aborted transactions with backoff; fencing is fatal."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import Counter

from procession._errors import TransactionAbortedError

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
    delay, give_up = 0.05, started + COMMIT_DEADLINE_S
    while True:
        try:
            await producer.commit(batch)
            if stats is not None:
                stats.observe("commit_seconds", time.monotonic() - started)
            return
        except TransactionAbortedError as exc:
            if (left := give_up - time.monotonic()) <= 0:
                raise TransactionAbortedError(
                    f"{what}: still failing after {COMMIT_DEADLINE_S:g} s: {exc.reason}"
                ) from exc
            pause = min(delay, left)  # a last try at the deadline
            log.warning("%s: %s; retrying in %.2fs", what, exc, pause)
            metrics["aborted"] += 1
            await asyncio.sleep(pause)
            delay = min(delay * 2, 2.0)

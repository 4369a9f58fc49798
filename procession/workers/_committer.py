"""Commit a batch, retrying aborted transactions with backoff; fencing is fatal."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter

from procession._errors import TransactionAbortedError

from ._port import Batch, Producer

log = logging.getLogger("procession.commit")


async def commit(producer: Producer, batch: Batch, metrics: Counter[str], what: str) -> None:
    """Commit ``batch``; an aborted transaction left nothing, so the same batch is retried."""
    delay = 0.05
    while True:
        try:
            await producer.commit(batch)
            return
        except TransactionAbortedError as exc:
            log.warning("%s: %s; retrying in %.2fs", what, exc, delay)
            metrics["aborted"] += 1
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)

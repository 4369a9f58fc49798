"""A group member that turns each fetched batch into one transaction."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Sequence

from procession._errors import FencedError
from procession.workers._committer import commit
from procession.workers._port import Batch, Consumer, Message, Transport

log = logging.getLogger("procession.loop")


class BatchLoop:
    """Consume, :meth:`handle` a batch, commit its records with its offsets; repeat.

    Subclasses (the router, the workers) say what a batch becomes.
    """

    def __init__(
        self, transport: Transport, group: str, name: str, poll_s: float, max_batch: int
    ) -> None:
        self.transport, self.group, self.name = transport, group, name
        self.poll_s, self.max_batch = poll_s, max_batch
        self.metrics: Counter[str] = Counter()
        #: Why the loop stopped on its own (None while it runs or after stop()).
        self.failure: BaseException | None = None
        self._producer = transport.producer(name)
        self._consumer: Consumer | None = None
        self._task: asyncio.Task[None] | None = None
        self._working = False

    async def start_loop(self, topics: Sequence[str]) -> None:
        await self._producer.start()
        self._consumer = await self.transport.consumer(self.group, topics)
        self._task = asyncio.create_task(self._loop(), name=f"procession-{self.name}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._consumer is not None:
            await self._consumer.stop()
            await self._producer.stop()

    def busy(self) -> bool:
        """Working on a batch, or not yet read up to the end of its partitions."""
        return self._working or self._consumer is None or not self._consumer.caught_up()

    async def handle(self, msgs: list[Message]) -> Batch:
        """The records a fetched batch produces (offsets are added by the loop)."""
        raise NotImplementedError

    async def _loop(self) -> None:
        assert self._consumer is not None
        try:
            while True:
                msgs = await self._consumer.fetch(self.poll_s, self.max_batch)
                if not msgs:
                    continue
                self._working = True
                batch = await self.handle(msgs)
                batch.group = self.group
                for msg in msgs:
                    batch.offsets[msg.tp] = max(batch.offsets.get(msg.tp, 0), msg.offset + 1)
                await commit(self._producer, batch, self.metrics, self.name)
                self._working = False
        except FencedError as exc:
            log.error("%s stopped: %s", self.name, exc)
            self.failure = exc
        except Exception as exc:
            log.exception("%s died", self.name)
            self.failure = exc
            raise
        finally:
            self._working = False

"""The processor: consume inputs, decide, produce decisions, all in one transaction.

One asyncio task and one transactional producer per assigned partition of the
process topic. The producer starts (fencing any zombie with the same id)
before the partition's state is restored from the changelog; state is applied
to the store only after a commit succeeds.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Sequence

from procession._errors import CoPartitionError
from procession.topics._codec import DEFAULT_CODEC, Codec

from ._app import App
from ._clock import Clock, SystemClock
from ._partition import PartitionProcessor
from ._port import Consumer, TopicPartition, Transport

log = logging.getLogger("procession.processor")


class Processor:
    """Runs the sagas of an app over the process topic.

    Example::

        processor = Processor(app, MemoryTransport())
        await processor.start()
        ...
        await processor.stop()
    """

    def __init__(
        self,
        app: App,
        transport: Transport,
        clock: Clock | None = None,
        *,
        codec: Codec = DEFAULT_CODEC,
        poll_s: float = 0.1,
        max_batch: int = 500,
        revoke_deadline_s: float = 10.0,
    ) -> None:
        self.app, self.transport, self.codec = app, transport, codec
        self.clock = clock or SystemClock()
        self.topics = app.topics
        self.group = f"{self.topics.prefix}.processor"
        self.poll_s, self.max_batch = poll_s, max_batch
        self.revoke_deadline_s = revoke_deadline_s
        self.metrics: Counter[str] = Counter()
        self.partitions: dict[TopicPartition, PartitionProcessor] = {}
        self.crashed: asyncio.Future[BaseException] | None = None
        self._consumer: Consumer | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._cleanup: asyncio.Task[None] | None = None

    async def start(self) -> None:
        process = await self.transport.partitions(self.topics.process)
        changelog = await self.transport.partitions(self.topics.changelog)
        if process != changelog:
            raise CoPartitionError(self.topics.process, process, self.topics.changelog, changelog)
        self.crashed = asyncio.get_running_loop().create_future()
        self._consumer = await self.transport.consumer(
            self.group, [self.topics.process], self._on_assign, self._on_revoke
        )
        self._task = asyncio.create_task(self._fetch_loop(), name="procession-processor-fetch")

    async def stop(self) -> None:
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._consumer is not None:
            await self._consumer.stop()
        await self._on_revoke(list(self.partitions))

    def busy(self) -> bool:
        """True while some partition has work queued, in flight or due, or input is unread."""
        if self._consumer is None or not self._consumer.caught_up():
            return True
        return any(p.busy() for p in self.partitions.values())

    def died(self, error: BaseException) -> None:
        """A partition died of something that must stop the whole processor, as a
        killed process would: nothing more is committed, the group moves on."""
        if self.crashed is not None and not self.crashed.done():
            self.crashed.set_result(error)
        if not self._stopping:
            self._cleanup = asyncio.create_task(self.stop())

    async def _fetch_loop(self) -> None:
        try:
            await self._fetch()
        except Exception as exc:
            log.exception("processor fetch loop died")
            self.died(exc)
            raise

    async def _fetch(self) -> None:
        assert self._consumer is not None
        while not self._stopping:
            for msg in await self._consumer.fetch(self.poll_s, self.max_batch):
                part = self.partitions.get(msg.tp)
                if part is not None:
                    part.feed(msg)
            for part in list(self.partitions.values()):
                await part.wait_for_room(self.max_batch * 4)

    async def _on_assign(self, tps: Sequence[TopicPartition]) -> None:
        fresh = [PartitionProcessor(self, tp) for tp in tps]
        for part in fresh:  # registered before any await, so no fetched record is missed
            self.partitions[part.tp] = part
        for part in fresh:
            await part.start()
        log.info("assigned %s", [tp.partition for tp in tps])

    async def _on_revoke(self, tps: Sequence[TopicPartition]) -> None:
        parts = [self.partitions.pop(tp) for tp in tps if tp in self.partitions]
        for part in parts:
            await part.stop(self.revoke_deadline_s)

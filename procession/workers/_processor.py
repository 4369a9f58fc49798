"""The processor: consume inputs, decide, produce decisions, all in one transaction.

One asyncio task and one transactional producer per assigned partition of the
process topic. The producer starts (fencing any zombie with the same id)
before the partition's state is restored from the changelog; state is applied
to the store only after a commit succeeds.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections import Counter
from collections.abc import Sequence

from procession._errors import CoPartitionError
from procession.sagas._state import Parked
from procession.topics._codec import DEFAULT_CODEC, Codec

from ._app import App
from ._clock import Clock, SystemClock
from ._component import Component
from ._partition import PartitionProcessor
from ._port import Consumer, Producer, TopicPartition, Transport, record_limits
from ._stats import Stats
from ._topic_check import verify

log = logging.getLogger("procession.processor")

#: Wall-clock seconds one input's decision may take before its process is
#: parked (the event loop must keep heartbeating: well under the session timeout).
DECISION_BUDGET_S = float(os.environ.get("PROCESSION_DECISION_BUDGET_S", "5"))

#: Whether the decisions of one input go to the process topic as one batch record
#: (docs/wire.md). ``PROCESSION_DECISION_BATCHES=0`` writes one record per
#: decision, which releases before batches can read: set it while a rolling
#: upgrade from such a release still runs old replicas.
DECISION_BATCHES = os.environ.get("PROCESSION_DECISION_BATCHES", "1") != "0"


class Processor(Component):
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
        decision_budget_s: float = DECISION_BUDGET_S,
        decision_batches: bool = DECISION_BATCHES,
    ) -> None:
        self.app, self.transport, self.codec = app, transport, codec
        self.clock = clock or SystemClock()
        self.topics = app.topics
        self.name = self.group = f"{self.topics.prefix}.processor"
        self.poll_s, self.max_batch = poll_s, max_batch
        self.revoke_deadline_s = revoke_deadline_s
        self.decision_budget_s = decision_budget_s
        self.decision_batches = decision_batches
        self.metrics: Counter[str] = Counter()
        self.stats = Stats()
        self.partitions: dict[TopicPartition, PartitionProcessor] = {}
        #: max.message.bytes of every topic the processor writes to.
        self.limits: dict[str, int] = {}
        self.partition_count = 0
        self._consumer: Consumer | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._cleanup: asyncio.Future[None] | None = None  # the one stop, once begun

    async def start(self) -> None:
        t = self.topics
        pair = await self.transport.describe([t.process, t.changelog])
        if len(pair) == 2 and pair[t.process].partitions != pair[t.changelog].partitions:
            raise CoPartitionError(
                t.process, pair[t.process].partitions, t.changelog, pair[t.changelog].partitions
            )
        found = await verify(self.transport, t.specs(self.app.task_types()), settings=False)
        process = found[t.process].partitions
        self.limits = record_limits(found)
        self.partition_count = process
        self.arm()
        self._consumer = await self.transport.consumer(
            self.group, [t.process], self._on_assign, self._on_revoke
        )
        self._task = asyncio.create_task(self._fetch_loop(), name="procession-processor-fetch")

    async def stop(self) -> None:
        """Stop fetching, let every partition finish its transaction, then leave the group.

        Called again (or while a death is being cleaned up), it waits for the same stop.
        """
        if self._cleanup is None:
            self._cleanup = asyncio.ensure_future(self._stop())
        await asyncio.shield(self._cleanup)

    async def _stop(self) -> None:
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self._on_revoke(list(self.partitions))
        if self._consumer is not None:
            await self._consumer.stop()
        await self._on_revoke(list(self.partitions))  # assigned while the consumer was leaving

    def busy(self) -> bool:
        """True while some partition has work queued, in flight or due, or input is unread."""
        if self._consumer is None or not self._consumer.caught_up():
            return True
        return any(p.busy() for p in self.partitions.values())

    def gauges(self) -> dict[str, float]:
        parts = list(self.partitions.values())
        return {
            **self.lag_of(self._consumer),
            "processes": sum(len(p.store) for p in parts),
            "parked_processes": sum(isinstance(s, Parked) for p in parts for s in p.store.values()),
            "timer_backlog": sum(p.timers.pending() for p in parts),
        }

    def ready(self) -> bool:
        """Joined, and every assigned partition restored from its changelog."""
        if self._stopping or not self.member_ready(self._consumer, ()):
            return False
        return all(p.started for p in self.partitions.values())

    def died(self, error: BaseException) -> None:
        """Something that must stop the whole processor, as a killed process would:
        nothing more is committed, the group moves on."""
        super().died(error)
        if self._cleanup is None:
            self._cleanup = asyncio.ensure_future(self._stop())

    def producer_for(self, transactional_id: str) -> Producer:
        """The producer of one assigned partition's work (see ``Consumer.producer``)."""
        return (self._consumer or self.transport).producer(transactional_id)

    async def rewind(self, tp: TopicPartition) -> int | None:
        """Read ``tp`` again from its committed offset (called once its producer fenced
        the previous owner); that offset."""
        assert self._consumer is not None
        return await self._consumer.rewind(tp)

    async def _fetch_loop(self) -> None:
        assert self._consumer is not None
        try:
            while not self._stopping:
                for msg in await self._consumer.fetch(self.poll_s, self.max_batch):
                    part = self.partitions.get(msg.tp)
                    if part is not None:
                        part.feed(msg)
                limit = self.max_batch * 4
                while full := [p for p in self.partitions.values() if p.full(limit)]:
                    await self._consumer.fetch(0, 0)  # no room: keep the group served
                    await full[0].wait_for_room(limit, self.poll_s)
        except (asyncio.CancelledError, GeneratorExit):  # stopped, not failed
            raise
        except BaseException as exc:  # noqa: BLE001 - whatever ends the loop is reported
            self.died(exc)

    async def _on_assign(self, tps: Sequence[TopicPartition]) -> None:
        for tp in tps:  # registered before any await, so no fetched record is missed
            part = self.partitions[tp] = PartitionProcessor(self, tp)
            part.launch()
        log.info("assigned %s", [tp.partition for tp in tps])

    async def _on_revoke(self, tps: Sequence[TopicPartition]) -> None:
        parts = [self.partitions.pop(tp) for tp in tps if tp in self.partitions]
        try:
            await asyncio.gather(*(p.stop(self.revoke_deadline_s) for p in parts))
        except Exception as exc:  # noqa: BLE001 - the consumer's callback would only log it
            self.died(exc)

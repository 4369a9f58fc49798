"""A group member that turns the records of each input partition into a transaction."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter, defaultdict
from collections.abc import Coroutine, Sequence
from typing import Any

from procession._errors import FencedError

from ._committer import commit
from ._component import Component
from ._port import Batch, Consumer, Message, TopicPartition, Transport
from ._stats import Stats
from ._writers import Writers

log = logging.getLogger("procession.loop")


class BatchLoop(Component):
    """Consume; per input partition, :meth:`handle` the records fetched and commit
    what they become with their offsets, by that partition's own producer.

    Subclasses (the router) say what a partition's records become.
    """

    def __init__(
        self, transport: Transport, group: str, prefix: str, poll_s: float, max_batch: int
    ) -> None:
        self.transport, self.group, self.name = transport, group, prefix
        self.poll_s, self.max_batch = poll_s, max_batch
        self.metrics: Counter[str] = Counter()
        self.stats = Stats()
        self._writers = Writers(transport, prefix)
        self._owned: set[TopicPartition] = set()
        self._unclaimed: set[TopicPartition] = set()  # assigned, previous owner not fenced yet
        self._batch = asyncio.Lock()  # a revocation waits for the batch in flight
        self._consumer: Consumer | None = None
        self._task: asyncio.Task[None] | None = None
        self._working = False

    async def start_loop(self, topics: Sequence[str]) -> None:
        self.arm()
        self._consumer = await self.transport.consumer(
            self.group, topics, self._on_assign, self._on_revoke
        )
        self._writers.consumer = self._consumer
        self._task = asyncio.create_task(self._loop(), name=f"procession-{self.name}")

    async def stop(self) -> None:
        """Finish the batch in flight, leave the group, abort what is still open."""
        if self._task is not None:
            async with self._batch:
                self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._consumer is not None:
            await self._consumer.stop()
        await self._writers.close()

    def busy(self) -> bool:
        """Working on a batch, or not yet read up to the end of its partitions."""
        if self._working or self._unclaimed or self._consumer is None:
            return True
        return not self._consumer.caught_up()

    def gauges(self) -> dict[str, float]:
        return self.lag_of(self._consumer)

    def ready(self) -> bool:
        """Joined, and every assigned partition taken over."""
        return self.member_ready(self._consumer, self._unclaimed)

    async def handle(self, msgs: list[Message]) -> Batch:
        """The records that one partition's fetched records produce."""
        raise NotImplementedError

    async def _on_assign(self, tps: Sequence[TopicPartition]) -> None:
        self._owned.update(tps)
        self._unclaimed.update(tps)

    async def _on_revoke(self, tps: Sequence[TopicPartition]) -> None:
        self._owned.difference_update(tps)
        self._unclaimed.difference_update(tps)
        try:
            async with self._batch:
                await self._writers.drop(tps)
        except Exception as exc:  # noqa: BLE001 - the consumer's callback would only log it
            self.died(exc)

    async def _loop(self) -> None:
        assert self._consumer is not None
        claims = Claims(self._unclaimed, self._writers, f"procession-{self.name}")
        try:
            while True:
                claims.step(self._consumer)
                msgs = await self._consumer.fetch(self.poll_s, self.max_batch)
                msgs = [m for m in msgs if m.tp in self._owned and m.tp not in self._unclaimed]
                if not msgs:
                    continue
                async with self._batch:
                    self._working = True
                    by_tp: dict[TopicPartition, list[Message]] = defaultdict(list)
                    for msg in msgs:
                        by_tp[msg.tp].append(msg)
                    await all_of([self._one(tp, part) for tp, part in by_tp.items()], self.name)
                    self._working = False
        except (asyncio.CancelledError, GeneratorExit):  # stopped, not failed
            raise
        except BaseException as exc:  # noqa: BLE001 - whatever ends the loop is reported
            self.died(exc)
        finally:
            self._working = False
            await claims.stop()

    async def _one(self, tp: TopicPartition, msgs: list[Message]) -> None:
        if tp not in self._owned:
            return  # revoked since the fetch: the next owner reads these again
        batch = await self.handle(msgs)
        batch.group = self.group
        batch.offsets[tp] = msgs[-1].offset + 1
        try:
            producer = await self._writers.get(tp)
            await commit(producer, batch, self.metrics, self.name, self.stats)
        except FencedError as exc:
            still_ours = tp in self._owned
            self.fenced(exc, still_ours=still_ours)
            if still_ours:
                raise  # the loop ends with its component


async def claim(unclaimed: set[TopicPartition], writers: Writers, consumer: Consumer) -> None:
    """Take over newly assigned partitions: start each one's producer (fencing
    the previous owner and aborting its open transaction; side by side, as
    :class:`Writers` starts them), then read it again from its committed
    offset, which that owner's last commit may have moved. The rewinds go
    together (on librdkafka, as one request)."""

    async def one(tp: TopicPartition) -> None:
        drops = writers.drops[tp]
        await writers.get(tp)
        # revoked while its producer started (and perhaps assigned again: then
        # another owner may have started one since, fencing this one, and the
        # next claim starts a new one)
        if tp not in unclaimed or writers.drops[tp] != drops:
            await writers.drop([tp])
            return
        await consumer.rewind(tp)
        unclaimed.discard(tp)

    await all_of([one(tp) for tp in list(unclaimed)], "claim")


async def all_of(work: Sequence[Coroutine[Any, Any, None]], what: str) -> None:
    """Run ``work`` together and wait for all of it (nothing is left running);
    raise the first failure, and log the others, which would otherwise be lost."""
    failures = [
        outcome
        for outcome in await asyncio.gather(*work, return_exceptions=True)
        if isinstance(outcome, BaseException)
    ]
    for other in failures[1:]:
        log.warning("%s: also failed: %r", what, other)
    if failures:
        raise failures[0]


class Claims:
    """Claims beside a fetch loop: at most one :func:`claim` running at a time,
    for whatever is unclaimed when it starts. The loop calls :meth:`step` each
    round and fetches on meanwhile (dropping the records of unclaimed
    partitions, which the claim reads again). A claim can wait seconds for a
    killed owner's transaction to end, and on librdkafka a member that does not
    fetch holds up every rebalance of its group: it serves them only from
    inside a fetch.

    Example::

        claims = Claims(unclaimed, writers, "procession-worker")
        try:
            while True:
                claims.step(consumer)  # raises what a failed claim raised
                ...  # fetch, drop what is still unclaimed, handle the rest
        finally:
            await claims.stop()
    """

    def __init__(self, unclaimed: set[TopicPartition], writers: Writers, name: str) -> None:
        self.unclaimed, self.writers, self.name = unclaimed, writers, name
        self._task: asyncio.Task[None] | None = None

    def step(self, consumer: Consumer) -> None:
        """Raise a finished claim's failure; start a claim if one is due."""
        if self._task is not None and self._task.done():
            done, self._task = self._task, None
            done.result()
        if self.unclaimed and self._task is None:
            self._task = asyncio.create_task(
                claim(self.unclaimed, self.writers, consumer), name=f"{self.name}-claim"
            )

    async def stop(self, grace_s: float = 5.0) -> None:
        """Give the claim in progress ``grace_s`` to end (a producer cancelled while
        it starts can leave its connection open), then cancel it."""
        if self._task is not None:
            task, self._task = self._task, None
            await asyncio.wait({task}, timeout=grace_s)
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

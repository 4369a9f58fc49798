"""A transactional producer per input partition, with a static id."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import Iterable

from ._port import Consumer, Producer, TopicPartition, Transport


class Writers:
    """The producers of one role (router, worker), one per input partition.

    Their transactional ids are ``<prefix>.<role>.<topic>.<partition>``: the
    same on every host, replica and restart, never a pid. Whoever takes a
    partition over starts its producer and so fences the previous owner and
    aborts its open transaction, so a dead owner blocks ``read_committed``
    readers for as long as the group takes to move the partition, not until
    the transaction times out. (Kafka Streams' exactly-once v1 model.)

    Example:
        >>> from procession.workers import MemoryTransport
        >>> Writers(MemoryTransport(), "shop.router").id_for(TopicPartition("shop.events", 2))
        'shop.router.shop.events.2'
    """

    def __init__(self, transport: Transport, prefix: str) -> None:
        self._transport, self._prefix = transport, prefix
        self._producers: dict[TopicPartition, Producer] = {}
        #: one start at a time per partition; partitions start side by side
        self._starting: dict[TopicPartition, asyncio.Lock] = {}
        #: the member whose partitions these are: it makes their producers
        self.consumer: Consumer | None = None
        #: drops per partition: a claim compares them around a producer's start
        self.drops: Counter[TopicPartition] = Counter()

    def id_for(self, tp: TopicPartition) -> str:
        return f"{self._prefix}.{tp.topic}.{tp.partition}"

    async def get(self, tp: TopicPartition) -> Producer:
        """The partition's producer, started (and so fencing) on first use.

        A claim of many partitions starts their producers side by side: each
        start may wait for the broker to abort the previous owner's open
        transaction, and one after the other those waits would add up.
        """
        producer = self._producers.get(tp)
        if producer is not None:
            return producer
        lock = self._starting.setdefault(tp, asyncio.Lock())
        async with lock:  # one producer per id, even when two ask at once
            producer = self._producers.get(tp)
            if producer is None:
                maker = self.consumer or self._transport
                producer = maker.producer(self.id_for(tp))
                try:
                    await producer.start()
                except BaseException:  # cancelled (a claim stopped) or failed: close it
                    with contextlib.suppress(Exception):
                        await asyncio.shield(producer.stop())
                    raise
                self._producers[tp] = producer
            return producer

    async def drop(self, tps: Iterable[TopicPartition]) -> None:
        """Stop the producers of partitions this member no longer owns."""
        for tp in tps:
            self.drops[tp] += 1
            producer = self._producers.pop(tp, None)
            if producer is not None:
                await producer.stop()

    async def close(self) -> None:
        await self.drop(list(self._producers))

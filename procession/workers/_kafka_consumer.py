"""Group consumers on Kafka (aiokafka), reading committed records only."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener
from aiokafka import TopicPartition as KafkaTP

from ._kafka_settings import HOLD_AFTER_S, KEY_ERRORS
from ._port import Listener, Message, Producer, TopicPartition


class RebalanceListener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, on_assign: Listener | None, on_revoke: Listener | None) -> None:
        self._assign, self._revoke = on_assign, on_revoke
        self.joined = False

    async def on_partitions_revoked(self, revoked: Any) -> None:
        self.joined = False
        if self._revoke is not None and revoked:
            await self._revoke([TopicPartition(tp.topic, tp.partition) for tp in revoked])

    async def on_partitions_assigned(self, assigned: Any) -> None:
        self.joined = True
        if self._assign is not None and assigned:
            await self._assign([TopicPartition(tp.topic, tp.partition) for tp in assigned])


class KafkaConsumer:
    """A group member reading committed records only; offsets are committed in transactions."""

    def __init__(
        self,
        consumer: AIOKafkaConsumer,
        listener: RebalanceListener,
        producers: Callable[[str], Producer],
    ) -> None:
        self._c, self._listener, self._producers = consumer, listener, producers
        self._held = False  # every assigned partition paused: the owner has no room
        self._fetched_at = time.monotonic()

    def producer(self, transactional_id: str) -> Producer:
        """A producer of its own (exactly-once v1): its start fences the old owner."""
        return self._producers(transactional_id)

    async def fetch(self, timeout_s: float, max_records: int = 500) -> list[Message]:
        if max_records <= 0:
            if time.monotonic() - self._fetched_at >= HOLD_AFTER_S:  # else polled just now
                await self._serve(timeout_s)
            return []
        if self._held:
            self._held = False
            self._c.resume(*self._c.paused())
        got = await self._c.getmany(timeout_ms=int(timeout_s * 1000), max_records=max_records)
        self._fetched_at = time.monotonic()
        return [message_of(r) for records in got.values() for r in records]

    async def _serve(self, timeout_s: float) -> None:
        """A poll with every partition paused: aiokafka leaves the group after
        ``max.poll.interval.ms`` without one. A record of a partition assigned
        meanwhile (not paused yet) is sought back to, and read again later."""
        self._held = True
        assigned = self._c.assignment()
        if assigned:
            self._c.pause(*assigned)
        got = await self._c.getmany(timeout_ms=int(timeout_s * 1000), max_records=1)
        self._fetched_at = time.monotonic()
        for ktp, records in got.items():
            self._c.seek(ktp, records[0].offset)

    async def rewind(self, tp: TopicPartition) -> int | None:
        ktp = KafkaTP(tp.topic, tp.partition)
        if ktp not in self._c.assignment():
            return None  # revoked meanwhile
        committed: int | None = await self._c.committed(ktp)  # asks the coordinator now
        start = committed
        if start is None:
            start = (await self._c.beginning_offsets([ktp]))[ktp]
        if ktp not in self._c.assignment():
            return None  # revoked meanwhile
        # no await from the seek to the return: the caller drops the partition's
        # records until then, and what a fetch read in between would be lost
        self._c.seek(ktp, start)
        return committed

    def joined(self) -> bool:
        return self._listener.joined

    def caught_up(self) -> bool:
        """Joined, and at the last stable offset of the latest fetch on every partition."""
        return self.joined() and self.lag() == 0

    def lag(self) -> int | None:
        """From the last stable offset of the latest fetch on each partition."""
        sub = self._c._subscription.subscription
        if sub is None or sub.assignment is None:
            return None
        total = 0
        for tp in self._c.assignment():
            state = sub.assignment.state_value(tp)
            if not state.has_valid_position or state.lso is None:
                return None
            total += max(0, state.lso - state.position)
        return total

    async def stop(self) -> None:
        """Give the partitions back (the revoke listener runs first), then leave."""
        if self._listener.joined:
            await self._listener.on_partitions_revoked(self._c.assignment())
        try:
            await self._c.stop()
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise  # we are being cancelled: let it through
            # aiokafka's fetcher, stopped while it waits out a retry backoff (a
            # broker down), ends with its own cancellation: the consumer is closed.


def message_of(r: Any) -> Message:
    return Message(
        r.topic,
        r.partition,
        r.offset,
        None if r.key is None else r.key.decode("utf-8", KEY_ERRORS),
        r.value,
        tuple(r.headers or ()),
        r.timestamp,
    )

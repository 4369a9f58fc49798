"""The in-memory log: partitions, offsets, consumer groups and transactions.

It keeps Kafka's semantics that the runtimes rely on: a committed batch
appears atomically (records and group offsets together), an aborted one leaves
nothing, a consumer resumes from its group's committed offset, a new producer
with the same transactional id fences the old one, and partitions are split
among the members of a group. It is a product feature (dev mode, demos,
deterministic simulation), and takes injected faults.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from procession._errors import FencedError, TransactionAbortedError
from procession.topics._layout import RECORD_LIMIT, TopicSpec

from ._port import Batch, Listener, Message, TopicInfo, TopicPartition, partition_for


class Crash(BaseException):
    """An injected crash: unwinds a runtime task as a killed process would."""


@dataclass
class Faults:
    """Faults to inject into commits whose transactional id starts with a prefix.

    Example: ``log.faults.crash_before_commit("demo.processor", times=1)``.
    """

    _plan: list[tuple[str, type[BaseException] | BaseException]] = field(default_factory=list)

    def crash_before_commit(self, prefix: str, times: int = 1) -> None:
        """The next commits by matching producers die before anything is written."""
        self._plan.extend((prefix, Crash) for _ in range(times))

    def abort_next_commit(self, prefix: str, times: int = 1) -> None:
        """The next commits by matching producers abort (the runtime retries)."""
        self._plan.extend((prefix, TransactionAbortedError("injected abort")) for _ in range(times))

    def take(self, transactional_id: str) -> type[BaseException] | BaseException | None:
        for i, (prefix, error) in enumerate(self._plan):
            if transactional_id.startswith(prefix):
                del self._plan[i]
                return error
        return None


class _Partition:
    """Records of one partition. Compacted ones keep the last record per key;
    others may keep only the newest ``retain`` records (offsets keep counting)."""

    def __init__(self, compacted: bool, retain: int | None) -> None:
        self.compacted, self.retain = compacted, retain
        self.base = 0
        self.items: list[Message] = []
        self.latest: dict[str | None, Message] = {}
        self._end = 0

    @property
    def end(self) -> int:
        return self._end if self.compacted else self.base + len(self.items)

    def append(self, msg: Message) -> None:
        if self.compacted:
            self._end += 1
            self.latest.pop(msg.key, None)
            if msg.value is not None:
                self.latest[msg.key] = msg
            return
        self.items.append(msg)

    def trim(self, consumed: int) -> None:
        """Drop records more than ``retain`` behind the slowest group's offset."""
        if self.retain is None or self.compacted:
            return
        drop = consumed - self.retain - self.base
        if drop > self.retain:  # in chunks, so trimming stays cheap
            del self.items[:drop]
            self.base += drop

    def read(self, offset: int, limit: int) -> list[Message]:
        if self.compacted:
            return [m for m in self.latest.values() if m.offset >= offset][:limit]
        start = max(0, offset - self.base)
        return self.items[start : start + limit]


@dataclass
class _Group:
    members: list[MemoryConsumer] = field(default_factory=list)
    offsets: dict[TopicPartition, int] = field(default_factory=dict)
    topics: set[str] = field(default_factory=set)


class MemoryLog:
    """The shared 'broker' of the in-memory transport.

    Example:
        >>> log = MemoryLog()
        >>> log.create_topic("t", partitions=2)
        >>> log.partition_for("t", "p-1") in (0, 1)
        True
    """

    def __init__(self, retain_records: int | None = None) -> None:
        """``retain_records``: keep only that many records per partition behind the
        slowest consumer group (None keeps everything, for tools and replay)."""
        self._topics: dict[str, list[_Partition]] = {}
        self._info: dict[str, TopicInfo] = {}
        self._groups: dict[str, _Group] = {}
        self._epochs: dict[str, int] = {}
        self._waiters: set[asyncio.Event] = set()
        self._retain = retain_records
        self.faults = Faults()

    # ------------------------------------------------------------ topics

    def create_topic(
        self,
        name: str,
        partitions: int,
        compacted: bool = False,
        max_message_bytes: int = RECORD_LIMIT,
        retention_ms: int | None = None,
    ) -> None:
        """Create a topic; an existing one is left as it is (as Kafka does)."""
        if name in self._topics:
            return
        retain = None if compacted else self._retain
        self._topics[name] = [_Partition(compacted, retain) for _ in range(partitions)]
        self._info[name] = TopicInfo(
            name, partitions, compacted, max_message_bytes, retention_ms=retention_ms
        )

    def describe(self, topic: str) -> TopicInfo | None:
        return self._info.get(topic)

    def partitions(self, topic: str) -> int:
        return len(self._topic(topic))

    def partition_for(self, topic: str, key: str | None) -> int:
        """Where a record without a partition goes: murmur2 of the key, as on Kafka."""
        n = self.partitions(topic)
        return 0 if key is None else partition_for(key, n)

    def records(self, topic: str) -> list[Message]:
        """Every record a topic still holds, partition by partition."""
        return [m for part in self._topic(topic) for m in part.read(0, part.end)]

    def read(self, tp: TopicPartition, offset: int, limit: int) -> list[Message]:
        return self._topic(tp.topic)[tp.partition].read(offset, limit)

    def end_offset(self, tp: TopicPartition) -> int:
        return self._topic(tp.topic)[tp.partition].end

    def _topic(self, name: str) -> list[_Partition]:
        try:
            return self._topics[name]
        except KeyError:
            raise KeyError(f"no topic {name!r} in the in-memory log") from None

    # ------------------------------------------------------------ writes

    def register(self, transactional_id: str) -> int:
        """A new producer epoch for this id: older producers are fenced."""
        epoch = self._epochs.get(transactional_id, 0) + 1
        self._epochs[transactional_id] = epoch
        return epoch

    def commit(self, transactional_id: str, epoch: int, batch: Batch, now_ms: int) -> None:
        if self._epochs.get(transactional_id) != epoch:
            raise FencedError(transactional_id)
        fault = self.faults.take(transactional_id)
        if fault is not None:
            raise fault
        for out in batch.records:  # the broker refuses the whole transaction
            self._topic(out.topic)  # an unknown topic fails as such
            if too_large := out.too_large(self._info[out.topic].record_limit):
                raise too_large
        for out in batch.records:
            parts = self._topic(out.topic)
            p = (
                out.partition
                if out.partition is not None
                else self.partition_for(out.topic, out.key)
            )
            part = parts[p]
            # a copy of exactly its size: an encoder's buffer may be far larger
            # than its bytes, and the log keeps values for as long as it keeps them
            value = None if out.value is None else bytes(memoryview(out.value))
            part.append(Message(out.topic, p, part.end, out.key, value, out.headers, now_ms))
        if batch.offsets:
            if batch.group is None:
                raise ValueError("a batch with offsets needs a group")
            self._groups.setdefault(batch.group, _Group()).offsets.update(batch.offsets)
            if self._retain is not None:
                for tp in batch.offsets:
                    self._trim(tp)
        self.notify()

    def _trim(self, tp: TopicPartition) -> None:
        readers = [g for g in self._groups.values() if tp.topic in g.topics]
        if readers:
            consumed = min(g.offsets.get(tp, 0) for g in readers)
            self._topic(tp.topic)[tp.partition].trim(consumed)

    def committed(self, group: str, tp: TopicPartition) -> int:
        return self._groups.setdefault(group, _Group()).offsets.get(tp, 0)

    # ------------------------------------------------------------ waiting

    def notify(self) -> None:
        for waiter in self._waiters:
            waiter.set()

    async def wait(self, timeout_s: float) -> None:
        """Until something is written, or the timeout passes."""
        event = asyncio.Event()
        self._waiters.add(event)
        try:
            async with asyncio.timeout(timeout_s):  # not wait_for: see SystemClock.wait
                await event.wait()
        except TimeoutError:
            pass
        finally:
            self._waiters.discard(event)

    # ------------------------------------------------------------ groups

    async def join(self, group: str, member: MemoryConsumer) -> None:
        g = self._groups.setdefault(group, _Group())
        g.members.append(member)
        g.topics.update(member.topics)
        await self._rebalance(g)

    async def leave(self, group: str, member: MemoryConsumer) -> None:
        g = self._groups.setdefault(group, _Group())
        if member in g.members:
            g.members.remove(member)
            await member.revoke_all()
            await self._rebalance(g)

    async def _rebalance(self, g: _Group) -> None:
        for m in g.members:
            await m.revoke_all()
        tps = sorted({tp for m in g.members for tp in self.topic_partitions(m.topics)})
        share: dict[int, list[TopicPartition]] = {i: [] for i in range(len(g.members))}
        for i, tp in enumerate(tps):
            share[i % len(g.members)].append(tp)
        for i, m in enumerate(g.members):
            await m.assign(share[i])

    def topic_partitions(self, topics: Sequence[str]) -> list[TopicPartition]:
        return [TopicPartition(t, p) for t in topics for p in range(self.partitions(t))]


_ids = itertools.count(1)


class MemoryProducer:
    """A transactional producer on a :class:`MemoryLog`."""

    def __init__(self, log: MemoryLog, transactional_id: str, clock_ms: Callable[[], int]) -> None:
        self._log, self._id, self._clock = log, transactional_id, clock_ms
        self._epoch = 0

    async def start(self) -> None:
        self._epoch = self._log.register(self._id)

    async def commit(self, batch: Batch) -> None:
        if not self._epoch:
            raise RuntimeError(f"producer {self._id!r} used before start()")
        self._log.commit(self._id, self._epoch, batch, self._clock())

    def idle(self) -> None:
        return None  # one transaction per commit: nothing is gathered

    async def stop(self) -> None:
        self._epoch = 0


class MemoryConsumer:
    """A member of a consumer group on a :class:`MemoryLog`."""

    def __init__(
        self,
        log: MemoryLog,
        group: str,
        topics: Sequence[str],
        on_assign: Listener | None,
        on_revoke: Listener | None,
        *,
        producers: Callable[[str], MemoryProducer],
    ) -> None:
        self._log, self.group, self.topics = log, group, list(topics)
        self._on_assign, self._on_revoke = on_assign, on_revoke
        self._producers = producers
        self._positions: dict[TopicPartition, int] = {}
        self._joined = False
        self.member_id = next(_ids)

    @property
    def assignment(self) -> list[TopicPartition]:
        return list(self._positions)

    async def assign(self, tps: list[TopicPartition]) -> None:
        self._positions = {tp: self._log.committed(self.group, tp) for tp in tps}
        self._joined = True
        if self._on_assign is not None and tps:
            await self._on_assign(tps)

    async def revoke_all(self) -> None:
        tps, self._positions = list(self._positions), {}
        if self._on_revoke is not None and tps:
            await self._on_revoke(tps)

    async def fetch(self, timeout_s: float, max_records: int = 500) -> list[Message]:
        out = self._poll(max_records)
        if not out and timeout_s > 0:
            await self._log.wait(timeout_s)
            out = self._poll(max_records)
        return out

    def _poll(self, max_records: int) -> list[Message]:
        out: list[Message] = []
        for tp, pos in list(self._positions.items()):
            got = self._log.read(tp, pos, max_records - len(out))
            if got:
                self._positions[tp] = pos + len(got)
                out.extend(got)
            if len(out) >= max_records:
                break
        return out

    async def rewind(self, tp: TopicPartition) -> int | None:
        if tp not in self._positions:
            return None
        self._positions[tp] = self._log.committed(self.group, tp)
        return self._positions[tp]

    def joined(self) -> bool:
        return self._joined

    def producer(self, transactional_id: str) -> MemoryProducer:
        """A producer of its own (exactly-once v1): its start fences the old owner."""
        return self._producers(transactional_id)

    def caught_up(self) -> bool:
        return self.lag() == 0

    def lag(self) -> int:
        return sum(max(0, self._log.end_offset(tp) - pos) for tp, pos in self._positions.items())

    async def stop(self) -> None:
        await self._log.leave(self.group, self)
        self._joined = False


class MemoryTransport:
    """The :class:`Transport` over a :class:`MemoryLog`.

    Example:
        >>> transport = MemoryTransport()
        >>> transport.log.faults.abort_next_commit("x")
    """

    def __init__(
        self, log: MemoryLog | None = None, clock_ms: Callable[[], int] | None = None
    ) -> None:
        self.log = log or MemoryLog()
        self._clock = clock_ms or (lambda: 0)

    def producer(self, transactional_id: str) -> MemoryProducer:
        return MemoryProducer(self.log, transactional_id, self._clock)

    async def consumer(
        self,
        group: str,
        topics: Sequence[str],
        on_assign: Listener | None = None,
        on_revoke: Listener | None = None,
    ) -> MemoryConsumer:
        member = MemoryConsumer(
            self.log, group, topics, on_assign, on_revoke, producers=self.producer
        )
        await self.log.join(group, member)
        return member

    async def read_partition(self, tp: TopicPartition) -> list[Message]:
        return self.log.read(tp, 0, self.log.end_offset(tp))

    async def create_topics(self, specs: Sequence[TopicSpec]) -> None:
        for spec in specs:
            self.log.create_topic(
                spec.name,
                spec.partitions,
                spec.compacted,
                spec.max_message_bytes,
                spec.retention_ms,
            )

    async def describe(self, topics: Sequence[str]) -> dict[str, TopicInfo]:
        found = {t: self.log.describe(t) for t in topics}
        return {t: info for t, info in found.items() if info is not None}

    async def committed(
        self, group: str, tps: Sequence[TopicPartition]
    ) -> dict[TopicPartition, int]:
        return {tp: self.log.committed(group, tp) for tp in tps}

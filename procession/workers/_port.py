"""The transport port: what the runtimes need from a log, in-memory or Kafka.

Three small protocols. A :class:`Transport` makes transactional producers and
group consumers; a producer commits a whole :class:`Batch` (records plus input
offsets) atomically or not at all. Values are bytes on every transport: the
runtimes encode records with the codec before they hand them over, so the
in-memory log moves the very bytes Kafka would.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol

from procession._errors import RecordTooLargeError
from procession._values import value
from procession.topics._layout import TopicSpec

Headers = tuple[tuple[str, bytes], ...]

#: Kafka's default ``max.message.bytes`` (1 MiB plus the record batch overhead).
DEFAULT_MAX_MESSAGE_BYTES = 1_048_588

#: The most bytes one record may take on any transport, whatever its topic takes:
#: the Kafka clients are set to send records up to this size (their own defaults,
#: about 1 MB, sit below a topic's default ``max.message.bytes``, and a record
#: the topic takes would be refused by the client, again on every retry).
MAX_RECORD_BYTES = 16 * 1024 * 1024


class TopicPartition(NamedTuple):
    """A partition of a topic."""

    topic: str
    partition: int


@value
class Message:
    """A record read from a partition (committed records only)."""

    topic: str
    partition: int
    offset: int
    key: str | None
    value: bytes | None
    headers: Headers = ()
    timestamp_ms: int = 0

    @property
    def tp(self) -> TopicPartition:
        return TopicPartition(self.topic, self.partition)


@value
class Outgoing:
    """A record to produce. ``partition`` None: where the key hashes to (murmur2)."""

    topic: str
    key: str | None
    value: bytes | None
    headers: Headers = ()
    partition: int | None = None
    #: :meth:`size`, once asked (a record is checked when made and again by the
    #: producer before it sends: the second look is free).
    _size: int = field(default=-1, init=False, repr=False, compare=False)

    def size(self) -> int:
        """Bytes this record takes as a one-record batch on the wire (an upper bound).

        A topic refuses a record batch larger than its ``max.message.bytes``;
        the runtimes compare this with :meth:`TopicInfo.max_message_bytes`
        before producing. Records of one transaction travel in small batches
        (16 KiB), so only a single large record can reach the limit.

        Example:
            >>> Outgoing("t", "k", b"x" * 100).size() < 200
            True
        """
        size = self._size
        if size >= 0:
            return size
        size = _BATCH_OVERHEAD + 10 * len(self.headers)
        if self.key is not None:  # str length: 4 bytes a character covers any UTF-8
            size += len(self.key) if self.key.isascii() else 4 * len(self.key)
        if self.value is not None:
            size += len(self.value)
        for k, v in self.headers:  # header names are ASCII
            size += len(k) + len(v)
        object.__setattr__(self, "_size", size)  # a value to the type checker; a memo here
        return size

    def too_large(self, limit: int, what: str = "a record") -> RecordTooLargeError | None:
        """Why a topic whose ``max.message.bytes`` is ``limit`` refuses this record, or None.

        Example:
            >>> str(Outgoing("t", "k", b"x" * 100).too_large(50, "the state"))
            "the state of 194 bytes is over 't''s max.message.bytes (50)"
        """
        size = self.size()
        return RecordTooLargeError(self.topic, size, limit, what) if size > limit else None


#: A record batch header (61 bytes) plus one record's own framing, generously.
_BATCH_OVERHEAD = 61 + 32


@dataclass(frozen=True, slots=True)
class TopicInfo:
    """What a transport knows of an existing topic."""

    name: str
    partitions: int
    compacted: bool = False
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    replication: int = 1
    retention_ms: int | None = None
    min_insync: int | None = None

    @property
    def record_limit(self) -> int:
        """The most bytes a record written to this topic may take: its
        ``max.message.bytes``, up to :data:`MAX_RECORD_BYTES`.

        Example:
            >>> TopicInfo("t", 1, max_message_bytes=64 << 20).record_limit == MAX_RECORD_BYTES
            True
        """
        return min(self.max_message_bytes, MAX_RECORD_BYTES)


def record_limits(found: Mapping[str, TopicInfo]) -> dict[str, int]:
    """Each described topic's :attr:`TopicInfo.record_limit`, by name.

    Example:
        >>> record_limits({"t": TopicInfo("t", 1, max_message_bytes=20_000)})
        {'t': 20000}
    """
    return {name: info.record_limit for name, info in found.items()}


@dataclass
class Batch:
    """What one transaction writes: records and, optionally, consumed offsets.

    ``offsets`` are the next offsets to read (last consumed + 1), per partition.
    """

    records: list[Outgoing] = field(default_factory=list)
    offsets: dict[TopicPartition, int] = field(default_factory=dict)
    group: str | None = None

    def __bool__(self) -> bool:
        return bool(self.records or self.offsets)


async def check_sizes(batch: Batch, limit: Callable[[str], Awaitable[int]]) -> None:
    """Raise :class:`RecordTooLargeError` for the first record of ``batch`` over its
    topic's ``max.message.bytes`` (``limit(topic)``, asked once per topic): what a
    Kafka producer checks before it sends anything, as the broker would refuse it."""
    limits: dict[str, int] = {}
    for out in batch.records:
        if (most := limits.get(out.topic)) is None:
            most = limits[out.topic] = await limit(out.topic)
        if too_large := out.too_large(most):
            raise too_large


Listener = Callable[[Sequence[TopicPartition]], Awaitable[None]]


class Producer(Protocol):
    """A transactional producer with a static transactional id.

    - ``start()`` fences every older producer with the same id and aborts its
      open transaction (a replacement unblocks ``read_committed`` readers at
      once, instead of waiting for the transaction to time out).
    - ``commit(batch)`` writes the batch's records and offsets in one
      transaction. It returns only once every record was acknowledged and the
      transaction committed. Otherwise nothing of the batch is visible and it
      raises ``TransactionAbortedError`` (retry the same batch),
      ``RecordTooLargeError`` (a record over its topic's ``max.message.bytes``;
      retrying cannot help) or ``FencedError`` (a newer owner exists; stop).
    - ``idle()`` says there is nothing more to commit for now. A producer that
      gathers the commits of several partitions into one transaction waits
      briefly, after each, for the partitions it just served to commit again;
      this one it need not wait for. The others ignore it.
    - ``stop()`` aborts a transaction still open, then closes.
    """

    async def start(self) -> None: ...

    async def commit(self, batch: Batch) -> None: ...

    def idle(self) -> None: ...

    async def stop(self) -> None: ...


class Consumer(Protocol):
    """A group consumer (read_committed) of some topics.

    Assignment changes are told to the listeners before records of the newly
    assigned partitions are fetched; a revoke listener runs before the
    partitions go to another member.
    """

    async def fetch(self, timeout_s: float, max_records: int = 500) -> list[Message]:
        """Up to ``max_records`` records, waiting up to ``timeout_s`` for the first.

        ``max_records=0`` takes none and keeps the member's place in its group:
        an owner with no room for more records (every task slot busy, a
        partition's queue full) calls it instead of not fetching. librdkafka
        serves rebalances only inside a poll, and both Kafka clients leave the
        group after ``max.poll.interval.ms`` without one: a worker whose slots
        all run long tasks would hold every rebalance up, then lose its
        partitions while its tasks still run.
        """
        ...

    async def rewind(self, tp: TopicPartition) -> int | None:
        """Read ``tp`` again from its group's committed offset, as the log says now,
        and return that offset (None: nothing committed, or no longer assigned).

        A member that takes a partition over calls it once it has fenced the
        previous owner: the offset fetched at assignment may predate that
        owner's last commit (Kafka writes commit markers after answering), and
        records fetched before this call must be dropped.
        """
        ...

    def caught_up(self) -> bool:
        """Read up to the end of every assigned partition (as last seen)."""
        ...

    def lag(self) -> int | None:
        """Records between the position and the end (the last stable offset), summed
        over the assigned partitions, as last seen; None while a position or an
        end is not known yet."""
        ...

    def joined(self) -> bool:
        """A member of its group with an assignment (possibly empty) in force."""
        ...

    def producer(self, transactional_id: str) -> Producer:
        """A producer for the work of one of this member's partitions.

        Exactly-once v1 transports (in-memory, aiokafka) give a producer of its
        own with that static id, whose start fences the partition's previous
        owner. An exactly-once v2 transport (librdkafka) gives a share in the
        member's one transactional producer: its partitions' commits go out
        together, fenced by the group's generation; the id is not used.
        """
        ...

    async def stop(self) -> None: ...


class Transport(Protocol):
    """Makes producers and consumers over one log (an in-memory one or Kafka)."""

    def producer(self, transactional_id: str) -> Producer: ...

    async def consumer(
        self,
        group: str,
        topics: Sequence[str],
        on_assign: Listener | None = None,
        on_revoke: Listener | None = None,
    ) -> Consumer: ...

    async def read_partition(self, tp: TopicPartition) -> list[Message]:
        """Every committed record of a partition, from the start to its end now."""
        ...

    async def create_topics(self, specs: Sequence[TopicSpec]) -> None:
        """Create the topics that do not exist; raise with the broker's reason."""
        ...

    async def describe(self, topics: Sequence[str]) -> dict[str, TopicInfo]:
        """What exists of ``topics`` (missing ones are left out)."""
        ...

    async def committed(
        self, group: str, tps: Sequence[TopicPartition]
    ) -> dict[TopicPartition, int]:
        """The offsets ``group`` has committed on ``tps`` (0 where none), read
        without joining the group (tools)."""
        ...


async def partitions(transport: Transport, topic: str) -> int:
    """How many partitions ``topic`` has (0 when it does not exist)."""
    info = (await transport.describe([topic])).get(topic)
    return info.partitions if info is not None else 0


async def messages_of(transport: Transport, topic: str, key: str) -> list[Message]:
    """The records of ``key``, read from the one partition its key hashes to."""
    tp = TopicPartition(topic, partition_for(key, await partitions(transport, topic)))
    return [m for m in await transport.read_partition(tp) if m.key == key]


@functools.lru_cache(maxsize=1 << 16)  # a process's records share its key
def partition_for(key: str, partitions: int) -> int:
    """The partition Kafka's default partitioner gives ``key`` (murmur2, as Java's).

    Every writer of a process topic must agree on it: the processor refuses
    (dead-letters) a record found on another partition than its key's.

    Example:
        >>> partition_for("rebase:r1", 6) == partition_for("rebase:r1", 6)
        True
    """
    return (_murmur2(key.encode()) & 0x7FFFFFFF) % partitions


def _murmur2(data: bytes) -> int:
    """Kafka's murmur2 (``org.apache.kafka.common.utils.Utils.murmur2``)."""
    m, r, mask = 0x5BD1E995, 24, 0xFFFFFFFF
    length = len(data)
    h = (0x9747B28C ^ length) & mask
    end = length - length % 4
    for i in range(0, end, 4):
        k = int.from_bytes(data[i : i + 4], "little")
        k = (k * m) & mask
        k ^= k >> r
        k = (k * m) & mask
        h = ((h * m) & mask) ^ k
    rest = length % 4
    if rest == 3:
        h ^= data[end + 2] << 16
    if rest >= 2:
        h ^= data[end + 1] << 8
    if rest >= 1:
        h ^= data[end]
        h = (h * m) & mask
    h ^= h >> 13
    h = (h * m) & mask
    h ^= h >> 15
    return h

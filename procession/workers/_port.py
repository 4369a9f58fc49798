"""The transport port: what the runtimes need from a log, in-memory or Kafka.

Three small protocols. A :class:`Transport` makes transactional producers and
group consumers; a producer commits a whole :class:`Batch` (records plus input
offsets) atomically or not at all.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol

from procession.topics._layout import TopicSpec

Headers = tuple[tuple[str, bytes], ...]
#: bytes on the wire; in memory, also the (immutable) record or state objects.
Value = object


class TopicPartition(NamedTuple):
    """A partition of a topic."""

    topic: str
    partition: int


@dataclass(frozen=True, slots=True)
class Message:
    """A record read from a partition. ``value`` is bytes on the wire, or a record
    object where the transport keeps them in memory."""

    topic: str
    partition: int
    offset: int
    key: str | None
    value: Value
    headers: Headers = ()
    timestamp_ms: int = 0

    @property
    def tp(self) -> TopicPartition:
        return TopicPartition(self.topic, self.partition)


@dataclass(frozen=True, slots=True)
class Outgoing:
    """A record to produce."""

    topic: str
    key: str | None
    value: Value
    headers: Headers = ()
    partition: int | None = None


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


Listener = Callable[[Sequence[TopicPartition]], Awaitable[None]]


class Producer(Protocol):
    """A transactional producer. ``start`` fences older owners of the same id."""

    async def start(self) -> None: ...

    async def commit(self, batch: Batch) -> None:
        """Write the batch atomically; raise ``FencedError`` or ``TransactionAbortedError``."""
        ...

    async def stop(self) -> None: ...


class Consumer(Protocol):
    """A group consumer (read_committed) of some topics."""

    async def fetch(self, timeout_s: float, max_records: int = 500) -> list[Message]: ...

    def caught_up(self) -> bool:
        """Read up to the end of every assigned partition (as last seen)."""
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

    async def create_topics(self, specs: Sequence[TopicSpec]) -> None: ...

    async def partitions(self, topic: str) -> int: ...

"""Topic names and settings of one Procession application."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

#: ``max.message.bytes`` of the topics that hold records (Kafka's default, set
#: deliberately so a broker with another default does not change behaviour).
RECORD_LIMIT = 1_048_588
#: The dead-letter topic takes a larger record, so a dead letter of any record
#: the other topics accept fits (its headers say where it came from and why).
DEAD_LETTER_LIMIT = 8 * 1_048_576


@dataclass(frozen=True)
class TopicSpec:
    """A topic to create: partitions, compaction, retention, limits, replication."""

    name: str
    partitions: int
    compacted: bool = False
    retention_ms: int | None = None
    max_message_bytes: int = RECORD_LIMIT
    replication: int = 1
    min_insync: int | None = None


@dataclass(frozen=True)
class Topics:
    """The topics of an application, named from its prefix.

    The process topic (key = process id) holds each process's one stream; the
    changelog is co-partitioned with it; there is a task topic per task type.

    Example:
        >>> t = Topics("shop")
        >>> t.process, t.changelog, t.tasks("ChargeCard"), t.dead_letter
        ('shop.process', 'shop.changelog', 'shop.tasks.ChargeCard', 'shop.dead-letter')
    """

    prefix: str = "procession"
    partitions: int = 6
    task_partitions: int = 6
    events: str = ""
    replication: int = 1
    min_insync: int | None = None
    retention_ms: int = 7 * 24 * 3600 * 1000
    #: retention.ms of the process topic: -1 (unlimited) by default, because
    #: ``history``, replay and a changelog rebuild read a process's whole stream.
    process_retention_ms: int = -1

    @property
    def process(self) -> str:
        return f"{self.prefix}.process"

    @property
    def changelog(self) -> str:
        return f"{self.prefix}.changelog"

    @property
    def dead_letter(self) -> str:
        return f"{self.prefix}.dead-letter"

    @property
    def inputs(self) -> str:
        """The topic domain events are published to (unless ``events`` names another)."""
        return self.events or f"{self.prefix}.events"

    def tasks(self, task_type: str) -> str:
        return f"{self.prefix}.tasks.{task_type}"

    def specs(self, task_types: Iterable[str]) -> list[TopicSpec]:
        """Every topic the application needs, with its settings."""

        def spec(name: str, partitions: int, **kw: Any) -> TopicSpec:
            return TopicSpec(
                name, partitions, replication=self.replication, min_insync=self.min_insync, **kw
            )

        kept = self.retention_ms
        return [
            spec(self.inputs, self.partitions, retention_ms=kept),
            spec(self.process, self.partitions, retention_ms=self.process_retention_ms),
            spec(self.changelog, self.partitions, compacted=True),
            spec(self.dead_letter, 1, max_message_bytes=DEAD_LETTER_LIMIT),
            *(
                spec(self.tasks(t), self.task_partitions, retention_ms=kept)
                for t in sorted(set(task_types))
            ),
        ]

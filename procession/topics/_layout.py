"""Topic names and settings of one Procession application."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class TopicSpec:
    """A topic to create: partitions, compaction, retention."""

    name: str
    partitions: int
    compacted: bool = False
    retention_ms: int | None = None


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
        week = 7 * 24 * 3600 * 1000
        return [
            TopicSpec(self.inputs, self.partitions, retention_ms=week),
            TopicSpec(self.process, self.partitions),
            TopicSpec(self.changelog, self.partitions, compacted=True),
            TopicSpec(self.dead_letter, 1),
            *(
                TopicSpec(self.tasks(t), self.task_partitions, retention_ms=week)
                for t in sorted(set(task_types))
            ),
        ]

"""Topic settings in Kafka's own names, for either client's admin requests:
what a spec asks a topic to be created with, and what a topic's description
and configuration say of it."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence

from procession.topics._layout import TopicSpec

from ._port import DEFAULT_MAX_MESSAGE_BYTES, TopicInfo, record_limits


def topic_configs(spec: TopicSpec) -> dict[str, str]:
    """The topic-level settings a spec asks for.

    Example:
        >>> topic_configs(TopicSpec("p.changelog", 6, compacted=True))["cleanup.policy"]
        'compact'
    """
    config = {
        "cleanup.policy": "compact" if spec.compacted else "delete",
        "max.message.bytes": str(spec.max_message_bytes),
    }
    if spec.retention_ms is not None and not spec.compacted:
        config["retention.ms"] = str(spec.retention_ms)
    if spec.min_insync is not None:
        config["min.insync.replicas"] = str(spec.min_insync)
    return config


def topic_info(name: str, replicas: Sequence[int], config: Mapping[str, str]) -> TopicInfo:
    """What a topic is, from its partitions' replica counts (one per partition; the
    lowest is its replication) and its configuration (``config``: name to value,
    as the broker describes them).

    Example:
        >>> topic_info("t", [1, 1], {"cleanup.policy": "compact", "retention.ms": "-1"}).compacted
        True
    """
    retention = config.get("retention.ms")
    return TopicInfo(
        name,
        len(replicas),
        compacted="compact" in config.get("cleanup.policy", "delete").split(","),
        max_message_bytes=int(config.get("max.message.bytes", DEFAULT_MAX_MESSAGE_BYTES)),
        replication=min(replicas, default=0),
        retention_ms=None if retention in (None, "-1") else int(retention),
        min_insync=int(config["min.insync.replicas"]) if "min.insync.replicas" in config else None,
    )


#: A transport's ``describe``.
Describe = Callable[[Sequence[str]], Awaitable[dict[str, TopicInfo]]]


class Limits:
    """Each topic's ``max.message.bytes``, as ``describe`` last told it (asked once
    per topic, then cached until :meth:`forget`).

    Example::

        limits = Limits(transport.describe)
        await limits.of("shop.process")  # 1_048_588 by Kafka's default
    """

    def __init__(self, describe: Describe) -> None:
        self._describe = describe
        self._known: dict[str, int] = {}

    def seen(self, found: Mapping[str, TopicInfo]) -> None:
        """Topics described: their limits are known now."""
        self._known.update(record_limits(found))

    async def of(self, topic: str) -> int:
        """The most bytes a record of the topic may take (:attr:`TopicInfo.record_limit`;
        Kafka's default for a topic that does not exist)."""
        if topic not in self._known:
            info = (await self._describe([topic])).get(topic)
            return info.record_limit if info else DEFAULT_MAX_MESSAGE_BYTES
        return self._known[topic]

    def forget(self) -> None:
        """Ask again next time (a topic's limit changed under us)."""
        self._known.clear()


async def until_described(describe: Describe, names: Sequence[str], timeout_s: float) -> None:
    """Wait until every one of ``names`` is described: a topic's metadata follows
    its creation after a moment."""
    async with asyncio.timeout(timeout_s):
        while len(await describe(names)) < len(names):  # noqa: ASYNC110 - polls the broker
            await asyncio.sleep(0.05)

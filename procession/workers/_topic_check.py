"""Do an application's topics exist as it needs them? A pure comparison, and its check.

A topic created by hand, or by an older version with other settings, breaks
the runtimes in ways that show up late (a changelog that is not compacted
loses state after retention; a changelog partitioned unlike its process topic
restores the wrong keys). :func:`verify` finds such topics before anything
runs, and names each one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from procession._errors import TopicsError
from procession.topics._layout import TopicSpec

from ._kafka_settings import PRODUCER_BATCH_BYTES
from ._port import TopicInfo, Transport


def problems(
    specs: Sequence[TopicSpec],
    found: Mapping[str, TopicInfo],
    *,
    co_partitioned: Sequence[tuple[str, str]] = (),
    settings: bool = True,
) -> list[str]:
    """One line per way the topics in ``found`` differ from ``specs``.

    Checked: existence, partition count, compaction (either way), a
    ``max.message.bytes`` below the spec, a replication factor below the spec,
    a limited retention where the spec keeps everything (the process topic),
    and that each pair in ``co_partitioned`` has the same partition count.
    With ``settings=False`` only what breaks correctness counts: a smaller
    ``max.message.bytes`` or replication is the operator's choice (the runtimes
    dead-letter or park what does not fit), down to the producers' batch size
    (``PRODUCER_BATCH_BYTES``, 16 KiB), below which records that fit one by one
    are refused as a batch.

    Example:
        >>> spec = TopicSpec("shop.changelog", 6, compacted=True)
        >>> problems([spec], {"shop.changelog": TopicInfo("shop.changelog", 3)})
        ['shop.changelog: 3 partitions, expected 6', 'shop.changelog: not compacted, must be']
    """
    out: list[str] = []
    for spec in specs:
        info = found.get(spec.name)
        if info is None:
            out.append(f"{spec.name}: missing")
            continue
        if info.partitions != spec.partitions:
            out.append(f"{spec.name}: {info.partitions} partitions, expected {spec.partitions}")
        if spec.compacted and not info.compacted:
            out.append(f"{spec.name}: not compacted, must be")
        if info.compacted and not spec.compacted:
            out.append(f"{spec.name}: compacted, must not be (records would be dropped by key)")
        if info.min_insync is not None and info.min_insync > info.replication:
            out.append(
                f"{spec.name}: min.insync.replicas {info.min_insync} is above its "
                f"replication factor {info.replication}: no write to it can succeed"
            )
        if info.max_message_bytes < PRODUCER_BATCH_BYTES:
            out.append(
                f"{spec.name}: max.message.bytes {info.max_message_bytes} is below "
                f"{PRODUCER_BATCH_BYTES}, the record batches the producers write: "
                "records that each fit would be refused together, and never committed"
            )
        if not settings:
            continue
        if info.max_message_bytes < spec.max_message_bytes:
            out.append(
                f"{spec.name}: max.message.bytes {info.max_message_bytes}, "
                f"expected at least {spec.max_message_bytes}"
            )
        if spec.retention_ms == -1 and info.retention_ms not in (None, -1):
            out.append(
                f"{spec.name}: retention.ms {info.retention_ms}, expected unlimited (-1): "
                "history, replay and recovery read a process's whole stream"
            )
        if info.replication < spec.replication:
            out.append(
                f"{spec.name}: replication factor {info.replication}, "
                f"expected at least {spec.replication}"
            )
    for a, b in co_partitioned:
        left, right = found.get(a), found.get(b)
        if left is not None and right is not None and left.partitions != right.partitions:
            out.append(
                f"{b}: {right.partitions} partitions but {a} has {left.partitions}; "
                "they must be co-partitioned"
            )
    return out


async def verify(
    transport: Transport,
    specs: Sequence[TopicSpec],
    co_partitioned: Sequence[tuple[str, str]] = (),
    *,
    settings: bool = True,
) -> dict[str, TopicInfo]:
    """Describe the topics of ``specs``; raise :class:`TopicsError` naming every problem.

    Example::

        found = await verify(transport, app.topics.specs(app.task_types()))
    """
    names = list(
        dict.fromkeys([s.name for s in specs] + [t for pair in co_partitioned for t in pair])
    )
    found = await transport.describe(names)
    listed = problems(specs, found, co_partitioned=co_partitioned, settings=settings)
    if listed:
        raise TopicsError(listed)
    return found

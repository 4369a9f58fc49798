"""Topics as the application needs them (a minimal check; see verify)."""

from __future__ import annotations

from collections.abc import Sequence

from procession._errors import TopicsError
from procession.topics._layout import TopicSpec

from ._port import TopicInfo, Transport


async def verify(
    transport: Transport, specs: Sequence[TopicSpec], co_partitioned: Sequence[tuple[str, str]] = ()
) -> dict[str, TopicInfo]:
    found = await transport.describe([s.name for s in specs])
    problems = [f"{s.name}: missing" for s in specs if s.name not in found]
    for a, b in co_partitioned:
        if a in found and b in found and found[a].partitions != found[b].partitions:
            problems.append(f"{b}: {found[b].partitions} partitions, {a} has {found[a].partitions}")
    if problems:
        raise TopicsError(problems)
    return found

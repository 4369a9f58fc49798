"""Topics on a Kafka cluster through aiokafka: create them as specified, and
describe what exists."""

from __future__ import annotations

import functools
from collections.abc import Sequence

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from procession._errors import TopicsError
from procession.topics._layout import TopicSpec

from ._kafka_topics import topic_configs, topic_info, until_described
from ._port import TopicInfo

_EXISTS = 36  # TOPIC_ALREADY_EXISTS


async def create(admin: AIOKafkaAdminClient, specs: Sequence[TopicSpec]) -> None:
    """Create every missing topic; raise :class:`TopicsError` with the broker's words."""
    new = [
        NewTopic(s.name, s.partitions, s.replication, topic_configs=topic_configs(s)) for s in specs
    ]
    response = (await admin.create_topics(new)).to_object()
    problems = [
        f"{e['topic']}: {_reason(e['error_code'], e['error_message'])}"
        for e in response["topic_errors"]
        if e["error_code"] not in (0, _EXISTS)
    ]
    if problems:
        raise TopicsError(problems)
    await until_described(functools.partial(describe, admin), [s.name for s in specs], 30.0)


def _reason(code: int, message: str | None) -> str:
    """The broker's words for a refused topic, or at least its error code."""
    return message or f"error code {code}"


async def describe(admin: AIOKafkaAdminClient, topics: Sequence[str]) -> dict[str, TopicInfo]:
    """Partitions, replication and the settings Procession relies on, per existing topic."""
    if not topics:
        return {}
    found = {
        t["topic"]: t for t in await admin.describe_topics(list(topics)) if t["error_code"] == 0
    }
    if not found:
        return {}
    resources = [ConfigResource(ConfigResourceType.TOPIC, name) for name in found]
    configs: dict[str, dict[str, str]] = {}
    for response in await admin.describe_configs(resources):
        for res in response.to_object()["resources"]:
            if res["error_code"] == 0:
                configs[res["resource_name"]] = {
                    e["config_names"]: e["config_value"] for e in res["config_entries"]
                }
    return {
        name: topic_info(
            name,
            [len(p["replicas"]) for p in meta["partitions"]],
            configs.get(name, {}),
        )
        for name, meta in found.items()
    }

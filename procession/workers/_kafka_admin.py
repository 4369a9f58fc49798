"""Topics on a Kafka cluster: create them as specified, and describe what exists."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from procession._errors import TopicsError
from procession.topics._layout import TopicSpec

from ._port import DEFAULT_MAX_MESSAGE_BYTES, TopicInfo

_EXISTS = 36  # TOPIC_ALREADY_EXISTS


def topic_configs(spec: TopicSpec) -> dict[str, str]:
    """The topic-level settings a spec asks for."""
    config = {
        "cleanup.policy": "compact" if spec.compacted else "delete",
        "max.message.bytes": str(spec.max_message_bytes),
    }
    if spec.retention_ms is not None and not spec.compacted:
        config["retention.ms"] = str(spec.retention_ms)
    if spec.min_insync is not None:
        config["min.insync.replicas"] = str(spec.min_insync)
    return config


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
    names = [s.name for s in specs]
    async with asyncio.timeout(30):  # metadata follows creation after a moment
        while len(await describe(admin, names)) < len(names):  # noqa: ASYNC110 - polls the broker
            await asyncio.sleep(0.05)


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
    return {name: _info(name, meta, configs.get(name, {})) for name, meta in found.items()}


def _info(name: str, meta: dict[str, Any], config: dict[str, str]) -> TopicInfo:
    partitions = meta["partitions"]
    retention = config.get("retention.ms")
    return TopicInfo(
        name,
        len(partitions),
        compacted="compact" in config.get("cleanup.policy", "delete").split(","),
        max_message_bytes=int(config.get("max.message.bytes", DEFAULT_MAX_MESSAGE_BYTES)),
        replication=min((len(p["replicas"]) for p in partitions), default=0),
        retention_ms=None if retention in (None, "-1") else int(retention),
        min_insync=int(config["min.insync.replicas"]) if "min.insync.replicas" in config else None,
    )

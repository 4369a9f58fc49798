"""The Kafka transport on librdkafka (confluent-kafka): exactly-once v2, static
membership, cooperative rebalancing.

Install with the ``rdkafka`` extra. What differs from the aiokafka transport:

- A group member's partitions share **one transactional producer** (its id
  ``<group>.<instance>``), and commits asked for together go out as one
  transaction; zombies are fenced by the group's generation (KIP-447).
- With an **instance id** (``PROCESSION_INSTANCE_ID``: the pod name in
  Kubernetes) the member is static: a restart under the same id gets its
  partitions back without a rebalance, and its producer, same id again,
  aborts the transaction the killed process left open.
- **Cooperative-sticky** assignment: a joining member does not stop every
  partition, only those that move.
- One thread hop per fetch and one per transaction.

Admin requests (create, describe, committed offsets for tools) go through
librdkafka's admin client too: the ``rdkafka`` extra needs no other client.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException
from confluent_kafka import TopicPartition as KafkaTP

from procession.topics._layout import TopicSpec

from ._kafka_security import rdkafka_options
from ._port import Listener, Message, TopicInfo, TopicPartition
from ._rdkafka_admin import RdKafkaAdmin
from ._rdkafka_consumer import RdKafkaConsumer, message_of, take
from ._rdkafka_producer import TransactionalProducer

log = logging.getLogger("procession.rdkafka")

#: Seconds reading a whole partition may take.
_READ_DEADLINE_S = 120.0


def debug_contexts(env: Mapping[str, str] = os.environ) -> dict[str, str]:
    """librdkafka's ``debug`` property from ``PROCESSION_RDKAFKA_DEBUG`` (for
    example ``cgrp,eos``: the group's join states and the transactions, logged
    at DEBUG by ``procession.rdkafka``); nothing when unset.

    Example:
        >>> debug_contexts({"PROCESSION_RDKAFKA_DEBUG": " cgrp "})
        {'debug': 'cgrp'}
        >>> debug_contexts({})
        {}
    """
    contexts = env.get("PROCESSION_RDKAFKA_DEBUG", "").strip()
    return {"debug": contexts} if contexts else {}


class RdKafkaTransport:
    """The :class:`Transport` over a Kafka cluster, on librdkafka.

    Example::

        transport = RdKafkaTransport("127.0.0.1:9092", instance_id="processor-0")
        async with Runtime(app, transport) as runtime:
            ...
    """

    def __init__(
        self,
        bootstrap_servers: str,
        *,
        instance_id: str | None = None,
        security: dict[str, Any] | None = None,
    ) -> None:
        """``instance_id``: this process's stable identity (static membership and
        the members' transactional ids); by default ``PROCESSION_INSTANCE_ID``, and
        without it a random one per process (dynamic membership). Two live
        processes must never share one: the newer fences the older.
        ``security``: librdkafka properties; by default those the ``KAFKA_*``
        variables ask for (``_kafka_security``)."""
        self.bootstrap_servers = bootstrap_servers
        self.instance_id = instance_id or os.environ.get("PROCESSION_INSTANCE_ID") or None
        self._instance = self.instance_id or uuid.uuid4().hex[:12]
        self.config: dict[str, Any] = {
            "bootstrap.servers": bootstrap_servers,
            **(rdkafka_options() if security is None else security),
            "logger": log,
            **debug_contexts(),
        }
        if "debug" in self.config:  # librdkafka logs those at DEBUG
            log.setLevel(logging.DEBUG)
        self._admin = RdKafkaAdmin(self.config)
        self._members: dict[str, int] = {}
        self._metadata: dict[str, Any] = {}

    def producer(self, transactional_id: str) -> TransactionalProducer:
        return TransactionalProducer(self, transactional_id, self.group_metadata)

    async def consumer(
        self,
        group: str,
        topics: Sequence[str],
        on_assign: Listener | None = None,
        on_revoke: Listener | None = None,
    ) -> RdKafkaConsumer:
        n = self._members[group] = self._members.get(group, -1) + 1
        member = self._instance if n == 0 else f"{self._instance}-{n}"
        c = RdKafkaConsumer(
            self,
            group,
            topics,
            on_assign,
            on_revoke,
            instance=None if self.instance_id is None else member,
            transactional_id=f"{group}.{member}",
        )
        await c.start()
        return c

    def group_metadata(self, group: str) -> Any:
        """Group metadata for offsets committed without a live member of ``group``
        (generation -1: the broker does not check it)."""
        if group not in self._metadata:
            c = Consumer({**self.config, "group.id": group})
            self._metadata[group] = c.consumer_group_metadata()
            c.close()
        return self._metadata[group]

    async def read_partition(self, tp: TopicPartition) -> list[Message]:
        return await asyncio.to_thread(self._read, tp)

    def _read(self, tp: TopicPartition) -> list[Message]:
        c = Consumer(
            {
                **self.config,
                "group.id": "procession-reader",
                "enable.auto.commit": False,
                "isolation.level": "read_committed",
                "enable.partition.eof": True,
                "fetch.wait.max.ms": 10,  # the end is told by an empty fetch: soon
            }
        )
        try:
            ktp = KafkaTP(tp.topic, tp.partition)
            low, high = c.get_watermark_offsets(ktp, timeout=_READ_DEADLINE_S)
            if high <= low:
                return []  # nothing in it (the common case of a new partition)
            c.assign([KafkaTP(tp.topic, tp.partition, low)])
            out: list[Message] = []
            give_up = time.monotonic() + _READ_DEADLINE_S
            while time.monotonic() < give_up:
                for m in take(c, 5000, 0.2):
                    err = m.error()
                    if err is None:
                        out.append(message_of(m))
                    elif err.code() == KafkaError._PARTITION_EOF:
                        return out  # the end as it is now (the last stable offset)
                    elif err.fatal() or not err.retriable():
                        raise KafkaException(err)
            raise TimeoutError(
                f"reading {tp.topic}[{tp.partition}] took over {_READ_DEADLINE_S:g} s"
            )
        finally:
            c.close()

    async def connect(self, timeout_s: float) -> None:
        """Return once the cluster answered (and accepted the credentials); else
        :class:`~procession._errors.KafkaUnreachableError` with the reason."""
        await self._admin.connect(timeout_s)

    async def create_topics(self, specs: Sequence[TopicSpec]) -> None:
        await self._admin.create_topics(specs)

    async def describe(self, topics: Sequence[str]) -> dict[str, TopicInfo]:
        return await self._admin.describe(topics)

    async def committed(
        self, group: str, tps: Sequence[TopicPartition]
    ) -> dict[TopicPartition, int]:
        return await self._admin.committed(group, tps)

    async def limit(self, topic: str) -> int:
        """The topic's ``max.message.bytes`` (looked up once, then cached)."""
        return await self._admin.limit(topic)

    def forget_limits(self) -> None:
        self._admin.forget_limits()

    async def close(self) -> None:
        await self._admin.close()

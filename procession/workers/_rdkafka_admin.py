"""Admin requests on librdkafka: create and describe topics, read a group's
committed offsets, and check that the cluster answers and accepts our
credentials. The ``rdkafka`` extra needs no other Kafka client."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Sequence
from concurrent.futures import Future
from typing import Any, TypeVar

from confluent_kafka import (
    ConsumerGroupTopicPartitions,
    KafkaError,
    KafkaException,
    TopicCollection,
)
from confluent_kafka import TopicPartition as KafkaTP
from confluent_kafka.admin import AdminClient
from confluent_kafka.admin._config import ConfigResource  # public as admin.ConfigResource
from confluent_kafka.cimpl import NewTopic

from procession._errors import KafkaUnreachableError, TopicsError
from procession.topics._layout import TopicSpec

from ._kafka_security import Settings, refused
from ._kafka_topics import Limits, topic_configs, topic_info, until_described
from ._port import TopicInfo, TopicPartition
from ._thread import OneThread

T = TypeVar("T")

#: Seconds one admin request may take (librdkafka retries inside).
_REQUEST_S = 30.0

#: The admin client's librdkafka log (the clients' own is procession.rdkafka).
_LOG = logging.getLogger("procession.rdkafka.admin")

#: The errors that say the cluster answered and refused our settings.
_REFUSALS = frozenset({KafkaError._AUTHENTICATION, KafkaError._SSL})


class RdKafkaAdmin:
    """One librdkafka admin client, made on first use.

    Example::

        admin = RdKafkaAdmin({"bootstrap.servers": "127.0.0.1:9092"})
        await admin.create_topics([TopicSpec("shop.process", 6)])
        (await admin.describe(["shop.process"]))["shop.process"].partitions  # 6
    """

    def __init__(self, config: dict[str, Any]) -> None:
        """``config``: librdkafka properties (servers, security, logger)."""
        self._config = config
        self._client: AdminClient | None = None
        #: librdkafka's latest errors (error_cb, served by poll)
        self._errors: deque[KafkaError] = deque(maxlen=16)
        self._limits = Limits(self.describe)
        self._io = OneThread("rdkafka-admin")

    def _admin(self) -> AdminClient:
        if self._client is None:
            # the stub types the properties as plain values; callbacks are allowed too
            config = {k: v for k, v in self._config.items() if k != "logger"}
            self._client = AdminClient(config, error_cb=self._errors.append, logger=_LOG)
        return self._client

    async def connect(self, timeout_s: float) -> None:
        """Return once the cluster answered a metadata request; else raise
        :class:`KafkaUnreachableError` with librdkafka's reason (a refused SASL
        login or TLS handshake is named as soon as it is seen). librdkafka logs
        every failed attempt; those lines are held back meanwhile: the error
        says it once."""
        give_up = time.monotonic() + timeout_s
        why: str | None = None  # librdkafka's reason, once it gave one
        _LOG.addFilter(_held_back)
        try:
            while (left := give_up - time.monotonic()) > 0:
                try:
                    await self._call(self._admin().list_topics, timeout=min(1.0, left))
                    return
                except KafkaException as exc:
                    why = exc.args[0].str()
                self._serve()
                if refusals := [e for e in self._errors if e.code() in _REFUSALS]:
                    used = Settings(
                        self._config.get("security.protocol", "PLAINTEXT"),
                        user=self._config.get("sasl.username"),
                    )
                    why = refused(refusals[-1].str(), used)
                    break
        finally:
            _LOG.removeFilter(_held_back)
        servers = self._config.get("bootstrap.servers", "")
        if why is None:
            raise KafkaUnreachableError.silent(servers, timeout_s)
        raise KafkaUnreachableError(servers, why)

    async def create_topics(self, specs: Sequence[TopicSpec]) -> None:
        """Create every missing topic; raise :class:`TopicsError` with the broker's words."""
        if not specs:
            return
        new = [
            NewTopic(s.name, s.partitions, s.replication, config=topic_configs(s)) for s in specs
        ]
        futures = self._admin().create_topics(new, request_timeout=_REQUEST_S)
        problems = []
        for name, fut in futures.items():
            try:
                await _result(fut)
            except KafkaException as exc:
                err = exc.args[0]
                if err.code() != KafkaError.TOPIC_ALREADY_EXISTS:
                    problems.append(f"{name}: {err.str()}")
        self._serve()
        if problems:
            raise TopicsError(problems)
        await until_described(self.describe, [s.name for s in specs], _REQUEST_S)

    async def describe(self, topics: Sequence[str]) -> dict[str, TopicInfo]:
        """Partitions, replication and the settings Procession relies on, per existing topic."""
        if not topics:
            return {}
        admin = self._admin()
        described = admin.describe_topics(TopicCollection(list(topics)), request_timeout=_REQUEST_S)
        found: dict[str, Any] = {}
        for name, fut in described.items():
            try:
                found[name] = await _result(fut)
            except KafkaException as exc:
                if exc.args[0].code() != KafkaError.UNKNOWN_TOPIC_OR_PART:
                    raise
        if not found:
            return {}
        resources = [ConfigResource("TOPIC", name) for name in found]
        configs: dict[str, dict[str, str]] = {}
        for res, fut in admin.describe_configs(resources, request_timeout=_REQUEST_S).items():
            entries = await _result(fut)
            configs[res.name] = {k: e.value for k, e in entries.items() if e.value is not None}
        out = {
            name: topic_info(
                name,
                [len(p.replicas) for p in d.partitions],
                configs.get(name, {}),
            )
            for name, d in found.items()
        }
        self._limits.seen(out)
        self._serve()
        return out

    async def committed(
        self, group: str, tps: Sequence[TopicPartition]
    ) -> dict[TopicPartition, int]:
        """The offsets ``group`` committed on ``tps`` (0 where none), waiting for
        offsets a transaction still holds (require_stable); joins nothing."""
        if not tps:
            return {}
        ask = ConsumerGroupTopicPartitions(group, [KafkaTP(tp.topic, tp.partition) for tp in tps])
        futures = self._admin().list_consumer_group_offsets(
            [ask], require_stable=True, request_timeout=_REQUEST_S
        )
        answer = await _result(futures[group])
        self._serve()
        return {
            TopicPartition(k.topic, k.partition): max(k.offset, 0) for k in answer.topic_partitions
        }

    async def limit(self, topic: str) -> int:
        """The topic's ``max.message.bytes`` (looked up once, then cached)."""
        return await self._limits.of(topic)

    def forget_limits(self) -> None:
        self._limits.forget()

    async def close(self) -> None:
        self._client = None  # librdkafka closes it once unreferenced
        self._io.shutdown(wait=False)

    def _serve(self) -> None:
        """Hand librdkafka's queued errors and log lines over (else they pile up)."""
        if self._client is not None:
            self._client.poll(0)

    async def _call(self, fn: Any, **kwargs: Any) -> Any:
        """A blocking librdkafka call on the admin's own thread."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._io, lambda: fn(**kwargs))


def _held_back(record: logging.LogRecord) -> bool:
    """A log filter that lets nothing through."""
    return False


async def _result(fut: Future[T]) -> T:
    """An admin request's answer (librdkafka answers from its own thread)."""
    return await asyncio.wrap_future(fut)

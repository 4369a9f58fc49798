"""The Kafka transport (aiokafka): transactional producers, group consumers, admin.

Install with the ``kafka`` extra. One transactional producer per static
transactional id: ``start()`` runs InitProducerId, which fences an older
producer with the same id (Kafka Streams' EOS v1 model).
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Iterable, Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener
from aiokafka import TopicPartition as KafkaTP
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import (
    InvalidProducerEpoch,
    KafkaError,
    ProducerFenced,
    TopicAlreadyExistsError,
)
from aiokafka.partitioner import DefaultPartitioner

from procession._errors import FencedError, TransactionAbortedError
from procession.topics._codec import DEFAULT_CODEC, Codec
from procession.topics._layout import TopicSpec
from procession.workers._port import Batch, Listener, Message, TopicPartition
from procession.workers._wire import encode_value, headers_of

log = logging.getLogger("procession.kafka")

#: How long a transactional producer waits before retrying a refused request.
#: A transaction that starts right after a commit is refused with
#: CONCURRENT_TRANSACTIONS until the broker has written the previous commit's
#: markers; with aiokafka's default of 100 ms that wait dominated every hop
#: (docs/benchmarks.md). Kafka's Java producer retries that case after 20 ms.
TXN_RETRY_BACKOFF_MS = int(os.environ.get("PROCESSION_TXN_RETRY_BACKOFF_MS", "10"))


#: A record on its way out: topic, partition (None: by key), key, value, headers.
WireRecord = tuple[str, int | None, bytes | None, bytes | None, list[tuple[str, bytes]]]
_partitioner = DefaultPartitioner()


async def send_all(
    producer: AIOKafkaProducer, records: Iterable[WireRecord], partitions: dict[str, list[int]]
) -> None:
    """Hand ``records`` to ``producer`` (in its open transaction) as one record
    batch per partition, instead of a ``send`` per record.

    A record without a partition goes where Kafka's default partitioner
    (murmur2 of the key) puts it, as ``send`` would; ``partitions`` caches each
    topic's partition ids.
    """
    builders: dict[tuple[str, int], Any] = {}
    for topic, given, key, value, headers in records:
        partition = given
        if partition is None:
            ids = partitions.get(topic)
            if ids is None:
                ids = partitions[topic] = sorted(await producer.partitions_for(topic))
            partition = _partitioner(key, ids, ids)
        builder = builders.get((topic, partition))
        if builder is None:
            builder = builders[topic, partition] = producer.create_batch()
        if builder.append(key=key, value=value, timestamp=None, headers=headers) is None:
            await producer.send_batch(builder, topic, partition=partition)  # full: send it
            builder = builders[topic, partition] = producer.create_batch()
            builder.append(key=key, value=value, timestamp=None, headers=headers)
    for (topic, partition), builder in builders.items():
        await producer.send_batch(builder, topic, partition=partition)


class KafkaProducer:
    """A transactional producer: each batch is one Kafka transaction."""

    def __init__(self, transport: KafkaTransport, transactional_id: str) -> None:
        self._t, self.transactional_id = transport, transactional_id
        self._p: AIOKafkaProducer | None = None
        self._partitions: dict[str, list[int]] = {}

    async def start(self) -> None:
        self._p = AIOKafkaProducer(
            bootstrap_servers=self._t.bootstrap_servers,
            client_id=self.transactional_id,
            transactional_id=self.transactional_id,
            enable_idempotence=True,
            acks="all",
            linger_ms=2,
            retry_backoff_ms=TXN_RETRY_BACKOFF_MS,
        )
        await self._p.start()

    async def commit(self, batch: Batch) -> None:
        p = self._p
        if p is None:
            raise RuntimeError(f"producer {self.transactional_id!r} used before start()")
        codec = self._t.codec
        try:
            await p.begin_transaction()
            await send_all(
                p,
                (
                    (
                        out.topic,
                        out.partition,
                        None if out.key is None else out.key.encode(),
                        encode_value(out.value, codec),
                        [*out.headers, *headers_of(out.value, codec)],
                    )
                    for out in batch.records
                ),
                self._partitions,
            )
            if batch.offsets:
                offsets = {
                    KafkaTP(tp.topic, tp.partition): off for tp, off in batch.offsets.items()
                }
                await p.send_offsets_to_transaction(offsets, batch.group)
            await p.commit_transaction()
        except (ProducerFenced, InvalidProducerEpoch) as exc:
            raise FencedError(self.transactional_id) from exc
        except KafkaError as exc:
            await self._recover(exc)
            raise TransactionAbortedError(f"{type(exc).__name__}: {exc}") from exc

    async def _recover(self, exc: KafkaError) -> None:
        """Abort the open transaction; a producer in a fatal state is made anew."""
        assert self._p is not None
        manager = self._p._txn_manager
        try:
            if manager is not None and not manager.is_fatal_error() and manager.is_in_transaction():
                await self._p.abort_transaction()
                return
        except KafkaError:
            pass
        log.warning("producer %s restarts after %r", self.transactional_id, exc)
        await self._p.stop()
        await self.start()

    async def stop(self) -> None:
        if self._p is not None:
            await self._p.stop()
            self._p = None


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, on_assign: Listener | None, on_revoke: Listener | None) -> None:
        self._assign, self._revoke = on_assign, on_revoke
        self.joined = False

    async def on_partitions_revoked(self, revoked: Any) -> None:
        self.joined = False
        if self._revoke is not None and revoked:
            await self._revoke([TopicPartition(tp.topic, tp.partition) for tp in revoked])

    async def on_partitions_assigned(self, assigned: Any) -> None:
        self.joined = True
        if self._assign is not None and assigned:
            await self._assign([TopicPartition(tp.topic, tp.partition) for tp in assigned])


class KafkaConsumer:
    """A group member reading committed records only; offsets are committed in transactions."""

    def __init__(self, consumer: AIOKafkaConsumer, listener: _Listener) -> None:
        self._c, self._listener = consumer, listener

    async def fetch(self, timeout_s: float, max_records: int = 500) -> list[Message]:
        got = await self._c.getmany(timeout_ms=int(timeout_s * 1000), max_records=max_records)
        return [_message(r) for records in got.values() for r in records]

    def caught_up(self) -> bool:
        """Joined, and at the last stable offset of the latest fetch on every partition."""
        if not self._listener.joined:
            return False
        sub = self._c._subscription.subscription
        if sub is None or sub.assignment is None:
            return False
        for tp in self._c.assignment():
            state = sub.assignment.state_value(tp)
            if not state.has_valid_position or state.lso is None or state.position < state.lso:
                return False
        return True

    async def stop(self) -> None:
        await self._c.stop()


def _message(r: Any) -> Message:
    return Message(
        r.topic,
        r.partition,
        r.offset,
        None if r.key is None else r.key.decode(),
        r.value,
        tuple(r.headers or ()),
        r.timestamp,
    )


class KafkaTransport:
    """The :class:`Transport` over a Kafka cluster.

    Example::

        transport = KafkaTransport("127.0.0.1:9092")
        async with Runtime(app, transport) as runtime:
            ...
    """

    def __init__(self, bootstrap_servers: str, codec: Codec = DEFAULT_CODEC) -> None:
        self.bootstrap_servers, self.codec = bootstrap_servers, codec
        self._admin: AIOKafkaAdminClient | None = None
        self._meta: AIOKafkaConsumer | None = None

    def producer(self, transactional_id: str) -> KafkaProducer:
        return KafkaProducer(self, transactional_id)

    async def consumer(
        self,
        group: str,
        topics: Sequence[str],
        on_assign: Listener | None = None,
        on_revoke: Listener | None = None,
    ) -> KafkaConsumer:
        c = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap_servers,
            group_id=group,
            isolation_level="read_committed",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=10_000,
            heartbeat_interval_ms=1_000,
            max_poll_interval_ms=300_000,
        )
        await c.start()
        listener = _Listener(on_assign, on_revoke)
        c.subscribe(list(topics), listener=listener)
        return KafkaConsumer(c, listener)

    async def read_partition(self, tp: TopicPartition) -> list[Message]:
        c = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap_servers,
            isolation_level="read_committed",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
        )
        await c.start()
        try:
            ktp = KafkaTP(tp.topic, tp.partition)
            c.assign([ktp])
            end = (await c.end_offsets([ktp]))[ktp]
            # an explicit seek: seek_to_beginning can lose the race with the reset
            # that assign() starts
            c.seek(ktp, (await c.beginning_offsets([ktp]))[ktp])
            out: list[Message] = []
            async with asyncio.timeout(120):
                while await c.position(ktp) < end:
                    got = await c.getmany(ktp, timeout_ms=200, max_records=5000)
                    out += [_message(r) for r in got.get(ktp, [])]
            return out
        finally:
            await c.stop()

    async def create_topics(self, specs: Sequence[TopicSpec]) -> None:
        admin = await self._admin_client()
        new = []
        for spec in specs:
            config = {"cleanup.policy": "compact"} if spec.compacted else {}
            if spec.retention_ms is not None:
                config["retention.ms"] = str(spec.retention_ms)
            new.append(NewTopic(spec.name, spec.partitions, 1, topic_configs=config))
        for topic in new:
            try:
                await admin.create_topics([topic])
            except TopicAlreadyExistsError:
                continue
        async with asyncio.timeout(30):
            for spec in specs:
                while await self._count(spec.name) == 0:  # noqa: ASYNC110 - polls broker metadata
                    await asyncio.sleep(0.05)

    async def partitions(self, topic: str) -> int:
        return await self._count(topic)

    async def _count(self, topic: str) -> int:
        meta = await self._metadata()
        await meta._client.force_metadata_update()
        return len(meta.partitions_for_topic(topic) or ())

    async def _admin_client(self) -> AIOKafkaAdminClient:
        if self._admin is None:
            self._admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap_servers)
            await self._admin.start()
        return self._admin

    async def _metadata(self) -> AIOKafkaConsumer:
        if self._meta is None:
            self._meta = AIOKafkaConsumer(bootstrap_servers=self.bootstrap_servers)
            await self._meta.start()
        return self._meta

    async def close(self) -> None:
        if self._admin is not None:
            await self._admin.close()
            self._admin = None
        if self._meta is not None:
            await self._meta.stop()
            self._meta = None

"""The Kafka transport (aiokafka): transactional producers, group consumers, admin.

Install with the ``kafka`` extra. One transactional producer per static
transactional id: ``start()`` runs InitProducerId, which fences an older
producer with the same id (Kafka Streams' EOS v1 model).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka import TopicPartition as KafkaTP
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import (
    IllegalOperation,
    InvalidProducerEpoch,
    KafkaConnectionError,
    KafkaError,
    MessageSizeTooLargeError,
    ProducerFenced,
    RecordListTooLargeError,
)
from aiokafka.partitioner import DefaultPartitioner

from procession._errors import (
    FencedError,
    KafkaUnreachableError,
    TransactionAbortedError,
    WriterFailedError,
)
from procession._errors import one_line as reason
from procession.topics._layout import TopicSpec

from . import _kafka_admin
from ._backoff import until_deadline
from ._kafka_consumer import KafkaConsumer, RebalanceListener, message_of
from ._kafka_security import Settings, options, refused
from ._kafka_settings import (
    KEY_ERRORS,
    MAX_POLL_INTERVAL_MS,
    MAX_REQUEST_BYTES,
    PRODUCER_BATCH_BYTES,
    SESSION_TIMEOUT_MS,
    START_DEADLINE_S,
    STUCK_S,
    TRANSACTION_TIMEOUT_MS,
    TXN_RETRY_BACKOFF_MS,
)
from ._kafka_topics import Limits
from ._port import (
    Batch,
    Listener,
    Message,
    TopicInfo,
    TopicPartition,
    check_sizes,
)

log = logging.getLogger("procession.kafka")

#: A record on its way out: topic, partition (None: by key), key, value, headers.
WireRecord = tuple[str, int | None, bytes | None, bytes | None, list[tuple[str, bytes]]]
_partitioner = DefaultPartitioner()
_TOO_LARGE = (MessageSizeTooLargeError, RecordListTooLargeError)

#: Seconds a producer's close may take. Nothing is left to flush (every batch
#: was committed or aborted), but aiokafka's close waits for the requests its
#: sender has in flight, and one to a broker that is gone never ends: a
#: processor whose broker died waited out its whole stop deadline there.
_CLOSE_S = 5.0


async def send_all(
    producer: AIOKafkaProducer, records: Iterable[WireRecord], partitions: dict[str, list[int]]
) -> None:
    """Hand ``records`` to ``producer`` (in its open transaction) as one record
    batch per partition, and wait until the broker has acknowledged every batch.

    Committing a transaction whose batch failed would commit it without that
    batch's records, so an error here must abort the transaction: the first
    failure is raised once every batch has settled. A record without a
    partition goes where Kafka's default partitioner (murmur2 of the key) puts
    it, as ``send`` would; ``partitions`` caches each topic's partition ids.
    """
    builders: dict[tuple[str, int], Any] = {}
    sent: list[asyncio.Future[Any]] = []
    queued: list[Any] = []

    async def send(builder: Any, topic: str, partition: int) -> None:
        sent.append(await producer.send_batch(builder, topic, partition=partition))
        queued.append(producer._message_accumulator._batches[KafkaTP(topic, partition)][-1])

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
            await send(builder, topic, partition)
            builder = builders[topic, partition] = producer.create_batch()
            builder.append(key=key, value=value, timestamp=None, headers=headers)
    for (topic, partition), builder in builders.items():
        await send(builder, topic, partition)
    for outcome in await asyncio.gather(*sent, return_exceptions=True):
        if isinstance(outcome, BaseException):
            for batch in queued:  # aiokafka leaves the error in a waiter nobody awaits
                if batch._drain_waiter.done():
                    batch._drain_waiter.exception()
            raise outcome


class KafkaProducer:
    """A transactional producer: each batch is one Kafka transaction."""

    def __init__(self, transport: KafkaTransport, transactional_id: str) -> None:
        self._t, self.transactional_id = transport, transactional_id
        self._p: AIOKafkaProducer | None = None
        self._partitions: dict[str, list[int]] = {}
        self._one_at_a_time = asyncio.Lock()  # a transaction, or the stop that aborts it
        self._stuck: WriterFailedError | None = None  # a transaction that did not end

    async def start(self) -> None:
        """Start (InitProducerId: fence older owners, abort their transaction). A broker
        out of reach is waited for, with backoff, for up to ``START_DEADLINE_S``."""

        tries = 0

        def retrying(exc: BaseException, pause: float) -> None:  # one warning a start, not a try
            nonlocal tries
            tries += 1
            tid, level = self.transactional_id, logging.WARNING if tries == 1 else logging.DEBUG
            log.log(
                level,
                "producer %s: broker out of reach (%s); retrying for up to %g s",
                tid,
                exc,
                START_DEADLINE_S,
            )

        await until_deadline(
            self._start_once, KafkaConnectionError, START_DEADLINE_S, retrying, first_s=0.1
        )
        if tries:
            log.info("producer %s: started after %d retries", self.transactional_id, tries)

    async def _start_once(self) -> None:
        self._p = AIOKafkaProducer(
            bootstrap_servers=self._t.bootstrap_servers,
            **self._t.security,
            client_id=self.transactional_id,
            transactional_id=self.transactional_id,
            transaction_timeout_ms=TRANSACTION_TIMEOUT_MS,
            enable_idempotence=True,
            acks="all",
            linger_ms=2,
            max_batch_size=PRODUCER_BATCH_BYTES,  # topics take at least this (checked at start)
            max_request_size=MAX_REQUEST_BYTES,  # records up to MAX_RECORD_BYTES
            retry_backoff_ms=TXN_RETRY_BACKOFF_MS,
            # a request of a transaction (a metadata wait included) that takes longer
            # fails anyway: the broker aborts the transaction; librdkafka's calls too
            request_timeout_ms=TRANSACTION_TIMEOUT_MS,
        )
        try:
            await self._p.start()
        except BaseException as exc:
            await self._p.stop()
            self._p = None
            if isinstance(exc, KafkaError) and isinstance(exc.__cause__, KafkaConnectionError):
                # the coordinator lookup wraps a lost connection in a plain KafkaError
                raise KafkaConnectionError(str(exc.__cause__)) from exc
            raise

    async def commit(self, batch: Batch) -> None:
        """Commit ``batch`` in one transaction. One that has not ended in ``STUCK_S``
        fails the producer for good (:class:`WriterFailedError`): aiokafka retries
        some requests to a broker that is gone for ever. (A commit that lands in
        the very turn it is judged stuck is reported stuck all the same: the
        component stops, and its successor reads what it committed.)"""
        async with self._one_at_a_time:
            if self._stuck is not None:
                raise self._stuck
            task = asyncio.current_task()
            assert task is not None
            overdue = asyncio.get_running_loop().call_later(STUCK_S, self._overdue, task)
            try:
                await self._commit(batch)
            except asyncio.CancelledError:
                if self._stuck is None or task.uncancel() > 0:  # cancelled by someone else too
                    raise
                raise self._stuck from None
            finally:
                overdue.cancel()

    def _overdue(self, task: asyncio.Task[object]) -> None:
        """The transaction in flight has not ended in ``STUCK_S``: fail the producer."""
        why = f"a transaction has not ended in {STUCK_S:g} s (the broker does not answer)"
        self._stuck = WriterFailedError(self.transactional_id, why)
        task.cancel()

    async def _commit(self, batch: Batch) -> None:
        p = self._p
        if p is None:
            raise RuntimeError(f"producer {self.transactional_id!r} used before start()")
        await check_sizes(batch, self._t.limit)  # before anything is sent
        try:
            await p.begin_transaction()
            await send_all(
                p,
                (
                    (
                        out.topic,
                        out.partition,
                        None if out.key is None else out.key.encode("utf-8", KEY_ERRORS),
                        out.value,
                        list(out.headers),
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
        except IllegalOperation as exc:  # the transaction ended under us: aiokafka says why
            cause = _fatal_cause(p)
            if isinstance(cause, ProducerFenced | InvalidProducerEpoch):
                raise FencedError(self.transactional_id) from cause
            raise WriterFailedError(self.transactional_id, f"{cause or exc!r}") from exc
        except _TOO_LARGE as exc:  # the topic's limit changed since we looked
            await self._recover(exc)
            self._t.forget_limits()
            raise TransactionAbortedError(f"{type(exc).__name__}: {exc}") from exc
        except (KafkaError, asyncio.CancelledError) as exc:
            if self._stuck is not None:  # its abort would wait on the same silent broker
                raise
            await asyncio.shield(self._recover(exc))
            if isinstance(exc, asyncio.CancelledError):
                raise
            raise TransactionAbortedError(f"{type(exc).__name__}: {exc}") from exc

    async def _recover(self, exc: BaseException) -> None:
        """Abort the open transaction. A producer that cannot abort (a fatal state)
        is not made anew here: starting it again would fence whoever owns the
        partition now. The component stops instead, and its restart rejoins."""
        if self._p is None:
            return
        if not await self._abort():
            raise WriterFailedError(self.transactional_id, f"{type(exc).__name__}: {exc}") from exc

    async def _abort(self) -> bool:
        """Abort a transaction left open; False if the producer cannot (fatal state)."""
        assert self._p is not None
        manager = self._p._txn_manager
        if manager is None or manager.is_fatal_error():
            return False
        if not (manager.is_in_transaction() or manager.state.name == "ABORTABLE_ERROR"):
            return True
        try:
            async with asyncio.timeout(TRANSACTION_TIMEOUT_MS / 1000):
                await self._p.abort_transaction()
        except (KafkaError, TimeoutError):
            return False
        return True

    def idle(self) -> None:
        return None  # one transaction per commit: nothing is gathered

    async def stop(self) -> None:
        """Abort a transaction still open (readers are not held up), then close."""
        async with self._one_at_a_time:
            await self._stop()

    async def _stop(self) -> None:
        p = self._p
        if p is None:
            return
        try:
            if self._stuck is None:  # else its abort would wait on the same silent broker
                await asyncio.shield(self._abort())
        finally:
            self._p = None
            try:
                async with asyncio.timeout(_CLOSE_S):
                    await p.stop()
            except TimeoutError:  # its sender waits on a request to a broker that is gone
                log.debug("producer %s: closed without its sender", self.transactional_id)
                sender = p._sender.sender_task
                for _ in range(2):  # cancelled once, it waits on its requests: twice
                    if sender is None or sender.done():
                        break
                    sender.cancel()
                    await asyncio.wait({sender}, timeout=1.0)
                await p.client.close()
            _observe_fatal(p)


def _fatal_cause(producer: AIOKafkaProducer) -> BaseException | None:
    """The error that put a producer's transactions in a fatal state, if one did."""
    manager = producer._txn_manager
    if manager is None or not manager.is_fatal_error():
        return None
    waiter = manager._transaction_waiter
    return waiter.exception() if waiter.done() and not waiter.cancelled() else None


def _observe_fatal(producer: AIOKafkaProducer) -> None:
    """A fenced producer's sender ends with the error and aiokafka parks it in
    futures nobody awaits; we raised it already (FencedError), so mark it seen."""
    manager = producer._txn_manager
    pending = [producer._sender.sender_task, manager and manager._transaction_waiter]
    for fut in pending:
        if fut is not None and fut.done() and not fut.cancelled():
            fut.exception()


class KafkaTransport:
    """The :class:`Transport` over a Kafka cluster.

    Example::

        transport = KafkaTransport("127.0.0.1:9092")
        async with Runtime(app, transport) as runtime:
            ...
    """

    def __init__(self, bootstrap_servers: str, *, security: dict[str, Any] | None = None) -> None:
        """``security``: aiokafka's TLS and SASL options; by default those the
        ``KAFKA_SECURITY_PROTOCOL`` and ``KAFKA_SASL_*`` / ``KAFKA_SSL_*``
        variables ask for (``_kafka_security``)."""
        self.bootstrap_servers = bootstrap_servers
        self.security = options() if security is None else security
        self._admin: AIOKafkaAdminClient | None = None
        self._limits = Limits(self.describe)

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
            **self.security,
            group_id=group,
            isolation_level="read_committed",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=SESSION_TIMEOUT_MS,
            heartbeat_interval_ms=1_000,
            max_poll_interval_ms=MAX_POLL_INTERVAL_MS,
        )
        await c.start()
        listener = RebalanceListener(on_assign, on_revoke)
        c.subscribe(list(topics), listener=listener)
        return KafkaConsumer(c, listener, self.producer)

    async def read_partition(self, tp: TopicPartition) -> list[Message]:
        c = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap_servers,
            **self.security,
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
                    out += [message_of(r) for r in got.get(ktp, [])]
            return out
        finally:
            await c.stop()

    async def connect(self, timeout_s: float) -> None:
        """Return once the cluster answered (and accepted the credentials); else
        :class:`~procession._errors.KafkaUnreachableError` with the reason.

        aiokafka says why a broker refused a login or a handshake only in its
        log; those lines are held back here and the last one makes the reason.
        """
        refusals = _Refusals()
        aiokafka_log = logging.getLogger("aiokafka")
        aiokafka_log.addFilter(refusals)
        try:
            async with asyncio.timeout(timeout_s):
                await self._admin_client()  # bootstraps: one metadata request
        except KafkaConnectionError as exc:
            why = reason(exc)
            if refusals.seen:  # it answered, and refused our TLS or SASL settings
                why = _refused(refusals.seen[-1], self.security)
            raise KafkaUnreachableError(self.bootstrap_servers, why) from exc
        except TimeoutError as exc:
            raise KafkaUnreachableError.silent(self.bootstrap_servers, timeout_s) from exc
        finally:
            aiokafka_log.removeFilter(refusals)

    async def create_topics(self, specs: Sequence[TopicSpec]) -> None:
        await _kafka_admin.create(await self._admin_client(), specs)

    async def committed(
        self, group: str, tps: Sequence[TopicPartition]
    ) -> dict[TopicPartition, int]:
        c = AIOKafkaConsumer(  # never subscribes: asks the coordinator, joins nothing
            bootstrap_servers=self.bootstrap_servers,
            **self.security,
            group_id=group,
            enable_auto_commit=False,
        )
        await c.start()
        try:
            out: dict[TopicPartition, int] = {}
            for tp in tps:
                offset = await c.committed(KafkaTP(tp.topic, tp.partition))
                out[tp] = offset or 0
            return out
        finally:
            await c.stop()

    async def describe(self, topics: Sequence[str]) -> dict[str, TopicInfo]:
        found = await _kafka_admin.describe(await self._admin_client(), topics)
        self._limits.seen(found)
        return found

    async def limit(self, topic: str) -> int:
        """The topic's ``max.message.bytes`` (looked up once, then cached)."""
        return await self._limits.of(topic)

    def forget_limits(self) -> None:
        self._limits.forget()

    async def _admin_client(self) -> AIOKafkaAdminClient:
        if self._admin is None:
            admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap_servers, **self.security)
            try:
                await admin.start()
            except BaseException:
                await admin.close()
                raise
            self._admin = admin
        return self._admin

    async def close(self) -> None:
        if self._admin is not None:
            await self._admin.close()
            self._admin = None


class _Refusals(logging.Filter):
    """Keeps (and holds back) aiokafka's errors that say a broker refused the
    connection's authentication, so that :meth:`KafkaTransport.connect` can say so."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[str] = []

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        if "Authentication" in text or "SSL" in text:
            self.seen.append(text)
            return False
        return True


def _refused(text: str, security: dict[str, Any]) -> str:
    """The broker's refusal, with the settings it refused (never the password).

    Example:
        >>> print(_refused('Unable connect to "k:9093": [Error 58] SaslAuthenticationFailed: bad',
        ...                {"security_protocol": "SASL_SSL", "sasl_plain_username": "svc"}))
        it refused the connection: SaslAuthenticationFailed: bad (...=SASL_SSL, ...=svc)
    """
    used = Settings(
        security.get("security_protocol", "PLAINTEXT"), user=security.get("sasl_plain_username")
    )
    return refused(text.split("] ", 1)[-1], used)

"""Transactional producers on librdkafka (confluent-kafka), with group commit.

A :class:`TransactionalProducer` runs each transaction in one call on its own
thread: begin, produce every record, send the offsets, commit. Commits asked
for while a transaction is in flight wait and then go out together as the next
transaction, so the partitions of one member share one transaction per round
(Kafka's exactly-once v2: fenced by the consumer group's generation, not by a
transactional id per partition).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import threading
import time
import warnings
import weakref
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from confluent_kafka import KafkaError, KafkaException, Producer
from confluent_kafka import TopicPartition as KafkaTP

from procession._errors import FencedError, TransactionAbortedError, WriterFailedError

from ._kafka_settings import (
    KEY_ERRORS,
    MAX_REQUEST_BYTES,
    PRODUCER_BATCH_BYTES,
    START_DEADLINE_S,
    STUCK_S,
    TRANSACTION_TIMEOUT_MS,
    TXN_RETRY_BACKOFF_MS,
)
from ._port import Batch, Outgoing, TopicPartition, check_sizes
from ._thread import OneThread

if TYPE_CHECKING:
    from ._rdkafka import RdKafkaTransport

log = logging.getLogger("procession.rdkafka")

#: Group metadata (``Consumer.consumer_group_metadata()``) for a group's offsets.
Metadata = Callable[[str], Any]

_FENCED = frozenset(
    {
        KafkaError._FENCED,
        KafkaError.PRODUCER_FENCED,
        KafkaError.INVALID_PRODUCER_EPOCH,
        KafkaError.INVALID_PRODUCER_ID_MAPPING,
    }
)
_TOO_LARGE = frozenset({KafkaError.MSG_SIZE_TOO_LARGE, KafkaError.INVALID_MSG_SIZE})

#: Seconds a blocking transaction call may take (librdkafka's own retries inside).
_CALL_TIMEOUT_S = TRANSACTION_TIMEOUT_MS / 1000

#: Seconds the next transaction waits, at most, for the callers that had a batch
#: in the last one and said they commit in a pipeline (:meth:`TransactionalProducer.idle`):
#: each comes back with its next batch, or says it has none, within a few turns
#: of the event loop. Without the wait the next transaction leaves with whoever
#: queued while the last was out, and those callers wait for a whole extra one.
GATHER_S = 0.005


class TransactionalProducer:
    """One librdkafka transactional producer; concurrent commits share a transaction.

    Example::

        producer = TransactionalProducer(transport, "shop.publisher.1", metadata)
        await producer.start()
        await producer.commit(Batch([Outgoing("shop.events", "k", b"v")]))
    """

    def __init__(
        self,
        transport: RdKafkaTransport,
        transactional_id: str,
        metadata: Metadata,
        on_abort: Callable[[], None] = lambda: None,
    ) -> None:
        """``metadata``: a group's metadata for its offsets; ``on_abort``: told of
        every aborted transaction (the metadata may be stale)."""
        self.transactional_id, self._t = transactional_id, transport
        self._config = {
            **transport.config,
            "transactional.id": transactional_id,
            "client.id": transactional_id,
            "transaction.timeout.ms": TRANSACTION_TIMEOUT_MS,
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 2,
            # a topic refuses a batch over its max.message.bytes: only a single
            # record may come near it (topics take at least this, checked at start)
            "batch.size": PRODUCER_BATCH_BYTES,
            "message.max.bytes": MAX_REQUEST_BYTES,  # records up to MAX_RECORD_BYTES
            "retry.backoff.ms": TXN_RETRY_BACKOFF_MS,
            "retry.backoff.max.ms": 4 * TXN_RETRY_BACKOFF_MS,
            "partitioner": "murmur2_random",  # where Java (and aiokafka) put a key
        }
        self._metadata, self._on_abort = metadata, on_abort
        self._p: Producer | None = None
        self._io = OneThread(f"rdkafka-{transactional_id}")
        self._queue: list[tuple[Batch, asyncio.Future[None], object]] = []
        #: the transaction in flight: done once it ended or was judged stuck; its batches
        self._flight: tuple[asyncio.Future[None], list[asyncio.Future[None]]] | None = None
        self._wedged = False  # a transaction stuck on the thread: it takes no more calls
        self._one_at_a_time = asyncio.Lock()
        self._pipelined: weakref.WeakSet[Any] = weakref.WeakSet()  # callers that say idle()
        self._expected: set[object] = set()  # of them, in the last transaction, not back
        self._back = asyncio.Event()
        self._starting = asyncio.Lock()
        self._failed: BaseException | None = None
        self._start_failed: Exception | None = None
        #: between the producer's thread and stop(): a producer made once stop()
        #: has run is closed by the thread that made it
        self._handover = threading.Lock()
        self._stopped = False

    async def start(self) -> None:
        """InitProducerId: fence older producers with this id and abort their open
        transaction. Started once; later calls return at once. A broker out of
        reach is waited for, with backoff, for up to ``START_DEADLINE_S``; a start
        that failed fails every later call at once (waiting again would double
        the time until its component gives up). A start cancelled while its
        thread waits leaves that thread to finish: the producer it makes is
        this one's (a second start would fence it), or closed if it stopped."""
        async with self._starting:
            if self._p is None:
                if self._start_failed is not None:
                    raise self._start_failed
                loop = asyncio.get_running_loop()
                try:
                    await loop.run_in_executor(self._io, self._init)
                except Exception as exc:
                    self._start_failed = exc
                    raise
                if self._p is None:
                    raise WriterFailedError(self.transactional_id, "stopped while it started")

    def _init(self) -> None:
        """On the producer's thread: make and initialise the producer, unless an
        earlier (cancelled) start already did."""
        with self._handover:
            if self._p is not None or self._stopped:
                return
        give_up = time.monotonic() + START_DEADLINE_S
        p, level = Producer(self._config), logging.WARNING  # one warning a start, not a try
        while True:  # a retriable failure (a broker out of reach) may be retried in place
            try:
                p.init_transactions(max(1.0, min(_CALL_TIMEOUT_S, give_up - time.monotonic())))
                break
            except KafkaException as exc:
                err = exc.args[0]
                if not err.retriable() or time.monotonic() > give_up:
                    raise self._fatal(err) from exc
                tid, s = self.transactional_id, START_DEADLINE_S
                log.log(level, "producer %s: %s; retrying for up to %g s", tid, err.str(), s)
                level = logging.DEBUG
        with self._handover:
            if not self._stopped:
                self._p = p
                return
        _close(p, fatal=False)  # stopped while it started: nobody else will

    async def commit(self, batch: Batch, source: object = None) -> None:
        """Commit ``batch`` in one transaction, possibly with batches committed at
        the same time by others. Cancelled, it returns once no transaction holding
        the batch is in flight (or once that one is judged stuck, ``STUCK_S``).

        ``source`` names the caller (its :class:`Share`); see :meth:`idle`."""
        await check_sizes(batch, self._t.limit)  # before anything is sent
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        item = (batch, done, source)
        self._queue.append(item)
        self._returned(source)
        try:
            async with self._one_at_a_time:
                if not done.done():
                    await self._gather()
                    self._launch(loop)
                await asyncio.shield(done)
        except asyncio.CancelledError:
            if item in self._queue:
                self._queue.remove(item)
            elif self._flight is not None and done in self._flight[1]:
                await asyncio.wait([self._flight[0]])
            if done.done() and not done.cancelled():
                done.exception()  # the caller is gone; the outcome is seen
            raise
        except BaseException:
            if item in self._queue:  # not launched: it must not go out later
                self._queue.remove(item)
            raise

    def idle(self, source: object = None) -> None:
        """``source`` has nothing to commit after its last batch. A caller that
        says so is one that commits in a pipeline, its next batch the moment its
        last one lands: from then on, the transaction after each that carried
        one of its batches waits up to ``GATHER_S`` for its next one (or for
        this word)."""
        if source is not None:
            self._pipelined.add(source)
        self._returned(source)

    def _returned(self, source: object) -> None:
        self._expected.discard(source)
        if not self._expected:
            self._back.set()

    async def _gather(self) -> None:
        """Let the commits begun in the same turn of the event loop join (a batch
        loop's round: its partitions' commits start together, and the first
        would otherwise leave alone); then wait (up to ``GATHER_S``) for the
        pipelined callers of the last transaction to come back."""
        await asyncio.sleep(0)
        if self._expected:
            self._back.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(GATHER_S):
                    await self._back.wait()
            self._expected.clear()

    def _launch(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._p is None:
            raise RuntimeError(f"producer {self.transactional_id!r} used before start()")
        if isinstance(self._failed, FencedError):  # every share of it is fenced
            raise FencedError(self.transactional_id)
        if self._failed is not None:
            raise WriterFailedError(self.transactional_id, f"{self._failed}")
        taken, self._queue = self._queue, []
        job = loop.run_in_executor(self._io, self._transact, self._p, [b for b, _, _ in taken])
        futures, ended = [f for _, f, _ in taken], loop.create_future()
        self._flight = (ended, futures)
        overdue = loop.call_later(STUCK_S, self._stuck, job, ended, futures)
        sources = {s for _, _, s in taken if s in self._pipelined}
        job.add_done_callback(functools.partial(self._settle, futures, ended, overdue, sources))

    def _settle(
        self,
        futures: list[asyncio.Future[None]],
        ended: asyncio.Future[None],
        overdue: asyncio.TimerHandle,
        sources: set[object],
        job: asyncio.Future[None],
    ) -> None:
        overdue.cancel()
        error = job.exception()
        self._expected = set() if error else sources
        if ended.done():  # judged stuck: its batches were failed already
            tid = self.transactional_id
            log.warning("producer %s: the stuck transaction ended: %s", tid, error or "committed")
            return
        if isinstance(error, FencedError | WriterFailedError):
            self._failed = error
        self._end(ended, futures, error)

    def _stuck(
        self,
        job: asyncio.Future[None],
        ended: asyncio.Future[None],
        futures: list[asyncio.Future[None]],
    ) -> None:
        if job.done():
            return
        self._wedged = True
        self._failed = error = WriterFailedError(
            self.transactional_id,
            f"a transaction has not ended in {STUCK_S:g} s (librdkafka blocked past its timeouts)",
        )
        self._end(ended, futures, error)

    def _end(
        self,
        ended: asyncio.Future[None],
        futures: list[asyncio.Future[None]],
        error: BaseException | None,
    ) -> None:
        """The flight is over (it ended, or was judged stuck): tell its batches."""
        ended.set_result(None)
        if self._flight is not None and self._flight[0] is ended:
            self._flight = None
        for f in futures:
            if f.done():  # its caller was cancelled
                continue
            if error is None:
                f.set_result(None)
            else:
                f.set_exception(error)

    def _transact(self, p: Producer, batches: Sequence[Batch]) -> None:
        """One transaction, on the producer's thread (the group metadata is read
        here too: it can take a while)."""
        offsets: dict[str, list[KafkaTP]] = {}
        for b in batches:
            if b.offsets and b.group is not None:
                offsets.setdefault(b.group, []).extend(
                    KafkaTP(tp.topic, tp.partition, off) for tp, off in b.offsets.items()
                )
        try:
            p.begin_transaction()
            for b in batches:
                for out in b.records:
                    self._produce(p, out)
            for group, tps in offsets.items():
                p.send_offsets_to_transaction(tps, self._metadata(group), _CALL_TIMEOUT_S)
            self._resumed(functools.partial(p.commit_transaction, _CALL_TIMEOUT_S), "commit")
            p.poll(0)  # serve the delivery reports
        except KafkaException as exc:
            raise self._failure(p, exc.args[0]) from exc

    @staticmethod
    def _produce(p: Producer, out: Outgoing) -> None:
        key = None if out.key is None else out.key.encode("utf-8", KEY_ERRORS)
        partition = -1 if out.partition is None else out.partition
        while True:
            try:
                p.produce(out.topic, out.value, key, partition, headers=list(out.headers) or None)
                return
            except BufferError:  # the local queue is full: let deliveries drain it
                p.poll(0.01)

    def _failure(self, p: Producer, err: KafkaError) -> BaseException:
        """What a failed transaction raises; abort it first when it must be."""
        if err.fatal():
            return self._fatal(err)
        self._on_abort()
        if err.code() in _TOO_LARGE:
            self._t.forget_limits()  # the topic's limit changed since we looked
        try:
            self._resumed(functools.partial(p.abort_transaction, _CALL_TIMEOUT_S), "abort")
        except KafkaException as exc:
            abort = exc.args[0]
            if abort.fatal():
                return self._fatal(abort)
            if abort.code() != KafkaError._STATE:  # _STATE: no transaction was open
                return WriterFailedError(self.transactional_id, f"cannot abort: {abort.str()}")
        return TransactionAbortedError(f"{err.name()}: {err.str()}")

    def _resumed(self, call: Callable[[], None], what: str) -> None:
        """``call`` (a commit or an abort), called again while it fails with an
        error librdkafka says is retriable and needs no abort, until ``STUCK_S``
        has passed: such a call goes on in the background and the next call of
        the same API resumes it, while any other transactional call is refused
        (``_CONFLICT``). An abort times out this way when records wait for it to
        end before they can be retried (a sequence gap needs an epoch bump, which
        needs the abort): they fail at ``message.timeout.ms`` (the transaction
        timeout), and the resumed abort then completes."""
        give_up = time.monotonic() + STUCK_S
        while True:
            try:
                call()
                return
            except KafkaException as exc:
                err = exc.args[0]
                if (
                    err.fatal()
                    or err.txn_requires_abort()
                    or not err.retriable()
                    or err.code() == KafkaError._CONFLICT  # another API's call is under way
                    or time.monotonic() > give_up
                ):
                    raise
                log.warning(
                    "producer %s: %s: %s; resuming it", self.transactional_id, what, err.str()
                )
                time.sleep(TXN_RETRY_BACKOFF_MS / 1000)  # a call that fails at once: not a spin

    def _fatal(self, err: KafkaError) -> BaseException:
        if err.code() in _FENCED:
            return FencedError(self.transactional_id)
        return WriterFailedError(self.transactional_id, f"{err.name()}: {err.str()}")

    async def stop(self) -> None:
        """Wait out a transaction in flight, then close (nothing stays open)."""
        async with self._one_at_a_time:
            for _, f, _ in self._queue:
                f.set_exception(RuntimeError(f"producer {self.transactional_id!r} stopped"))
            self._queue.clear()
            with self._handover:
                self._stopped = True
                p, self._p = self._p, None
            if p is not None and not self._wedged:  # else the thread is not coming back
                await asyncio.get_running_loop().run_in_executor(
                    self._io, _close, p, self._failed is not None
                )
        self._io.shutdown(wait=False)


def _close(p: Producer, fatal: bool) -> None:
    """Flush and close. A producer in a fatal state (fenced) cannot abort what it
    had open, and close() would try (and warn): it is dropped instead, and the
    broker aborts that transaction (its successor has, if it fenced it)."""
    if fatal:
        return
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        p.flush(5)
        p.close()
    for w in said:
        log.debug("closing a producer: %s", w.message)


class Share:
    """A member's producer as one of its partitions sees it: its commits go into
    the member's shared transaction; stopping it leaves the producer running for
    the member's other partitions (the member's consumer closes it)."""

    def __init__(self, producer: TransactionalProducer, tp: TopicPartition | None = None) -> None:
        self._producer, self.tp = producer, tp

    @property
    def transactional_id(self) -> str:
        return self._producer.transactional_id

    async def start(self) -> None:
        await self._producer.start()

    async def commit(self, batch: Batch) -> None:
        await self._producer.commit(batch, self)

    def idle(self) -> None:
        self._producer.idle(self)

    async def stop(self) -> None:
        return None

"""Group consumers on librdkafka (confluent-kafka): cooperative, static, read_committed.

``consume()`` runs on the consumer's own thread, one call per fetch, and the
rebalance callbacks it triggers there run the listeners on the event loop
(the thread waits for them: a partition is given up only once its work has
stopped). A rewind reads the committed offset beside it and seeks only while
no ``consume()`` is in progress; records a fetch returned from before a seek
are dropped, so a rewound partition never sees its old records again.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException
from confluent_kafka import TopicPartition as KafkaTP

from ._kafka_settings import (
    FETCH_WAIT_MS,
    HOLD_AFTER_S,
    KEY_ERRORS,
    MAX_POLL_INTERVAL_MS,
    SESSION_TIMEOUT_MS,
)
from ._port import Listener, Message, Producer, TopicPartition
from ._rdkafka_producer import Share, TransactionalProducer
from ._thread import OneThread

if TYPE_CHECKING:
    from ._rdkafka import RdKafkaTransport

log = logging.getLogger("procession.rdkafka")


def message_of(m: Any) -> Message:
    """A record librdkafka fetched, as the port's :class:`Message`."""
    key, headers = m.key(), m.headers()
    return Message(
        m.topic() or "",
        m.partition() or 0,
        m.offset() or 0,
        None if key is None else key.decode("utf-8", KEY_ERRORS),
        m.value(),
        tuple(headers) if headers else (),  # as aiokafka's: (name, value) pairs
        m.timestamp()[1],
    )


COOPERATIVE = "cooperative-sticky"


def strategy(instance: str | None) -> str:
    """The assignor of a member: cooperative-sticky for a dynamic one (a joining
    member stops only the partitions that move), eager round-robin for a static
    one. Static members under cooperative-sticky, in ``./dev chaos --static``,
    were left after a broker restart with two thirds of the workers' partitions
    assigned to no member of a stable group, for minutes, until members left
    (docs/reliability.md); with round-robin the same run completed. A static
    member's restart needs no rebalance at all, so eager ones cost it little.

    Example:
        >>> strategy(None), strategy("processor-0")
        ('cooperative-sticky', 'roundrobin')
    """
    return COOPERATIVE if instance is None else "roundrobin"


def take(
    c: Consumer, max_records: int, timeout_s: float, interrupted: Callable[[], bool] = bool
) -> list[Any]:
    """What the consumer has now, up to ``max_records``; if nothing, wait up to
    ``timeout_s`` for the first record only (``consume()`` alone would wait
    for all ``max_records`` and hold every hop up for the whole timeout).
    The wait ends early once ``interrupted()`` (a rebalance was served)."""
    got = c.consume(max_records, 0)
    if got or interrupted():
        return got
    give_up = time.monotonic() + timeout_s
    while (left := give_up - time.monotonic()) > 0:
        first = c.poll(min(left, _SLICE_S))
        if first is not None:
            return [first, *c.consume(max_records - 1, 0)] if max_records > 1 else [first]
        if interrupted():
            break
    return []


#: Seconds without a fetch, or in a rebalance listener, that the log mentions
#: (at DEBUG: librdkafka serves a rebalance only from inside a fetch).
_SLOW_S = 2.0

#: How long one poll waits before it looks whether a rebalance was served.
_SLICE_S = 0.05


#: Seconds a committed-offset lookup may take before the rewind fails.
_LOOKUP_S = 30.0


class RdKafkaConsumer:
    """A group member on librdkafka, reading committed records only.

    Its partitions' producers (:meth:`producer`) share one transaction per
    round, fenced by the group's generation (exactly-once v2). With an
    ``instance`` it is a static member: restarted under the same instance it
    gets its partitions back at once, without a rebalance.
    """

    def __init__(
        self,
        transport: RdKafkaTransport,
        group: str,
        topics: Sequence[str],
        on_assign: Listener | None,
        on_revoke: Listener | None,
        *,
        instance: str | None,
        transactional_id: str,
    ) -> None:
        self.group, self._topics = group, list(topics)
        self._t, self._assign, self._revoke = transport, on_assign, on_revoke
        self._config: dict[str, Any] = {
            **transport.config,
            "group.id": group,
            "isolation.level": "read_committed",
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            "enable.partition.eof": True,
            "partition.assignment.strategy": strategy(instance),
            "session.timeout.ms": SESSION_TIMEOUT_MS,
            "heartbeat.interval.ms": 1_000,
            "max.poll.interval.ms": MAX_POLL_INTERVAL_MS,
            "fetch.wait.max.ms": FETCH_WAIT_MS,
        }
        if instance is not None:
            self._config["group.instance.id"] = instance
        self._tid = transactional_id
        self._loop = asyncio.get_running_loop()
        self._io = OneThread(f"rdkafka-consume-{group}")
        self._side = OneThread(f"rdkafka-rewind-{group}")
        self._c: Consumer | None = None
        self._assigned: set[TopicPartition] = set()
        self._joined = False
        self._eof: set[TopicPartition] = set()
        self._next: dict[TopicPartition, int] = {}
        self._consuming = threading.Lock()  # held by consume(); a seek waits for it
        self._seeks = 0
        #: rewinds asked and not yet returned, per partition; of their records,
        #: those read before the seek are dropped (unsought: the seek is still to
        #: come), those after it wait in _kept_back with the epoch of their fetch
        self._rewinding: Counter[TopicPartition] = Counter()
        self._unsought: set[TopicPartition] = set()
        self._kept_back: list[tuple[Message, int]] = []
        self._epoch: dict[TopicPartition, int] = {}
        self._member: TransactionalProducer | None = None
        self._warming: asyncio.Task[None] | None = None
        self._asked: dict[TopicPartition, list[asyncio.Future[int | None]]] = {}
        self._rewinder: asyncio.Task[None] | None = None
        self._seek_waits = False  # a rewind waits for the consumer (side thread)
        #: the group metadata as of the latest rebalance (asking for it while
        #: another thread polls can wait out the poll)
        self._group_metadata: Any = None
        self._stale = True
        self._rebalanced = False  # a callback ran in this fetch: return, let the owner act
        self._fetched_at = time.monotonic()
        self._held = False  # every assigned partition paused: the owner has no room

    async def start(self) -> None:
        self._c = await self._loop.run_in_executor(self._io, self._subscribe)
        # The member's producer starts while the group is joined, not once
        # partitions come: its start fences the previous incarnation and aborts
        # the transaction it left open, and librdkafka asks again only 500 ms
        # after the first InitProducerId meets that abort in progress.
        self._warming = asyncio.create_task(self._warm(), name=f"rdkafka-warm-{self.group}")

    async def _warm(self) -> None:
        try:
            await self._member_producer().start()
        except Exception as exc:  # noqa: BLE001 - the first share's start raises it again
            log.debug("group %s: the member's producer did not start ahead: %s", self.group, exc)

    def _subscribe(self) -> Consumer:
        c = Consumer(self._config, logger=log)
        c.subscribe(
            self._topics,
            on_assign=self._assigned_cb,
            on_revoke=self._revoked_cb,
            on_lost=self._lost_cb,
        )
        return c

    # ------------------------------------------------------------ callbacks (consumer thread)

    def _assigned_cb(self, c: Consumer, parts: list[KafkaTP]) -> None:
        self._stale = self._rebalanced = True  # a new generation
        # before the listener: a rewind may seek them
        if self._config["partition.assignment.strategy"] == COOPERATIVE:
            c.incremental_assign(parts)
        else:
            c.assign(parts)
        if self._held and parts:  # no room for them either; a claim's seek still works
            c.pause(parts)
        tps = [TopicPartition(p.topic, p.partition) for p in parts]
        self._assigned.update(tps)
        self._joined = True
        if self._assign is not None and tps:
            self._on_loop(self._assign(tps))

    def _revoked_cb(self, c: Consumer, parts: list[KafkaTP]) -> None:
        self._stale = self._rebalanced = True
        tps = [tp for p in parts if (tp := TopicPartition(p.topic, p.partition)) in self._assigned]
        self._assigned.difference_update(tps)
        self._eof.difference_update(tps)
        if self._revoke is not None and tps:
            self._on_loop(self._revoke(tps))

    def _lost_cb(self, c: Consumer, parts: list[KafkaTP]) -> None:
        log.warning("group %s: partitions lost (session timed out): %s", self.group, parts)
        self._joined = False
        self._revoked_cb(c, parts)

    def _on_loop(self, listening: Awaitable[None]) -> None:
        """Run a listener on the event loop; the consumer thread waits for it."""

        async def listen() -> None:
            await listening

        began = time.monotonic()
        log.debug("group %s: a rebalance listener runs", self.group)
        asyncio.run_coroutine_threadsafe(listen(), self._loop).result()
        if (took := time.monotonic() - began) > _SLOW_S:  # the group waited for it
            log.debug("group %s: a rebalance listener took %.1f s", self.group, took)

    # ------------------------------------------------------------ the port

    async def fetch(self, timeout_s: float, max_records: int = 500) -> list[Message]:
        if max_records > 0 and self._kept_back and (released := self._release()):
            return released
        if max_records <= 0 and time.monotonic() - self._fetched_at < HOLD_AFTER_S:
            return []  # it polled a moment ago: the group is served
        got, seeks, epochs = await self._loop.run_in_executor(
            self._io, self._consume, timeout_s, max_records
        )
        if seeks != self._seeks:  # a record fetched before a seek that came since: gone
            got = [m for m in got if self._epoch.get(m.tp, 0) == epochs.get(m.tp, 0)]
        if not self._rewinding:
            return got
        out = []
        for m in got:
            if m.tp not in self._rewinding:
                out.append(m)
            elif m.tp not in self._unsought:
                self._kept_back.append((m, epochs.get(m.tp, 0)))
        return out

    def _release(self) -> list[Message]:
        """The kept-back records of partitions whose rewinds have returned, those fetched
        after the seek (the ones before it are dropped: they come again)."""
        out, kept = [], []
        for m, epoch in self._kept_back:
            if m.tp in self._rewinding:
                kept.append((m, epoch))
            elif epoch == self._epoch.get(m.tp, 0):
                out.append(m)
        self._kept_back = kept
        return out

    def _consume(
        self, timeout_s: float, max_records: int
    ) -> tuple[list[Message], int, dict[TopicPartition, int]]:
        assert self._c is not None
        with self._consuming:
            if (idle := time.monotonic() - self._fetched_at) > _SLOW_S:  # rebalances wait
                log.debug("group %s: no fetch for %.1f s", self.group, idle)
            seeks, epochs = self._seeks, dict(self._epoch) if self._seeks else {}
            self._rebalanced = False
            self._hold(max_records <= 0)
            if max_records <= 0:  # take nothing: serve the group (rebalances, the poll interval)
                raw = self._serve(timeout_s)
            else:
                raw = take(self._c, max_records, timeout_s, self._interrupted)
            self._fetched_at = time.monotonic()
            if self._stale:
                self._stale = False
                self._group_metadata = self._c.consumer_group_metadata()
            out: list[Message] = []
            for m in raw:
                err = m.error()
                if err is None:
                    msg = message_of(m)
                    out.append(msg)
                    self._next[msg.tp] = msg.offset + 1
                    self._eof.discard(msg.tp)
                elif err.code() == KafkaError._PARTITION_EOF:
                    tp = TopicPartition(m.topic() or "", m.partition() or 0)
                    self._next[tp] = m.offset() or 0
                    if tp in self._assigned:
                        self._eof.add(tp)
                elif err.fatal() or err.code() == KafkaError._FATAL:  # _FATAL: a static
                    raise KafkaException(err)  # member fenced by a newer one of its id, say
                else:
                    log.warning("group %s: %s", self.group, err.str())
        return out, seeks, epochs

    def _interrupted(self) -> bool:
        """A waiting fetch returns: a rebalance was served, or a rewind waits to seek."""
        return self._rebalanced or self._seek_waits

    def _hold(self, hold: bool) -> None:
        """Pause every assigned partition, or resume them (on the consumer thread)."""
        assert self._c is not None
        if hold != self._held:
            parts = [KafkaTP(tp.topic, tp.partition) for tp in self._assigned]
            if parts:
                (self._c.pause if hold else self._c.resume)(parts)
            self._held = hold

    def _serve(self, timeout_s: float) -> list[Any]:
        """A poll with every partition paused: librdkafka serves rebalances only
        inside one, and leaves the group after ``max.poll.interval.ms`` without.
        A record it returns all the same is sought back to, and read again later;
        what it returns are the errors it saw, for the fetch to handle."""
        assert self._c is not None
        errors = []
        for m in take(self._c, 1, timeout_s, self._interrupted):
            if m.error() is None:
                self._c.seek(KafkaTP(m.topic() or "", m.partition() or 0, m.offset() or 0))
            else:
                errors.append(m)
        return errors

    async def rewind(self, tp: TopicPartition) -> int | None:
        """Rewinds asked for together (a claim of several partitions, every
        partition of a processor at once) go to the side thread as one: one
        committed-offsets request, the seeks under one hold of the consumer.

        The seek happens on the side thread, a moment before this returns to its
        caller, who drops the partition's records until then: what fetches
        read of the partition in between is held back and comes with the first
        fetch after, or it would be lost (the position is past it)."""
        fut: asyncio.Future[int | None] = self._loop.create_future()
        self._asked.setdefault(tp, []).append(fut)
        if self._rewinder is None:
            self._rewinder = asyncio.create_task(
                self._rewind_asked(), name=f"rdkafka-rewind-{self.group}"
            )
        self._rewinding[tp] += 1
        self._unsought.add(tp)
        try:
            return await fut
        finally:
            self._rewinding[tp] -= 1
            if not self._rewinding[tp]:
                del self._rewinding[tp]
                self._unsought.discard(tp)

    async def _rewind_asked(self) -> None:
        asked: dict[TopicPartition, list[asyncio.Future[int | None]]] = {}
        try:
            while self._asked:
                # Rewinds asked while this one waits join it: the partitions of a
                # claim come one loop round after the other (each passes a lock
                # its predecessor held), so wait for a round that adds none.
                seen = 0
                while len(self._asked) != seen:
                    seen = len(self._asked)
                    await asyncio.sleep(0)
                asked, self._asked = self._asked, {}
                try:
                    found = await self._loop.run_in_executor(self._side, self._rewind, list(asked))
                except Exception as exc:  # noqa: BLE001 - each asker raises it
                    _settle(asked, exc)
                else:
                    for tp, futs in asked.items():
                        for f in futs:
                            if not f.done():
                                f.set_result(found.get(tp))
                asked = {}
        finally:  # stopped: whoever still waits is cancelled with it
            self._rewinder = None
            _settle(asked, None)
            _settle(self._asked, None)
            self._asked.clear()

    def _rewind(self, tps: list[TopicPartition]) -> dict[TopicPartition, int | None]:
        """On the side thread. The committed offsets are asked for with
        require_stable (read_committed): that waits for a previous owner's
        transaction that commits offsets on them. A partition no longer assigned
        gets None."""
        assert self._c is not None
        mine = [tp for tp in tps if tp in self._assigned]
        if not mine:
            return {}
        answer = self._c.committed(
            [KafkaTP(tp.topic, tp.partition) for tp in mine], timeout=_LOOKUP_S
        )
        committed = {TopicPartition(k.topic, k.partition): k.offset for k in answer}
        try:
            return self._seek(mine, committed)
        finally:
            self._seek_waits = False

    def _seek(
        self, mine: list[TopicPartition], committed: dict[TopicPartition, int]
    ) -> dict[TopicPartition, int | None]:
        """Seek each of ``mine`` still assigned to its ``committed`` offset; the
        offsets sought. Holds ``_seek_waits`` up (the caller lowers it): a fetch
        in progress returns at its next slice and lets go of the consumer."""
        assert self._c is not None
        out: dict[TopicPartition, int | None] = {}
        give_up = time.monotonic() + _LOOKUP_S
        while left := [tp for tp in mine if tp not in out and tp in self._assigned]:
            self._seek_waits = True
            if not self._consuming.acquire(timeout=0.05):
                continue  # a consume() is in progress (perhaps running a revoke)
            refused = False
            try:
                for tp in left:
                    if tp not in self._assigned:  # revoked since: no seek
                        continue
                    offset = committed[tp]
                    start = offset if offset >= 0 else OFFSET_BEGINNING
                    try:
                        self._c.seek(KafkaTP(tp.topic, tp.partition, start))
                    except KafkaException as exc:
                        # just assigned, its fetcher not started yet: seek refuses
                        # with _STATE for a moment (librdkafka #3959); try again
                        if exc.args[0].code() != KafkaError._STATE or time.monotonic() > give_up:
                            raise
                        refused = True
                        continue
                    self._seeks += 1
                    self._epoch[tp] = self._epoch.get(tp, 0) + 1
                    self._unsought.discard(tp)
                    self._eof.discard(tp)
                    self._next.pop(tp, None)
                    out[tp] = offset if offset >= 0 else None
            finally:
                self._seek_waits = False
                self._consuming.release()
            if refused:
                time.sleep(_SLICE_S)  # the fetcher starts with the next polls
        return out

    def joined(self) -> bool:
        return self._joined

    def caught_up(self) -> bool:
        """Joined, and the latest fetch of every assigned partition reached its end
        (librdkafka's partition EOF, at the last stable offset), and nothing kept
        back for a rewind still to return."""
        return self._joined and self._assigned <= self._eof and not self._kept_back

    def lag(self) -> int | None:
        """0 for a partition at its end; otherwise the high watermark (as last
        fetched) minus the position, an upper bound (librdkafka tells the last
        stable offset only at the end)."""
        if self._c is None:
            return None
        total = 0
        for tp in list(self._assigned):
            if tp in self._eof:
                continue
            position = self._next.get(tp)
            if position is None:
                return None
            _, high = self._c.get_watermark_offsets(KafkaTP(tp.topic, tp.partition), cached=True)
            if high < 0:
                return None
            total += max(0, high - position)
        return total

    def producer(self, transactional_id: str) -> Producer:
        """A share in this member's one transactional producer (``transactional_id``
        is the EOS v1 id a partition would have had; it is not used)."""
        return Share(self._member_producer())

    def _member_producer(self) -> TransactionalProducer:
        if self._member is None:
            self._member = TransactionalProducer(
                self._t, self._tid, self._metadata, on_abort=self._refresh
            )
        return self._member

    def _metadata(self, group: str) -> Any:
        if group != self.group or self._c is None:
            return self._t.group_metadata(group)
        return self._group_metadata or self._c.consumer_group_metadata()

    def _refresh(self) -> None:
        """Read the group metadata again with the next fetch."""
        self._stale = True

    async def stop(self) -> None:
        """Give the partitions back (the revoke listener runs first), then leave."""
        gone = list(self._assigned)
        self._assigned.clear()
        if self._revoke is not None and gone:
            await self._revoke(gone)
        if self._c is not None:
            c, self._c = self._c, None
            await self._loop.run_in_executor(self._io, c.close)
        for task in (self._warming, self._rewinder):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        # a rewinder cancelled before its first step never ran its own cleanup
        self._rewinder = None
        _settle(self._asked, None)
        self._asked.clear()
        if self._member is not None:
            await self._member.stop()
        self._io.shutdown(wait=False)
        self._side.shutdown(wait=False)


def _settle(
    waiting: dict[TopicPartition, list[asyncio.Future[int | None]]], error: Exception | None
) -> None:
    """Fail (``error``) or cancel (None) every rewind still waiting in ``waiting``."""
    for futs in waiting.values():
        for f in futs:
            if f.done():
                continue
            if error is None:
                f.cancel()
            else:
                f.set_exception(error)

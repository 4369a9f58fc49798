"""The transport contract (procession/workers/_port.py), on every transport.

Each test runs on the in-memory log and on Kafka (``--backends memory,kafka``);
the ones about open transactions exist only on Kafka, where a transaction can
stay open between calls. Names are unique per test: topics, groups and
transactional ids outlive a test on a broker.

On Kafka, ``commit`` returns before the commit markers reach the partitions, so
a reader may not see a batch for some milliseconds. A successor producer (same
transactional id) starts only once they are written: tests read after
:meth:`Bench.successor`, as a partition's new owner reads its changelog.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, cast

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError as AioKafkaError
from confluent_kafka import KafkaError, KafkaException

from procession._errors import (
    FencedError,
    RecordTooLargeError,
    TransactionAbortedError,
    WriterFailedError,
)
from procession.topics._layout import RECORD_LIMIT, TopicSpec
from procession.workers import Batch, MemoryTransport, Message, Outgoing, TopicPartition
from procession.workers import _kafka as kafka_module
from procession.workers import _rdkafka_producer as rdkafka_producer
from procession.workers._kafka import KafkaProducer, KafkaTransport
from procession.workers._port import Consumer, Listener, Producer, Transport, partition_for
from procession.workers._rdkafka import RdKafkaTransport
from procession.workers._rdkafka_consumer import RdKafkaConsumer
from procession.workers._rdkafka_producer import Share, TransactionalProducer
from tests.conftest import KAFKA_BACKENDS, Backend, kafka_servers, kafka_transport, until


class Bench:
    """One transport, names unique to the test, and what the test opened (closed after)."""

    def __init__(self, transport: Transport, prefix: str) -> None:
        self.transport, self.prefix = transport, prefix
        self._opened: list[Producer | Consumer] = []

    def name(self, short: str) -> str:
        return f"{self.prefix}.{short}"

    async def topic(self, short: str, partitions: int = 1, **kw: Any) -> str:
        await self.transport.create_topics([TopicSpec(self.name(short), partitions, **kw)])
        return self.name(short)

    async def producer(self, short: str) -> Producer:
        p = self.transport.producer(self.name(short))
        await p.start()
        self._opened.append(p)
        return p

    async def successor(self, short: str) -> Producer:
        """A new producer with the same id; everything its predecessors committed is visible now.

        (On Kafka, InitProducerId waits until their commit markers are written.)
        """
        return await self.producer(short)

    async def consumer(self, group: str, topics: Sequence[str], *listeners: Listener) -> Consumer:
        c = await self.transport.consumer(self.name(group), topics, *listeners)
        self._opened.append(c)
        return c

    async def values(self, topic: str, partition: int = 0) -> list[bytes | None]:
        return [
            m.value for m in await self.transport.read_partition(TopicPartition(topic, partition))
        ]

    async def records(self, topic: str) -> list[Message]:
        out: list[Message] = []
        for p in range((await self.transport.describe([topic]))[topic].partitions):
            out += await self.transport.read_partition(TopicPartition(topic, p))
        return out

    async def resumes_at(self, group: str, tp: TopicPartition) -> tuple[int, bytes | None]:
        """The first record a new member of ``group`` reads from ``tp``: (offset, value)."""
        c = await self.consumer(group, [tp.topic])
        got: list[Message] = []

        async def fetched() -> bool:
            got.extend(m for m in await c.fetch(0.1) if m.tp == tp)
            return bool(got)

        await until(fetched)
        await c.stop()
        return got[0].offset, got[0].value

    async def close(self) -> None:
        for opened in reversed(self._opened):
            await opened.stop()
        if isinstance(self.transport, KafkaTransport | RdKafkaTransport):
            await self.transport.close()


@pytest.fixture
async def bench(backend: Backend) -> AsyncIterator[Bench]:
    if backend.name == "memory":
        transport: Transport = MemoryTransport()
    else:
        transport = kafka_transport(backend.name)
    b = Bench(transport, backend.prefix)
    yield b
    await b.close()


def at(topic: str, value: bytes | None, key: str = "k", partition: int | None = 0) -> Outgoing:
    return Outgoing(topic, key, value, partition=partition)


async def numbered(bench: Bench, producer: Producer, count: int) -> TopicPartition:
    """A one-partition topic holding the values b"0", b"1", ... at offsets 0, 1, ..."""
    src = await bench.topic("in")
    await producer.commit(Batch([at(src, str(i).encode()) for i in range(count)]))
    return TopicPartition(src, 0)


async def test_commit_makes_records_and_offsets_visible_together(bench: Bench) -> None:
    p = await bench.producer("p")
    src = await numbered(bench, p, 6)
    out = await bench.topic("out", 2)
    await p.commit(
        Batch([at(out, b"1", partition=1), at(out, b"2", partition=1)], {src: 4}, bench.name("g"))
    )
    await bench.successor("p")
    assert await bench.values(out, 0) == []
    assert await bench.values(out, 1) == [b"1", b"2"]
    assert await bench.resumes_at("g", src) == (4, b"4")
    assert await bench.resumes_at("other", src) == (0, b"0")


async def test_a_commit_that_fails_after_its_records_went_out_leaves_nothing_and_can_be_retried(
    bench: Bench,
) -> None:
    """A transaction that fails at its end, its records already sent (on Kafka:
    acknowledged by the broker), raises ``TransactionAbortedError`` and leaves
    nothing: no record visible, the group's offset where it was. The same batch
    committed again is there once."""
    p = await bench.producer("p")
    src = await numbered(bench, p, 6)
    out = await bench.topic("out")
    batch = Batch([at(out, b"1"), at(out, b"2")], {src: 4}, bench.name("g"))
    fail_next_commit(bench.transport, p, bench.name("p"))
    with pytest.raises(TransactionAbortedError):
        await p.commit(batch)
    await p.commit(Batch([at(out, b"after")]))  # its markers follow the abort's
    await bench.successor("p")
    assert await bench.values(out) == [b"after"]
    assert await bench.resumes_at("g", src) == (0, b"0")
    p = await bench.producer("p")
    await p.commit(batch)
    await bench.successor("p")
    assert await bench.values(out) == [b"after", b"1", b"2"]
    assert await bench.resumes_at("g", src) == (4, b"4")


def fail_next_commit(transport: Transport, producer: Producer, transactional_id: str) -> None:
    """Make ``producer``'s next transaction fail at its very end, after its
    records and offsets went out, as a broker's refusal of EndTxn would."""
    if isinstance(transport, MemoryTransport):
        transport.log.faults.abort_next_commit(transactional_id)
    elif isinstance(producer, KafkaProducer):
        raw = producer._p
        assert raw is not None
        real = raw.commit_transaction

        async def refused() -> None:
            raw.commit_transaction = real  # type: ignore[method-assign]
            raise AioKafkaError("refused, as an EndTxn that failed")

        raw.commit_transaction = refused  # type: ignore[method-assign]
    else:
        assert isinstance(producer, TransactionalProducer) and producer._p is not None
        producer._p = _RefusesOneCommit(producer._p)


class _RefusesOneCommit:
    """A librdkafka producer whose next ``commit_transaction`` fails with an error
    that requires an abort; every other call goes to the real one."""

    def __init__(self, real: Any) -> None:
        self._real, self._refused = real, False

    def commit_transaction(self, *args: Any) -> None:
        if self._refused:
            return cast(None, self._real.commit_transaction(*args))
        self._refused = True
        refused = KafkaError(KafkaError.INVALID_TXN_STATE, "as an EndTxn that failed")
        raise KafkaException(KafkaError(refused.code(), refused.str(), txn_requires_abort=True))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    def __len__(self) -> int:
        return len(self._real)


async def test_keyed_records_land_where_murmur2_puts_their_key(bench: Bench) -> None:
    topic = await bench.topic("keyed", 6)
    keys = [f"rebase:r{i}" for i in range(40)]
    p = await bench.producer("p")
    await p.commit(Batch([at(topic, k.encode(), key=k, partition=None) for k in keys]))
    await bench.successor("p")
    placed = {m.key: m.partition for m in await bench.records(topic)}
    assert placed == {k: partition_for(k, 6) for k in keys}
    assert len(set(placed.values())) == 6


async def test_a_record_over_the_topics_limit_writes_nothing_of_its_batch(bench: Bench) -> None:
    p = await bench.producer("p")
    src = await numbered(bench, p, 6)
    big = await bench.topic("big", 2, max_message_bytes=20_000)
    await p.commit(Batch([], {src: 2}, bench.name("g")))
    records = [at(big, b"small"), at(big, b"x" * 30_000, partition=1), at(big, b"small")]
    with pytest.raises(RecordTooLargeError) as refused:
        await p.commit(Batch(records, {src: 5}, bench.name("g")))
    assert (refused.value.topic, refused.value.limit) == (big, 20_000)
    fits = at(big, b"y" * (20_000 - at(big, b"").size()), partition=1)
    assert fits.size() == 20_000  # as large as size() allows: the broker takes it
    await p.commit(Batch([at(big, b"fine"), fits]))
    await bench.successor("p")
    assert await bench.resumes_at("g", src) == (2, b"2")
    assert await bench.values(big, 0) == [b"fine"]
    assert await bench.values(big, 1) == [fits.value]


async def test_a_new_producer_with_the_same_id_fences_the_old_one(bench: Bench) -> None:
    topic = await bench.topic("out")
    old = await bench.producer("tx")
    await old.commit(Batch([at(topic, b"old")]))
    new = await bench.producer("tx")
    with pytest.raises(FencedError):
        await old.commit(Batch([at(topic, b"zombie")]))
    await new.commit(Batch([at(topic, b"live")]))
    await bench.successor("tx")
    assert await bench.values(topic) == [b"old", b"live"]


async def test_folding_a_compacted_topic_gives_the_latest_value_per_key(bench: Bench) -> None:
    topic = await bench.topic("log", 2, compacted=True)
    p = await bench.producer("p")

    def put(key: str, value: bytes | None) -> Outgoing:
        return at(topic, value, key=key, partition=None)

    await p.commit(Batch([put("a", b"1"), put("b", b"1"), put("c", b"1")]))
    await p.commit(Batch([put("a", b"2"), put("b", None)]))
    await p.commit(Batch([put("c", b"3"), put("d", None)]))
    await bench.successor("p")
    latest: dict[str | None, bytes] = {}
    for m in await bench.records(topic):
        if m.value is None:
            latest.pop(m.key, None)
        else:
            latest[m.key] = m.value
    assert latest == {"a": b"2", "c": b"3"}


class Owners:
    """Partitions each consumer holds, as its assign/revoke listeners were told."""

    def __init__(self) -> None:
        self.held: dict[str, set[int]] = defaultdict(set)
        self.calls: list[tuple[str, str, list[int]]] = []

    def listeners(self, who: str) -> tuple[Listener, Listener]:
        async def assign(tps: Sequence[TopicPartition]) -> None:
            self.calls.append((who, "assign", sorted(tp.partition for tp in tps)))
            self.held[who] |= {tp.partition for tp in tps}

        async def revoke(tps: Sequence[TopicPartition]) -> None:
            self.calls.append((who, "revoke", sorted(tp.partition for tp in tps)))
            self.held[who] -= {tp.partition for tp in tps}

        return assign, revoke


async def settled(consumers: Sequence[Consumer], owners: Owners, want: dict[str, int]) -> None:
    """Poll the consumers until each holds as many partitions as ``want`` says."""

    async def check() -> bool:
        for c in consumers:
            await c.fetch(0.05)
        return {who: len(owners.held[who]) for who in want} == want

    await until(check, 30)


async def test_group_members_split_partitions_and_rebalance(bench: Bench) -> None:
    topic = await bench.topic("in", 4)
    owners = Owners()
    a = await bench.consumer("g", [topic], *owners.listeners("a"))
    await settled([a], owners, {"a": 4})
    assert owners.calls == [("a", "assign", [0, 1, 2, 3])]
    b = await bench.consumer("g", [topic], *owners.listeners("b"))
    await settled([a, b], owners, {"a": 2, "b": 2})
    revoked_from_a = {
        p for who, kind, ps in owners.calls if who == "a" and kind == "revoke" for p in ps
    }
    assert owners.held["b"] <= revoked_from_a, f"a was not told what it gave b: {owners.calls}"
    assert owners.held["a"] | owners.held["b"] == {0, 1, 2, 3}
    b_had = sorted(owners.held["b"])
    await b.stop()
    await settled([a], owners, {"a": 4})
    assert owners.held["b"] == set(), f"b's revoke listener was not told: {owners.calls}"
    assert ("b", "revoke", b_had) in owners.calls


@pytest.mark.backends("rdkafka")
@pytest.mark.parametrize("static", [False, True], ids=["dynamic", "static"])
async def test_a_joining_member_stops_only_what_moves_unless_members_are_static(
    bench: Bench, static: bool
) -> None:
    """Dynamic librdkafka members rebalance cooperatively: when a member joins,
    the first gives up only the partitions that move to it and keeps reading
    the rest. Static members rebalance eagerly (round-robin; docs/reliability.md
    says why): the first gives up every partition and gets its share back."""
    topic = await bench.topic("in", 4)
    owners = Owners()
    members = bench
    if static:  # a transport of its own: its members' instance ids are `member`, `member-1`
        members = Bench(RdKafkaTransport(kafka_servers(), instance_id="member"), bench.prefix)
    try:
        a = await members.consumer("g", [topic], *owners.listeners("a"))
        await settled([a], owners, {"a": 4})
        b = await members.consumer("g", [topic], *owners.listeners("b"))
        await settled([a, b], owners, {"a": 2, "b": 2})
        calls = list(owners.calls)  # before the stops revoke the rest
    finally:
        if members is not bench:
            await members.close()
    revoked = {p for who, kind, ps in calls if who == "a" and kind == "revoke" for p in ps}
    assert revoked == ({0, 1, 2, 3} if static else owners.held["b"]), calls


async def test_a_member_left_without_partitions_is_joined_and_caught_up(bench: Bench) -> None:
    """More members than partitions: the idle one is still a member in force
    (a replica's readiness), with nothing to read."""
    topic = await bench.topic("in", 1)
    owners = Owners()
    a = await bench.consumer("g", [topic], *owners.listeners("a"))
    await settled([a], owners, {"a": 1})
    b = await bench.consumer("g", [topic], *owners.listeners("b"))

    async def both_joined() -> bool:
        for c in (a, b):
            await c.fetch(0.05)
        return a.joined() and b.joined()

    await until(both_joined, 30)
    assert sorted(len(owners.held[w]) for w in "ab") == [0, 1], owners.calls
    idle = b if not owners.held["b"] else a
    assert idle.caught_up() and idle.lag() == 0


async def test_rewinds_asked_together_each_go_back_to_their_committed_offset(
    bench: Bench,
) -> None:
    """A claim rewinds all its partitions at once (librdkafka: one request for
    their committed offsets, the seeks together): each answer and each reread
    is its own partition's."""
    src = await bench.topic("in", 3)
    tps = [TopicPartition(src, n) for n in range(3)]
    writer = await bench.producer("w")
    values = [at(src, f"{n}.{i}".encode(), partition=n) for n in range(3) for i in range(5)]
    await writer.commit(Batch(values))
    group = bench.name("g")
    await writer.commit(Batch([], {tp: tp.partition + 1 for tp in tps}, group=group))
    owners = Owners()
    c = await bench.consumer("g", [src], *owners.listeners("a"))
    read: set[tuple[int, int]] = set()

    async def read_to_the_end() -> bool:  # from each committed offset on: 4 + 3 + 2
        read.update((m.partition, m.offset) for m in await c.fetch(0.05))
        return len(read) == 9

    await until(read_to_the_end, 30)
    assert await asyncio.gather(*(c.rewind(tp) for tp in tps)) == [1, 2, 3]
    again: dict[int, bytes | None] = {}

    async def reread() -> bool:
        for m in await c.fetch(0.05):
            again.setdefault(m.partition, m.value)
        return len(again) == 3

    await until(reread, 30)
    assert again == {0: b"0.1", 1: b"1.2", 2: b"2.3"}


async def _held(
    bench: Bench, partitions: int, src: str | None = None
) -> tuple[RdKafkaConsumer, list[TopicPartition]]:
    """A librdkafka member holding every partition of ``src`` (a new topic by
    default), having read each to its end."""
    src = src or await bench.topic("in", partitions)
    owners = Owners()
    c = cast(RdKafkaConsumer, await bench.consumer("g", [src], *owners.listeners("a")))

    async def holds_all() -> bool:
        await c.fetch(0.05)
        return len(owners.held["a"]) == partitions and c.caught_up()

    await until(holds_all, 30)
    return c, [TopicPartition(src, n) for n in range(partitions)]


@pytest.mark.backends("rdkafka")
async def test_rewinds_asked_a_loop_round_apart_go_to_librdkafka_as_one(
    bench: Bench, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The partitions of a claim ask one loop round after the other (each passes a
    lock the one before held): their rewinds still go as one request."""
    c, tps = await _held(bench, 4)
    batches: list[int] = []
    rewind = c._rewind

    def counted(asked: list[TopicPartition]) -> dict[TopicPartition, int | None]:
        batches.append(len(asked))
        return rewind(asked)

    monkeypatch.setattr(c, "_rewind", counted)

    async def ask(n: int) -> int | None:
        for _ in range(n):
            await asyncio.sleep(0)
        return await c.rewind(tps[n])

    assert await asyncio.gather(*(ask(n) for n in range(4))) == [None] * 4  # nothing committed
    assert batches == [4]


@pytest.mark.backends("rdkafka")
async def test_records_read_between_the_seek_and_the_rewinds_return_are_not_lost(
    bench: Bench, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A claim drops a partition's records until its rewind returns. The seek
    happens on librdkafka's side thread a moment before that, and a fetch in
    between reads from the new position: those records must come after the
    return, not be dropped with the old ones (the position is past them: the
    partition would stall). The moment is held open here until a fetch has
    read them again."""
    src = await bench.topic("in", 1)
    tp = TopicPartition(src, 0)
    writer = await bench.producer("w")
    await writer.commit(Batch([at(src, f"{i}".encode()) for i in range(5)]))
    await writer.commit(Batch([], {tp: 2}, group=bench.name("g")))
    c, _ = await _held(bench, 1, src)
    fetches, accepting, got = [0], [False], []

    async def fetching() -> None:
        while True:
            for m in await c.fetch(0.05):
                if accepting[0]:  # what a claim keeps
                    got.append(m.offset)
            fetches[0] += 1

    rewind = c._rewind

    def slow(asked: list[TopicPartition]) -> dict[TopicPartition, int | None]:
        found = rewind(asked)  # sought
        give_up = time.monotonic() + 10
        while c._next.get(tp, 0) < 5 and time.monotonic() < give_up:  # read again
            time.sleep(0.005)
        after = fetches[0]
        while fetches[0] < after + 1 and time.monotonic() < give_up:  # and returned
            time.sleep(0.005)
        return found

    monkeypatch.setattr(c, "_rewind", slow)
    fetcher = asyncio.create_task(fetching())
    try:
        assert await c.rewind(tp) == 2
        accepting[0] = True

        async def all_from_the_committed_offset() -> bool:
            return got == [2, 3, 4]

        await until(all_from_the_committed_offset, 10)
    finally:
        fetcher.cancel()
        await asyncio.gather(fetcher, return_exceptions=True)


@pytest.mark.backends("rdkafka")
async def test_a_rewind_whose_partition_goes_while_it_waits_leaves_the_fetch_waiting(
    bench: Bench,
) -> None:
    """A rewind asks a fetch in progress to give way; if its partition is revoked
    before it gets the consumer, it must not leave every later fetch cut short."""
    c, (tp,) = await _held(bench, 1)
    c._consuming.acquire()  # a consume() in progress, as when it runs a revoke
    try:
        rewinding = asyncio.create_task(c.rewind(tp))

        async def waits_to_seek() -> bool:
            return c._seek_waits

        await until(waits_to_seek, 10)
        c._assigned.discard(tp)  # what the revoke listener does on the consumer thread
        assert await asyncio.wait_for(rewinding, 10) is None
    finally:
        c._consuming.release()
    assert not c._seek_waits  # else every fetch returns at once


@pytest.mark.backends("rdkafka")
async def test_a_producer_whose_start_failed_fails_later_starts_at_once(
    bench: Bench, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A member's producer starts ahead while the group is joined; when that start
    fails, the first partition's start says why at once instead of waiting the
    whole start deadline again."""
    p = TransactionalProducer(cast(RdKafkaTransport, bench.transport), bench.name("tx"), _none)
    tries: list[int] = []

    def refused() -> None:
        tries.append(1)
        raise WriterFailedError(p.transactional_id, "refused")

    monkeypatch.setattr(p, "_init", refused)
    for _ in range(2):
        with pytest.raises(WriterFailedError, match="refused"):
            await asyncio.wait_for(p.start(), 10)
    assert tries == [1]
    await p.stop()


@pytest.mark.backends("rdkafka")
async def test_a_start_cancelled_while_its_thread_waits_leaves_one_producer_and_closes_it(
    bench: Bench, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The thread of a cancelled start goes on: the producer it makes is the
    one a later start uses (a second would fence it), and stop() closes it."""
    p = TransactionalProducer(cast(RdKafkaTransport, bench.transport), bench.name("tx"), _none)
    held = _HeldProducers(monkeypatch)
    await held.start_cancelled(p)
    held.release.set()
    await asyncio.wait_for(p.start(), 30)  # waits for the first thread's producer
    assert len(held.made) == 1
    await p.stop()
    assert held.closed == held.made


@pytest.mark.backends("rdkafka")
async def test_a_producer_stopped_while_it_starts_is_closed_when_its_start_ends(
    bench: Bench, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A member stopped while its producer starts ahead: the producer that start
    makes later is closed by the thread that made it, not left open."""
    p = TransactionalProducer(cast(RdKafkaTransport, bench.transport), bench.name("tx"), _none)
    held = _HeldProducers(monkeypatch)
    await held.start_cancelled(p)
    await p.stop()
    held.release.set()

    async def closed_one() -> bool:
        return len(held.closed) == 1

    await until(closed_one, timeout_s=30)
    assert held.closed == held.made


#: Records enough that no flush of them ends within ``_TIGHT_S``.
_MANY, _TIGHT_S = 20_000, 0.001


@pytest.mark.backends("rdkafka")
async def test_a_commit_whose_call_times_out_is_resumed_and_commits(
    bench: Bench, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """librdkafka goes on with a commit whose call timed out and refuses every
    other transactional call until that one is called again: the producer calls
    it again, and the batch commits (an abort would be refused: the producer
    would fail)."""
    topic = await bench.topic("resumed", 3)
    p = await bench.producer("tx")
    monkeypatch.setattr(rdkafka_producer, "_CALL_TIMEOUT_S", _TIGHT_S)
    records = [Outgoing(topic, f"k{i}", b"v" * 1000) for i in range(_MANY)]
    with caplog.at_level("WARNING", logger="procession.rdkafka"):
        await asyncio.wait_for(p.commit(Batch(records)), 60)
    assert "commit: " in caplog.text and "resuming it" in caplog.text
    assert len(await bench.records(topic)) == _MANY


@pytest.mark.backends("rdkafka")
async def test_an_abort_whose_call_times_out_is_resumed_and_aborts(
    bench: Bench, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """An abort that waits for records in flight (the flush before EndTxn) and
    times out is called again until it ends; the transaction is aborted and the
    producer goes on (before, it was failed: its component stopped)."""
    topic = await bench.topic("aborted", 3)
    tx = TransactionalProducer(cast(RdKafkaTransport, bench.transport), bench.name("tx"), _none)
    await tx.start()
    try:
        assert tx._p is not None
        raw = tx._p

        def doomed() -> BaseException:
            raw.begin_transaction()
            for i in range(_MANY):
                tx._produce(raw, Outgoing(topic, f"k{i}", b"v" * 1000))
            on_their_way = time.monotonic() + 30
            while len(raw) == _MANY and time.monotonic() < on_their_way:  # some in flight
                raw.poll(0.001)
            failed = KafkaError(KafkaError._TIMED_OUT, "as a failed send_offsets")
            usual = rdkafka_producer._CALL_TIMEOUT_S
            monkeypatch.setattr(rdkafka_producer, "_CALL_TIMEOUT_S", _TIGHT_S)
            try:
                return tx._failure(raw, failed)
            finally:
                monkeypatch.setattr(rdkafka_producer, "_CALL_TIMEOUT_S", usual)

        with caplog.at_level("WARNING", logger="procession.rdkafka"):
            outcome = await asyncio.get_running_loop().run_in_executor(tx._io, doomed)
        assert isinstance(outcome, TransactionAbortedError), outcome
        assert "abort: " in caplog.text and "resuming it" in caplog.text
        await asyncio.wait_for(tx.commit(Batch([Outgoing(topic, "after", b"x")])), 30)
        assert [m.key for m in await bench.records(topic)] == ["after"]
    finally:
        await tx.stop()


@pytest.mark.backends("kafka")
async def test_an_aiokafka_transaction_that_does_not_end_fails_its_producer_at_stuck_s(
    bench: Bench, monkeypatch: pytest.MonkeyPatch
) -> None:
    """aiokafka retries some requests of a transaction to a broker that is gone
    for ever: a commit still in flight after ``STUCK_S`` fails the producer
    (every later commit at once), its stop does not wait on the broker, and a
    commit cancelled from outside before then is cancelled, not failed."""
    monkeypatch.setattr(kafka_module, "STUCK_S", 1.0)
    topic = await bench.topic("stuck")
    p = cast(KafkaProducer, await bench.producer("tx"))
    raw = p._p
    assert raw is not None
    hold = asyncio.Event()

    async def never() -> None:  # as a commit whose EndTxn is retried for ever
        await hold.wait()

    raw.commit_transaction = never  # type: ignore[method-assign]
    cancelled = asyncio.create_task(p.commit(Batch([at(topic, b"0")])))
    await asyncio.sleep(0)  # it runs until it waits on the broker
    cancelled.cancel()
    with pytest.raises(asyncio.CancelledError):
        await cancelled
    began = time.monotonic()
    with pytest.raises(WriterFailedError, match="has not ended in 1 s") as first:
        await asyncio.wait_for(p.commit(Batch([at(topic, b"1")])), 30)
    assert time.monotonic() - began < 5  # not the stuck bound plus an abort's wait
    with pytest.raises(WriterFailedError) as again:
        await p.commit(Batch([at(topic, b"2")]))
    assert again.value is first.value
    began = time.monotonic()
    await asyncio.wait_for(p.stop(), 30)
    assert time.monotonic() - began < 8  # its close is bounded
    hold.set()


class _HeldProducers:
    """Records every librdkafka producer the producer module makes, and which of them are closed;
    each one's thread waits for ``release`` once it is made, before InitProducerId."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.made: list[Any] = []
        self.closed: list[Any] = []
        self.entered, self.release = threading.Event(), threading.Event()
        real_producer, real_close = rdkafka_producer.Producer, rdkafka_producer._close

        def producer(config: dict[str, Any]) -> Any:
            self.made.append(p := real_producer(config))
            self.entered.set()
            self.release.wait(10)
            return p

        def close(p: Any, fatal: bool) -> None:
            real_close(p, fatal)
            if any(p is made for made in self.made):  # not one an earlier test's
                self.closed.append(p)  # thread made, and closes late, under load

        monkeypatch.setattr(rdkafka_producer, "Producer", producer)
        monkeypatch.setattr(rdkafka_producer, "_close", close)

    async def start_cancelled(self, p: TransactionalProducer) -> None:
        """Start ``p`` and cancel the start while its thread is held."""
        starting = asyncio.create_task(p.start())

        async def entered() -> bool:
            return self.entered.is_set()

        await until(entered, timeout_s=10)
        starting.cancel()
        await asyncio.gather(starting, return_exceptions=True)
        assert starting.cancelled()


def _none(_group: str) -> None:
    return None


async def test_describe_tells_how_topics_were_created(bench: Bench) -> None:
    plain = await bench.topic("plain", 3, max_message_bytes=20_000, retention_ms=3_600_000)
    compacted = await bench.topic("compacted", 2, compacted=True)
    found = await bench.transport.describe([plain, compacted, bench.name("missing")])
    assert sorted(found) == sorted([plain, compacted])
    p, c = found[plain], found[compacted]
    assert (p.name, p.partitions, p.compacted, p.max_message_bytes) == (plain, 3, False, 20_000)
    assert p.retention_ms == 3_600_000
    assert (c.partitions, c.compacted, c.max_message_bytes) == (2, True, RECORD_LIMIT)


# ---------------------------------------------------------------- open transactions (Kafka)


async def blocked_behind_open_transaction(bench: Bench, topic: str) -> None:
    """Commit b"after" with another producer: a read_committed reader cannot see it yet."""
    other = await bench.producer("other")
    await other.commit(Batch([at(topic, b"after")]))
    await bench.successor("other")
    assert await bench.values(topic) == []


async def seconds_until_visible(bench: Bench, topic: str, values: list[bytes]) -> float:
    began = time.monotonic()

    async def visible() -> bool:
        return await bench.values(topic) == values

    await until(visible, 30)
    return time.monotonic() - began


@pytest.mark.backends(*KAFKA_BACKENDS)
async def test_a_replacement_producer_unblocks_readers_of_an_abandoned_transaction(
    bench: Bench,
) -> None:
    topic = await bench.topic("out")
    servers = kafka_servers()
    dead = AIOKafkaProducer(bootstrap_servers=servers, transactional_id=bench.name("tx"))
    await dead.start()
    await dead.begin_transaction()
    await dead.send_and_wait(topic, b"abandoned", partition=0)
    await dead.stop()  # closes its connections without ending the transaction, as a kill would
    await blocked_behind_open_transaction(bench, topic)
    began = time.monotonic()
    await bench.producer("tx")
    assert time.monotonic() - began + await seconds_until_visible(bench, topic, [b"after"]) < 5


async def open_transaction(p: Producer, topic: str, value: bytes) -> Callable[[], Awaitable[None]]:
    """Begin a transaction on ``p``'s client and write ``value`` to partition 0 of
    ``topic`` (acknowledged, not committed); what commits it."""
    if isinstance(p, KafkaProducer):
        raw = p._p
        assert raw is not None
        await raw.begin_transaction()
        await raw.send_and_wait(topic, value, partition=0)
        return raw.commit_transaction
    rd = cast(TransactionalProducer, p)._p
    assert rd is not None

    def begin() -> None:
        rd.begin_transaction()
        rd.produce(topic, value, partition=0)
        assert rd.flush(30) == 0

    await asyncio.to_thread(begin)
    return lambda: asyncio.to_thread(rd.commit_transaction, 30)


@pytest.mark.backends(*KAFKA_BACKENDS)
async def test_stopping_a_producer_aborts_its_open_transaction(bench: Bench) -> None:
    topic = await bench.topic("out")
    p = await bench.producer("tx")
    await open_transaction(p, topic, b"open")
    await blocked_behind_open_transaction(bench, topic)
    await p.stop()
    assert await seconds_until_visible(bench, topic, [b"after"]) < 5


@pytest.mark.backends(*KAFKA_BACKENDS)
async def test_records_of_an_open_transaction_stay_invisible_until_commit(bench: Bench) -> None:
    topic = await bench.topic("out")
    await (await bench.producer("tx")).commit(Batch([at(topic, b"before")]))
    commit_open = await open_transaction(await bench.successor("tx"), topic, b"pending")
    assert await bench.values(topic) == [b"before"]
    reader = await bench.consumer("g", [topic])
    seen: list[bytes | None] = []

    async def read(until_caught_up: bool = False, count: int = 0) -> bool:
        seen.extend(m.value for m in await reader.fetch(0.1))
        return reader.caught_up() if until_caught_up else len(seen) >= count

    await until(lambda: read(until_caught_up=True), 30)
    assert seen == [b"before"]
    await commit_open()
    await until(lambda: read(count=2), 30)
    assert seen == [b"before", b"pending"]
    assert await bench.values(topic) == [b"before", b"pending"]


@pytest.mark.backends("rdkafka")
async def test_a_transaction_stuck_in_librdkafka_fails_its_producer_and_frees_its_waiters(
    bench: Bench, monkeypatch: pytest.MonkeyPatch
) -> None:
    """librdkafka can block in send_offsets_to_transaction past its timeout (#5456):
    the call is held here on the producer's real thread, with a short deadline."""
    monkeypatch.setattr(rdkafka_producer, "STUCK_S", 1.0)
    topic = await bench.topic("out")
    p = cast(TransactionalProducer, await bench.producer("tx"))
    release = threading.Event()
    monkeypatch.setattr(p, "_transact", lambda *_: release.wait(60))
    began = time.monotonic()
    first = asyncio.create_task(p.commit(Batch([at(topic, b"1")])))
    behind = asyncio.create_task(p.commit(Batch([at(topic, b"2")])))  # waits for the next round
    async with asyncio.timeout(5):
        while p._flight is None:
            await asyncio.sleep(0.01)
    second_in_flight = asyncio.create_task(p.commit(Batch([at(topic, b"3")])))
    await asyncio.sleep(0)
    second_in_flight.cancel()  # queued, not launched: it goes at once
    with pytest.raises(asyncio.CancelledError):
        await second_in_flight
    with pytest.raises(WriterFailedError, match=r"a transaction has not ended in 1 s"):
        await asyncio.wait_for(first, 10)
    assert 1.0 <= time.monotonic() - began < 5
    with pytest.raises(WriterFailedError, match="has not ended"):
        await asyncio.wait_for(behind, 5)  # not sent on a producer that cannot go on
    with pytest.raises(WriterFailedError, match="has not ended"):
        await p.commit(Batch([at(topic, b"4")]))
    await asyncio.wait_for(p.stop(), 2)  # without waiting for the thread
    release.set()
    assert await bench.values(topic) == []


@pytest.mark.backends("rdkafka")
async def test_a_commit_cancelled_behind_a_stuck_transaction_returns_once_it_is_judged_stuck(
    bench: Bench, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A revoke listener cancels its partition's commit and waits for it: the wait
    ends at the deadline, not when (if ever) librdkafka returns."""
    monkeypatch.setattr(rdkafka_producer, "STUCK_S", 1.0)
    topic = await bench.topic("out")
    p = cast(TransactionalProducer, await bench.producer("tx"))
    release = threading.Event()
    monkeypatch.setattr(p, "_transact", lambda *_: release.wait(60))
    committing = asyncio.create_task(p.commit(Batch([at(topic, b"1")])))
    async with asyncio.timeout(5):
        while p._flight is None:
            await asyncio.sleep(0.01)
    began = time.monotonic()
    committing.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(committing, 10)
    assert 0.5 < time.monotonic() - began < 5  # it waited for the flight, then no longer
    release.set()


@pytest.mark.backends("rdkafka")
async def test_the_next_transaction_waits_for_the_pipelined_shares_of_the_last_one(
    bench: Bench, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A share that says idle() commits in a pipeline (a processor partition):
    the transaction after one that carried its batch waits for its next batch,
    or its word that none comes, so a batch queued meanwhile by another share
    and that next one go out together, not one transaction apart. The wait
    has a bound: a share that does not come back holds nobody for long."""
    monkeypatch.setattr(rdkafka_producer, "GATHER_S", 30.0)  # ended by the shares, not the clock
    topic = await bench.topic("out")
    p = cast(TransactionalProducer, await bench.producer("tx"))
    a, b, other = Share(p), Share(p), Share(p)
    rounds = _rounds(p, monkeypatch)
    a.idle()
    b.idle()
    await a.commit(Batch([at(topic, b"a1")]))
    a.idle()  # nothing after it
    await b.commit(Batch([at(topic, b"b1")]))  # the last transaction carried b's batch
    queued = asyncio.create_task(other.commit(Batch([at(topic, b"x1")])))

    async def in_queue(count: int) -> bool:
        return len(p._queue) == count

    await until(lambda: in_queue(1), 10)
    a_next = asyncio.create_task(a.commit(Batch([at(topic, b"a2")])))  # a was not in it
    await until(lambda: in_queue(2), 10)
    assert p._flight is None and len(rounds) == 2  # still waiting for b
    b.idle()  # b has nothing more
    await asyncio.wait_for(asyncio.gather(queued, a_next), 10)
    assert rounds[-1] == [b"x1", b"a2"]
    monkeypatch.setattr(rdkafka_producer, "GATHER_S", 0.2)
    await a.commit(Batch([at(topic, b"a3")]))  # a is expected back, and does not come
    await asyncio.wait_for(other.commit(Batch([at(topic, b"x2")])), 10)
    assert rounds[-1] == [b"x2"]
    assert sorted(v or b"" for v in await bench.values(topic)) == [
        b"a1",
        b"a2",
        b"a3",
        b"b1",
        b"x1",
        b"x2",
    ]
    await p.stop()


@pytest.mark.backends("rdkafka")
async def test_commits_begun_together_go_out_in_one_transaction(
    bench: Bench, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A router's or worker's round commits its partitions' batches together:
    one transaction carries them all, not the first alone and then the rest
    (twice the transactions for the broker to write)."""
    topic = await bench.topic("out")
    p = cast(TransactionalProducer, await bench.producer("tx"))
    rounds = _rounds(p, monkeypatch)
    values = [str(i).encode() for i in range(4)]
    await asyncio.wait_for(
        asyncio.gather(*(Share(p).commit(Batch([at(topic, v)])) for v in values)), 30
    )
    assert rounds == [values]
    assert sorted(v or b"" for v in await bench.values(topic)) == values
    await p.stop()


def _rounds(p: TransactionalProducer, monkeypatch: pytest.MonkeyPatch) -> list[list[bytes | None]]:
    """The values of each transaction ``p`` sends from now on, one list each."""
    rounds: list[list[bytes | None]] = []
    transact = p._transact

    def recorded(producer: Any, batches: Sequence[Batch]) -> None:
        rounds.append([r.value for batch in batches for r in batch.records])
        transact(producer, batches)

    monkeypatch.setattr(p, "_transact", recorded)
    return rounds

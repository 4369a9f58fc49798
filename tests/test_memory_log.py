"""The in-memory log keeps the Kafka semantics the runtimes rely on."""

from __future__ import annotations

import pytest

from procession import FencedError, TransactionAbortedError
from procession.topics._layout import TopicSpec
from procession.workers import Batch, MemoryLog, MemoryTransport, Outgoing, TopicPartition
from procession.workers._memory import Crash


@pytest.fixture
async def transport() -> MemoryTransport:
    t = MemoryTransport()
    await t.create_topics(
        [TopicSpec("in", 2), TopicSpec("out", 2), TopicSpec("log", 2, compacted=True)]
    )
    return t


def out(key: str, value: bytes, topic: str = "out") -> Outgoing:
    return Outgoing(topic, key, value)


async def test_commit_makes_records_and_offsets_visible_together(
    transport: MemoryTransport,
) -> None:
    p = transport.producer("p")
    await p.start()
    tp = TopicPartition("in", 0)
    await p.commit(Batch([out("k", b"1"), out("k", b"2")], {tp: 7}, "g"))
    values = [m.value for m in transport.log.records("out")]
    assert values == [b"1", b"2"]
    assert transport.log.committed("g", tp) == 7


@pytest.mark.parametrize("fault", ["abort", "crash"])
async def test_a_failed_commit_leaves_nothing(transport: MemoryTransport, fault: str) -> None:
    p = transport.producer("proc-1")
    await p.start()
    if fault == "abort":
        transport.log.faults.abort_next_commit("proc")
        with pytest.raises(TransactionAbortedError):
            await p.commit(Batch([out("k", b"x")], {TopicPartition("in", 0): 1}, "g"))
    else:
        transport.log.faults.crash_before_commit("proc")
        with pytest.raises(Crash):
            await p.commit(Batch([out("k", b"x")], {TopicPartition("in", 0): 1}, "g"))
    assert transport.log.records("out") == []
    assert transport.log.committed("g", TopicPartition("in", 0)) == 0
    await p.commit(Batch([out("k", b"y")]))
    assert [m.value for m in transport.log.records("out")] == [b"y"]


async def test_a_new_producer_with_the_same_id_fences_the_old_one(
    transport: MemoryTransport,
) -> None:
    old, new = transport.producer("tx"), transport.producer("tx")
    await old.start()
    await new.start()
    with pytest.raises(FencedError, match="'tx' was fenced"):
        await old.commit(Batch([out("k", b"zombie")]))
    await new.commit(Batch([out("k", b"live")]))
    assert [m.value for m in transport.log.records("out")] == [b"live"]


async def test_a_consumer_resumes_from_its_groups_committed_offset(
    transport: MemoryTransport,
) -> None:
    p = transport.producer("p")
    await p.start()
    await p.commit(Batch([out(f"k{i}", str(i).encode(), "in") for i in range(10)]))
    first = await transport.consumer("g", ["in"])
    got = await first.fetch(0, 3)
    offsets = {m.tp: m.offset + 1 for m in got}
    await p.commit(Batch([], offsets, "g"))
    await first.stop()
    second = await transport.consumer("g", ["in"])
    rest = await second.fetch(0, 100)
    seen = {(m.tp, m.offset) for m in got} | {(m.tp, m.offset) for m in rest}
    assert len(got) + len(rest) == 10 == len(seen)


async def test_group_members_split_partitions_and_rebalance(transport: MemoryTransport) -> None:
    events: list[tuple[str, str, list[int]]] = []

    def listener(name: str, kind: str):  # type: ignore[no-untyped-def]
        async def call(tps):  # type: ignore[no-untyped-def]
            events.append((name, kind, [tp.partition for tp in tps]))

        return call

    a = await transport.consumer("g", ["in"], listener("a", "assign"), listener("a", "revoke"))
    assert a.assignment == [TopicPartition("in", 0), TopicPartition("in", 1)]
    b = await transport.consumer("g", ["in"], listener("b", "assign"), listener("b", "revoke"))
    assert len(a.assignment) == len(b.assignment) == 1
    assert ("a", "revoke", [0, 1]) in events
    await b.stop()
    assert len(a.assignment) == 2


async def test_compacted_topic_keeps_the_last_value_per_key(transport: MemoryTransport) -> None:
    p = transport.producer("p")
    await p.start()
    await p.commit(
        Batch([Outgoing("log", "a", b"1", partition=0), Outgoing("log", "b", b"1", partition=0)])
    )
    await p.commit(
        Batch([Outgoing("log", "a", b"2", partition=0), Outgoing("log", "b", None, partition=0)])
    )
    kept = await transport.read_partition(TopicPartition("log", 0))
    assert [(m.key, m.value) for m in kept] == [("a", b"2")]


async def test_retention_trims_only_what_every_group_has_consumed() -> None:
    t = MemoryTransport(MemoryLog(retain_records=2))
    await t.create_topics([TopicSpec("in", 1)])
    fast = await t.consumer("fast", ["in"])
    await t.consumer("slow", ["in"])
    p = t.producer("p")
    await p.start()
    tp = TopicPartition("in", 0)
    await p.commit(Batch([out(f"k{i}", b"x", "in") for i in range(20)]))
    await p.commit(Batch([], {tp: 20}, "fast"))
    assert len(t.log.records("in")) == 20  # the slow group has read nothing
    await p.commit(Batch([], {tp: 15}, "slow"))
    kept = t.log.records("in")
    assert kept[0].offset <= 13 and kept[-1].offset == 19
    # a position below what was kept resumes at the earliest kept record, as Kafka's reset does
    assert [m.offset for m in await fast.fetch(0)] == [m.offset for m in kept]

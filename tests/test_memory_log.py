"""What only the in-memory log does: compaction at once, retention, injected faults.

The transport contract it shares with Kafka is tested in test_transport.py.
"""

from __future__ import annotations

import time
from collections import Counter

import pytest

from procession import TransactionAbortedError
from procession.topics._layout import TopicSpec
from procession.workers import (
    Batch,
    MemoryLog,
    MemoryTransport,
    Outgoing,
    TopicPartition,
    _committer,
)
from procession.workers._committer import commit
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


async def test_aborted_commits_are_retried_until_one_goes_through(
    transport: MemoryTransport,
) -> None:
    p = transport.producer("proc-1")
    await p.start()
    transport.log.faults.abort_next_commit("proc", times=2)
    metrics: Counter[str] = Counter()
    await commit(p, Batch([out("k", b"x")], {TopicPartition("in", 0): 1}, "g"), metrics, "p0")
    assert metrics["aborted"] == 2
    assert [m.value for m in transport.log.records("out")] == [b"x"]
    assert transport.log.committed("g", TopicPartition("in", 0)) == 1


async def test_a_commit_that_keeps_aborting_gives_up_at_its_deadline(
    transport: MemoryTransport, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Retrying for ever would be a loop that died while the process lives on: the
    component stops with the reason, and its process exits to be restarted."""
    monkeypatch.setattr(_committer, "COMMIT_DEADLINE_S", 0.5)
    p = transport.producer("proc-1")
    await p.start()
    transport.log.faults.abort_next_commit("proc", times=1_000)
    metrics: Counter[str] = Counter()
    began = time.monotonic()
    with pytest.raises(TransactionAbortedError, match=r"p0: still failing after 0.5 s: injected"):
        await commit(p, Batch([out("k", b"x")]), metrics, "p0")
    assert 0.5 <= time.monotonic() - began < 5
    assert metrics["aborted"] >= 3  # 50, 100, 200 ms, then the rest of the deadline
    assert transport.log.records("out") == []


async def test_a_compacted_topic_is_compacted_at_once(transport: MemoryTransport) -> None:
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

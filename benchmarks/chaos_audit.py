"""Read a chaos run's topics back (read_committed) and count what went wrong.

Every count is of *keys* that occur more than once, so a figure of 3 means
three things happened twice (or more), not three surplus records.
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.structs import ConsumerRecord

from procession.topics import (
    DEFAULT_CODEC,
    CompensationPlanned,
    Decided,
    DomainEvent,
    InputIgnored,
    ProcessCompleted,
    ProcessFailed,
    ProcessStarted,
    Record,
    TaskCompleted,
    TaskFailed,
    TransitionPlanned,
)


@dataclass
class Audit:
    """What the topics of one run hold."""

    published: int = 0  # distinct event ids on the events topic
    published_twice: int = 0  # event ids the script's publisher wrote twice (its retries)
    started: int = 0
    completed: int = 0
    completed_twice: int = 0
    failed: int = 0
    duplicated_decisions: int = 0
    inputs_decided_twice: int = 0
    duplicates_recognised: int = 0
    routed_twice: int = 0
    task_reexecutions: int = 0
    dead_letters: int = 0
    process_records: int = 0
    longest_stall_s: float = 0.0
    longest_stall_at_s: float = 0.0  # when that stall began, from the first publish


async def read_topics(servers: str, prefix: str) -> dict[str, list[ConsumerRecord]]:
    """Every committed record of the run's topics (the compacted changelog left out)."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=servers, isolation_level="read_committed", enable_auto_commit=False
    )
    await consumer.start()
    try:
        names = sorted(
            t
            for t in await consumer.topics()
            if t.startswith(f"{prefix}.") and t != f"{prefix}.changelog"
        )
        await consumer._client.force_metadata_update()
        tps = [
            TopicPartition(t, p)
            for t in names
            for p in sorted(consumer.partitions_for_topic(t) or ())
        ]
        consumer.assign(tps)
        ends = await consumer.end_offsets(tps)
        for tp, off in (await consumer.beginning_offsets(tps)).items():
            consumer.seek(tp, off)
        out: dict[str, list[ConsumerRecord]] = {t: [] for t in names}
        deadline = time.monotonic() + 300
        while [tp for tp in tps if await consumer.position(tp) < ends[tp]]:
            if time.monotonic() > deadline:
                raise TimeoutError("reading the run's topics back took over 300 s")
            got = await consumer.getmany(timeout_ms=500, max_records=10000)
            for tp, records in got.items():
                out[tp.topic] += records
        return out
    finally:
        await consumer.stop()


def _header(msg: ConsumerRecord, name: str) -> str:
    return next((v.decode() for k, v in msg.headers if k == name), "")


def _twice(counter: Counter[object]) -> int:
    return sum(1 for n in counter.values() if n > 1)


def audit(topics: dict[str, list[ConsumerRecord]], prefix: str, end_ms: int) -> Audit:
    """The counts of the table; ``end_ms`` is when the run stopped waiting."""
    events = topics.get(f"{prefix}.events", [])
    process = topics.get(f"{prefix}.process", [])
    decoded: list[tuple[int, Record]] = [
        (m.timestamp, r) for m in process for r in DEFAULT_CODEC.decode_all(m.value)
    ]
    records = [r for _, r in decoded]
    published = Counter(_header(m, "event-id") for m in events)
    completed = Counter(r.process_id for r in records if isinstance(r, ProcessCompleted))
    a = Audit(
        published=len(published),
        published_twice=_twice(published),
        started=len({r.process_id for r in records if isinstance(r, ProcessStarted)}),
        completed=len(completed),
        completed_twice=_twice(completed),
        failed=len({r.process_id for r in records if isinstance(r, ProcessFailed)}),
        dead_letters=len(topics.get(f"{prefix}.dead-letter", [])),
        process_records=len(records),
    )
    planned = Counter(
        (type(r).__name__, r.process_id, r.machine_id, r.transition, r.attempt)
        for r in records
        if isinstance(r, TransitionPlanned | CompensationPlanned)
    )
    a.duplicated_decisions = _twice(planned)
    a.inputs_decided_twice = decided_twice(records)
    a.duplicates_recognised = sum(
        1 for r in records if isinstance(r, InputIgnored) and r.reason == "duplicate"
    )
    a.routed_twice = _twice(
        Counter((r.event_id, r.process_id) for r in records if isinstance(r, DomainEvent))
    )
    a.task_reexecutions = _twice(
        Counter(
            (r.task_id, r.attempt) for r in records if isinstance(r, TaskCompleted | TaskFailed)
        )
    )
    first_published: dict[str, int] = {}
    for m in events:
        first_published.setdefault(_header(m, "event-id"), m.timestamp)
    first_done: dict[str, int] = {}
    for t, r in decoded:
        if isinstance(r, ProcessCompleted):
            first_done.setdefault(r.process_id, t)
    stall = longest_stall(list(first_published.values()), list(first_done.values()), end_ms)
    a.longest_stall_s, a.longest_stall_at_s = stall
    return a


def decided_twice(records: list[Record]) -> int:
    """Inputs (per process) whose decisions were made on more than one occasion.

    Decisions about one input carry its event id as causation id and its
    position as ``seq``; their ids are derived from both. Deciding it again
    at another position gives a second ``seq``; recording the same decision
    twice repeats an id. ``InputIgnored`` is how a repeat is *recognised*, so
    it does not count as deciding.
    """
    seqs: dict[tuple[str, str], set[int]] = defaultdict(set)
    ids: Counter[str] = Counter()
    repeated: set[tuple[str, str]] = set()
    for r in records:
        if not isinstance(r, Decided) or isinstance(r, InputIgnored) or r.causation_id is None:
            continue
        key = (r.process_id, r.causation_id)
        seqs[key].add(r.seq)
        ids[r.event_id] += 1
        if ids[r.event_id] > 1:
            repeated.add(key)
    return len({k for k, s in seqs.items() if len(s) > 1} | repeated)


def longest_stall(publish_ms: list[int], done_ms: list[int], end_ms: int) -> tuple[float, float]:
    """The longest time with orders outstanding and no process completing.

    A stall runs from the later of the last completion and the moment work
    became outstanding, to the next completion, or to ``end_ms`` if work was
    still outstanding then. Returns (seconds, start in seconds after the first
    publish).
    """
    if not publish_ms:
        return 0.0, 0.0
    steps = sorted([(t, 1) for t in publish_ms] + [(t, -1) for t in done_ms])
    first = steps[0][0]
    outstanding, since, best, best_at = 0, first, 0, 0
    for t, step in steps:
        if step < 0:
            if outstanding > 0 and t - since > best:
                best, best_at = t - since, since
            since = t
        elif outstanding == 0:
            since = t
        outstanding += step
    if outstanding > 0 and end_ms - since > best:
        best, best_at = end_ms - since, since
    return best / 1000, (best_at - first) / 1000

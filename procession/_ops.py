"""Operations commands against a running cluster: ``ps``, ``show``, ``stuck``,
``cancel`` and ``dlq ls|show|replay``.

Each reads what it needs and no more: ``show`` and ``cancel`` one partition of
the process topic, ``ps`` and ``stuck`` the changelog, ``dlq`` the dead-letter
topic. Changes are written as inputs to a process's stream (a cancel request
naming who and why) or as records on their original topic (a replayed dead
letter carries the offset it came from), never by editing state.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from procession._timeline import summary, timeline
from procession.sagas._derive import cancel_request, resume_request, retry_request
from procession.sagas._fold import fold
from procession.sagas._state import Ended, Parked, ProcessState
from procession.topics._codec import DEFAULT_CODEC
from procession.topics._records import CancelMode, Record
from procession.workers._app import App
from procession.workers._port import (
    Batch,
    Message,
    Outgoing,
    TopicPartition,
    Transport,
    messages_of,
    partitions,
)
from procession.workers._wire import Stored, encode, readable, restore, split_key

OK, FAILED = 0, 1
Say = Callable[[str], None]


async def stream_of(app: App, transport: Transport, pid: str) -> list[Record]:
    """One process's records, read from its own partition of the process topic."""
    found = await messages_of(transport, app.topics.process, pid)
    return [rec for _, rec in readable(found, DEFAULT_CODEC)]


async def show(app: App, transport: Transport, pid: str, say: Say = print) -> int:
    """Print one process's timeline and state."""
    records = await stream_of(app, transport, pid)
    if not records:
        say(f"no records of process {pid!r}")
        return FAILED
    say(timeline(records))
    say(summary(fold(records)))
    return OK


async def cancel(
    app: App,
    transport: Transport,
    pid: str,
    *,
    mode: CancelMode,
    reason: str,
    by: str,
    say: Say = print,
) -> int:
    """Ask a process to cancel: a ``CancelRequested`` input naming who and why."""
    rec = cancel_request(pid, _now(), mode, f"{reason} (by {by})")
    return await _request(app, transport, pid, rec, say, done=f"{mode} cancel requested")


async def resume(
    app: App, transport: Transport, pid: str, *, reason: str, by: str, say: Say = print
) -> int:
    """Resume a parked process (a ``ResumeRequested`` input naming who and why)."""
    return await _request(
        app, transport, pid, resume_request(pid, _now(), f"{reason} (by {by})"), say
    )


async def retry(
    app: App,
    transport: Transport,
    pid: str,
    *,
    machine: str,
    reason: str,
    by: str,
    say: Say = print,
) -> int:
    """Run the next attempt of a failed task now (a ``RetryRequested`` input)."""
    rec = retry_request(pid, _now(), machine, f"{reason} (by {by})")
    return await _request(app, transport, pid, rec, say)


async def _request(
    app: App, transport: Transport, pid: str, rec: Record, say: Say, *, done: str = ""
) -> int:
    """Write an operator's request into a process's stream (if it has one)."""
    if not await stream_of(app, transport, pid):
        say(f"no records of process {pid!r}")
        return FAILED
    out = encode(app.topics.process, pid, rec, DEFAULT_CODEC)
    await _produce(transport, f"{app.topics.prefix}.ops", [out])
    done = done or f"{rec.type_name.rpartition('.')[2]} written"
    say(f"{pid}: {done} ({getattr(rec, 'reason', '')})")
    return OK


def _now() -> int:
    return int(time.time() * 1000)


@dataclass(frozen=True)
class Held:
    """A process as the changelog holds it, with when it last changed."""

    process_id: str
    state: Stored
    changed_ms: int

    @property
    def status(self) -> str:
        if isinstance(self.state, Parked):
            return "parked"
        return self.state.status

    def why(self, now_ms: int) -> str:
        """What a process that has not ended waits for."""
        s = self.state
        if isinstance(s, Parked):
            return f"parked: {s.reason}"
        if isinstance(s, Ended):
            return s.status
        waiting = sorted(
            f"{t.task_type} attempt {t.attempt} on {t.machine_id}"
            + ("" if t.in_flight else " (failed, retry due)")
            for t in s.pending().values()
        )
        due = sorted(t.due_ms for t in s.timers.values())
        parts = []
        if waiting:
            more = f" and {len(waiting) - 3} more" if len(waiting) > 3 else ""
            parts.append("waiting for " + "; ".join(waiting[:3]) + more)
        if due:
            parts.append(f"{len(due)} timer(s), next in {_age(due[0] - now_ms)}")
        return ", ".join(parts) or "waiting for an event"


async def held(app: App, transport: Transport) -> list[Held]:
    """Every process the changelog holds, with the time of its last change."""
    topic = app.topics.changelog
    out: list[Held] = []
    for p in range(await partitions(transport, topic)):
        messages = await transport.read_partition(TopicPartition(topic, p))
        states, _ = restore(messages)
        last: dict[str, int] = {}
        for m in messages:
            if m.key is not None:
                last[split_key(m.key)[0]] = m.timestamp_ms
        out += [Held(pid, s, last.get(pid, 0)) for pid, s in states.items()]
    return sorted(out, key=lambda h: h.process_id)


async def ps(
    app: App, transport: Transport, status: str | None, saga: str | None, say: Say = print
) -> int:
    """A table of processes by status, saga and last change, from the changelog."""
    now = int(time.time() * 1000)
    rows = [
        h
        for h in await held(app, transport)
        if (status is None or h.status == status)
        and (saga is None or h.process_id.partition(":")[0] == saga)
    ]
    say(f"{'PROCESS':<32} {'STATUS':<10} {'VERSION':>7} {'MACHINES':>8} {'CHANGED':>9}")
    for h in rows:
        s = h.state
        version = s.version if isinstance(s, ProcessState) else ""
        machines = len(s.machines) if isinstance(s, ProcessState) else ""
        ago = _age(now - h.changed_ms) + " ago"
        say(f"{h.process_id:<32} {h.status:<10} {version!s:>7} {machines!s:>8} {ago:>9}")
    counts = Counter(h.status for h in rows)
    say(", ".join(f"{n} {k}" for k, n in sorted(counts.items())) or "no processes")
    return OK


async def stuck(
    app: App, transport: Transport, older_than_ms: int, say: Say = print, *, ids_only: bool = False
) -> int:
    """Processes that have not ended and have not changed for ``older_than_ms``,
    and what each waits for (only their ids with ``ids_only``); exit 1 when there
    are any."""
    now = int(time.time() * 1000)
    found = [
        h
        for h in await held(app, transport)
        if h.status not in ("completed", "failed", "cancelled")
        and now - h.changed_ms >= older_than_ms
    ]
    for h in found:
        say(
            h.process_id
            if ids_only
            else f"{h.process_id}: {h.status} for {_age(now - h.changed_ms)}, {h.why(now)}"
        )
    if not ids_only:
        say(f"{len(found)} process(es) with no progress for {_age(older_than_ms)} or more")
    return FAILED if found else OK


# ------------------------------------------------------------------ dead letters

_DLQ = ("dlq-reason", "dlq-topic", "dlq-partition", "dlq-offset", "dlq-value-omitted")


async def dead_letters(app: App, transport: Transport) -> list[Message]:
    return await transport.read_partition(TopicPartition(app.topics.dead_letter, 0))


async def dlq_ls(app: App, transport: Transport, say: Say = print) -> int:
    """One line per dead letter: its offset, where it came from and why."""
    letters = await dead_letters(app, transport)
    for m in letters:
        h = _headers(m)
        kind = h.get("procession-type", "?")
        origin = (
            f"{h.get('dlq-topic', '?')}@{h.get('dlq-partition', '?')}:{h.get('dlq-offset', '?')}"
        )
        replayed = f" (replayed from {h['dlq-replayed-from']})" if "dlq-replayed-from" in h else ""
        say(f"{m.offset:>6}  {origin:<40} {kind:<28} {h.get('dlq-reason', '')}{replayed}")
    say(f"{len(letters)} dead letter(s)")
    return OK


async def dlq_show(app: App, transport: Transport, offset: int, say: Say = print) -> int:
    """One dead letter: its headers and value."""
    m = next((m for m in await dead_letters(app, transport) if m.offset == offset), None)
    if m is None:
        say(f"no dead letter at offset {offset}")
        return FAILED
    say(f"key: {m.key!r}")
    for k, v in m.headers:
        say(f"{k}: {v.decode(errors='replace')}")
    say((m.value or b"").decode(errors="replace"))
    return OK


async def dlq_replay(
    app: App, transport: Transport, offsets: Sequence[int], say: Say = print
) -> int:
    """Write dead letters back to the topics they came from, as they were, with
    a ``dlq-replayed-from`` header naming the dead letter's offset."""
    letters = {m.offset: m for m in await dead_letters(app, transport)}
    missing = [o for o in offsets if o not in letters]
    if missing:
        say(f"no dead letter at offset(s) {', '.join(map(str, missing))}")
        return FAILED
    out: list[Outgoing] = []
    for o in offsets:
        m = letters[o]
        h = _headers(m)
        if "dlq-value-omitted" in h:
            say(f"dead letter {o} has no value (it was too large); replay it from its origin")
            return FAILED
        headers = (
            *(kv for kv in m.headers if kv[0] not in _DLQ),
            ("dlq-replayed-from", str(o).encode()),
        )
        partition = int(h["dlq-partition"]) if h.get("dlq-partition", "").isdigit() else None
        out.append(Outgoing(h["dlq-topic"], m.key, m.value, headers, partition))
    await _produce(transport, f"{app.topics.prefix}.ops", out)
    for o, rec in zip(offsets, out, strict=True):
        say(f"dead letter {o} replayed to {rec.topic} partition {rec.partition}")
    return OK


def _headers(m: Message) -> dict[str, str]:
    return {k: v.decode(errors="replace") for k, v in m.headers}


async def _produce(transport: Transport, writer: str, records: list[Outgoing]) -> None:
    producer = transport.producer(writer)
    await producer.start()
    try:
        await producer.commit(Batch(records=records))
    finally:
        await producer.stop()


def _age(ms: int) -> str:
    s = max(0, ms) // 1000
    if s < 120:
        return f"{s}s"
    if s < 7200:
        return f"{s // 60}m"
    if s < 172800:
        return f"{s // 3600}h"
    return f"{s // 86400}d"


def duration_ms(text: str) -> int:
    """``10m`` -> 600000 (s, m, h, d); ``ValueError`` naming the text otherwise.

    Example:
        >>> duration_ms("90s"), duration_ms("2h")
        (90000, 7200000)
    """
    units = {"s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
    number, unit = text[:-1], text[-1:]
    if unit not in units or not number.isdigit():
        raise ValueError(f"expected a duration like 30s, 10m, 2h or 1d, got {text!r}")
    return int(number) * units[unit]

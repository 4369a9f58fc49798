"""A process state as plain JSON parts: a small header, and one part per machine,
per event type of the context, per completed task and per chunk of seen ids.

The changelog stores each part under its own key, so a commit writes the
header and the parts that changed (``ProcessState.dirty``), not the process.
The header carries the schema version; :func:`assemble` reads the current
schema and upcasts older ones (schema 1 held the whole state in one value).

Example:
    >>> s = ProcessState("p", status="running")
    >>> s.put_machine("m", MachineState("A"))
    >>> h, parts = header(s), {k: part(s, k) for k in all_parts(s)}
    >>> assemble(h, parts) == s
    True
"""

from __future__ import annotations

from typing import Any

import orjson
from immutables import Map

from procession._errors import DecodeError

from ._state import (
    SEEN_CHUNK,
    SEEN_WINDOW,
    CompletedTask,
    MachineState,
    PendingTask,
    ProcessState,
    Timer,
)

#: The changelog schema this version writes.
SCHEMA = 2


def header(state: ProcessState) -> dict[str, Any]:
    """The part every write carries: status, counters and the compensation."""
    comp = state.compensation
    return {
        "v": SCHEMA,
        "process_id": state.process_id,
        "saga": state.saga,
        "version": state.version,
        "correlation_id": state.correlation_id,
        "status": state.status,
        "seq": state.seq,
        "made": state.made,
        "seen_next": state.seen_next,
        "completed": len(state.completed),
        "compensation": _task_json(comp) if comp is not None else None,
        "outcome": state.outcome,
        "reason": state.reason,
        "failed_compensations": list(state.failed_compensations),
        "split": state.split,
    }


def all_parts(state: ProcessState) -> list[str]:
    """The keys of every part ``state`` holds."""
    chunks = sorted({n // SEEN_CHUNK for n in state.seen_ids})
    return [
        *(f"m:{mid}" for mid, _ in state.ordered()),
        *(f"c:{name}" for name in sorted(state.context)),
        *(f"k:{i}" for i in range(len(state.completed))),
        *(f"s:{c}" for c in chunks),
    ]


def part(state: ProcessState, key: str) -> dict[str, Any] | None:
    """The value of one part, or None when ``state`` no longer holds it."""
    kind, _, name = key.partition(":")
    if kind == "m":
        m = state.machines.get(name)
        return None if m is None else _machine_part(state, name, m)
    if kind == "c":
        data = state.context.get(name)
        return None if data is None else {"d": data}
    if kind == "k":
        done = state.completed.get(int(name))
        return None if done is None else _completed_json(done)
    if kind == "s":
        first = int(name) * SEEN_CHUNK
        ids = [
            [n, state.seen_ids[n]] for n in range(first, first + SEEN_CHUNK) if n in state.seen_ids
        ]
        return {"ids": ids} if ids else None
    raise ValueError(f"not a part key: {key!r}")


def assemble(head: dict[str, Any], parts: dict[str, dict[str, Any]]) -> ProcessState:
    """The state a header and its parts describe (of any schema this version reads).

    Raises :class:`DecodeError` naming what is wrong.
    """
    version = head.get("v", 1)
    if version == 1:
        return _from_v1(head)
    if version != SCHEMA:
        raise DecodeError(
            f"changelog schema {version} is newer than this version of Procession reads "
            f"({SCHEMA}); run the newer version or rebuild the changelog"
        )
    comp = head["compensation"]
    s = ProcessState(
        process_id=head["process_id"],
        saga=head["saga"],
        version=head["version"],
        correlation_id=head["correlation_id"],
        status=head["status"],
        seq=head["seq"],
        outcome=head["outcome"],
        reason=head["reason"],
        failed_compensations=tuple(head["failed_compensations"]),
    )
    s.set_compensation(PendingTask(**comp) if comp else None)
    s.split = bool(head.get("split", False))
    machines = sorted(
        ((p["o"], key[2:], p) for key, p in parts.items() if key.startswith("m:")),
        key=lambda x: x[0],
    )
    for ordinal, mid, p in machines:
        s.put_machine(mid, _machine_from(p["m"]), ordinal)
        for tid, t in p["t"].items():
            s.add_timer(tid, Timer(**t))
    s.made = max(head["made"], len(machines))
    for key, p in sorted(parts.items()):
        kind, _, name = key.partition(":")
        if kind == "c":
            s.set_context(name, p["d"])
        elif kind == "s":
            for n, event_id in p["ids"]:
                s.seen = s.seen.set(event_id, n)
                s.seen_ids = s.seen_ids.set(n, event_id)
    for i in range(head["completed"]):
        s.push_completed(CompletedTask(**parts[f"k:{i}"]))
    s.seen_next = head["seen_next"]
    for n in [n for n in s.seen_ids if n < s.seen_next - SEEN_WINDOW]:
        s.seen = s.seen.delete(s.seen_ids[n])
        s.seen_ids = s.seen_ids.delete(n)
    s.dirty = Map()
    return s


def snapshot(state: ProcessState) -> dict[str, Any]:
    """The whole state in one JSON value: the header with its parts inside."""
    return {**header(state), "parts": {k: part(state, k) for k in all_parts(state)}}


def whole(state: ProcessState) -> bytes:
    """``{"state": snapshot(state)}`` as JSON, the same bytes, built in one pass.

    The processor writes a small process's whole state on every commit that
    changes it, so this is on its hot path: the parts are laid out straight from
    the state, not looked up key by key.

    Example:
        >>> s = ProcessState("p", status="running")
        >>> s.put_machine("m", MachineState("A"))
        >>> whole(s) == orjson.dumps({"state": snapshot(s)})
        True
    """
    order, machines = state.order, state.machines
    parts: dict[str, Any] = {}
    for mid in sorted(order, key=order.__getitem__):
        parts["m:" + mid] = _machine_part(state, mid, machines[mid])
    context = state.context
    for name in sorted(context):
        parts["c:" + name] = {"d": context[name]}
    completed = state.completed
    for i in range(len(completed)):
        parts[f"k:{i}"] = _completed_json(completed[i])
    seen_ids = state.seen_ids
    chunk: list[list[Any]] | None = None
    at = -1
    for n in sorted(seen_ids):
        if n // SEEN_CHUNK != at:
            at, chunk = n // SEEN_CHUNK, []
            parts[f"s:{at}"] = {"ids": chunk}
        assert chunk is not None
        chunk.append([n, seen_ids[n]])
    head = header(state)
    head["parts"] = parts
    return orjson.dumps({"state": head})


def _from_v1(data: dict[str, Any]) -> ProcessState:
    """Schema 1: the whole state in one value, machines in creation order."""
    parts: dict[str, dict[str, Any]] = {}
    timers: dict[str, dict[str, Any]] = {}
    for tid, t in data["timers"].items():
        timers.setdefault(t["machine_id"], {})[tid] = t
    for n, (mid, m) in enumerate(data["machines"].items()):
        parts[f"m:{mid}"] = {"o": n, "m": m, "t": timers.pop(mid, {})}
    if timers:
        raise DecodeError(f"schema 1 state has timers of unknown machines: {sorted(timers)}")
    for name, d in data["context"].items():
        parts[f"c:{name}"] = {"d": d}
    for i, c in enumerate(data["completed"]):
        parts[f"k:{i}"] = c
    ids = list(data["seen"])  # unordered in schema 1: all kept, oldest first by name
    for chunk in range(0, len(ids), SEEN_CHUNK):
        parts[f"s:{chunk // SEEN_CHUNK}"] = {
            "ids": [[chunk + i, e] for i, e in enumerate(ids[chunk : chunk + SEEN_CHUNK])]
        }
    head = {
        **{k: data[k] for k in ("process_id", "saga", "version", "correlation_id", "status")},
        "v": SCHEMA,
        "seq": data["seq"],
        "made": len(data["machines"]),
        "seen_next": len(ids),
        "completed": len(data["completed"]),
        "compensation": data.get("compensation"),
        "outcome": data.get("outcome"),
        "reason": data.get("reason", ""),
        "failed_compensations": data.get("failed_compensations", []),
    }
    return assemble(head, parts)


def _machine_part(state: ProcessState, mid: str, m: MachineState) -> dict[str, Any]:
    """The part of machine ``mid`` (``m``): its place in creation order, the
    machine, and the timers armed for it."""
    tids, timers = state.timers_of.get(mid), state.timers
    armed = {tid: _timer_json(timers[tid]) for tid in tids} if tids else {}
    return {"o": state.order[mid], "m": _machine_json(m), "t": armed}


# The value classes as JSON objects, their fields in order, spelt out: orjson
# writes a slotted dataclass at a third of a dict's pace, and a comprehension
# over ``__slots__`` is no faster (tests/test_changelog.py holds each to its
# class's fields).


def _machine_json(m: MachineState) -> dict[str, Any]:
    task = m.task
    return {
        "state": m.state,
        "entries": m.entries,
        "task": None if task is None else _task_json(task),
        "result": m.result,
    }


def _task_json(t: PendingTask) -> dict[str, Any]:
    return {
        "task_id": t.task_id,
        "task_type": t.task_type,
        "machine_id": t.machine_id,
        "transition": t.transition,
        "attempt": t.attempt,
        "mode": t.mode,
        "in_flight": t.in_flight,
        "compensable": t.compensable,
        "compensates": t.compensates,
        "source": t.source,
        "payload": t.payload,
    }


def _timer_json(t: Timer) -> dict[str, Any]:
    return {
        "due_ms": t.due_ms,
        "purpose": t.purpose,
        "machine_id": t.machine_id,
        "transition": t.transition,
        "task_id": t.task_id,
        "attempt": t.attempt,
    }


def _completed_json(c: CompletedTask) -> dict[str, Any]:
    return {
        "machine_id": c.machine_id,
        "transition": c.transition,
        "task_id": c.task_id,
        "task_type": c.task_type,
        "result": c.result,
    }


def _machine_from(data: dict[str, Any]) -> MachineState:
    task = data.get("task")
    return MachineState(
        state=data["state"],
        entries=data["entries"],
        task=PendingTask(**task) if task else None,
        result=data.get("result"),
    )

"""What the processor writes for a process: encoded, size-checked, or a parking."""

from __future__ import annotations

from procession._errors import UnwritableError
from procession.sagas._ids import derive_id
from procession.sagas._parts import all_parts
from procession.sagas._state import Ended, Parked, ProcessState
from procession.topics._codec import BATCH_TYPE, Codec
from procession.topics._layout import Topics
from procession.topics._records import ProcessParked, Record, is_task_request

from ._port import Outgoing
from ._wire import Stored, encode, encode_header, encode_part, encode_state, part_key

#: How much of a reason a parking keeps (a decision's error can be long).
_REASON = 2000

#: A process with at most this many machines, whose whole state encodes to at
#: most ``INLINE_BYTES`` (and fits the changelog's ``max.message.bytes``), is
#: written in one changelog value per commit; a bigger one switches, once and
#: for good, to a header and a record per part.
INLINE_MACHINES = 64
INLINE_BYTES = 16 * 1024


def checked(out: Outgoing, limits: dict[str, int], what: str = "a record") -> Outgoing:
    """``out`` if its topic takes it, else :class:`UnwritableError` saying why."""
    if too_large := out.too_large(limits[out.topic], what):
        raise UnwritableError(str(too_large)) from too_large
    return out


def decision_records(
    pid: str,
    decisions: list[Record],
    topics: Topics,
    codec: Codec,
    limits: dict[str, int],
    *,
    traceparent: str | None = None,
    batch: bool = True,
) -> list[Outgoing]:
    """The process-topic records of ``decisions``, plus a task-topic copy of each
    async task request; :class:`UnwritableError` if one cannot be written.

    With ``batch``, consecutive decisions share a process-topic record (a batch of
    at most ``BATCH_BYTES``): one record for an input's decisions, unless they
    are big. A batch of one is written as the plain record.
    """
    alone: list[Outgoing] = []
    copies: list[Outgoing] = []
    for d in decisions:
        try:
            rec = encode(topics.process, pid, d, codec, traceparent=traceparent)
        except TypeError as exc:
            raise UnwritableError(f"{d.type_name} cannot be encoded: {exc}") from exc
        alone.append(rec)
        if is_task_request(d) and d.mode != "inline":  # type: ignore[attr-defined]
            task_topic = topics.tasks(d.task_type or "")  # type: ignore[attr-defined]
            copies.append(checked(Outgoing(task_topic, pid, rec.value, rec.headers), limits))
    if not batch or len(alone) < 2:
        return [checked(rec, limits) for rec in alone] + copies
    return _batched(alone, codec, limits) + copies


#: The most bytes of decisions one batch record holds (a big fan-out is written
#: as several batches, each below the process topic's ``max.message.bytes``).
BATCH_BYTES = 64 * 1024

#: Bytes a batch record takes beyond its decisions' values and a decision's own
#: key and headers: its JSON head and tail, and a longer type header at most.
_BATCH_FRAME = 256


def _batched(alone: list[Outgoing], codec: Codec, limits: dict[str, int]) -> list[Outgoing]:
    """Process-topic records of one process's decisions, in order, consecutive
    ones sharing a batch up to ``BATCH_BYTES``, or less when the topic takes less:
    a decision the topic takes alone is never refused for the batch it is in."""
    first = alone[0]
    limit = limits[first.topic]
    room = min(BATCH_BYTES, limit - (first.size() - len(first.value or b"")) - _BATCH_FRAME)
    out: list[Outgoing] = []
    run: list[Outgoing] = []
    size = 0
    for rec in [*alone, None]:
        value = (rec.value or b"") if rec is not None else b""
        if run and (rec is None or size + len(value) > room):
            # a batch is larger than any decision in it: checking it checks them
            out.append(checked(run[0] if len(run) == 1 else _batch(run, codec), limits))
            run, size = [], 0
        if rec is not None:
            run.append(rec)
            size += len(value) + 1
    return out


def _batch(run: list[Outgoing], codec: Codec) -> Outgoing:
    """One record for ``run``, typed as a batch, with the first decision's ids
    and trace as its other headers."""
    first = run[0]
    headers = (
        ("procession-type", BATCH_TYPE.encode()),
        ("procession-version", b"1"),
        *[(k, v) for k, v in first.headers if k not in _TYPED],
    )
    value = codec.encode_batch([r.value or b"" for r in run])
    return Outgoing(first.topic, first.key, value, headers)


_TYPED = ("procession-type", "procession-version")


def state_record(
    pid: str, state: Stored, topic: str, partition: int, limits: dict[str, int]
) -> Outgoing:
    """The changelog record of an end or parking marker (or a whole state, in one
    value); :class:`UnwritableError` if it cannot be written."""
    try:
        value = encode_state(state)
    except TypeError as exc:
        raise UnwritableError(f"the state cannot be encoded: {exc}") from exc
    return checked(Outgoing(topic, pid, value, partition=partition), limits, "the state")


def state_changes(
    pid: str,
    state: ProcessState,
    topic: str,
    partition: int,
    limits: dict[str, int],
    *,
    ended: Ended | None = None,
) -> list[Outgoing]:
    """The changelog records of what changed in ``state`` since it was last written:
    a small process's whole state in one value; a big one's header and changed
    parts (or, when the process ``ended`` and its state is released, the end
    marker and a tombstone for every part).

    :class:`UnwritableError` if one cannot be written. Leaves ``state.dirty`` as
    it is: the caller clears it once the records are committed.
    """
    try:
        if ended is not None:
            out = [Outgoing(topic, pid, encode_state(ended), partition=partition)]
            if state.split:
                gone = dict.fromkeys([*all_parts(state), *state.dirty])
                out += [Outgoing(topic, part_key(pid, k), None, partition=partition) for k in gone]
            return out
        if not state.split:
            if len(state.machines) <= INLINE_MACHINES:
                whole = Outgoing(topic, pid, encode_state(state), partition=partition)
                if whole.size() <= min(INLINE_BYTES, limits[topic]):  # else its parts may fit
                    return [whole]
            state.split = True  # from now on part by part: every part written once
            state.dirty = state.dirty.update(dict.fromkeys(all_parts(state)))
        head = Outgoing(topic, pid, encode_header(state), partition=partition)
        out = [checked(head, limits, "the state's header")]
        for key in sorted(state.dirty):
            value = encode_part(state, key)
            rec = Outgoing(topic, part_key(pid, key), value, partition=partition)
            out.append(checked(rec, limits, f"part {key!r} of the state"))
    except TypeError as exc:
        raise UnwritableError(f"the state cannot be encoded: {exc}") from exc
    return out


def parking(
    pid: str,
    *,
    correlation_id: str,
    seq: int,
    reason: str,
    time_ms: int,
    cause: Record | None = None,
    offset: int = -1,
    salt: object = "",
) -> tuple[ProcessParked, Parked]:
    """The record that parks a process in its stream, and the changelog marker.

    ``cause`` is the input that could not be decided or written (None when the
    state itself could not be restored; ``salt`` then keeps the id unique).
    """
    reason = reason[:_REASON]
    input_id = cause.event_id if cause else ""
    record = ProcessParked(
        event_id=derive_id(pid, input_id, salt, "parked"),
        process_id=pid,
        correlation_id=correlation_id,
        causation_id=cause.event_id if cause else None,
        time_ms=time_ms,
        seq=seq,
        input_type=cause.type_name if cause else "",
        input_id=input_id,
        reason=reason,
    )
    return record, Parked(reason, input_id, offset)

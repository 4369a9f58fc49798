"""What the processor writes for a process: encoded, size-checked, or a parking."""

from __future__ import annotations

from procession._errors import UnwritableError
from procession.sagas._ids import derive_id
from procession.sagas._state import Parked
from procession.topics._codec import Codec
from procession.topics._layout import Topics
from procession.topics._records import ProcessParked, Record, is_task_request

from ._port import Outgoing
from ._wire import Stored, encode, encode_state

#: How much of a reason a parking keeps (a decision's error can be long).
_REASON = 2000


def checked(out: Outgoing, limits: dict[str, int], what: str = "a record") -> Outgoing:
    """``out`` if its topic takes it, else :class:`UnwritableError` saying why."""
    if too_large := out.too_large(limits[out.topic], what):
        raise UnwritableError(str(too_large)) from too_large
    return out


def decision_records(
    pid: str, decisions: list[Record], topics: Topics, codec: Codec, limits: dict[str, int]
) -> list[Outgoing]:
    """The process-topic records of ``decisions``, plus a task-topic copy of each
    async task request; :class:`UnwritableError` if one cannot be written."""
    out: list[Outgoing] = []
    for d in decisions:
        try:
            rec = encode(topics.process, pid, d, codec)
        except TypeError as exc:
            raise UnwritableError(f"{d.type_name} cannot be encoded: {exc}") from exc
        out.append(checked(rec, limits))
        if is_task_request(d) and d.mode != "inline":  # type: ignore[attr-defined]
            task_topic = topics.tasks(d.task_type or "")  # type: ignore[attr-defined]
            out.append(checked(Outgoing(task_topic, pid, rec.value, rec.headers), limits))
    return out


def state_record(
    pid: str, state: Stored, topic: str, partition: int, limits: dict[str, int]
) -> Outgoing:
    """The changelog record of a state; :class:`UnwritableError` if it cannot be written."""
    try:
        value = encode_state(state)
    except TypeError as exc:
        raise UnwritableError(f"the state cannot be encoded: {exc}") from exc
    return checked(Outgoing(topic, pid, value, partition=partition), limits, "the state")


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

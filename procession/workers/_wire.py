"""Values on the log: records, process states and dead letters, as bytes."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import orjson

from procession._errors import DecodeError
from procession._tracing import with_traceparent
from procession.sagas._parts import assemble, header, part, whole
from procession.sagas._state import Ended, Parked, ProcessState
from procession.topics._codec import Codec
from procession.topics._layout import Topics
from procession.topics._records import Record

from ._port import Message, Outgoing


def record_of(msg: Message, codec: Codec) -> Record:
    """The record a message holds; raises :class:`DecodeError` for bad bytes."""
    if msg.value is None:
        raise DecodeError("no value (a tombstone)")
    return codec.decode(msg.value)


def records_of(msg: Message, codec: Codec) -> list[Record]:
    """The records a message holds: one, or a batch of decisions; raises
    :class:`DecodeError` for bad bytes."""
    if msg.value is None:
        raise DecodeError("no value (a tombstone)")
    return codec.decode_all(msg.value)


def readable(messages: Iterable[Message], codec: Codec) -> Iterator[tuple[Message, Record]]:
    """Each record with the message it came in (a batch gives one pair per
    decision), leaving out messages that cannot be decoded (the processor
    dead-letters them when it reads them)."""
    for msg in messages:
        try:
            found = records_of(msg, codec)
        except DecodeError:
            continue
        for rec in found:
            yield msg, rec


def encode(
    topic: str,
    key: str | None,
    record: Record,
    codec: Codec,
    partition: int | None = None,
    *,
    traceparent: str | None = None,
) -> Outgoing:
    """A record on its way out: the codec's bytes and headers (with the hop's
    ``traceparent`` when it has one, else the codec's id-derived one).

    Raises ``TypeError`` when a field holds something JSON cannot carry (a
    payload with a set, say): the caller decides whose problem that is.
    """
    headers = with_traceparent(codec.headers(record), traceparent)
    return Outgoing(topic, key, codec.encode(record), headers, partition)


Stored = ProcessState | Ended | Parked


#: The end markers, encoded once (a changelog keeps one per finished process).
_ENDED = {
    s: bytes(memoryview(orjson.dumps({"ended": s}))) for s in ("completed", "failed", "cancelled")
}


def encode_state(state: Stored | None) -> bytes | None:
    """A changelog value: a process state, an end or parking marker, or a tombstone.

    Raises ``TypeError`` when the state holds something JSON cannot carry.
    """
    if state is None:
        return None
    if isinstance(state, Ended):
        return _ENDED[state.status]
    if isinstance(state, Parked):
        return orjson.dumps({"parked": [state.reason, state.input_id, state.offset]})
    return whole(state)


def encode_header(state: ProcessState) -> bytes:
    """The changelog value under a process's own key: its header, without parts."""
    return orjson.dumps({"state": header(state)})


def encode_part(state: ProcessState, key: str) -> bytes | None:
    """The changelog value of one part (None: a tombstone, the part is gone)."""
    value = part(state, key)
    return None if value is None else orjson.dumps({"part": value})


def part_key(pid: str, key: str) -> str:
    """The changelog key of a part of process ``pid``: ``pid``, NUL, the part's key."""
    return f"{pid}\x00{key}"


def split_key(key: str) -> tuple[str, str]:
    """(process id, part key) of a changelog key; the part key is "" for a header."""
    pid, _, part_name = key.partition("\x00")
    return pid, part_name


def refused_id(pid: str) -> str | None:
    """Why ``pid`` cannot be a process id, or None: NUL separates a process id
    from a part of its state in changelog keys (:func:`part_key`), so the state
    of ``"s:a\\x00m:x"`` would be read back as part ``m:x`` of process ``"s:a"``.

    Example:
        >>> refused_id("order:o-1") is None, refused_id("order:o\\x00m:x")
        (True, "process id 'order:o\\\\x00m:x' holds a NUL, which changelog keys keep for parts")
    """
    if "\x00" in pid:
        return f"process id {pid!r} holds a NUL, which changelog keys keep for parts"
    return None


def state_of(value: bytes | None, parts: dict[str, bytes] | None = None) -> Stored | None:
    """The inverse of :func:`encode_state`, or a header with its ``parts`` (values
    by part key, as :func:`encode_part` wrote them); :class:`DecodeError` for bad
    bytes, naming the part."""
    if value is None:
        return None
    where = "changelog value"
    try:
        data: dict[str, Any] = orjson.loads(value)
        if "ended" in data:
            return Ended.of(data["ended"])
        if "parked" in data:
            return Parked(*data["parked"])
        head = data["state"]
        if "parts" in head:  # a whole state in one value: other parts are not its own
            return assemble(head, head["parts"])
        found: dict[str, Any] = {}
        for key, raw in (parts or {}).items():
            where = f"changelog part {key!r}"
            found[key] = orjson.loads(raw)["part"]
        where = "changelog value"
        return assemble(head, found)
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as exc:
        raise DecodeError(f"{where}: {type(exc).__name__}: {exc}") from exc


def restore(
    messages: Iterable[Message],
) -> tuple[dict[str, Stored], list[tuple[Message, DecodeError]]]:
    """The states a changelog partition's records hold (read in order, as
    compaction would keep them), and the header records that could not be read.
    """
    heads: dict[str, Message] = {}
    parts: dict[str, dict[str, bytes]] = {}
    for msg in messages:
        if msg.key is None:
            continue
        pid, key = split_key(msg.key)
        if not key:
            heads[pid] = msg
        elif msg.value is None:
            parts.get(pid, {}).pop(key, None)
        else:
            parts.setdefault(pid, {})[key] = msg.value
    states: dict[str, Stored] = {}
    bad: list[tuple[Message, DecodeError]] = []
    for pid, msg in heads.items():
        try:
            state = state_of(msg.value, parts.get(pid))
        except DecodeError as exc:
            bad.append((msg, exc))
            continue
        if state is not None:
            states[pid] = state
    return states, bad


def dead_letter(msg: Message, reason: str, topics: Topics, limits: dict[str, int]) -> Outgoing:
    """The original bytes and headers of ``msg``, plus where it came from and why.

    A dead letter over the dead-letter topic's limit keeps its headers and loses
    its value (``dlq-value-omitted``): the original still stands at the offset
    its headers name.
    """
    headers = (
        *msg.headers,
        ("dlq-reason", reason.encode()),
        ("dlq-topic", msg.topic.encode()),
        ("dlq-partition", str(msg.partition).encode()),
        ("dlq-offset", str(msg.offset).encode()),
    )
    out = Outgoing(topics.dead_letter, msg.key, msg.value, headers)
    limit = limits[topics.dead_letter]
    if out.size() <= limit:
        return out
    note = ("dlq-value-omitted", f"{out.size()} bytes over the limit of {limit}".encode())
    return Outgoing(out.topic, out.key, None, (*headers, note))

"""Values on the log: records, process states, dead letters; bytes or objects."""

from __future__ import annotations

from typing import Any

import orjson

from procession._errors import DecodeError
from procession.sagas._state import Ended, ProcessState
from procession.topics._codec import Codec
from procession.topics._layout import Topics
from procession.topics._records import Record

from ._port import Headers, Message, Outgoing


def record_of(msg: Message, codec: Codec) -> Record:
    """The record a message holds; raises :class:`DecodeError` for bad bytes."""
    value = msg.value
    if isinstance(value, Record):
        return value
    if isinstance(value, bytes | bytearray | memoryview):
        return codec.decode(bytes(value))
    raise DecodeError(f"unexpected value of type {type(value).__name__}")


def encode_value(value: object, codec: Codec) -> bytes | None:
    """Bytes for the wire: records through the codec, states as JSON."""
    if value is None or isinstance(value, bytes):
        return value
    if isinstance(value, Record):
        return codec.encode(value)
    if isinstance(value, ProcessState):
        return orjson.dumps({"state": value.to_json()})
    if isinstance(value, Ended):
        return orjson.dumps({"ended": value.status})
    raise TypeError(f"cannot encode a {type(value).__name__}")


def headers_of(value: object, codec: Codec) -> Headers:
    return tuple(codec.headers(value)) if isinstance(value, Record) else ()


def state_of(value: object) -> ProcessState | Ended | None:
    """The inverse of :func:`encode_value` for changelog values."""
    if value is None or isinstance(value, ProcessState | Ended):
        return value
    if not isinstance(value, bytes):
        raise DecodeError(f"unexpected changelog value of type {type(value).__name__}")
    data: dict[str, Any] = orjson.loads(value)
    if "ended" in data:
        return Ended.of(data["ended"])
    return ProcessState.from_json(data["state"])


def dead_letter(msg: Message, reason: str, topics: Topics, codec: Codec) -> Outgoing:
    """The original bytes and headers of ``msg``, plus where it came from and why."""
    raw = msg.value if isinstance(msg.value, bytes) else encode_value(msg.value, codec)
    headers = (
        *msg.headers,
        ("dlq-reason", reason.encode()),
        ("dlq-topic", msg.topic.encode()),
        ("dlq-partition", str(msg.partition).encode()),
        ("dlq-offset", str(msg.offset).encode()),
    )
    return Outgoing(topics.dead_letter, msg.key, raw, headers)

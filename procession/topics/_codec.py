"""orjson encoding of records, with schema versions and upcasting of old versions.

A record on the wire is a JSON object ``{"type": ..., "v": ..., <fields>}``;
the ids also travel as headers so tools can route and trace without decoding.
The decisions of one input may travel together as one batch,
``{"type": "procession.Decisions", "v": 1, "records": [<record>, ...]}``
(docs/wire.md); :meth:`Codec.decode_all` reads either form.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable
from typing import Any

import orjson

from procession._errors import DecodeError

from ._records import RECORD_TYPES, DomainEvent, Record
from ._shapes import wrong_field

Upcaster = Callable[[dict[str, Any]], dict[str, Any]]
Headers = tuple[tuple[str, bytes], ...]

#: What follows a record's fields on the wire: its type and schema version.
_TRAILER: dict[type[Record], bytes] = {
    cls: b',"type":' + orjson.dumps(cls.TYPE) + b',"v":' + str(cls.VERSION).encode() + b"}"
    for cls in RECORD_TYPES.values()
}


#: The type and schema-version headers of each record type, encoded once (a
#: domain event's type header is its own ``event_type``).
_KIND: dict[type[Record], tuple[tuple[str, bytes], tuple[str, bytes]]] = {
    cls: (("procession-type", cls.TYPE.encode()), ("procession-version", str(cls.VERSION).encode()))
    for cls in RECORD_TYPES.values()
}


#: The type of a batch: the decisions of one input, in one value.
BATCH_TYPE = "procession.Decisions"
_BATCH_HEAD = b'{"type":"procession.Decisions","v":1,"records":['


class Codec:
    """Encodes records to bytes and back, upcasting old schema versions.

    Example:
        >>> from procession.topics import ProcessCompleted
        >>> codec = Codec()
        >>> rec = ProcessCompleted(event_id="e", process_id="p", correlation_id="c", seq=3)
        >>> codec.decode(codec.encode(rec)) == rec
        True
    """

    def __init__(self) -> None:
        self._upcasters: dict[tuple[str, int], Upcaster] = {}

    def upcaster(self, record_type: str, from_version: int) -> Callable[[Upcaster], Upcaster]:
        """Register a function that turns version ``from_version`` into the next one.

        Example::

            @codec.upcaster("procession.TaskFailed", 1)
            def _(body): return {**body, "error_type": ""}
        """

        def register(fn: Upcaster) -> Upcaster:
            self._upcasters[(record_type, from_version)] = fn
            return fn

        return register

    def encode(self, record: Record) -> bytes:
        """The record's fields as a JSON object, then its ``type`` and ``v``.

        orjson writes the dataclass's fields itself; the trailer is appended.
        """
        trailer = _TRAILER[type(record)]  # KeyError: not a registered record type
        return orjson.dumps(record)[:-1] + trailer

    def encode_batch(self, encoded: list[bytes]) -> bytes:
        """A batch of records already encoded with :meth:`encode`, in their order.

        Example:
            >>> from procession.topics import ProcessCompleted
            >>> codec = Codec()
            >>> rec = ProcessCompleted(event_id="e", process_id="p", correlation_id="c", seq=3)
            >>> codec.decode_all(codec.encode_batch([codec.encode(rec)] * 2)) == [rec, rec]
            True
        """
        return _BATCH_HEAD + b",".join(encoded) + b"]}"

    def headers(self, record: Record) -> Headers:
        """Ids as headers: type, version, event id, correlation id, causation id, and a
        W3C ``traceparent`` derived from ids (one trace per process: trace id from the
        correlation id, span id from the event id). A hop with a live span
        replaces it with its own (``procession._tracing``)."""
        kind, version = _KIND.get(record.__class__) or _kind(record)
        if record.__class__ is DomainEvent:
            kind = ("procession-type", record.type_name.encode())
        ids = (
            ("event-id", record.event_id.encode()),
            ("correlation-id", record.correlation_id.encode()),
            ("traceparent", traceparent(record.correlation_id, record.event_id).encode()),
        )
        if record.causation_id:
            return (kind, version, *ids, ("causation-id", record.causation_id.encode()))
        return (kind, version, *ids)

    def decode(self, raw: bytes) -> Record:
        """The record ``raw`` holds; :class:`DecodeError` if it is not one record
        (a batch included: read those with :meth:`decode_all`)."""
        body = _loads(raw)
        if body.get("type") == BATCH_TYPE:
            raise DecodeError("a batch of decisions, not one record", BATCH_TYPE)
        return self._record(body)

    def decode_all(self, raw: bytes) -> list[Record]:
        """The records ``raw`` holds: one record, or every record of a batch."""
        body = _loads(raw)
        if body.get("type") != BATCH_TYPE:
            return [self._record(body)]
        inner = body.get("records")
        if not isinstance(inner, list) or not inner:
            raise DecodeError("a batch without records", BATCH_TYPE)
        out: list[Record] = []
        for i, item in enumerate(inner):
            if not isinstance(item, dict) or item.get("type") == BATCH_TYPE:
                raise DecodeError(f"record {i} of the batch is not a record", BATCH_TYPE)
            rec = self._record(item)
            if not rec.IS_DECISION:
                raise DecodeError(f"record {i} of the batch is an input", BATCH_TYPE)
            if out and rec.process_id != out[0].process_id:
                raise DecodeError(f"record {i} of the batch is another process's", BATCH_TYPE)
            out.append(rec)
        return out

    def split(self, raw: bytes) -> list[bytes]:
        """The values of the records ``raw`` holds, each as it would be alone (a
        record's own bytes; a batch's elements, one each).

        Example:
            >>> codec = Codec()
            >>> codec.split(codec.encode_batch([b'{"a":1}', b'{"b":2}']))
            [b'{"a":1}', b'{"b":2}']
        """
        if not raw.startswith(b'{"type":"procession.Decisions"'):
            return [raw]
        return [orjson.dumps(item) for item in _loads(raw).get("records", [])]

    def _record(self, body: dict[str, Any]) -> Record:
        name = body.pop("type", None)
        cls = RECORD_TYPES.get(name) if isinstance(name, str) else None
        if cls is None:
            raise DecodeError(f"unknown record type {name!r}", str(name))
        version = body.pop("v", 1)
        body = self._upcast(cls, version, body)
        known = _fields(cls)
        if not known.issuperset(body):  # written by a newer writer: its extra fields are dropped
            body = {k: v for k, v in body.items() if k in known}
        if (wrong := wrong_field(cls, body)) is not None:
            raise DecodeError(wrong, cls.TYPE)
        try:
            return cls(**body)
        except TypeError as exc:
            raise DecodeError(str(exc), cls.TYPE) from exc

    def _upcast(self, cls: type[Record], version: Any, body: dict[str, Any]) -> dict[str, Any]:
        if not isinstance(version, int) or version > cls.VERSION:
            raise DecodeError(f"schema version {version!r} is newer than {cls.VERSION}", cls.TYPE)
        while version < cls.VERSION:
            step = self._upcasters.get((cls.TYPE, version))
            if step is None:
                raise DecodeError(f"no upcaster from version {version}", cls.TYPE)
            body = step(body)
            version += 1
        return body


def _loads(raw: bytes) -> dict[str, Any]:
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise DecodeError(f"not JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise DecodeError(f"expected a JSON object, got {type(body).__name__}")
    return body


def _kind(record: Record) -> tuple[tuple[str, bytes], tuple[str, bytes]]:
    """The type and version headers of a record type not registered (a subclass)."""
    return (
        ("procession-type", record.type_name.encode()),
        ("procession-version", str(record.VERSION).encode()),
    )


_FIELDS: dict[str, frozenset[str]] = {}


def _fields(cls: type[Record]) -> frozenset[str]:
    known = _FIELDS.get(cls.TYPE)
    if known is None:
        known = _FIELDS[cls.TYPE] = frozenset(f.name for f in dataclasses.fields(cls))
    return known


def traceparent(correlation_id: str, event_id: str) -> str:
    """A W3C trace context header derived from ids (the same on every replay).

    Example:
        >>> traceparent("rebase:r1", "e1") == traceparent("rebase:r1", "e1")
        True
        >>> len(traceparent("rebase:r1", "e1").split("-"))
        4
    """
    trace = hashlib.blake2b(correlation_id.encode(), digest_size=16).hexdigest()
    span = hashlib.blake2b(event_id.encode(), digest_size=8).hexdigest()
    return f"00-{trace}-{span}-01"


#: The codec used when none is given.
DEFAULT_CODEC = Codec()

"""The router: domain events in, keyed process-topic records out, exactly once.

A domain event on an input topic is JSON with its type in the
``procession-type`` header (``event-id`` and ``correlation-id`` optional).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, ValidationError

from procession._errors import DecodeError, UnknownEventTypeError, UnroutableError
from procession._tracing import Attributes, hop, parent_of, tracing
from procession.sagas._ids import derive_id
from procession.topics._codec import DEFAULT_CODEC, Codec
from procession.topics._records import DomainEvent

from ._app import App
from ._clock import Clock, SystemClock
from ._loop import BatchLoop
from ._port import Batch, Headers, Message, Outgoing, Transport, record_limits
from ._topic_check import verify
from ._wire import dead_letter, encode, refused_id

log = logging.getLogger("procession.router")


def wire_headers(
    type_name: str,
    event_id: str | None = None,
    correlation_id: str | None = None,
    causation_id: str | None = None,
) -> Headers:
    """The headers of a published domain event (docs/wire.md), with the caller's
    ``traceparent`` when OpenTelemetry is installed and a span is active.

    Example:
        >>> wire_headers("OrderPlaced", "evt-1")[:2]
        (('procession-type', b'OrderPlaced'), ('event-id', b'evt-1'))
    """
    out = [("procession-type", type_name.encode())]
    for name, value in (
        ("event-id", event_id),
        ("correlation-id", correlation_id),
        ("causation-id", causation_id),
    ):
        if value:
            out.append((name, value.encode()))
    parent = caller_traceparent()
    if parent:
        out.append(("traceparent", parent.encode()))
    return tuple(out)


def caller_traceparent() -> str | None:
    """The caller's OpenTelemetry context as a ``traceparent`` (None without one)."""
    try:
        from opentelemetry import propagate  # noqa: PLC0415 - the optional otel extra
    except ImportError:
        return None
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier.get("traceparent")


def event_headers(event: BaseModel, event_id: str | None, correlation_id: str | None) -> Headers:
    """The headers of a domain event as :class:`Router` reads them."""
    return wire_headers(type(event).__name__, event_id, correlation_id)


class Router(BatchLoop):
    """Applies the sagas' correlation rules to domain events.

    Bad input never stops it: an event that cannot be decoded, whose type no
    saga knows, whose correlation rule raises, or whose routed record would be
    over the process topic's size limit goes to the dead-letter topic with the
    reason, and the next event is routed.
    """

    def __init__(
        self,
        app: App,
        transport: Transport,
        clock: Clock | None = None,
        *,
        topics: Sequence[str] | None = None,
        codec: Codec = DEFAULT_CODEC,
        poll_s: float = 0.1,
        max_batch: int = 500,
    ) -> None:
        prefix = app.topics.prefix
        super().__init__(transport, f"{prefix}.router", f"{prefix}.router", poll_s, max_batch)
        self.app, self.codec = app, codec
        self.clock = clock or SystemClock()
        self.inputs = list(topics or [app.topics.inputs])
        self._limits: dict[str, int] = {}

    async def start(self) -> None:
        t = self.app.topics
        names = {*self.inputs, t.process, t.dead_letter}
        specs = [s for s in t.specs(self.app.task_types()) if s.name in names]
        found = await verify(self.transport, specs, settings=False)
        self._limits = record_limits(found)
        await self.start_loop(self.inputs)

    async def handle(self, msgs: list[Message]) -> Batch:
        batch = Batch()
        for msg in msgs:
            try:
                batch.records += self._route(msg)
            except (DecodeError, UnknownEventTypeError, UnroutableError) as exc:
                self.metrics["dead_lettered"] += 1
                log.warning("dead letter from %s@%s: %s", msg.partition, msg.offset, exc)
                batch.records.append(dead_letter(msg, str(exc), self.app.topics, self._limits))
        return batch

    def _route(self, msg: Message) -> list[Outgoing]:
        if not tracing():
            return self._route_traced(msg, None)
        attributes: Attributes = {
            "procession.input_topic": msg.topic,
            "procession.partition": msg.partition,
        }
        with hop("procession route", parent_of(msg.headers), attributes) as traceparent:
            return self._route_traced(msg, traceparent)

    def _route_traced(self, msg: Message, traceparent: str | None) -> list[Outgoing]:
        headers = dict(msg.headers)
        event_type = _text(headers.get("procession-type"), "procession-type header")
        if not event_type:
            raise DecodeError("no procession-type header")
        event, data = parse_event(self.app, event_type, msg.value)
        event_id = _text(headers.get("event-id"), "event-id header") or derive_id(
            msg.topic, msg.partition, msg.offset
        )
        records = routed_events(
            self.app,
            event_type,
            event,
            data,
            event_id=event_id,
            correlation_id=_text(headers.get("correlation-id"), "correlation-id header"),
            causation_id=_text(headers.get("causation-id"), "causation-id header"),
            time_ms=self.clock.now_ms(),
        )
        if not records:
            self.metrics["unrouted"] += 1
            log.info("event %s at %s@%s has no process key", event_type, msg.partition, msg.offset)
            return []
        process, limit = self.app.topics.process, self._limits[self.app.topics.process]
        out = []
        for rec in records:
            try:
                routed = encode(process, rec.process_id, rec, self.codec, traceparent=traceparent)
            except TypeError as exc:  # valid JSON orjson cannot write (an integer over 64 bits)
                raise UnroutableError(f"{event_type} cannot be written: {exc}") from exc
            if too_large := routed.too_large(limit, "routed record"):
                raise UnroutableError(str(too_large)) from too_large
            out.append(routed)
        self.metrics["routed"] += len(records)
        return out


def parse_event(app: App, event_type: str, value: bytes | None) -> tuple[BaseModel, dict[str, Any]]:
    """A domain event's JSON as the app's model of ``event_type``, and as plain data.

    Raises :class:`UnknownEventTypeError` when no saga of ``app`` knows the
    type, :class:`DecodeError` when the JSON does not fit its model.
    """
    cls = app.event_types.get(event_type)
    if cls is None:
        raise UnknownEventTypeError(event_type)
    if value is None:
        raise DecodeError("no value", event_type)
    try:
        event = cls.model_validate_json(value)
    except ValidationError as exc:
        raise DecodeError(str(exc).replace("\n", " "), event_type) from exc
    return event, event.model_dump(mode="json")


def routed_events(
    app: App,
    event_type: str,
    event: BaseModel,
    data: dict[str, Any],
    *,
    event_id: str,
    correlation_id: str,
    causation_id: str,
    time_ms: int,
) -> list[DomainEvent]:
    """The inputs one domain event becomes: one per process that the sagas'
    correlation rules name (none: no saga follows it). An empty
    ``correlation_id`` becomes the event id, an empty ``causation_id`` None.

    Raises :class:`UnroutableError` when a correlation rule raises, or names a
    process id that cannot be one (:func:`~procession.workers._wire.refused_id`).
    """
    try:
        pids = app.route(event)
    except Exception as exc:
        raise UnroutableError(f"correlation rule for {event_type} raised {exc!r}") from exc
    for pid in pids:
        if (why := refused_id(pid)) is not None:
            raise UnroutableError(f"correlation rule for {event_type}: {why}")
    return [
        DomainEvent(
            event_id=event_id,
            process_id=pid,
            correlation_id=correlation_id or event_id,
            causation_id=causation_id or None,
            time_ms=time_ms,
            event_type=event_type,
            data=data,
        )
        for pid in pids
    ]


def _text(raw: bytes | None, name: str = "header") -> str:
    if not raw:
        return ""
    try:
        return raw.decode()
    except UnicodeDecodeError as exc:
        raise DecodeError(f"{name} is not UTF-8: {exc}") from exc

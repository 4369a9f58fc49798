"""The router: domain events in, keyed process-topic records out, exactly once.

A domain event on an input topic is JSON with its type in the
``procession-type`` header (``event-id`` and ``correlation-id`` optional).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from pydantic import BaseModel, ValidationError

from procession._errors import DecodeError, UnknownEventTypeError, UnroutableError
from procession._tracing import Attributes, hop, parent_of, tracing
from procession.sagas._ids import derive_id
from procession.topics._codec import DEFAULT_CODEC, Codec
from procession.topics._records import DomainEvent

from ._app import App
from ._clock import Clock, SystemClock
from ._loop import BatchLoop
from ._port import Batch, Headers, Message, Outgoing, Transport
from ._topic_check import verify
from ._wire import dead_letter, encode

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
    parent = _traceparent()
    if parent:
        out.append(("traceparent", parent.encode()))
    return tuple(out)


def _traceparent() -> str | None:
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
        self._limits = {name: info.max_message_bytes for name, info in found.items()}
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
        event_type, event, data = self._decode(msg)
        try:
            pids = self.app.route(event)
        except Exception as exc:
            raise UnroutableError(f"correlation rule for {event_type} raised {exc!r}") from exc
        if not pids:
            self.metrics["unrouted"] += 1
            log.info("event %s at %s@%s has no process key", event_type, msg.partition, msg.offset)
            return []
        headers = dict(msg.headers)
        event_id = _text(headers.get("event-id"), "event-id header") or derive_id(
            msg.topic, msg.partition, msg.offset
        )
        correlation = _text(headers.get("correlation-id"), "correlation-id header") or event_id
        causation = _text(headers.get("causation-id"), "causation-id header") or None
        process, limit = self.app.topics.process, self._limits[self.app.topics.process]
        out = []
        for pid in pids:
            rec = DomainEvent(
                event_id=event_id,
                process_id=pid,
                correlation_id=correlation,
                causation_id=causation,
                time_ms=self.clock.now_ms(),
                event_type=event_type,
                data=data,
            )
            routed = encode(process, pid, rec, self.codec, traceparent=traceparent)
            if too_large := routed.too_large(limit, "routed record"):
                raise UnroutableError(str(too_large)) from too_large
            out.append(routed)
        self.metrics["routed"] += len(pids)
        return out

    def _decode(self, msg: Message) -> tuple[str, BaseModel, dict[str, object]]:
        event_type = _text(dict(msg.headers).get("procession-type"), "procession-type header")
        if not event_type:
            raise DecodeError("no procession-type header")
        cls = self.app.event_types.get(event_type)
        if cls is None:
            raise UnknownEventTypeError(event_type)
        if msg.value is None:
            raise DecodeError("no value", event_type)
        try:
            event = cls.model_validate_json(msg.value)
        except ValidationError as exc:
            raise DecodeError(str(exc).replace("\n", " "), event_type) from exc
        return event_type, event, event.model_dump(mode="json")


def _text(raw: bytes | None, name: str = "header") -> str:
    if not raw:
        return ""
    try:
        return raw.decode()
    except UnicodeDecodeError as exc:
        raise DecodeError(f"{name} is not UTF-8: {exc}") from exc

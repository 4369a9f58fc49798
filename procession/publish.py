"""Publish domain events to an app's input topic from any Python service.

The records follow the wire contract (docs/wire.md): the event's JSON, a
``procession-type`` header, ``event-id`` (your stable id: a redelivery is then
recorded as a duplicate, not decided again), ``correlation-id``,
``causation-id`` and ``traceparent`` (the caller's current OpenTelemetry
context, when the ``otel`` extra is installed and a span is active). Every
call returns once the broker has acknowledged the records; a batch is all or
nothing.

Example (async)::

    async with Publisher(Topics("shop"), "kafka:9092") as publisher:
        await publisher.publish(OrderPlaced(order_id="o-1"), event_id=stored.id)

Example (sync)::

    with SyncPublisher(Topics("shop"), "kafka:9092") as publisher:
        publisher.publish(OrderPlaced(order_id="o-1"), event_id=stored.id)
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, TypeVar

import orjson
from pydantic import BaseModel

from procession._errors import UnroutableError
from procession.topics._codec import DEFAULT_CODEC
from procession.topics._layout import Topics
from procession.workers._app import App
from procession.workers._clock import Clock, SystemClock
from procession.workers._port import Batch, Headers, Outgoing, Transport
from procession.workers._router import (
    caller_traceparent,
    parse_event,
    routed_events,
    wire_headers,
)
from procession.workers._wire import encode

T = TypeVar("T")


@dataclass(frozen=True)
class Encoded:
    """An event already encoded elsewhere: its type name and its JSON body.

    Example:
        >>> Encoded("OrderPlaced", {"order_id": "o-1"}).json()
        b'{"order_id":"o-1"}'
    """

    type_name: str
    body: dict[str, Any] | bytes

    def json(self) -> bytes:
        return self.body if isinstance(self.body, bytes) else orjson.dumps(self.body)


@dataclass(frozen=True)
class Event:
    """One event to publish, with its ids (for :meth:`Publisher.publish_many`)."""

    event: BaseModel | Encoded
    event_id: str | None = None
    correlation_id: str | None = None
    causation_id: str | None = None
    key: str | None = None
    headers: Headers = field(default_factory=tuple)


class Publisher:
    """Publishes domain events to ``topics.inputs`` over a transport (or a Kafka
    cluster given by its bootstrap servers).

    With ``route=app``, the publisher applies ``app``'s correlation rules itself
    and writes each event straight into the app's process topic, keyed by the
    process it is for: the router's hop and the input topic's record are
    skipped. The event must be one the app's sagas follow: an unknown type, a
    correlation rule that raises or names no process is an error to the
    caller, and nothing of the batch is written. ``clock`` gives the routed
    records' ``time_ms`` (the system clock by default).

    Example::

        async with Publisher(app.topics, "kafka:9092", route=app) as publisher:
            await publisher.publish(OrderPlaced(order_id="o-1"), event_id=stored.id)
    """

    def __init__(
        self,
        topics: Topics,
        transport: Transport | str,
        *,
        route: App | None = None,
        clock: Clock | None = None,
    ) -> None:
        if route is not None and route.topics != topics:
            raise ValueError(
                f"route= names the app of {route.topics.prefix!r}, "
                f"but the topics given are {topics.prefix!r}'s"
            )
        if isinstance(transport, str):
            from procession.workers._kafka_client import kafka_transport  # noqa: PLC0415

            transport = kafka_transport(transport)
            self._owned: Transport | None = transport
        else:
            self._owned = None
        self.topics, self.transport, self.route = topics, transport, route
        self.clock = clock or SystemClock()
        self._producer = transport.producer(f"{topics.prefix}.publisher.{uuid.uuid4().hex}")
        self._started = False

    async def start(self) -> None:
        await self._producer.start()
        self._started = True

    async def close(self) -> None:
        if self._started:
            await self._producer.stop()
            self._started = False
        if self._owned is not None:
            close = getattr(self._owned, "close", None)
            if close is not None:
                await close()

    async def __aenter__(self) -> Publisher:
        await self.start()
        return self

    async def __aexit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def publish(
        self,
        event: BaseModel | Encoded,
        *,
        event_id: str | None = None,
        correlation_id: str | None = None,
        causation_id: str | None = None,
        key: str | None = None,
    ) -> None:
        """Publish one event; returns once the broker acknowledged it."""
        await self.publish_many([Event(event, event_id, correlation_id, causation_id, key)])

    async def publish_many(self, events: Sequence[Event]) -> None:
        """Publish several events in one transaction: all of them, or none."""
        if not self._started:
            raise RuntimeError("the publisher is not started (use `async with` or start())")
        records = [r for e in events for r in self._records(e)]
        await self._producer.commit(Batch(records=records))

    def _records(self, e: Event) -> list[Outgoing]:
        if isinstance(e.event, Encoded):
            name, value = e.event.type_name, e.event.json()
        else:
            name, value = type(e.event).__name__, e.event.model_dump_json().encode()
        if self.route is None:
            headers = (
                *wire_headers(name, e.event_id, e.correlation_id, e.causation_id),
                *e.headers,
            )
            return [Outgoing(self.topics.inputs, e.key, value, headers)]
        return self._routed(name, value, e)

    def _routed(self, name: str, value: bytes, e: Event) -> list[Outgoing]:
        """What the router would write for ``e``, with the caller's trace context."""
        assert self.route is not None
        event, data = parse_event(self.route, name, value)
        records = routed_events(
            self.route,
            name,
            event,
            data,
            event_id=e.event_id or str(uuid.uuid4()),
            correlation_id=e.correlation_id or "",
            causation_id=e.causation_id or "",
            time_ms=self.clock.now_ms(),
        )
        if not records:
            raise UnroutableError(f"no saga of this app correlates this {name} with a process")
        parent = caller_traceparent()
        return [
            encode(self.topics.process, r.process_id, r, DEFAULT_CODEC, traceparent=parent)
            for r in records
        ]


class SyncPublisher:
    """A :class:`Publisher` for synchronous code: its own event loop in a thread.

    Each call blocks until the broker acknowledged the records, and raises what
    the publisher raised.
    """

    def __init__(
        self, topics: Topics, transport: Transport | str, *, route: App | None = None
    ) -> None:
        """``route``: as :class:`Publisher`'s, straight into the app's process topic."""
        self._loop = asyncio.new_event_loop()
        self._thread: threading.Thread | None = threading.Thread(
            target=self._loop.run_forever, name="procession-publisher", daemon=True
        )
        self._thread.start()
        self._publisher = self._call(_make(topics, transport, route))
        self._call(self._publisher.start())

    @classmethod
    def on_loop(cls, publisher: Publisher, loop: asyncio.AbstractEventLoop) -> SyncPublisher:
        """Blocking calls into a started ``publisher`` that runs on ``loop`` (in
        another thread: calling from the loop's own thread would wait forever).
        Closing it leaves the publisher to its owner."""
        self = cls.__new__(cls)
        self._loop, self._thread, self._publisher = loop, None, publisher
        return self

    def publish(self, event: BaseModel | Encoded, **ids: str | None) -> None:
        """Publish one event (``event_id``, ``correlation_id``, ``causation_id``, ``key``)."""
        self._call(self._publisher.publish(event, **ids))

    def publish_many(self, events: Sequence[Event]) -> None:
        self._call(self._publisher.publish_many(events))

    def close(self) -> None:
        if self._thread is None:
            return  # on_loop: the publisher and its loop are the owner's
        try:
            self._call(self._publisher.close())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join()
            self._loop.close()

    def __enter__(self) -> SyncPublisher:
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        if self._thread is None and _running_loop() is self._loop:
            coro.close()
            raise RuntimeError("SyncPublisher.on_loop called from its loop's own thread")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


async def _make(topics: Topics, transport: Transport | str, route: App | None) -> Publisher:
    return Publisher(topics, transport, route=route)  # built on the loop that will use it


__all__ = ["Encoded", "Event", "Publisher", "SyncPublisher", "wire_headers"]

"""Bridge to python-event-sourcery (the ``eventsourcery`` extra).

Two halves, one for each direction between an event store and a saga:

- :class:`OutboxRelay` publishes the store's outbox to the app's input topic.
  Each event's ``event-id`` is the stored event's id, so when the outbox
  delivers an event again (its delivery is at least once) Procession records
  the copy as a duplicate instead of deciding it again.
- :func:`once` loads an aggregate inside a task handler and saves what the
  handler emitted, tagged with the task id. A task delivered again (a retry, a
  worker that died before its result was committed) finds the tag in the
  aggregate's stream and applies nothing.

Example::

    relay = OutboxRelay(unit_of_work, SyncPublisher(topics, "kafka:9092"))
    relay.relay_once()          # one batch: published, then removed from the outbox

    def reserve(call: TaskCall) -> dict:
        with unit_of_work() as backend, once(backend.event_store, Stock(), sku, call.task_id) as s:
            if not s.applied_before:
                s.aggregate.reserve(call.payload["order"])
        return {"reserved": sku}

See docs/event-sourcing.md for the guarantees end to end.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from event_sourcery import StreamId, StreamUUID
from event_sourcery.event import (
    Context,
    ContextComponent,
    Event,
    EventRegistry,
    RawEvent,
    Recorded,
    RecordedRaw,
    Serde,
    WrappedEvent,
)
from event_sourcery.event_sourcing import Aggregate
from event_sourcery.interfaces import OutboxFiltererStrategy, OutboxStorageStrategy

from procession.publish import Encoded
from procession.publish import Event as Publication

log = logging.getLogger("procession.eventsourcery")

A = TypeVar("A", bound=Aggregate)


class _Backend(Protocol):
    """What the relay needs of an event-sourcery backend (any of them)."""

    def __getitem__(self, t: type[OutboxStorageStrategy] | type[Serde], /) -> object: ...


class _Publishes(Protocol):
    def publish_many(self, events: Sequence[Publication]) -> None: ...


def publishes(*types: type[Event]) -> OutboxFiltererStrategy:
    """An outbox filter that lets only these event types into the outbox (the
    events your sagas consume; the rest stay in the store).

    Example::

        backend.configure(session).with_outbox(publishes(OrderPlaced))
    """
    registry = EventRegistry()  # names every Event subclass defined so far
    return _Only(frozenset(registry.name_for_type(t) for t in types))


@dataclass(frozen=True)
class _Only:
    names: frozenset[str]

    def __call__(self, entry: RawEvent) -> bool:
        return entry.name in self.names


def publication(record: Recorded) -> Publication:
    """The publication of one stored event: its class name as the type, the stored
    event's id as ``event-id``, its correlation and causation ids, and its stream
    as the record key (one stream's events stay in order).

    Example:
        >>> from event_sourcery.event import WrappedEvent
        >>> class Placed(Event):
        ...     order_id: str
        >>> wrapped = WrappedEvent.wrap(Placed(order_id="o-1"), version=1)
        >>> p = publication(Recorded(wrapped, StreamId(name="order-o-1"), position=1))
        >>> p.event.type_name, p.event_id == str(wrapped.uuid), p.key
        ('Placed', True, 'order-o-1')
    """
    wrapped = record.wrapped_event
    ctx = wrapped.context
    return Publication(
        Encoded(type(wrapped.event).__name__, wrapped.event.model_dump_json().encode()),
        event_id=str(wrapped.uuid),
        correlation_id=str(ctx.correlation_id) if ctx.correlation_id else None,
        causation_id=str(ctx.causation_id) if ctx.causation_id else None,
        key=record.stream_id.name or str(record.stream_id),
    )


class OutboxRelay:
    """Publishes an event store's outbox through a publisher, a batch per database
    transaction.

    ``unit_of_work`` opens one database transaction and yields a backend
    configured on it with ``with_outbox(...)``; it commits when the block ends
    and rolls back when it raises. A batch is published in one Kafka
    transaction; only once the broker acknowledged it are its entries removed,
    in the same database transaction. If publishing fails, the database
    transaction rolls back: the entries stay, their tries untouched, and the
    error is raised. If the process dies between the broker's acknowledgement
    and the database commit, the batch is published again with the same event
    ids: Procession records the copies as duplicates.

    Example::

        @contextmanager
        def unit_of_work():
            with Session(engine) as session, session.begin():
                yield SQLAlchemyBackend().configure(session).with_outbox(publishes(OrderPlaced))

        relay = OutboxRelay(unit_of_work, publisher)
        relay.run(stop=threading.Event())  # until stop is set
    """

    def __init__(
        self,
        unit_of_work: Callable[[], AbstractContextManager[_Backend]],
        publisher: _Publishes,
        *,
        batch: int = 500,
    ) -> None:
        if batch < 1:
            raise ValueError(f"batch must be at least 1, got {batch}")
        self.unit_of_work, self.publisher, self.batch = unit_of_work, publisher, batch
        self.published = 0
        self.failures = 0

    def relay_once(self) -> int:
        """Publish one batch of the outbox; returns how many events it held."""
        with self.unit_of_work() as backend:
            strategy = backend[OutboxStorageStrategy]
            serde = backend[Serde]
            if not isinstance(strategy, OutboxStorageStrategy) or not isinstance(serde, Serde):
                raise TypeError("unit_of_work must yield a backend configured with_outbox()")
            entries = list(strategy.outbox_entries(limit=self.batch))
            if not entries:
                return 0
            raws: list[RecordedRaw] = [entry.__enter__() for entry in entries]
            try:
                self.publisher.publish_many(
                    [publication(serde.deserialize_record(raw)) for raw in raws]
                )
            except BaseException:
                # Nothing is recorded against the entries (the library would count
                # a failed try and log a traceback per entry): each is closed as
                # abandoned, and the database transaction rolls back.
                for entry in entries:
                    entry.__exit__(GeneratorExit, GeneratorExit(), None)
                raise
            for entry in entries:
                entry.__exit__(None, None, None)  # removes it from the outbox
        self.published += len(raws)
        return len(raws)

    def run(
        self,
        stop: threading.Event,
        *,
        idle_s: float = 0.05,
        backoff_s: tuple[float, float] = (0.1, 5.0),
    ) -> None:
        """Relay until ``stop`` is set: batches back to back while the outbox has
        any, ``idle_s`` between polls when empty. A failed batch is logged (one
        line) and tried again after a backoff that doubles up to its maximum;
        nothing is dropped."""
        delay = backoff_s[0]
        while not stop.is_set():
            try:
                n = self.relay_once()
            except Exception as e:  # noqa: BLE001 - the broker or the database: both come back
                self.failures += 1
                log.warning("outbox relay: batch not published (%s); again in %.1f s", e, delay)
                stop.wait(delay)
                delay = min(delay * 2, backoff_s[1])
                continue
            delay = backoff_s[0]
            if n == 0:
                stop.wait(idle_s)


class TaskApplied(ContextComponent):
    """The context part that tags events emitted by a Procession task."""

    __context_name__ = "procession.task"
    task_id: str


@dataclass
class Effect(Generic[A]):
    """An aggregate loaded for one task. ``applied_before`` is true when the task
    already changed this stream; whatever the handler emits then is dropped."""

    aggregate: A
    stream_id: StreamId
    version: int
    applied_before: bool


class _Store(Protocol):
    def load_stream(self, stream_id: StreamId) -> Sequence[WrappedEvent[Any]]: ...
    def append(
        self,
        first: WrappedEvent[Any],
        *events: WrappedEvent[Any],
        stream_id: StreamId,
        expected_version: int,
    ) -> None: ...


@contextmanager
def once(store: _Store, aggregate: A, uuid: StreamUUID, task_id: str) -> Iterator[Effect[A]]:
    """Load ``aggregate`` from its stream for task ``task_id``; on leaving the
    block, append what the handler emitted, each event tagged with the task id,
    at the version it was loaded at (a concurrent writer makes the append raise
    ``ConcurrentStreamWriteError``: the task fails and its retry loads again).

    Use it inside the handler's database transaction, so the effect and the tag
    commit together. Example::

        with once(backend.event_store, Wallet(), wallet_id, call.task_id) as w:
            if not w.applied_before:
                w.aggregate.charge(call.payload["amount"])
    """
    stream_id = StreamId(uuid=uuid, name=uuid.name, category=aggregate.category)
    version, applied = 0, False
    for wrapped in store.load_stream(stream_id):
        aggregate.__apply__(wrapped.event)
        version = wrapped.version or version
        tag = wrapped.context.get(TaskApplied)
        applied = applied or (tag is not None and tag.task_id == task_id)
    effect = Effect(aggregate, stream_id, version, applied)
    yield effect
    with aggregate.__persisting_changes__() as pending:
        changes = list(pending)
    if applied or not changes:
        return
    context = Context().with_component(TaskApplied(task_id=task_id))
    events = [
        WrappedEvent.wrap(event, n, context=context)
        for n, event in enumerate(changes, start=version + 1)
    ]
    store.append(*events, stream_id=stream_id, expected_version=version)


__all__ = ["Effect", "OutboxRelay", "TaskApplied", "once", "publication", "publishes"]

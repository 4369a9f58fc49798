"""Publishing from any Python service: ids and trace context on the wire,
redelivery recognised, batches all or nothing, sync and async."""

from __future__ import annotations

import asyncio

import pytest

from procession._errors import (
    DecodeError,
    RecordTooLargeError,
    UnknownEventTypeError,
    UnroutableError,
)
from procession.examples import RebaseFailed, rebase_saga
from procession.publish import Encoded, Event, Publisher, SyncPublisher
from procession.sagas import ForEach, Machine, Saga, State, all_of
from procession.topics import DomainEvent, InputIgnored, ProcessStarted, Topics
from tests.conftest import Backend, kafka_servers, until


def app_of(backend: Backend):  # type: ignore[no-untyped-def]
    return backend.app([rebase_saga()], {"CloseInstance": lambda call: None})


async def test_a_redelivered_event_is_decided_once_and_its_ids_travel(backend: Backend) -> None:
    release = asyncio.Event()

    async def close(call: object) -> None:  # the process runs on until the copy is decided
        async with asyncio.timeout(30):
            await release.wait()

    app = backend.app([rebase_saga()], {"CloseInstance": close})
    rt = await backend.runtime(app)
    async with Publisher(app.topics, backend.transport()) as publisher:
        for _ in range(2):  # an outbox that delivered twice
            await publisher.publish(
                RebaseFailed(rebase_id="p1", instances=["A"]),
                event_id="stored-event-7",
                correlation_id="request-99",
                causation_id="command-3",
            )

    async def copy_decided() -> bool:
        return any(isinstance(r, InputIgnored) for r in await rt.history("rebase:p1"))

    await until(copy_decided, timeout_s=30)
    release.set()
    state = await rt.wait("rebase:p1", timeout_s=30)
    assert state is not None and state.status == "completed"
    history = await rt.history("rebase:p1")
    events = [r for r in history if isinstance(r, DomainEvent)]
    assert [(e.event_id, e.correlation_id, e.causation_id) for e in events] == [
        ("stored-event-7", "request-99", "command-3")
    ] * 2
    ignored = [r for r in history if isinstance(r, InputIgnored)]
    assert [(r.input_id, r.reason) for r in ignored] == [("stored-event-7", "duplicate")]
    assert {r.correlation_id for r in history} == {"request-99"}


async def test_encoded_events_and_batches_all_or_nothing(backend: Backend) -> None:
    app = app_of(backend)
    rt = await backend.runtime(app)
    async with Publisher(app.topics, backend.transport()) as publisher:
        await publisher.publish(Encoded("RebaseFailed", {"rebase_id": "p2", "instances": ["A"]}))
        huge = Encoded(
            "RebaseFailed", b'{"rebase_id": "p4", "instances": ["' + b"x" * 2_000_000 + b'"]}'
        )
        with pytest.raises(RecordTooLargeError, match=app.topics.inputs):
            await publisher.publish_many(
                [Event(RebaseFailed(rebase_id="p3", instances=["A"])), Event(huge)]
            )
    assert (await rt.wait("rebase:p2", timeout_s=30)).status == "completed"  # type: ignore[union-attr]
    await rt.settle()
    assert await rt.history("rebase:p3") == []  # the batch's good event is not visible either


async def test_the_callers_trace_context_is_on_the_record(backend: Backend) -> None:
    from opentelemetry import trace  # noqa: PLC0415
    from opentelemetry.sdk.trace import TracerProvider  # noqa: PLC0415

    app = app_of(backend)
    await backend.transport().create_topics(app.topics.specs(app.task_types()))
    tracer = TracerProvider().get_tracer("test")
    async with Publisher(app.topics, backend.transport()) as publisher:
        with tracer.start_as_current_span("place order") as span:
            await publisher.publish(RebaseFailed(rebase_id="p5", instances=["A"]), event_id="e5")
            trace_id = format(span.get_span_context().trace_id, "032x")
    (msg,) = await backend.records(app.topics.inputs)
    headers = dict(msg.headers)
    assert headers["traceparent"].decode().split("-")[1] == trace_id
    assert trace.get_current_span().get_span_context().is_valid is False  # nothing leaked


@pytest.mark.backends("kafka")
async def test_sync_code_publishes_through_its_own_loop(backend: Backend) -> None:
    app = app_of(backend)
    rt = await backend.runtime(app)

    def from_a_web_handler() -> None:
        with SyncPublisher(app.topics, kafka_servers()) as publisher:
            publisher.publish(RebaseFailed(rebase_id="p6", instances=["A"]), event_id="e6")

    await asyncio.to_thread(from_a_web_handler)
    state = await rt.wait("rebase:p6", timeout_s=30)
    assert state is not None and state.status == "completed"
    assert any(isinstance(r, ProcessStarted) for r in await rt.history("rebase:p6"))


def _keys(e: RebaseFailed) -> list[str]:
    if e.rebase_id == "boom":
        raise ValueError("no key for boom")
    return [] if e.rebase_id == "nobody" else [e.rebase_id]


def _picky_saga() -> Saga:
    """The rebase saga, with a correlation rule that can raise or name no process."""
    working, closing = State("Working", initial=True), State("Closing", final=True)
    instance = Machine(
        "instance",
        states=[working, closing],
        transitions=[working.to(closing, on=RebaseFailed)],
        per=ForEach(RebaseFailed, lambda e: e.instances),
    )
    return Saga(
        "picky",
        machines=[instance],
        correlate={RebaseFailed: _keys},
        starts=[RebaseFailed],
        completes_when=all_of(instance, closing),
    )


async def test_routed_publishing_writes_what_the_router_would_into_the_process_topic(
    backend: Backend,
) -> None:
    app = app_of(backend)
    rt = await backend.runtime(app)
    async with Publisher(app.topics, backend.transport(), route=app) as direct:
        for _ in range(2):  # redelivered: recognised by its id, as through the router
            await direct.publish(
                RebaseFailed(rebase_id="d1", instances=["A", "B"]),
                event_id="stored-8",
                correlation_id="request-5",
                causation_id="command-2",
            )
    state = await rt.wait("rebase:d1", timeout_s=30)
    assert state is not None and state.status == "completed"
    assert await backend.records(app.topics.inputs) == []  # the input topic is skipped
    history = await rt.history("rebase:d1")
    events = [r for r in history if isinstance(r, DomainEvent)]
    assert [(e.event_id, e.correlation_id, e.causation_id, e.data) for e in events] == [
        ("stored-8", "request-5", "command-2", {"rebase_id": "d1", "instances": ["A", "B"]})
    ] * 2
    ignored = [r for r in history if isinstance(r, InputIgnored)]
    assert [(r.input_id, r.reason) for r in ignored] == [("stored-8", "duplicate")]
    # the same process's partition as the router's: an event published the
    # usual way lands in the stream that the routed one started
    async with Publisher(app.topics, backend.transport()) as routed_later:
        await routed_later.publish(RebaseFailed(rebase_id="d1", instances=["C"]), event_id="e-9")
    await rt.settle()
    later = [r for r in await rt.history("rebase:d1") if isinstance(r, DomainEvent)]
    assert [e.event_id for e in later] == ["stored-8", "stored-8", "e-9"]


async def test_routed_publishing_refuses_what_no_saga_follows_and_writes_nothing(
    backend: Backend,
) -> None:
    app = backend.app([rebase_saga(), _picky_saga()], {"CloseInstance": lambda call: None})
    rt = await backend.runtime(app)
    good = Event(RebaseFailed(rebase_id="d2", instances=["A"]), event_id="good")
    async with Publisher(app.topics, backend.transport(), route=app) as direct:
        with pytest.raises(UnknownEventTypeError, match="OrderShipped"):
            await direct.publish_many([good, Event(Encoded("OrderShipped", {"id": "o"}))])
        with pytest.raises(DecodeError, match="instances"):
            await direct.publish_many([good, Event(Encoded("RebaseFailed", {"rebase_id": "x"}))])
        with pytest.raises(UnroutableError, match="ValueError\\('no key for boom'\\)"):
            await direct.publish_many([good, Event(RebaseFailed(rebase_id="boom", instances=[]))])
        # the rebase saga follows it, so one process is enough: picky names none
        await direct.publish(RebaseFailed(rebase_id="nobody", instances=["A"]), event_id="n")
    with pytest.raises(UnroutableError, match="no saga of this app correlates this RebaseFailed"):
        async with Publisher(
            app.topics, backend.transport(), route=backend.app([_picky_saga()], {})
        ) as picky:
            await picky.publish(RebaseFailed(rebase_id="nobody", instances=["A"]))
    assert (await rt.wait("rebase:nobody", timeout_s=30)).status == "completed"  # type: ignore[union-attr]
    await rt.settle()
    assert await rt.history("rebase:d2") == []  # no batch with an error wrote its good event
    assert await rt.history("picky:nobody") == []


def test_routed_publishing_needs_the_apps_own_topics(backend: Backend) -> None:
    app = app_of(backend)
    with pytest.raises(ValueError, match="route= names the app of"):
        Publisher(Topics("elsewhere"), backend.transport(), route=app)

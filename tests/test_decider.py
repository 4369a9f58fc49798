"""The low-level API: a hand-written decide(state, input) runs like a DSL saga."""

from __future__ import annotations

from pydantic import BaseModel

from procession.sagas import Decider, Decision, Planner, ProcessState, Task, replay_check
from procession.testing import SagaTest, like
from procession.topics import (
    DomainEvent,
    InputIgnored,
    ProcessCompleted,
    ProcessStarted,
    Record,
    TaskCompleted,
    TransitionPlanned,
)
from tests.conftest import Backend


class Ping(BaseModel):
    ping_id: str


def decide(state: object, record: Record) -> Decision:
    """Start on Ping, ask for a Pong, complete when it is done; ignore the rest."""
    p = Planner(state, record)  # type: ignore[arg-type]
    if isinstance(record, DomainEvent) and state is None:
        p.emit(ProcessStarted, saga="ping", version=1, machines={"ping": "Sent"})
        p.emit(
            TransitionPlanned,
            machine_id="ping",
            transition="answer",
            from_state="Sent",
            to_state="Answered",
            task_type="Pong",
            mode="async",
            task_id=p.task_id("ping", "answer"),
            payload={"ping": record.data["ping_id"]},
        )
    elif (
        isinstance(record, TaskCompleted) and isinstance(state, ProcessState) and not state.terminal
    ):
        p.emit(ProcessCompleted)
    else:
        p.emit(
            InputIgnored,
            input_type=record.type_name,
            input_id=record.event_id,
            reason="not expected",
        )
    return p.records


PING = Decider("ping", decide, correlate={Ping: lambda e: e.ping_id}, tasks=[Task("Pong")])


def test_hand_written_decider_in_the_harness() -> None:
    t = SagaTest(PING)
    t.when(Ping(ping_id="1"))
    t.then(ProcessStarted, like(TransitionPlanned, task_type="Pong", payload={"ping": "1"}))
    t.when(t.complete("ping"))
    t.then(ProcessCompleted)
    assert replay_check(PING.decide, t.history) is None


async def test_hand_written_decider_on_the_runtime(backend: Backend) -> None:
    answers: list[str] = []

    def pong(call: object) -> str:
        answers.append(call.payload["ping"])  # type: ignore[attr-defined]
        return "pong"

    rt = await backend.runtime(backend.app([PING], {"Pong": pong}))
    await rt.publish(Ping(ping_id="7"))
    await rt.settle()
    history = await rt.history("ping:7")
    assert [type(r).__name__ for r in history] == [
        "DomainEvent",
        "ProcessStarted",
        "TransitionPlanned",
        "TaskCompleted",
        "ProcessCompleted",
    ]
    assert answers == ["7"]

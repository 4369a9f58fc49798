"""Quarantine undone: a parked process resumed after the fix decides its held
inputs in order; a failed task retried now instead of at its timer."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from pydantic import BaseModel

from procession.examples import RebaseFailed, rebase_saga
from procession.sagas import Machine, ProcessState, Saga, State, Task, fold, replay_check
from procession.topics import (
    InputIgnored,
    ProcessCompleted,
    ProcessResumed,
    TransitionPlanned,
)
from procession.workers import TaskCall
from tests.conftest import Backend


class Open(BaseModel):
    key: str


class Go(BaseModel):
    key: str


BROKEN = {"on": True}


def guard(c: Any) -> bool:
    if BROKEN["on"]:
        raise RuntimeError("guard bug")
    return True


def go_saga() -> Saga:
    todo, done = State("Todo", initial=True), State("Done", final=True)
    machine = Machine(
        "m", states=[todo, done], transitions=[todo.to(done, on=Go, guard=guard, task=Task("Run"))]
    )
    return Saga(
        "go", machines=[machine], correlate={Open: lambda e: e.key, Go: lambda e: e.key},
        starts=[Open],
    )  # fmt: skip


async def test_a_resumed_process_decides_what_it_held_in_order(backend: Backend) -> None:
    BROKEN["on"] = True
    app = backend.app([go_saga()], {"Run": lambda call: {"ran": True}})
    rt = await backend.runtime(app)
    await rt.publish(Open(key="k"), key="k")  # one key: one events partition, in order
    await rt.publish(Go(key="k"), key="k")  # the guard raises: parked here
    await rt.publish(Go(key="k"), event_id="second-go", key="k")  # held
    await rt.settle()
    before = [type(r).__name__ for r in await rt.history("go:k")]
    assert before.count("ProcessParked") == 1 and before.count("DomainEvent") == 3
    BROKEN["on"] = False  # the fix is deployed
    await rt.resume("go:k", reason="guard fixed")
    state = await rt.wait("go:k", timeout_s=30)
    assert state is not None and state.status == "completed"
    history = await rt.history("go:k")
    names = [type(r).__name__ for r in history]
    assert names.count("ProcessParked") == 1 and names.count("ProcessResumed") == 1
    planned = [r for r in history if isinstance(r, TransitionPlanned)]
    assert len(planned) == 1  # the parked Go, decided once, after the resume
    ignored = [r for r in history if isinstance(r, InputIgnored)]
    assert [r.input_id for r in ignored] == ["second-go"]  # the held one, in its turn
    assert isinstance(history[-1], ProcessCompleted)
    assert any(isinstance(r, ProcessResumed) and r.reason == "guard fixed" for r in history)
    assert fold(history) == state and replay_check(go_saga().decide, history) is None


async def test_resume_of_a_process_parked_again_parks_it_again(backend: Backend) -> None:
    BROKEN["on"] = True
    app = backend.app([go_saga()], {"Run": lambda call: None})
    rt = await backend.runtime(app)
    await rt.publish(Open(key="again"), key="again")
    await rt.publish(Go(key="again"), key="again")
    await rt.settle()
    await rt.resume("go:again", reason="not fixed yet")
    await rt.settle()
    history = await rt.history("go:again")
    assert [type(r).__name__ for r in history].count("ProcessParked") == 2
    assert not [r for r in history if isinstance(r, ProcessResumed)]  # still parked
    assert isinstance(fold(history), ProcessState)  # the state before the first parking


async def test_retry_runs_the_next_attempt_now_and_drops_the_timer(backend: Backend) -> None:
    def close(call: TaskCall) -> dict[str, Any]:
        if call.payload["instance"] == "B" and call.attempt == 1:
            raise RuntimeError("busy")
        return {"closed": call.payload["instance"]}

    app = backend.app([rebase_saga(backoff=timedelta(hours=1))], {"CloseInstance": close})
    rt = await backend.runtime(app)
    await rt.publish(RebaseFailed(rebase_id="x", instances=["A", "B"]))
    await rt.settle()
    await rt.retry("rebase:x", reason="B is free now")
    await rt.settle()  # no clock advance: the retry did not wait for its hour
    history = await rt.history("rebase:x")
    assert isinstance(history[-1], ProcessCompleted)
    attempts = [
        r.attempt
        for r in history
        if isinstance(r, TransitionPlanned) and r.machine_id == "instance:B"
    ]
    assert attempts == [1, 2]
    state = fold(history)
    assert isinstance(state, ProcessState) and not state.timers
    assert replay_check(rebase_saga(backoff=timedelta(hours=1)).decide, history) is None
    await rt.retry("rebase:x", reason="again")  # nothing to retry: ended
    await rt.settle()
    assert isinstance((await rt.history("rebase:x"))[-1], InputIgnored)


def keys(e: Open) -> list[str]:
    if BROKEN["on"]:
        raise RuntimeError("keys bug")
    return ["x"]


async def test_a_process_parked_at_its_start_starts_when_resumed(backend: Backend) -> None:
    from procession.sagas import ForEach  # noqa: PLC0415

    BROKEN["on"] = True
    todo, done = State("Todo", initial=True), State("Done", final=True)
    machine = Machine(
        "m",
        states=[todo, done],
        transitions=[todo.to(done, on=Go, task=Task("Run"))],
        per=ForEach(Open, keys),
    )
    saga = Saga(
        "start", machines=[machine], correlate={Open: lambda e: e.key, Go: lambda e: e.key},
        starts=[Open],
    )  # fmt: skip
    app = backend.app([saga], {"Run": lambda call: None})
    rt = await backend.runtime(app)
    await rt.publish(Open(key="s"), key="s")  # parked: no state yet
    await rt.publish(Go(key="s"), key="s")  # held
    await rt.settle()
    assert [type(r).__name__ for r in await rt.history("start:s")].count("ProcessParked") == 1
    BROKEN["on"] = False
    await rt.resume("start:s", reason="keys fixed")
    state = await rt.wait("start:s", timeout_s=30)
    assert state is not None and state.status == "completed"
    assert replay_check(saga.decide, await rt.history("start:s")) is None

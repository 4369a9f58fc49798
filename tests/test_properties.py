"""Properties of the core over generated histories (hypothesis)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from procession.examples import OrderPlaced, order_saga
from procession.sagas import ProcessState, Saga, evolve, evolve_all, fold, replay_check
from procession.sagas._fold import after_decisions
from procession.sagas._ids import IdPrefix, derive_id, prefix
from procession.sagas._parts import snapshot
from procession.testing import SagaTest
from procession.topics import Codec, Record, TaskCompleted, TaskFailed
from procession.workers._wire import encode_state, state_of
from tests.sagas import Deploy, deploy_saga

MACHINES = {
    "deploy": ["region:a", "region:b", "region:c", "region:d"],
    "order": ["stock", "payment", "shipping"],
}

action = st.one_of(
    st.tuples(st.just("complete"), st.integers(0, 3), st.integers(0, 2)),
    st.tuples(st.just("fail"), st.integers(0, 3), st.booleans()),
    st.tuples(st.just("advance"), st.sampled_from([0.5, 1, 3, 11, 4000])),
    st.tuples(st.just("cancel"), st.sampled_from(["hard", "cooperative"])),
    st.tuples(st.just("again"), st.integers(0, 50)),
    st.tuples(st.just("more"), st.sampled_from([["d"], ["a", "d"]])),
)


def start(kind: str) -> SagaTest:
    if kind == "deploy":
        t = SagaTest(deploy_saga())
        t.given(Deploy(deploy_id="x", regions=["a", "b", "c"]))
    else:
        t = SagaTest(order_saga())
        t.given(OrderPlaced(order_id="x", amount=3))
    return t


def run(kind: str, actions: list[tuple[Any, ...]]) -> tuple[SagaTest, list[Any]]:
    """Drive a process; return it and the states the 'runtime' held after each input."""
    t = start(kind)
    held: list[Any] = [fold(t.history)]
    saga: Saga = t.saga
    for act in actions:
        state = fold(t.history)
        inputs: list[Record] = []
        machines = MACHINES[kind]
        if act[0] in ("complete", "fail"):
            mid = machines[act[1] % len(machines)]
            pending = _task_of(state, mid)
            if pending is None:
                continue
            if act[0] == "complete":
                inputs.append(t.complete(mid, result=act[2]))
            else:
                inputs.append(t.fail(mid, "boom", retryable=act[2]))
        elif act[0] == "advance":
            before = len(t.history)
            t.advance(timedelta(seconds=act[1]))
            _replay_into(held, t.history[before:])
            continue
        elif act[0] == "cancel":
            inputs.append(t.cancel(act[1]))
        elif act[0] == "again":
            past = [r for r in t.history if not r.IS_DECISION]
            inputs.append(past[act[1] % len(past)])
        elif kind == "deploy":
            inputs.append(t._input(Deploy(deploy_id="x", regions=act[1])))
        for rec in inputs:
            before_state = fold(t.history)
            decisions = t.when(rec)
            assert saga.decide(before_state, rec) == decisions  # deterministic, ids included
            state_now = held[-1]
            for r in (rec, *decisions):
                state_now = evolve(state_now, r)
            assert evolve_all(held[-1], [rec, *decisions]) == state_now
            # the processor's shortcut: the planner's scratch state, when it is the fold
            assert after_decisions(held[-1], rec, saga.decide(held[-1], rec)) == state_now
            _indexes_agree(state_now)
            held.append(state_now)
    return t, held


def _indexes_agree(state: Any) -> None:
    """The indexes kept change by change equal those built from scratch, and the
    state survives its changelog encoding (written in one pass, the same bytes as
    its parts one by one)."""
    if not isinstance(state, ProcessState):
        return
    assert encode_state(state) == orjson.dumps({"state": snapshot(state)})
    rebuilt = state_of(encode_state(state))
    assert rebuilt == state
    for name in ("order", "tasks", "members", "ready", "family_size", "inflight", "seen_ids"):
        assert getattr(rebuilt, name) == getattr(state, name), name
    assert {k: set(v) for k, v in rebuilt.timers_of.items()} == {
        k: set(v) for k, v in state.timers_of.items()
    }


def _replay_into(held: list[Any], records: list[Record]) -> None:
    state = held[-1]
    for r in records:
        state = evolve(state, r)
        if not r.IS_DECISION:
            held.append(state)
    held[-1] = state


def _task_of(state: Any, mid: str) -> Any:
    if not isinstance(state, ProcessState):
        return None
    comp = state.compensation
    if comp is not None and comp.machine_id == mid:
        return comp
    m = state.machines.get(mid)
    return m.task if m is not None else None


SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(st.sampled_from(["deploy", "order"]), st.lists(action, max_size=25))
def test_fold_of_the_history_equals_the_state_the_runtime_held(
    kind: str, actions: list[Any]
) -> None:
    t, held = run(kind, actions)
    assert fold(t.history) == held[-1]


@SETTINGS
@given(st.sampled_from(["deploy", "order"]), st.lists(action, max_size=25))
def test_recorded_histories_replay_to_the_same_decisions(kind: str, actions: list[Any]) -> None:
    t, _ = run(kind, actions)
    assert replay_check(t.saga.decide, t.history) is None
    codec = Codec()
    wire = [codec.decode(codec.encode(r)) for r in t.history]
    assert replay_check(t.saga.decide, wire) is None


@SETTINGS
@given(st.sampled_from(["deploy", "order"]), st.lists(action, max_size=25), st.data())
def test_fold_does_not_depend_on_where_other_writers_records_fell(
    kind: str, actions: list[Any], data: st.DataObject
) -> None:
    t, _ = run(kind, actions)
    # Decisions are written by one producer, in order; inputs by others may land
    # before earlier decisions. Delay decision groups past later inputs.
    groups: list[tuple[Record, list[Record]]] = []
    for rec in t.history:
        if rec.IS_DECISION:
            groups[-1][1].append(rec)
        else:
            groups.append((rec, []))
    stream: list[Record] = []
    backlog: list[Record] = []
    for rec, decisions in groups:
        stream.append(rec)
        backlog += decisions
        if data.draw(st.booleans()):
            stream += backlog
            backlog = []
    stream += backlog
    assert [r for r in stream if r.IS_DECISION] == [r for r in t.history if r.IS_DECISION]
    assert fold(stream) == fold(t.history)


def test_results_inputs_are_of_the_expected_kinds() -> None:
    t, _ = run("deploy", [("complete", 0, 1), ("fail", 1, False)])
    kinds = {type(r) for r in t.history}
    assert {TaskCompleted, TaskFailed} <= kinds


part = st.one_of(st.text(max_size=8), st.integers(-5, 10**6), st.none())


@given(st.lists(part, min_size=1, max_size=4), st.lists(part, min_size=1, max_size=3))
def test_an_id_from_a_hashed_prefix_is_the_id_of_all_the_parts(
    head: list[object], tail: list[object]
) -> None:
    assert IdPrefix(*head).derive(*tail) == derive_id(*head, *tail)
    assert prefix("p", "e", 3).derive(*tail) == derive_id("p", "e", 3, *tail)
    assert prefix("p", "e", 4).derive(*tail) == derive_id("p", "e", 4, *tail)

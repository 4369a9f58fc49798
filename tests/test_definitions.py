"""Definitions that make no sense are rejected with a message naming the part."""

from __future__ import annotations

from datetime import timedelta

import pytest
from pydantic import BaseModel

from procession import (
    App,
    DefinitionError,
    Machine,
    RegistrationError,
    RetryPolicy,
    Saga,
    State,
    Task,
    all_of,
    steps,
)
from procession.examples import rebase_saga


class Go(BaseModel):
    key: str


class Stop(BaseModel):
    key: str


def saga_with(machine: Machine, **kw: object) -> Saga:
    args: dict[str, object] = {"correlate": {Go: lambda e: e.key}, "starts": [Go], **kw}
    return Saga("s", machines=[machine], **args)  # type: ignore[arg-type]


def test_unknown_target_state_names_saga_machine_and_transition() -> None:
    a, b, ghost = State("A", initial=True), State("B", final=True), State("Ghost")
    m = Machine("m", states=[a, b], transitions=[a.to(b, on=Go), a.to(ghost, on=Go, name="haunt")])
    with pytest.raises(DefinitionError) as err:
        saga_with(m)
    assert (
        str(err.value)
        == "saga 's', machine 'm': transition 'haunt' has unknown target state 'Ghost'"
    )


def test_unreachable_final_state() -> None:
    a, b, c = State("A", initial=True), State("B", final=True), State("C", final=True)
    m = Machine("m", states=[a, b, c], transitions=[a.to(b, on=Go)])
    with pytest.raises(DefinitionError, match="final state 'C' is unreachable from 'A'"):
        saga_with(m)


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (
            lambda a, b: Machine("m", states=[a, b, State("A")], transitions=[a.to(b, on=Go)]),
            "state name 'A' is used more than once",
        ),
        (
            lambda a, b: Machine("m", states=[a, b], transitions=[a.to(b, on=Go), a.to(b, on=Go)]),
            "transition name 'A->B' is used more than once",
        ),
        (
            lambda a, b: Machine("m", states=[State("X"), b], transitions=[]),
            "initial state must be exactly one",
        ),
        (
            lambda a, b: Machine("m", states=[a, State("B")], transitions=[a.to(State("B"))]),
            "final state is missing",
        ),
        (
            lambda a, b: Machine("m", states=[a, b], transitions=[a.to(b, on=Stop)]),
            "is triggered by 'Stop', which has no correlation rule",
        ),
        (
            lambda a, b: Machine(
                "m", states=[a, b], transitions=[a.to(b, on=Go, after=timedelta(1))]
            ),
            "has more than one trigger",
        ),
        (
            lambda a, b: Machine("m", states=[a, b], transitions=[a.to(b, on=Go), b.to(a, on=Go)]),
            "leaves final state 'B'",
        ),
        (
            lambda a, b: Machine("m:x", states=[a, b], transitions=[a.to(b, on=Go)]),
            "must be non-empty and contain no ':'",
        ),
        (
            lambda a, b: Machine("m", states=[a, b], transitions=[a.to(b, on=Go, on_failure=a)]),
            "has on_failure but no task",
        ),
    ],
)
def test_nonsense_machines_are_rejected(build: object, message: str) -> None:
    a, b = State("A", initial=True), State("B", final=True)
    with pytest.raises(DefinitionError, match=message):
        saga_with(build(a, b))  # type: ignore[operator]


def test_loop_of_eventless_transitions_without_tasks() -> None:
    a, b, c, d = State("A", initial=True), State("B"), State("C"), State("D", final=True)
    m = Machine(
        "m",
        states=[a, b, c, d],
        transitions=[a.to(b, on=Go), b.to(c), c.to(b, name="back"), c.to(d, on=Go)],
    )
    with pytest.raises(DefinitionError, match="loop without a task: B -> C -> B"):
        saga_with(m)


def test_join_on_a_machine_of_another_saga() -> None:
    a, b = State("A", initial=True), State("B", final=True)
    m = Machine("m", states=[a, b], transitions=[a.to(b, on=Go)])
    stranger = Machine("other", states=[a, b], transitions=[a.to(b, on=Go)])
    with pytest.raises(DefinitionError, match="join names machine 'other' not in this saga"):
        saga_with(m, completes_when=all_of(stranger, b))


def test_start_event_needs_a_correlation_rule() -> None:
    a, b = State("A", initial=True), State("B", final=True)
    m = Machine("m", states=[a, b], transitions=[a.to(b, on=Go)])
    with pytest.raises(DefinitionError, match="start event 'Stop' has no correlation rule"):
        saga_with(m, starts=[Stop])


def test_same_task_type_with_different_retry_rules() -> None:
    a, b, c = State("A", initial=True), State("B"), State("C", final=True)
    m = Machine(
        "m",
        states=[a, b, c],
        transitions=[
            a.to(b, on=Go, task=Task("T", retry=RetryPolicy(max_attempts=2))),
            b.to(c, task=Task("T", retry=RetryPolicy(max_attempts=5))),
        ],
    )
    with pytest.raises(DefinitionError, match="task type 'T' is declared with different retry"):
        saga_with(m)


def test_task_type_without_handler_is_rejected_at_registration() -> None:
    with pytest.raises(RegistrationError) as err:
        App([rebase_saga()], {})
    assert str(err.value) == (
        "saga 'rebase': task type 'CloseInstance' has no handler (or name it in "
        "App(external=...) if another service serves it)"
    )


def test_an_external_task_type_needs_no_handler_and_is_checked() -> None:
    app = App([rebase_saga()], {}, external=["CloseInstance"])
    assert app.external == {"CloseInstance"} and app.task_types() == ["CloseInstance"]
    with pytest.raises(RegistrationError, match="external task type 'Nope' is no saga's"):
        App([rebase_saga()], {}, external=["CloseInstance", "Nope"])
    with pytest.raises(RegistrationError, match="is external and has a handler"):
        App([rebase_saga()], {"CloseInstance": print}, external=["CloseInstance"])


def test_handler_for_unknown_task_type_and_duplicate_sagas() -> None:
    with pytest.raises(RegistrationError, match="handler for unknown task type 'Nope'"):
        App([rebase_saga()], {"CloseInstance": print, "Nope": print})
    with pytest.raises(RegistrationError, match="saga name is registered twice"):
        App([rebase_saga(), rebase_saga()], {"CloseInstance": print})


def test_retry_policy_rejects_nonsense() -> None:
    with pytest.raises(ValueError, match="max_attempts must be at least 1"):
        RetryPolicy(max_attempts=0)
    with pytest.raises(ValueError, match="jitter"):
        RetryPolicy(jitter=2)


def test_step_builder_compiles_to_a_machine_of_steps() -> None:
    saga = (
        steps("checkout", starts=Go, key=lambda e: e.key)
        .step(Task("Reserve", compensation=Task("Release")))
        .step(Task("Charge"))
        .build()
    )
    (machine,) = saga.machines
    assert [s.name for s in machine.states] == ["Start", "Reserve", "Charge"]
    assert [(t.source.name, t.target.name, t.on) for t in machine.transitions] == [
        ("Start", "Reserve", Go),
        ("Reserve", "Charge", None),
    ]
    assert machine.states[-1].final

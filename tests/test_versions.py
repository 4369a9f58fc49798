"""Saga versions: running processes keep their version, new ones start on the
newest, migrations move them on, and a definition that has no place for a
running process says so."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, model_validator

from procession import (
    DefinitionError,
    DefinitionMismatchError,
    RegistrationError,
    UnknownVersionError,
)
from procession._replay_files import replay_files
from procession.examples import RebaseFailed, rebase_saga
from procession.sagas import (
    ForEach,
    Machine,
    Migration,
    ProcessState,
    RetryPolicy,
    Saga,
    State,
    Task,
    Versions,
    all_of,
    fold,
    replay_check,
)
from procession.testing import SagaTest
from procession.topics import (
    DEFAULT_CODEC,
    DomainEvent,
    ProcessCompleted,
    ProcessMigrated,
    ProcessParked,
    ProcessStarted,
    TransitionPlanned,
)
from procession.workers import App
from tests.conftest import Backend


def rebase_v2(version: int = 2, transition: str = "close") -> Saga:
    """The rebase saga with its states and transition renamed (Working -> Open,
    Closing -> Closed, 'Working->Closing' -> ``transition``)."""
    open_, closed = State("Open", initial=True), State("Closed", final=True)
    task = Task(
        "CloseInstance",
        payload=lambda c: {"instance": c.key, "rebase_id": c.event.rebase_id},
        retry=RetryPolicy(max_attempts=3, initial=timedelta(milliseconds=200), jitter=0.2),
        timeout=timedelta(seconds=30),
    )
    instance = Machine(
        "instance",
        states=[open_, closed],
        transitions=[open_.to(closed, on=RebaseFailed, task=task, name=transition)],
        per=ForEach(RebaseFailed, lambda e: e.instances),
    )
    return Saga(
        "rebase",
        version=version,
        machines=[instance],
        correlate={RebaseFailed: lambda e: e.rebase_id},
        starts=[RebaseFailed],
        completes_when=all_of(instance, closed),
    )


TO_V2 = Migration(
    "rebase",
    1,
    2,
    states={"instance": {"Working": "Open", "Closing": "Closed"}},
    transitions={"instance": {"Working->Closing": "close"}},
)


def started_on_v1() -> SagaTest:
    t = SagaTest(rebase_saga())
    t.given(RebaseFailed(rebase_id="r1", instances=["A", "B"]))
    t.when(t.complete("instance:A"))
    return t


def test_a_running_process_finishes_on_its_version_while_new_ones_start_on_the_newest() -> None:
    t = started_on_v1()
    both = Versions([rebase_saga(), rebase_v2()])
    t.saga = both  # the deploy: v2 beside v1
    t.when(t.complete("instance:B"))
    t.then(ProcessCompleted)
    fresh = SagaTest(both)
    (started, *_) = fresh.given(RebaseFailed(rebase_id="r2", instances=["A"])).last
    assert isinstance(started, ProcessStarted) and started.version == 2
    assert started.machines == {"instance:A": "Open"}


def test_a_migration_moves_a_running_process_at_its_next_input_and_is_recorded() -> None:
    t = started_on_v1()
    t.saga = Versions([rebase_saga(), rebase_v2()], [TO_V2])
    t.when(t.fail("instance:B", "busy"))  # the retry of a task planned under v1 names
    migrated = t.last[0]
    assert isinstance(migrated, ProcessMigrated)
    assert (migrated.from_version, migrated.to_version) == (1, 2)
    state = fold(t.history)
    assert isinstance(state, ProcessState) and state.version == 2
    assert {m.state for _, m in state.ordered()} == {"Closed"}
    b = state.machines["instance:B"].task
    assert b is not None and (b.transition, b.source) == ("close", "Open")
    t.advance(timedelta(seconds=1))  # the retry, decided by v2
    planned = [r for r in t.last if isinstance(r, TransitionPlanned)]
    assert planned and planned[0].transition == "close" and planned[0].attempt == 2
    t.when(t.complete("instance:B"))
    t.then(ProcessCompleted)
    assert replay_check(t.saga.decide, t.history) is None


def test_a_dropped_version_is_refused_by_name_and_a_migration_needs_both_versions() -> None:
    t = started_on_v1()
    t.saga = Versions([rebase_v2()], [])  # v1 dropped, no migration: refused by name
    with pytest.raises(DefinitionMismatchError, match=r"'rebase:r1' \(saga 'rebase' v1\)"):
        t.when(t.complete("instance:B"))
    t.history = t.history[:-1]
    with pytest.raises(DefinitionError, match="both versions stay registered while the migration"):
        Versions([rebase_v2()], [TO_V2])  # a migration is checked against both definitions


def test_a_renamed_transition_under_the_same_version_names_the_process_and_the_part() -> None:
    t = started_on_v1()
    t.saga = rebase_v2(version=1, transition="close")  # changed without a new version
    with pytest.raises(DefinitionMismatchError) as caught:
        t.when(t.fail("instance:B", "busy"))
    text = str(caught.value)
    assert "'rebase:r1' (saga 'rebase' v1)" in text
    assert "machine 'instance' has no transition 'Working->Closing'" in text
    assert "StopIteration" not in text


def test_a_new_version_alone_refuses_processes_of_the_old_one() -> None:
    t = started_on_v1()
    t.saga = rebase_v2()
    with pytest.raises(DefinitionMismatchError, match="this definition is v2"):
        t.when(t.complete("instance:B"))


def test_an_ignored_input_needs_no_definition() -> None:
    t = started_on_v1()
    t.saga = rebase_v2()
    t.when(t.history[0])  # the starting event again: a duplicate
    assert [type(r).__name__ for r in t.last] == ["InputIgnored"]


@pytest.mark.parametrize(
    ("migration", "problem"),
    [
        (Migration("rebase", 1, 2), "state 'Working' of machine 'instance' has no place in v2"),
        (
            Migration("rebase", 1, 2, states=TO_V2.states),
            "transition 'Working->Closing' of machine 'instance' has no place in v2",
        ),
        (
            Migration("rebase", 1, 2, states={"instance": {"Nope": "Open"}}),
            "renames state 'Nope', which machine 'instance' does not have",
        ),
        (
            Migration("rebase", 1, 2, states={"instance": {"Working": "Opn", "Closing": "Closed"}}),
            "renames state 'Working' to 'Opn', which v2's machine 'instance' does not have "
            r"\(it has: Open, Closed\)",
        ),
        (
            Migration("rebase", 1, 2, states={"instances": {"Working": "Open"}}),
            r"names machine 'instances', which v1 does not have \(it has: instance\)",
        ),
        (Migration("rebase", 2, 1), "must move to a newer version"),
        (Migration("rebase", 1, 3), "names a version not registered"),
    ],
)
def test_a_migration_is_checked_against_both_definitions(
    migration: Migration, problem: str
) -> None:
    with pytest.raises(DefinitionError, match=problem):
        Versions([rebase_saga(), rebase_v2()], [migration])


def test_an_app_groups_versions_by_name_and_refuses_a_version_twice() -> None:
    app = App([rebase_saga(), rebase_v2()], {"CloseInstance": print}, migrations=[TO_V2])
    saga = app.saga_for("rebase:1")
    assert isinstance(saga, Versions) and saga.version == 2
    with pytest.raises(RegistrationError, match="registered twice with one version"):
        App([rebase_saga(), rebase_saga()], {"CloseInstance": print})
    with pytest.raises(RegistrationError, match="a migration for a saga that is not registered"):
        App([rebase_saga()], {"CloseInstance": print}, migrations=[Migration("x", 1, 2)])


def test_replay_against_a_changed_definition_of_the_same_version_names_the_first_divergence() -> (
    None
):
    t = started_on_v1()
    t.when(t.complete("instance:B"))
    assert replay_check(rebase_saga().decide, t.history) is None
    slower = rebase_saga(backoff=timedelta(seconds=5))  # same names, other retry delays
    assert replay_check(slower.decide, t.history) is None  # no retry in this history
    changed = rebase_v2(version=1)
    divergence = replay_check(Versions([changed]).decide, t.history)
    assert divergence is not None and divergence.position == 0
    assert "Open" in str(divergence)


async def test_a_v1_process_finishes_under_v1_beside_v2_processes_on_the_runtime(
    backend: Backend,
) -> None:
    calls: list[str] = []
    blocked = {"B"}

    def close(call: object) -> dict[str, str]:
        instance = call.payload["instance"]  # type: ignore[attr-defined]
        calls.append(instance)
        if instance in blocked:
            raise RuntimeError("busy")
        return {"closed": instance}

    v1 = backend.app([rebase_saga(backoff=timedelta(hours=1))], {"CloseInstance": close})
    rt = await backend.runtime(v1)
    await rt.publish(RebaseFailed(rebase_id="old", instances=["A", "B"]))
    await rt.settle()
    await rt.stop()
    blocked.clear()
    v2 = backend.app(
        [rebase_saga(backoff=timedelta(hours=1)), rebase_v2()],
        {"CloseInstance": close},
    )
    rt2 = await backend.runtime(v2)
    await rt2.publish(RebaseFailed(rebase_id="new", instances=["C"]))
    backend.clock.advance(timedelta(hours=2))  # B's retry comes due, decided by v1
    await rt2.settle()
    old, new = await rt2.history("rebase:old"), await rt2.history("rebase:new")
    assert isinstance(old[-1], ProcessCompleted) and isinstance(new[-1], ProcessCompleted)
    assert {r.version for r in old if isinstance(r, ProcessStarted)} == {1}
    assert {r.version for r in new if isinstance(r, ProcessStarted)} == {2}
    assert [r.transition for r in old if isinstance(r, TransitionPlanned)][-1] == "Working->Closing"


def fail(call: object) -> None:
    raise RuntimeError("busy")


async def running_on_v1(backend: Backend, key: str) -> None:
    """A v1 process whose task failed and waits an hour for its retry; the
    runtime that ran it stopped (a deploy is next)."""
    v1 = backend.app([rebase_saga(backoff=timedelta(hours=1))], {"CloseInstance": fail})
    rt = await backend.runtime(v1)
    await rt.publish(RebaseFailed(rebase_id=key, instances=["A"]))
    await rt.settle()
    await rt.stop()


async def test_a_definition_with_no_place_for_a_running_process_parks_it_with_the_reason(
    backend: Backend,
) -> None:
    await running_on_v1(backend, "r")
    renamed = backend.app([rebase_v2(version=1)], {"CloseInstance": fail})  # no new version
    rt2 = await backend.runtime(renamed)
    backend.clock.advance(timedelta(hours=2))  # the retry timer fires into the renamed saga
    await rt2.settle()
    (parked,) = [r for r in await rt2.history("rebase:r") if isinstance(r, ProcessParked)]
    assert parked.reason.startswith("decision failed: process 'rebase:r' (saga 'rebase' v1): ")
    assert "machine 'instance' has no transition 'Working->Closing'" in parked.reason


class Ping(BaseModel):
    """A domain event whose schema changed: version 1 sent ``n``, version 2 ``count``."""

    schema_version: int = 2
    key: str
    count: int

    @model_validator(mode="before")
    @classmethod
    def _upcast(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("schema_version", 1) == 1 and "n" in data:
            return {"schema_version": 2, "key": data["key"], "count": data["n"]}
        return data


def test_a_domain_event_of_an_older_schema_is_upcast_by_its_model() -> None:
    idle, done = State("Idle", initial=True), State("Done", final=True)
    saga = Saga(
        "ping",
        machines=[
            Machine(
                "m",
                states=[idle, done],
                transitions=[idle.to(done, on=Ping, guard=lambda c: c.event.count == 3)],
            )
        ],
        correlate={Ping: lambda e: e.key},
        starts=[Ping],
    )
    old = DomainEvent(
        event_id="e1",
        process_id="ping:k",
        correlation_id="ping:k",
        event_type="Ping",
        data={"key": "k", "n": 3},  # as a version-1 publisher wrote it
    )
    kinds = [type(r).__name__ for r in saga.decide(None, old)]
    assert kinds == ["ProcessStarted", "TransitionPlanned", "ProcessCompleted"]


async def test_a_processor_refuses_running_processes_of_a_version_the_app_dropped(
    backend: Backend,
) -> None:
    await running_on_v1(backend, "kept")
    v2_alone = backend.app([rebase_v2()], {"CloseInstance": fail})
    rt2 = await backend.runtime(v2_alone)
    with pytest.raises(RuntimeError, match="the processor stopped") as caught:
        await rt2.settle()
    cause = caught.value.__cause__
    assert isinstance(cause, UnknownVersionError)
    assert str(cause) == (
        "saga 'rebase': 1 running process on v1 (e.g. 'rebase:kept'), which this app does "
        "not register (it has v2); register v1 beside the others, or a Migration from v1"
    )
    assert not [r for r in await rt2.history("rebase:kept") if isinstance(r, ProcessParked)]


def test_replay_files_name_a_version_the_app_does_not_register(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    t = started_on_v1()
    saved = tmp_path / "saved.jsonl"
    saved.write_bytes(b"\n".join(DEFAULT_CODEC.encode(r) for r in t.history) + b"\n")
    v2_alone = App([rebase_v2()], {"CloseInstance": print})
    assert replay_files(v2_alone, [str(saved)]) == 1
    assert capsys.readouterr().out == (
        "rebase:r1: started on v1, which this app does not register\n"
        "0 of 1 processes replay to their decisions\n"
    )
    both = App([rebase_saga(), rebase_v2()], {"CloseInstance": print})
    assert replay_files(both, [str(saved)]) == 0

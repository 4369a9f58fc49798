"""The changelog as the processor writes it: one value per small process, a header
and parts once a process grows, tombstones when it ends; restore reads it back."""

from __future__ import annotations

import dataclasses
from typing import Any

import orjson
import pytest
from immutables import Map

from procession.examples import RebaseFailed, rebase_saga
from procession.sagas import Ended, ProcessState
from procession.sagas._fold import after_decisions
from procession.sagas._state import CompletedTask, MachineState, PendingTask, Timer
from procession.testing import SagaTest
from procession.topics import Record
from procession.workers._port import Message
from procession.workers._wire import restore
from procession.workers._writes import INLINE_MACHINES, state_changes

LIMITS = {"changelog": 1_048_588}


class Changelog:
    """The records written so far, read back as compaction keeps them."""

    def __init__(self) -> None:
        self.log: list[Message] = []
        self.counts: list[int] = []

    def commit(self, state: ProcessState, *, ended: Ended | None = None) -> None:
        out = state_changes(state.process_id, state, "changelog", 0, LIMITS, ended=ended)
        self.counts.append(len(out))
        for o in out:
            self.log.append(Message("changelog", 0, len(self.log), o.key, o.value))
        state.dirty = Map()  # as the partition does after the commit

    def live_keys(self) -> set[str]:
        last: dict[str, bytes | None] = {}
        for m in self.log:
            last[m.key or ""] = m.value
        return {k for k, v in last.items() if v is not None}

    def restored(self, pid: str) -> Any:
        states, bad = restore(self.log)
        assert not bad
        return states.get(pid)


def test_a_process_is_one_value_until_it_grows_then_part_by_part_and_restores_each_time() -> None:
    saga = rebase_saga()
    t = SagaTest(saga)
    log = Changelog()
    state: Any = None

    def step(rec: Record) -> None:
        nonlocal state
        decisions = saga.decide(state, rec)  # on the state the processor holds
        t.history += [rec, *decisions]
        state = after_decisions(state, rec, decisions)
        log.commit(state)
        again = log.restored(state.process_id)
        assert again == state
        assert again.split == state.split

    step(t._input(RebaseFailed(rebase_id="g", instances=["A", "B", "C"])))
    assert log.counts == [1] and not state.split
    step(t.complete("instance:A"))
    assert log.counts[-1] == 1
    many = [f"env-{i}" for i in range(INLINE_MACHINES + 10)]
    step(t._input(RebaseFailed(rebase_id="g", instances=many)))
    assert state.split and log.counts[-1] > INLINE_MACHINES  # every part written once
    step(t.complete("instance:B"))
    assert log.counts[-1] == 2  # the header and B's part
    for mid in ["instance:C", *(f"instance:{m}" for m in many)]:
        step(t.complete(mid))
    assert state.terminal
    log.commit(state, ended=Ended.of("completed"))
    assert log.restored(state.process_id) is Ended.of("completed")
    assert log.live_keys() == {state.process_id}  # every part tombstoned


def test_a_small_process_that_ends_writes_only_its_end_marker() -> None:
    t = SagaTest(rebase_saga())
    t.given(RebaseFailed(rebase_id="s", instances=["A"]))
    t.when(t.complete("instance:A"))
    state = t.state
    assert isinstance(state, ProcessState) and state.terminal and not state.split
    log = Changelog()
    log.commit(state, ended=Ended.of("completed"))
    assert log.counts == [1]


def _as_schema_1(state: ProcessState) -> bytes:
    """The value the release before schema 2 wrote for ``state``: one JSON object."""
    from procession.sagas._parts import snapshot  # noqa: PLC0415

    snap = snapshot(state)
    parts = snap["parts"]
    machines = {k[2:]: v["m"] for k, v in parts.items() if k.startswith("m:")}
    timers = {tid: t for k, v in parts.items() if k.startswith("m:") for tid, t in v["t"].items()}
    body = {
        **{k: snap[k] for k in ("process_id", "saga", "version", "correlation_id", "status")},
        **{k: snap[k] for k in ("seq", "compensation", "outcome", "reason")},
        "failed_compensations": snap["failed_compensations"],
        "machines": machines,
        "timers": timers,
        "context": {k[2:]: v["d"] for k, v in parts.items() if k.startswith("c:")},
        "seen": sorted(state.seen),
        "completed": [parts[f"k:{i}"] for i in range(len(state.completed))],
    }
    return orjson.dumps({"state": body})


@pytest.mark.parametrize("instances", [3, INLINE_MACHINES + 36])
def test_the_first_commit_after_restoring_schema_1_keeps_the_whole_state(instances: int) -> None:
    saga = rebase_saga()
    t = SagaTest(saga)
    t.given(RebaseFailed(rebase_id="u", instances=[f"i{n}" for n in range(instances)]))
    old = t.state
    assert isinstance(old, ProcessState)
    log = Changelog()
    log.log.append(Message("changelog", 0, 0, old.process_id, _as_schema_1(old)))
    restored = log.restored(old.process_id)
    assert restored == old
    done = t.complete("instance:i0")
    after = after_decisions(restored, done, saga.decide(restored, done))
    log.commit(after)  # the upgraded processor's first commit
    again = log.restored(old.process_id)
    assert again == after and len(again.machines) == instances


def test_each_value_class_is_written_with_every_field_in_order() -> None:
    from procession.sagas._parts import (  # noqa: PLC0415
        _completed_json,
        _machine_json,
        _task_json,
        _timer_json,
    )

    task = PendingTask("t", "Go", "m", "A->B", 2, "async", False, True, "c", "A", {"k": 1})
    cases: list[tuple[Any, Any]] = [
        (task, _task_json),
        (MachineState("B", 3, task, {"r": 1}), _machine_json),
        (Timer(5, "retry", "m", "A->B", "t", 2), _timer_json),
        (CompletedTask("m", "A->B", "t", "Go", [1]), _completed_json),
    ]
    for value, written in cases:
        assert written(value) == orjson.loads(orjson.dumps(value))  # orjson: every field, in order
        assert list(written(value)) == [f.name for f in dataclasses.fields(value)]


def test_a_state_over_a_small_changelog_limit_is_written_part_by_part_not_refused() -> None:
    saga = rebase_saga()
    t = SagaTest(saga)
    rec = t._input(RebaseFailed(rebase_id="g", instances=[f"env-{i}" for i in range(10)]))
    state = after_decisions(None, rec, saga.decide(None, rec))
    (whole,) = state_changes(state.process_id, state, "changelog", 0, LIMITS)
    limit = whole.size() - 1  # below the one-value limit (INLINE_BYTES): the parts fit
    out = state_changes(state.process_id, state, "changelog", 0, {"changelog": limit})
    assert state.split and len(out) > 10 and all(o.size() <= limit for o in out)
    log = Changelog()
    log.log = [Message("changelog", 0, i, o.key, o.value) for i, o in enumerate(out)]
    assert log.restored(state.process_id) == state

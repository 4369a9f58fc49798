"""Given / when / then for sagas, on virtual time, with no runtime and no broker.

    def test_all_instances_close():
        t = SagaTest(rebase_saga())
        t.given(RebaseFailed(rebase_id="r1", instances=["A", "B"]))
        t.when(t.complete("instance:A"))
        t.then()                                   # nothing yet: B is still closing
        t.when(t.complete("instance:B"))
        t.then(ProcessCompleted)

``then`` takes record classes, ``like(Class, field=value)`` matchers or whole
records, in order. ``advance(timedelta)`` moves time and fires due timers.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from pydantic import BaseModel

from .sagas._decider import ProcessDefinition
from .sagas._derive import cancel_request
from .sagas._fold import fold
from .sagas._ids import derive_id
from .sagas._replay import replay_check
from .sagas._state import ProcessState
from .topics._records import (
    CancelMode,
    DomainEvent,
    Record,
    TaskCompleted,
    TaskFailed,
    TimerFired,
)


@dataclass(frozen=True)
class Like:
    """Matches a record of ``kind`` whose named fields equal the given values."""

    kind: type[Record]
    fields: dict[str, Any]

    def matches(self, rec: Record) -> bool:
        return isinstance(rec, self.kind) and all(
            getattr(rec, k, _MISSING) == v for k, v in self.fields.items()
        )

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.fields.items())
        return f"like({self.kind.__name__}{', ' if args else ''}{args})"


_MISSING = object()
Expected = type[Record] | Like | Record


def like(kind: type[Record], **fields: Any) -> Like:
    """A matcher: ``like(TransitionPlanned, machine_id="instance:A", attempt=2)``."""
    return Like(kind, fields)


class SagaTest:
    """One process of one saga, driven by hand; time starts at ``start_ms``."""

    def __init__(self, saga: ProcessDefinition, *, start_ms: int = 0) -> None:
        self.saga = saga
        self.now_ms = start_ms
        self.history: list[Record] = []
        self.process_id: str | None = None
        self.last: list[Record] = []
        self._ids = itertools.count(1)

    # ------------------------------------------------------------ driving

    def given(self, *items: BaseModel | Record) -> SagaTest:
        """Events (decided now) or recorded records (taken as they are)."""
        for item in items:
            if isinstance(item, Record):
                self.process_id = self.process_id or item.process_id
                self.history.append(item)
            else:
                self.when(item)
        return self

    def when(self, item: BaseModel | Record) -> list[Record]:
        """Decide one input (a domain event or an input record); return the decisions."""
        rec = self._input(item) if isinstance(item, BaseModel) else item
        decisions = self.saga.decide(fold(self.history), rec)
        self.history += [rec, *decisions]
        self.last = decisions
        return decisions

    def then(self, *expected: Expected) -> None:
        """Assert the last decisions match ``expected``, in order."""
        got = self.last
        problems = [
            f"  #{i}: expected {e!r}, got {g!r}"
            for i, (e, g) in enumerate(zip(expected, got, strict=False))
            if not _matches(e, g)
        ]
        if len(got) != len(expected) or problems:
            names = [r.type_name.rpartition(".")[2] for r in got]
            raise AssertionError(
                f"expected {len(expected)} decisions, got {len(got)}: {names}\n"
                + "\n".join(problems)
            )

    def advance(self, delta: timedelta) -> list[Record]:
        """Move time forward, firing every timer that comes due, in due order."""
        target = self.now_ms + round(delta.total_seconds() * 1000)
        fired: list[Record] = []
        while True:
            state = self.state
            due = sorted(
                (t.due_ms, tid)
                for tid, t in (state.timers.items() if state else [])
                if t.due_ms <= target
            )
            if not due:
                break
            due_ms, tid = due[0]
            self.now_ms = max(self.now_ms, due_ms)
            rec = TimerFired(
                event_id=derive_id(self._pid(), tid, "fired"),
                process_id=self._pid(),
                correlation_id=state.correlation_id if state else self._pid(),
                time_ms=self.now_ms,
                timer_id=tid,
                due_ms=due_ms,
            )
            fired += [rec, *self.when(rec)]
        self.now_ms = target
        self.last = [r for r in fired if r.IS_DECISION]
        return self.last

    # ------------------------------------------------------------ inputs

    def complete(self, machine_id: str, result: Any = None) -> TaskCompleted:
        """The result of ``machine_id``'s pending task (or the compensation running on it)."""
        task = self._pending(machine_id)
        return TaskCompleted(**self._result_fields(task), result=result)

    def fail(
        self, machine_id: str, reason: str = "failed", *, retryable: bool = True
    ) -> TaskFailed:
        """A failure of ``machine_id``'s pending task."""
        task = self._pending(machine_id)
        return TaskFailed(**self._result_fields(task), reason=reason, retryable=retryable)

    def cancel(self, mode: CancelMode = "cooperative", reason: str = "") -> Record:
        """A cancel request for this process."""
        return cancel_request(self._pid(), self.now_ms, mode, reason)

    # ------------------------------------------------------------ looking

    @property
    def state(self) -> ProcessState | None:
        state = fold(self.history)
        return state if isinstance(state, ProcessState) else None

    def assert_replays(self) -> None:
        """The history so far replays to the same decisions."""
        divergence = replay_check(self.saga.decide, self.history)
        assert divergence is None, str(divergence)

    def _input(self, event: BaseModel) -> DomainEvent:
        pids = self.saga.route(event)
        if not pids:
            raise ValueError(f"saga {self.saga.name!r} has no correlation rule for {event!r}")
        self.process_id = self.process_id or pids[0]
        if self.process_id not in pids:
            raise ValueError(f"{event!r} belongs to {pids}, not to {self.process_id!r}")
        n = next(self._ids)
        return DomainEvent(
            event_id=derive_id("test-event", self.process_id, n),
            process_id=self.process_id,
            correlation_id=self.process_id,
            time_ms=self.now_ms,
            event_type=type(event).__name__,
            data=event.model_dump(mode="json"),
        )

    def _pid(self) -> str:
        if self.process_id is None:
            raise ValueError("no process yet: start with given(event)")
        return self.process_id

    def _pending(self, machine_id: str) -> Any:
        state = self.state
        if state is None:
            raise ValueError("no process yet")
        comp = state.compensation
        if comp is not None and comp.machine_id == machine_id:
            return comp
        machine = state.machines.get(machine_id)
        if machine is None or machine.task is None:
            raise ValueError(f"machine {machine_id!r} has no pending task")
        return machine.task

    def _result_fields(self, task: Any) -> dict[str, Any]:
        n = next(self._ids)
        return {
            "event_id": derive_id("test-result", task.task_id, task.attempt, n),
            "process_id": self._pid(),
            "correlation_id": self.state.correlation_id if self.state else self._pid(),
            "time_ms": self.now_ms,
            "machine_id": task.machine_id,
            "task_id": task.task_id,
            "task_type": task.task_type,
            "attempt": task.attempt,
        }


def _matches(expected: Expected, got: Record) -> bool:
    if isinstance(expected, Like):
        return expected.matches(got)
    if isinstance(expected, type):
        return isinstance(got, expected)
    return expected == got


def records_of(items: Iterable[Record], kind: type[Record]) -> list[Record]:
    """The records of one kind, in order."""
    return [r for r in items if isinstance(r, kind)]

"""Reject saga definitions that make no sense, naming the saga, machine and part."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

from procession._errors import DefinitionError

from ._dsl import Machine, Task, Transition
from ._joins import Join
from ._state import CLOSED

MachineList = Sequence[Machine]


def validate(
    saga: str,
    machines: MachineList,
    correlated: Iterable[type[Any]],
    starts: Iterable[type[Any]],
    joins: Iterable[Join],
) -> None:
    """Raise :class:`DefinitionError` at the first problem found."""

    def fail(machine: str | None, part: str, problem: str) -> DefinitionError:
        return DefinitionError(saga, machine, part, problem)

    if not saga or ":" in saga:
        raise fail(None, f"name {saga!r}", "must be non-empty and contain no ':'")
    if not machines:
        raise fail(None, "machines", "are missing: a saga needs at least one machine")
    _unique(saga, None, "machine", [m.name for m in machines])
    known = set(correlated)
    for event in starts:
        if event not in known:
            raise fail(None, f"start event {event.__name__!r}", "has no correlation rule")
    for m in machines:
        _check_machine(saga, m, known)
    names = {m.name: m for m in machines}
    for join in joins:
        for part in join.parts():
            owner = names.get(part.machine.name)
            if owner is not part.machine:
                raise fail(None, "join", f"names machine {part.machine.name!r} not in this saga")
            if part.target not in owner.states:
                raise fail(owner.name, "join", f"names unknown state {part.target.name!r}")


def _unique(saga: str, machine: str | None, what: str, names: list[str]) -> None:
    dup = [n for n, c in Counter(names).items() if c > 1]
    if dup:
        raise DefinitionError(saga, machine, f"{what} name {dup[0]!r}", "is used more than once")


def _check_machine(saga: str, m: Machine, correlated: set[type[Any]]) -> None:
    def fail(part: str, problem: str) -> DefinitionError:
        return DefinitionError(saga, m.name, part, problem)

    if not m.name or ":" in m.name:
        raise fail(f"name {m.name!r}", "must be non-empty and contain no ':'")
    _unique(saga, m.name, "state", [s.name for s in m.states])
    if any(s.name == CLOSED for s in m.states):
        raise fail(f"state name {CLOSED!r}", "is reserved for machines a join closed")
    _unique(saga, m.name, "transition", [t.name for t in m.transitions])
    initial = [s.name for s in m.states if s.initial]
    if len(initial) != 1:
        raise fail("initial state", f"must be exactly one, found {initial or 'none'}")
    if not any(s.final for s in m.states):
        raise fail("final state", "is missing: mark at least one state final=True")
    if m.per is not None and m.per.event not in correlated:
        raise fail(f"per-key event {m.per.event.__name__!r}", "has no correlation rule")
    for t in m.transitions:
        _check_transition(fail, m, t, correlated)
    reachable = _reachable(m)
    for s in m.states:
        if s.final and s.name not in reachable:
            raise fail(f"final state {s.name!r}", f"is unreachable from {m.initial.name!r}")
    _check_automatic_cycles(fail, m)


def _check_transition(fail: Any, m: Machine, t: Transition, correlated: set[type[Any]]) -> None:
    part = f"transition {t.name!r}"
    for role, state in (("source", t.source), ("target", t.target), ("on_failure", t.on_failure)):
        if state is not None and state not in m.states:
            raise fail(part, f"has unknown {role} state {state.name!r}")
    if t.source.final:
        raise fail(part, f"leaves final state {t.source.name!r}")
    triggers = [x for x in (t.on, t.after, t.when) if x is not None]
    if len(triggers) > 1:
        raise fail(part, "has more than one trigger (choose one of on=, after=, when=)")
    if t.on is not None and t.on not in correlated:
        raise fail(part, f"is triggered by {t.on.__name__!r}, which has no correlation rule")
    if t.after is not None and t.after.total_seconds() < 0:
        raise fail(part, "has a negative timer")
    if t.on_failure is not None and t.task is None:
        raise fail(part, "has on_failure but no task that could fail")
    if t.task is not None:
        _check_task(fail, part, t.task)


def _check_task(fail: Any, part: str, task: Task) -> None:
    if not task.type:
        raise fail(part, "has a task with an empty type")
    if task.timeout is not None and task.timeout.total_seconds() <= 0:
        raise fail(part, f"task {task.type!r} has a timeout that is not positive")
    if task.compensation is not None and task.compensation.compensation is not None:
        raise fail(part, f"compensation {task.compensation.type!r} has a compensation itself")


def _reachable(m: Machine) -> set[str]:
    seen, todo = {m.initial.name}, [m.initial.name]
    while todo:
        here = todo.pop()
        for t in m.transitions_from(here):
            for nxt in (t.target, t.on_failure):
                if nxt is not None and nxt.name not in seen:
                    seen.add(nxt.name)
                    todo.append(nxt.name)
    return seen


def _check_automatic_cycles(fail: Any, m: Machine) -> None:
    """Eventless transitions without a task that loop would never settle."""
    edges: dict[str, list[str]] = {}
    for t in m.transitions:
        if t.automatic and t.when is None and t.task is None:
            edges.setdefault(t.source.name, []).append(t.target.name)

    def visit(node: str, path: list[str]) -> None:
        for nxt in edges.get(node, []):
            if nxt in path:
                loop = " -> ".join([*path[path.index(nxt) :], nxt])
                raise fail("automatic transitions", f"loop without a task: {loop}")
            visit(nxt, [*path, nxt])

    for start in edges:
        visit(start, [start])


def check_task_types(saga: str, tasks: Iterable[Task]) -> dict[str, Task]:
    """One spec per task type: the workers look retry rules up by type."""
    found: dict[str, Task] = {}
    for task in tasks:
        other = found.setdefault(task.type, task)
        if other is not task and (other.retry != task.retry or other.mode != task.mode):
            raise DefinitionError(
                saga, None, f"task type {task.type!r}", "is declared with different retry or mode"
            )
    return found

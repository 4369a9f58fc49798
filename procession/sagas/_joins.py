"""Joins: conditions over several machines ("all instances Closed", "any 2 Done")."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ._state import ProcessState

if TYPE_CHECKING:
    from ._dsl import Machine, State


class Join:
    """A condition over machines; combine with ``&``."""

    def holds(self, state: ProcessState) -> bool:
        raise NotImplementedError

    def parts(self) -> tuple[InState, ...]:
        raise NotImplementedError

    def __and__(self, other: Join) -> Join:
        return AllOf((*self.parts(), *other.parts()))


@dataclass(frozen=True, eq=False)
class InState(Join):
    """``at_least`` (or all, when None) machines of ``machine`` settled in ``target``.

    With ``close_rest``, the transition that waits on this join closes the
    family's other machines when it fires: they leave the family (and its
    counts), and events for them are ignored from then on.
    """

    machine: Machine
    target: State
    at_least: int | None
    close_rest: bool = False

    def holds(self, state: ProcessState) -> bool:
        size = state.family_size.get(self.machine.name, 0)
        if not size:
            return False
        settled = state.settled(self.machine.name, self.target.name)
        return settled == size if self.at_least is None else settled >= self.at_least

    def parts(self) -> tuple[InState, ...]:
        return (self,)

    def describe(self) -> str:
        n = "all" if self.at_least is None else f"at least {self.at_least}"
        return f"{n} {self.machine.name} in {self.target.name}"


@dataclass(frozen=True, eq=False)
class AllOf(Join):
    """Every part holds."""

    conditions: tuple[InState, ...]

    def holds(self, state: ProcessState) -> bool:
        for c in self.conditions:  # noqa: SIM110 (all() of a generator costs more: hot)
            if not c.holds(state):
                return False
        return True

    def parts(self) -> tuple[InState, ...]:
        return self.conditions


def all_of(machine: Machine, state: State) -> Join:
    """Every machine of ``machine`` (one, or one per key) is settled in ``state``.

    Example: ``completes_when=all_of(instance, closing)``.
    """
    return InState(machine, state, None)


def any_of(machine: Machine, state: State, *, close_rest: bool = False) -> Join:
    """At least one machine of ``machine`` is settled in ``state``.

    ``close_rest=True``: when a transition waiting on this fires, the others close.
    """
    return InState(machine, state, 1, close_rest)


def at_least(count: int, machine: Machine, state: State, *, close_rest: bool = False) -> Join:
    """At least ``count`` machines of ``machine`` are settled in ``state``.

    Example: a 3-of-5 review that ignores the late approvals::

        waiting.to(merging, when=at_least(3, reviewer, approved, close_rest=True))
    """
    if count < 1:
        raise ValueError(f"at_least needs a count of at least 1, got {count}")
    return InState(machine, state, count, close_rest)

"""A budget for one decision, checked as the decision goes.

The core reads no clock: the runtime hands in a :class:`Budget` (a deadline on
its own clock) with :func:`within`, and the planner and engine call
:func:`check` as they emit records and visit machines. A decision that runs
over raises :class:`OverBudget`; the runtime parks that process and the
partition goes on. Without a budget (tests, replay) nothing is checked.

Example:
    >>> class Spent:
    ...     def spent(self) -> bool:
    ...         return True
    >>> with within(Spent()):
    ...     try:
    ...         check()
    ...     except OverBudget as exc:
    ...         print("over")
    over
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from contextvars import ContextVar, Token
from typing import Protocol


class Budget(Protocol):
    """What the runtime gives a decision: whether its time is spent."""

    def spent(self) -> bool: ...


class OverBudget(Exception):  # noqa: N818 - a signal the runtime catches, named for what it says
    """The decision ran past its budget; ``work`` counts the checks it passed."""

    def __init__(self, work: int) -> None:
        super().__init__(f"over its budget after {work:,} steps")
        self.work = work


_CURRENT: ContextVar[tuple[Budget, list[int]] | None] = ContextVar("budget", default=None)


def within(budget: Budget | None) -> AbstractContextManager[None]:
    """Run the decisions inside under ``budget`` (None: no budget)."""
    return _Within(budget)


class _Within:
    """:func:`within`'s context: a plain class, entered once per decision (a
    generator-based context manager cost the processor 2% of its decide path)."""

    __slots__ = ("_budget", "_token")
    _token: Token[tuple[Budget, list[int]] | None]

    def __init__(self, budget: Budget | None) -> None:
        self._budget = budget

    def __enter__(self) -> None:
        budget = self._budget
        self._token = _CURRENT.set(None if budget is None else (budget, [0]))

    def __exit__(self, *exc: object) -> None:
        _CURRENT.reset(self._token)


def check() -> None:
    """Raise :class:`OverBudget` when the current decision's budget is spent."""
    current = _CURRENT.get()
    if current is None:
        return
    budget, work = current
    work[0] += 1
    if budget.spent():
        raise OverBudget(work[0])

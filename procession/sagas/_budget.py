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

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
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


@contextmanager
def within(budget: Budget | None) -> Iterator[None]:
    """Run the decisions inside under ``budget`` (None: no budget)."""
    token = _CURRENT.set(None if budget is None else (budget, [0]))
    try:
        yield
    finally:
        _CURRENT.reset(token)


def check() -> None:
    """Raise :class:`OverBudget` when the current decision's budget is spent."""
    current = _CURRENT.get()
    if current is None:
        return
    budget, work = current
    work[0] += 1
    if budget.spent():
        raise OverBudget(work[0])

"""A saga written as a straight sequence of steps, compiled to a machine.

    checkout = (
        steps("checkout", starts=OrderPlaced, key=lambda e: e.order_id)
        .step(Task("ReserveStock", compensation=Task("ReleaseStock")))
        .step(Task("ChargeCard", compensation=Task("RefundCard")))
        .step(Task("Ship"))
        .build()
    )

Each step runs when the one before it has completed; when a step finally
fails, the completed steps are compensated in reverse order.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from ._dsl import Machine, State, Task, Transition
from ._saga import Saga


@dataclass(frozen=True)
class Steps:
    """A builder; every call returns a new builder (it is immutable)."""

    name: str
    starts: type[BaseModel]
    key: Callable[[Any], str]
    version: int = 1
    tasks: tuple[tuple[str, Task], ...] = field(default=())

    def step(self, task: Task, name: str | None = None) -> Steps:
        """Append a step running ``task``; its state is named ``name`` (default: the type)."""
        return Steps(
            self.name, self.starts, self.key, self.version, (*self.tasks, (name or task.type, task))
        )

    def build(self) -> Saga:
        """The saga: one machine ``steps`` going Start -> step 1 -> ... -> last step."""
        start = State("Start", initial=True)
        states = [start]
        transitions: list[Transition] = []
        for i, (name, task) in enumerate(self.tasks):
            here = State(name, final=i == len(self.tasks) - 1)
            trigger = self.starts if i == 0 else None
            transitions.append(states[-1].to(here, on=trigger, task=task))
            states.append(here)
        machine = Machine("steps", states=states, transitions=transitions)
        return Saga(
            self.name,
            version=self.version,
            machines=[machine],
            correlate={self.starts: self.key},
            starts=[self.starts],
        )


def steps(
    name: str, *, starts: type[BaseModel], key: Callable[[Any], str], version: int = 1
) -> Steps:
    """Start a step builder for saga ``name``, started by ``starts`` keyed by ``key``."""
    return Steps(name, starts, key, version)

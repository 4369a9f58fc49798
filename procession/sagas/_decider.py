"""The low-level API: a process written as a plain ``decide(state, input)``.

The DSL compiles to the same shape; the runtime accepts either through
:class:`ProcessDefinition`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Protocol

from pydantic import BaseModel

from procession._errors import DefinitionError
from procession.sagas._dsl import Task
from procession.sagas._fold import AnyState
from procession.topics._records import Record
from procession.topics._shapes import wrong_value

#: The records decided for one input, in order.
Decision = list[Record]
Decide = Callable[[AnyState, Record], Decision]
KeyRule = Callable[[Any], str | Iterable[str]]


def route(name: str, correlate: Mapping[type[BaseModel], KeyRule], event: BaseModel) -> list[str]:
    """Process ids of ``event`` under correlation rules: one key, or several (fan-out)."""
    rule = correlate.get(type(event))
    if rule is None:
        return []
    keys = rule(event)
    if isinstance(keys, str):
        return [f"{name}:{keys}"]
    return [f"{name}:{k}" for k in dict.fromkeys(keys)]


class ProcessDefinition(Protocol):
    """What the runtime needs of a process definition (a :class:`Saga` or a :class:`Decider`)."""

    name: str
    version: int
    tasks: dict[str, Task]
    event_types: dict[str, type[BaseModel]]

    def route(self, event: BaseModel) -> list[str]: ...

    def process_id(self, key: str) -> str: ...

    def decide(self, state: AnyState, record: Record) -> Decision: ...


class Decider:
    """A hand-written process: your ``decide`` plus correlation rules and task specs.

    Build decisions with :class:`procession.sagas.Planner` so their ids are
    derived and the state can be folded from them.

    Example::

        def decide(state, record):
            p = Planner(state, record)
            if state is None:
                p.emit(ProcessStarted, saga="ping", version=1, machines={"ping": "Sent"})
            ...
            return p.records

        ping = Decider("ping", decide, correlate={Ping: lambda e: e.id}, tasks=[Task("Pong")])
    """

    def __init__(
        self,
        name: str,
        decide: Decide,
        *,
        correlate: Mapping[type[BaseModel], KeyRule],
        tasks: Sequence[Task] = (),
        version: int = 1,
    ) -> None:
        if not name or ":" in name:
            raise DefinitionError(
                name, None, f"name {name!r}", "must be non-empty and contain no ':'"
            )
        self.name, self.version, self._decide = name, version, decide
        self.correlate = dict(correlate)
        self.event_types = {cls.__name__: cls for cls in self.correlate}
        self.tasks = {t.type: t for t in tasks}

    def __repr__(self) -> str:
        return f"Decider({self.name!r}, version={self.version})"

    def process_id(self, key: str) -> str:
        return f"{self.name}:{key}"

    def route(self, event: BaseModel) -> list[str]:
        return route(self.name, self.correlate, event)

    def decide(self, state: AnyState, record: Record) -> Decision:
        """``decide``'s records for ``record``; ``TypeError`` for one holding a field
        of another type than its own, which no reader would take back."""
        decisions = self._decide(state, record)
        for d in decisions:
            if (wrong := wrong_value(d)) is not None:
                raise TypeError(f"{self.name!r} decided a {d.type_name} whose {wrong}")
        return decisions

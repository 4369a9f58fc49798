"""A saga: machines, correlation rules and when the process is done."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from pydantic import BaseModel

from procession.topics._records import CancelMode, Record

from ._decider import Decision, KeyRule, route
from ._dsl import Machine, Task, UnknownPartError
from ._engine import Engine
from ._fold import AnyState
from ._joins import Join
from ._state import ProcessState
from ._validate import check_task_types, validate


class Saga:
    """A process definition built from machines; compiled to ``decide(state, input)``.

    Example (the seed scenario, see the README for the events):

        saga = Saga(
            "rebase",
            machines=[instance],
            correlate={RebaseFailed: lambda e: e.rebase_id},
            starts=[RebaseFailed],
            completes_when=all_of(instance, closing),
        )

    ``correlate`` maps each event type to the key(s) of the process(es) it
    belongs to: one key continues or starts one process, several fan out.
    Without ``completes_when`` the process completes when every machine is
    settled in a final state.
    """

    def __init__(
        self,
        name: str,
        *,
        machines: Sequence[Machine],
        correlate: Mapping[type[BaseModel], KeyRule],
        starts: Sequence[type[BaseModel]],
        version: int = 1,
        completes_when: Join | None = None,
        cancel_on: Mapping[type[BaseModel], CancelMode] | None = None,
    ) -> None:
        joins = [t.when for m in machines for t in m.transitions if t.when is not None]
        if completes_when is not None:
            joins.append(completes_when)
        validate(name, machines, [*correlate, *(cancel_on or {})], starts, joins)
        self.name = name
        self.version = version
        self.machines: tuple[Machine, ...] = tuple(machines)
        self.correlate: dict[type[BaseModel], KeyRule] = dict(correlate)
        self.completes_when = completes_when
        self.cancel_on: dict[type[BaseModel], CancelMode] = dict(cancel_on or {})
        self.event_types: dict[str, type[BaseModel]] = {
            cls.__name__: cls for cls in [*self.correlate, *self.cancel_on]
        }
        self.start_types: frozenset[str] = frozenset(cls.__name__ for cls in starts)
        self.tasks: dict[str, Task] = check_task_types(name, _tasks(self.machines))
        self._by_name = {m.name: m for m in self.machines}
        self._finals = frozenset(
            (m.name, s.name) for m in self.machines for s in m.states if s.final
        )
        self._engine = Engine(self)

    def __repr__(self) -> str:
        return f"Saga({self.name!r}, version={self.version})"

    def process_id(self, key: str) -> str:
        """The process id of the instance with business key ``key``.

        Example: ``rebase.process_id("42") == "rebase:42"``.
        """
        return f"{self.name}:{key}"

    def route(self, event: BaseModel) -> list[str]:
        """The process ids ``event`` belongs to (empty when this saga ignores it)."""
        return route(self.name, self.correlate, event)

    def decide(self, state: AnyState, record: Record) -> Decision:
        """The decisions for one input: pure, deterministic, no clock and no IO."""
        return self._engine.decide(state, record)

    def runs(self, version: int) -> bool:
        """Whether a process started on ``version`` can decide with this definition."""
        return version == self.version

    def machine_for(self, machine_id: str) -> Machine:
        """The machine definition a machine id belongs to (:class:`UnknownPartError` if none)."""
        found = self._by_name.get(machine_id.partition(":")[0])
        if found is None:
            raise UnknownPartError(f"no machine {machine_id.partition(':')[0]!r}")
        return found

    def complete(self, state: ProcessState) -> bool:
        """Whether a running process has reached its goal."""
        if self.completes_when is not None:
            return self.completes_when.holds(state)
        total = sum(state.family_size.values())
        done = sum(len(group) for key, group in state.ready.items() if key in self._finals)
        return total > 0 and done == total


def _tasks(machines: Iterable[Machine]) -> Iterable[Task]:
    for m in machines:
        for t in m.transitions:
            if t.task is not None:
                yield t.task
                if t.task.compensation is not None:
                    yield t.task.compensation

"""The declarative parts of a saga: states, transitions, tasks, machines.

working = State("Working", initial=True)
closing = State("Closing", final=True)
instance = Machine(
    "instance",
    states=[working, closing],
    transitions=[working.to(closing, on=RebaseFailed, task=Task("CloseInstance"))],
    per=ForEach(RebaseFailed, lambda e: e.instances),
)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from functools import cached_property
from typing import Any, Generic, TypeVar

from pydantic import BaseModel

from procession.topics._records import TaskMode

from ._joins import Join
from ._retry import RetryPolicy
from ._state import MachineState, ProcessState

E = TypeVar("E", bound=BaseModel)


class UnknownPartError(LookupError):
    """A machine, state or transition a definition does not have (a record of a
    process names it: the process was planned with another definition)."""


@dataclass(frozen=True)
class Context:
    """What guards and payload builders see: the process, the trigger and the machine.

    ``event`` is the domain event (a pydantic model) for event-triggered
    transitions, else the record that triggered the decision.
    """

    state: ProcessState
    event: Any
    machine_id: str
    event_types: dict[str, type[BaseModel]] = field(repr=False, default_factory=dict)

    @property
    def key(self) -> str | None:
        """The key of a machine created per key (``instance:A`` -> ``A``)."""
        _, _, key = self.machine_id.partition(":")
        return key or None

    @property
    def machine(self) -> MachineState | None:
        """This machine's state (None before it exists)."""
        return self.state.machines.get(self.machine_id)

    @property
    def result(self) -> Any:
        """The result of this machine's last completed task."""
        m = self.machine
        return m.result if m is not None else None

    def last(self, event_type: type[E]) -> E | None:
        """The last event of ``event_type`` this process received.

        Example: ``payload=lambda c: {"order": c.last(OrderPlaced).order_id}``.
        """
        data = self.state.context.get(event_type.__name__)
        return None if data is None else event_type.model_validate(data)


Payload = Callable[[Context], dict[str, Any]]
Guard = Callable[[Context], bool]


@dataclass(frozen=True, eq=False)
class Task:
    """A side effect a transition asks for, run inline or by a worker pool.

    Example:
        >>> t = Task("ChargeCard", retry=RetryPolicy(max_attempts=5),
        ...          compensation=Task("RefundCard"), timeout=timedelta(seconds=30))
        >>> t.type, t.mode
        ('ChargeCard', 'async')
    """

    type: str
    payload: Payload | None = None
    mode: TaskMode = "async"
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    timeout: timedelta | None = None
    compensation: Task | None = None

    def build_payload(self, ctx: Context) -> dict[str, Any]:
        """The request's payload: what ``payload`` makes of ``ctx`` ({} without one);
        ``TypeError`` unless a dict (a reader would refuse the request)."""
        if self.payload is None:
            return {}
        made = self.payload(ctx)
        if not isinstance(made, dict):
            kind = type(made).__name__
            raise TypeError(f"the payload of task {self.type!r} is a {kind}, not a dict")
        return made

    @cached_property
    def timeout_ms(self) -> int | None:
        """``timeout`` in whole milliseconds (None: no timeout)."""
        return None if self.timeout is None else round(self.timeout.total_seconds() * 1000)


@dataclass(frozen=True, eq=False)
class Transition:
    """A move from ``source`` to ``target``; built with :meth:`State.to`.

    Its trigger is one of: ``on`` (an event type), ``after`` (a durable timer
    armed on entering ``source``), ``when`` (a join over machines), or none
    (taken as soon as the machine is settled in ``source``).
    """

    source: State
    target: State
    on: type[BaseModel] | None = None
    after: timedelta | None = None
    when: Join | None = None
    guard: Guard | None = None
    task: Task | None = None
    on_failure: State | None = None
    name: str = ""

    @property
    def automatic(self) -> bool:
        return self.on is None and self.after is None

    def allows(self, ctx: Context) -> bool:
        return self.guard is None or bool(self.guard(ctx))


@dataclass(frozen=True, eq=False)
class State:
    """A named state of a machine.

    Example:
        >>> a, b = State("A", initial=True), State("B", final=True)
        >>> a.to(b).name
        'A->B'
    """

    name: str
    initial: bool = False
    final: bool = False

    def to(
        self,
        target: State,
        *,
        on: type[BaseModel] | None = None,
        after: timedelta | None = None,
        when: Join | None = None,
        guard: Guard | None = None,
        task: Task | None = None,
        on_failure: State | None = None,
        name: str | None = None,
    ) -> Transition:
        """A transition from this state to ``target``."""
        return Transition(
            self,
            target,
            on,
            after,
            when,
            guard,
            task,
            on_failure,
            name or f"{self.name}->{target.name}",
        )


@dataclass(frozen=True)
class ForEach(Generic[E]):
    """Create one machine per key listed in an event, e.g. one per environment.

    Example: ``ForEach(RebaseFailed, lambda e: e.instances)``.
    """

    event: type[E]
    keys: Callable[[E], Iterable[str]]


@dataclass(frozen=True, eq=False)
class Machine:
    """One state machine of a saga, or a family of them created per key."""

    name: str
    states: Sequence[State]
    transitions: Sequence[Transition]
    per: ForEach[Any] | None = None

    @cached_property
    def initial(self) -> State:
        return next(s for s in self.states if s.initial)

    @cached_property
    def timed(self) -> frozenset[str]:
        """The states with a transition taken after a delay (a timer armed on entry)."""
        return frozenset(t.source.name for t in self.transitions if t.after is not None)

    def state(self, name: str) -> State:
        """The state called ``name``; :class:`UnknownPartError` naming the machine if none."""
        found = next((s for s in self.states if s.name == name), None)
        if found is None:
            raise UnknownPartError(f"machine {self.name!r} has no state {name!r}")
        return found

    def transitions_from(self, state: str) -> tuple[Transition, ...]:
        return self._index[0].get(state, ())

    def transition(self, name: str) -> Transition:
        """The transition called ``name``; :class:`UnknownPartError` naming the machine if none."""
        t = self._index[1].get(name)
        if t is None:
            raise UnknownPartError(f"machine {self.name!r} has no transition {name!r}")
        return t

    @cached_property
    def _index(self) -> tuple[dict[str, tuple[Transition, ...]], dict[str, Transition]]:
        by_source: dict[str, tuple[Transition, ...]] = {}
        for t in self.transitions:
            by_source[t.source.name] = (*by_source.get(t.source.name, ()), t)
        return by_source, {t.name: t for t in self.transitions}

"""The state of one process instance, as folded from its records.

The state is the framework's, not the user's: machines and their states, the
task each machine waits for, durable timers, completed tasks to compensate.
It serialises to plain JSON types for the changelog.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from procession.topics._records import Outcome, TaskMode, TimerPurpose

Status = Literal["new", "running", "stopping", "completed", "failed", "cancelled"]
TERMINAL: frozenset[str] = frozenset({"completed", "failed", "cancelled"})


@dataclass(frozen=True, slots=True)
class PendingTask:
    """The task a machine (or the compensation in progress) waits for."""

    task_id: str
    task_type: str
    machine_id: str
    transition: str
    attempt: int
    mode: TaskMode
    in_flight: bool = True
    compensable: bool = False
    compensates: str | None = None
    source: str = ""
    payload: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class MachineState:
    """One state machine of a process: where it is and what it waits for.

    ``entries`` counts the states it has entered, so a timer armed on entry can
    tell whether the machine is still in that very visit of the state.
    """

    state: str
    entries: int = 1
    task: PendingTask | None = None
    result: Any = None

    @property
    def settled(self) -> bool:
        """True when no task of this machine is pending."""
        return self.task is None


@dataclass(frozen=True, slots=True)
class Timer:
    """A durable timer held in the state until it fires or goes stale."""

    due_ms: int
    purpose: TimerPurpose
    machine_id: str
    transition: str | None = None
    task_id: str | None = None
    attempt: int = 0


@dataclass(frozen=True, slots=True)
class CompletedTask:
    """A completed task that has a compensation, kept until the process ends."""

    machine_id: str
    transition: str
    task_id: str
    task_type: str
    result: Any = None


@dataclass(frozen=True, slots=True)
class Ended:
    """What the processor keeps of a finished process whose state was released.

    Use :meth:`of`: one shared marker per status, so a million finished
    processes cost a million dictionary slots and nothing more.

    Example:
        >>> Ended.of("completed") is Ended.of("completed")
        True
    """

    status: Status

    @staticmethod
    def of(status: Status) -> Ended:
        return _ENDED[status]


@dataclass(frozen=True, slots=True)
class Parked:
    """What the processor keeps of a process it set aside (see ``ProcessParked``).

    Inputs for it are held in its stream, not decided, until it is resumed;
    ``input_id`` names the first of them, at ``offset`` of the process topic
    (-1 where it is not known, e.g. a state that could not be restored).

    Example:
        >>> Parked("state over the changelog's limit", "evt-7", 42).offset
        42
    """

    reason: str
    input_id: str = ""
    offset: int = -1


_ENDED: dict[str, Ended] = {
    "completed": Ended("completed"),
    "failed": Ended("failed"),
    "cancelled": Ended("cancelled"),
}


@dataclass(slots=True)
class ProcessState:
    """Everything the decision needs to know about one process instance.

    Example:
        >>> s = ProcessState(process_id="rebase:1")
        >>> s.status, s.seq
        ('new', 0)
    """

    process_id: str
    saga: str = ""
    version: int = 0
    correlation_id: str = ""
    status: Status = "new"
    seq: int = 0
    machines: dict[str, MachineState] = field(default_factory=dict)
    timers: dict[str, Timer] = field(default_factory=dict)
    context: dict[str, dict[str, Any]] = field(default_factory=dict)
    seen: set[str] = field(default_factory=set)
    completed: list[CompletedTask] = field(default_factory=list)
    compensation: PendingTask | None = None
    outcome: Outcome | None = None
    reason: str = ""
    failed_compensations: list[str] = field(default_factory=list)

    @property
    def terminal(self) -> bool:
        """True once the process completed, failed or was cancelled."""
        return self.status in TERMINAL

    def clone(self) -> ProcessState:
        """A copy whose containers may be changed without touching this one."""
        return ProcessState(
            self.process_id,
            self.saga,
            self.version,
            self.correlation_id,
            self.status,
            self.seq,
            dict(self.machines),
            dict(self.timers),
            dict(self.context),
            set(self.seen),
            list(self.completed),
            self.compensation,
            self.outcome,
            self.reason,
            list(self.failed_compensations),
        )

    def pending(self) -> dict[str, PendingTask]:
        """Pending tasks by task id, machines' and the compensation's."""
        found = {m.task.task_id: m.task for m in self.machines.values() if m.task is not None}
        if self.compensation is not None:
            found[self.compensation.task_id] = self.compensation
        return found

    def in_flight(self) -> bool:
        """True while some task attempt may still report back."""
        return any(p.in_flight for p in self.pending().values())

    # ----------------------------------------------------------- serialisation

    def to_json(self) -> dict[str, Any]:
        """Plain JSON types, for the changelog."""
        return {
            "process_id": self.process_id,
            "saga": self.saga,
            "version": self.version,
            "correlation_id": self.correlation_id,
            "status": self.status,
            "seq": self.seq,
            "machines": {k: _machine_json(m) for k, m in self.machines.items()},
            "timers": {k: _plain(t) for k, t in self.timers.items()},
            "context": self.context,
            "seen": sorted(self.seen),
            "completed": [_plain(c) for c in self.completed],
            "compensation": _plain(self.compensation) if self.compensation else None,
            "outcome": self.outcome,
            "reason": self.reason,
            "failed_compensations": self.failed_compensations,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ProcessState:
        """The inverse of :meth:`to_json`."""
        comp = data.get("compensation")
        return cls(
            process_id=data["process_id"],
            saga=data["saga"],
            version=data["version"],
            correlation_id=data["correlation_id"],
            status=data["status"],
            seq=data["seq"],
            machines={k: _machine_from(m) for k, m in data["machines"].items()},
            timers={k: Timer(**t) for k, t in data["timers"].items()},
            context=data["context"],
            seen=set(data["seen"]),
            completed=[CompletedTask(**c) for c in data["completed"]],
            compensation=PendingTask(**comp) if comp else None,
            outcome=data["outcome"],
            reason=data["reason"],
            failed_compensations=list(data["failed_compensations"]),
        )


def _plain(obj: Any) -> dict[str, Any]:
    return {name: getattr(obj, name) for name in obj.__slots__}


def _machine_json(m: MachineState) -> dict[str, Any]:
    out = _plain(m)
    out["task"] = _plain(m.task) if m.task else None
    return out


def _machine_from(data: dict[str, Any]) -> MachineState:
    task = data.get("task")
    return MachineState(
        state=data["state"],
        entries=data["entries"],
        task=PendingTask(**task) if task else None,
        result=data.get("result"),
    )

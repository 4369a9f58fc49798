"""The history vocabulary: every record that can stand in a process's stream.

Inputs come from outside the decision (domain events, task results, timer
firings, cancel requests); decisions are what the processor records. Every
record carries its own id, the process's correlation id and the id of the
record that caused it. Decision ids are derived, never random.
"""

from __future__ import annotations

from dataclasses import field
from typing import Any, ClassVar, Literal

from procession._values import value

TaskMode = Literal["inline", "async"]
TimerPurpose = Literal["state", "retry", "task-timeout"]
CancelMode = Literal["hard", "cooperative"]
Outcome = Literal["failed", "cancelled"]


@value(kw_only=True)
class Record:
    """Fields every record has. ``time_ms`` is when the record was first written."""

    TYPE: ClassVar[str] = "procession.Record"
    VERSION: ClassVar[int] = 1
    IS_DECISION: ClassVar[bool] = False

    event_id: str
    process_id: str
    correlation_id: str
    causation_id: str | None = None
    time_ms: int = 0

    @property
    def type_name(self) -> str:
        return self.TYPE


# ----------------------------------------------------------------- inputs


@value(kw_only=True)
class DomainEvent(Record):
    """A user's domain event, routed into a process's stream.

    Example: ``DomainEvent(event_type="RebaseFailed", data={...}, event_id=..., ...)``.
    """

    TYPE: ClassVar[str] = "procession.DomainEvent"
    event_type: str
    data: dict[str, Any] = field(default_factory=dict)

    @property
    def type_name(self) -> str:
        return self.event_type


@value(kw_only=True)
class TaskCompleted(Record):
    """A task attempt finished; ``result`` is what the handler returned."""

    TYPE: ClassVar[str] = "procession.TaskCompleted"
    machine_id: str
    task_id: str
    task_type: str
    attempt: int
    result: Any = None


@value(kw_only=True)
class TaskFailed(Record):
    """A task attempt failed; the processor decides whether to retry."""

    TYPE: ClassVar[str] = "procession.TaskFailed"
    machine_id: str
    task_id: str
    task_type: str
    attempt: int
    reason: str
    error_type: str = ""
    retryable: bool = True


@value(kw_only=True)
class TimerFired(Record):
    """A durable timer came due (written by the processor's timer loop)."""

    TYPE: ClassVar[str] = "procession.TimerFired"
    timer_id: str
    due_ms: int


@value(kw_only=True)
class CancelRequested(Record):
    """Someone asked to cancel the process, hard or cooperatively (with compensations)."""

    TYPE: ClassVar[str] = "procession.CancelRequested"
    mode: CancelMode = "cooperative"
    reason: str = ""


@value(kw_only=True)
class ResumeRequested(Record):
    """An operator asks to resume a parked process: its held inputs are decided
    again, from the one it was parked on."""

    TYPE: ClassVar[str] = "procession.ResumeRequested"
    reason: str = ""


@value(kw_only=True)
class RetryRequested(Record):
    """An operator asks for the next attempt of a failed task now, instead of at
    its retry timer (one machine's, or every such task's when ``machine_id`` is "")."""

    TYPE: ClassVar[str] = "procession.RetryRequested"
    machine_id: str = ""
    reason: str = ""


# -------------------------------------------------------------- decisions


@value(kw_only=True)
class Decided(Record):
    """Base of decision records; ``seq`` is the position of the causing input."""

    IS_DECISION: ClassVar[bool] = True
    seq: int


@value(kw_only=True)
class ProcessStarted(Decided):
    """A process instance began, with its machines in their first states."""

    TYPE: ClassVar[str] = "procession.ProcessStarted"
    saga: str
    version: int
    machines: dict[str, str]


@value(kw_only=True)
class MachinesCreated(Decided):
    """Machines created at run time (e.g. one per environment listed in an event)."""

    TYPE: ClassVar[str] = "procession.MachinesCreated"
    machines: dict[str, str]


@value(kw_only=True)
class MachinesClosed(Decided):
    """Machines taken out of their family once a join over it was decided
    (``close_rest``): no more transitions, events for them are ignored."""

    TYPE: ClassVar[str] = "procession.MachinesClosed"
    machines: list[str]
    reason: str = ""


@value(kw_only=True)
class ProcessMigrated(Decided):
    """The process moved to another version of its saga, renaming what was renamed.

    ``states`` and ``transitions`` map machine (family) names to ``{old: new}``
    names; everything not named keeps its name. Written before the decisions
    of the input it was migrated on, which the new version decides.
    """

    TYPE: ClassVar[str] = "procession.ProcessMigrated"
    from_version: int
    to_version: int
    states: dict[str, dict[str, str]] = field(default_factory=dict)
    transitions: dict[str, dict[str, str]] = field(default_factory=dict)


@value(kw_only=True)
class TransitionPlanned(Decided):
    """A machine moved from one state to another; its task (if any) is to run.

    ``timeout_due_ms``: when this attempt of the task times out. The record arms
    that durable timer itself (older writers wrote a ``TimerScheduled`` of
    purpose ``task-timeout`` after it; both fold alike, see ``timeout_timer_id``).
    """

    TYPE: ClassVar[str] = "procession.TransitionPlanned"
    machine_id: str
    transition: str
    from_state: str
    to_state: str
    task_type: str | None = None
    mode: TaskMode | None = None
    task_id: str | None = None
    attempt: int = 1
    payload: dict[str, Any] = field(default_factory=dict)
    compensable: bool = False
    timeout_due_ms: int | None = None


@value(kw_only=True)
class TimerScheduled(Decided):
    """A durable timer: a state timeout, a retry backoff or a task timeout."""

    TYPE: ClassVar[str] = "procession.TimerScheduled"
    timer_id: str
    due_ms: int
    purpose: TimerPurpose
    machine_id: str
    transition: str | None = None
    task_id: str | None = None
    attempt: int = 0


@value(kw_only=True)
class ProcessStopping(Decided):
    """The process winds down: in-flight tasks settle, then compensations run."""

    TYPE: ClassVar[str] = "procession.ProcessStopping"
    outcome: Outcome
    reason: str


@value(kw_only=True)
class CompensationPlanned(Decided):
    """A completed task is to be undone (planned in reverse order of completion);
    ``timeout_due_ms`` as in :class:`TransitionPlanned`."""

    TYPE: ClassVar[str] = "procession.CompensationPlanned"
    machine_id: str
    transition: str
    task_id: str
    compensates: str
    task_type: str
    mode: TaskMode = "async"
    attempt: int = 1
    payload: dict[str, Any] = field(default_factory=dict)
    timeout_due_ms: int | None = None


@value(kw_only=True)
class ProcessCompleted(Decided):
    """The process reached its goal."""

    TYPE: ClassVar[str] = "procession.ProcessCompleted"


@value(kw_only=True)
class ProcessFailed(Decided):
    """The process ended in failure (after its compensations ran)."""

    TYPE: ClassVar[str] = "procession.ProcessFailed"
    reason: str


@value(kw_only=True)
class ProcessCancelled(Decided):
    """The process was cancelled."""

    TYPE: ClassVar[str] = "procession.ProcessCancelled"
    mode: CancelMode
    reason: str = ""


@value(kw_only=True)
class InputIgnored(Decided):
    """An input that changed nothing, and why (duplicate, stale attempt, ...)."""

    TYPE: ClassVar[str] = "procession.InputIgnored"
    input_type: str
    input_id: str
    reason: str


@value(kw_only=True)
class ProcessResumed(Decided):
    """A parked process was resumed: the inputs it held were decided again
    (their decisions stand before this record in the stream)."""

    TYPE: ClassVar[str] = "procession.ProcessResumed"
    reason: str = ""


@value(kw_only=True)
class ProcessParked(Decided):
    """The runtime set the process aside: an input could not be decided, or what
    it decided could not be written (a record over its topic's limit, a payload
    JSON cannot carry). Nothing of that input was applied; later inputs are
    held, not decided, until the process is resumed.

    The fold and the replay check stop at this record: the state is the one
    before ``input_id``.
    """

    TYPE: ClassVar[str] = "procession.ProcessParked"
    input_type: str
    input_id: str
    reason: str


TaskRequest = TransitionPlanned | CompensationPlanned
Input = (
    DomainEvent
    | TaskCompleted
    | TaskFailed
    | TimerFired
    | CancelRequested
    | ResumeRequested
    | RetryRequested
)

#: Record classes by wire type name.
RECORD_TYPES: dict[str, type[Record]] = {
    cls.TYPE: cls
    for cls in (
        DomainEvent,
        TaskCompleted,
        TaskFailed,
        TimerFired,
        CancelRequested,
        ResumeRequested,
        RetryRequested,
        ProcessStarted,
        MachinesCreated,
        MachinesClosed,
        ProcessMigrated,
        TransitionPlanned,
        TimerScheduled,
        ProcessStopping,
        CompensationPlanned,
        ProcessCompleted,
        ProcessFailed,
        ProcessCancelled,
        InputIgnored,
        ProcessParked,
        ProcessResumed,
    )
}


def is_task_request(record: Record) -> bool:
    """True for a decision that asks a task to run (a planned transition or compensation)."""
    if isinstance(record, TransitionPlanned):
        return record.task_type is not None
    return isinstance(record, CompensationPlanned)

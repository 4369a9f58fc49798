"""Print a process's stream as a readable timeline."""

from __future__ import annotations

from collections.abc import Sequence

from .sagas._fold import AnyState
from .sagas._state import Ended
from .topics._records import (
    CancelRequested,
    CompensationPlanned,
    DomainEvent,
    InputIgnored,
    MachinesClosed,
    MachinesCreated,
    ProcessCancelled,
    ProcessFailed,
    ProcessMigrated,
    ProcessParked,
    ProcessStarted,
    ProcessStopping,
    Record,
    TaskCompleted,
    TaskFailed,
    TimerFired,
    TimerScheduled,
    TransitionPlanned,
)


def describe(rec: Record, start_ms: int) -> str:
    """One line about one record."""
    if isinstance(rec, DomainEvent):
        return ", ".join(f"{k}={v}" for k, v in rec.data.items())
    if isinstance(rec, ProcessStarted):
        machines = ", ".join(f"{k}={v}" for k, v in rec.machines.items())
        return f"{rec.saga} v{rec.version}: {machines}"
    if isinstance(rec, MachinesCreated):
        return ", ".join(f"{k}={v}" for k, v in rec.machines.items())
    if isinstance(rec, TransitionPlanned):
        task = f"  task {rec.task_type} ({rec.mode}) attempt {rec.attempt}" if rec.task_type else ""
        return (
            f"{rec.machine_id}: {rec.from_state} -> {rec.to_state}{task}{_times_out(rec, start_ms)}"
        )
    if isinstance(rec, TaskCompleted):
        return f"{rec.machine_id}: {rec.task_type} attempt {rec.attempt} done"
    if isinstance(rec, TaskFailed):
        again = "retryable" if rec.retryable else "not retryable"
        what = f"{rec.machine_id}: {rec.task_type} attempt {rec.attempt}"
        return f"{what} failed ({again}): {rec.reason}"
    if isinstance(rec, TimerScheduled):
        what = f"{rec.purpose} for {rec.machine_id}"
        if rec.purpose == "retry":
            what = f"retry attempt {rec.attempt} of {rec.machine_id}"
        return f"{what}, due at +{rec.due_ms - start_ms}ms"
    if isinstance(rec, TimerFired):
        return f"due at +{rec.due_ms - start_ms}ms"
    if isinstance(rec, CompensationPlanned):
        what = (
            f"{rec.machine_id}: {rec.task_type} undoes {rec.compensates[:8]} attempt {rec.attempt}"
        )
        return what + _times_out(rec, start_ms)
    if isinstance(rec, ProcessStopping):
        return f"{rec.outcome}: {rec.reason}"
    if isinstance(rec, ProcessFailed | ProcessCancelled):
        return rec.reason
    if isinstance(rec, CancelRequested):
        return f"{rec.mode}: {rec.reason}"
    if isinstance(rec, InputIgnored):
        return f"{rec.input_type}: {rec.reason}"
    if isinstance(rec, MachinesClosed):
        return f"{', '.join(rec.machines)} ({rec.reason})"
    if isinstance(rec, ProcessMigrated):
        return f"v{rec.from_version} -> v{rec.to_version}"
    if isinstance(rec, ProcessParked):
        return f"{rec.input_type} {rec.input_id}: {rec.reason}"
    return ""


def _times_out(request: TransitionPlanned | CompensationPlanned, start_ms: int) -> str:
    due = request.timeout_due_ms
    return "" if due is None else f", times out at +{due - start_ms}ms"


def timeline(records: Sequence[Record]) -> str:
    """The stream, one line per record: time since the first, kind, type, details.

    Example:
        >>> timeline([])
        '(no records)'
    """
    if not records:
        return "(no records)"
    start = records[0].time_ms
    lines = []
    for rec in records:
        kind = "decision" if rec.IS_DECISION else "input"
        name = rec.type_name.rpartition(".")[2]
        lines.append(f"  +{rec.time_ms - start:>6}ms  {kind:<8}  {name:<20} {describe(rec, start)}")
    return "\n".join(lines)


def summary(state: AnyState) -> str:
    """The final state: status and each machine."""
    if state is None:
        return "no process"
    if isinstance(state, Ended):
        return f"status: {state.status}"
    lines = [f"status: {state.status}" + (f" ({state.reason})" if state.reason else "")]
    for mid, m in state.ordered():
        pending = f" (waiting for {m.task.task_type} attempt {m.task.attempt})" if m.task else ""
        lines.append(f"  {mid}: {m.state}{pending}")
    return "\n".join(lines)

"""Fold a process's records into its state.

The fold knows only the framework's records, never a saga definition, so the
state rebuilt from a stream does not change when decision code changes.
``classify`` says whether an input can change anything; the decision uses the
same function, so the two never disagree about what was ignored.
"""

from __future__ import annotations

from collections import defaultdict, deque
from collections.abc import Iterable, Sequence
from dataclasses import replace

from procession.topics._records import (
    CancelRequested,
    CompensationPlanned,
    DomainEvent,
    InputIgnored,
    MachinesClosed,
    MachinesCreated,
    ProcessCancelled,
    ProcessCompleted,
    ProcessFailed,
    ProcessMigrated,
    ProcessParked,
    ProcessResumed,
    ProcessStarted,
    ProcessStopping,
    Record,
    ResumeRequested,
    RetryRequested,
    TaskCompleted,
    TaskFailed,
    TimerFired,
    TimerScheduled,
    TransitionPlanned,
)

from ._ids import prefix
from ._state import (
    CLOSED,
    CompletedTask,
    Ended,
    MachineState,
    PendingTask,
    ProcessState,
    Timer,
    ended,
    family,
)

AnyState = ProcessState | Ended | None

#: Inputs decided once per event id; operators' requests; task results. Tuples,
#: not unions: ``A | B`` in a hot ``isinstance`` builds a union on every call.
_REQUESTS = (CancelRequested, ResumeRequested, RetryRequested)
_ONCE = (DomainEvent, *_REQUESTS)
_RESULTS = (TaskCompleted, TaskFailed)


def classify(state: AnyState, record: Record) -> str | None:
    """Why an input changes nothing, or None when it must be decided on.

    Example:
        >>> classify(None, TimerFired(event_id="t", process_id="p", correlation_id="p",
        ...                           timer_id="x", due_ms=0))
        'no process instance'
    """
    if isinstance(state, Ended) or (state is not None and state.terminal):
        return "after completion"  # spelled out: mypy narrows ``state`` by it
    if state is None or state.status == "new":
        return None if isinstance(record, DomainEvent) else "no process instance"
    if isinstance(record, _RESULTS):  # the commonest input first
        pending = state.pending_task(record.task_id)
        if pending is None:
            return "task not pending (duplicate or late result)"
        if pending.attempt != record.attempt:
            return f"stale attempt {record.attempt} (current attempt {pending.attempt})"
        if not pending.in_flight:
            return f"attempt {record.attempt} already failed or timed out"
        return None
    if isinstance(record, _ONCE):
        return "duplicate" if record.event_id in state.seen else None
    if isinstance(record, TimerFired):
        return None if record.timer_id in state.timers else "stale timer"
    return f"not an input: {record.type_name}"


def evolve(state: AnyState, record: Record) -> AnyState:
    """The state after one record; the given state is left untouched.

    Example:
        >>> evolve(None, ProcessStarted(event_id="e", process_id="p", correlation_id="p",
        ...        seq=1, saga="s", version=1, machines={"m": "A"})).status
        'running'
    """
    if isinstance(state, Ended):
        return state
    if record.IS_DECISION:
        if isinstance(record, InputIgnored):
            return None if state is None or state.status == "new" else state
        new = state.clone() if state is not None else ProcessState(record.process_id)
        apply_decision(new, record)
        return new
    if state is not None and state.terminal:
        return state
    new = state.clone() if state is not None else ProcessState(record.process_id)
    apply_input(new, record)
    return new


def evolve_all(state: AnyState, records: Iterable[Record]) -> AnyState:
    """The state after several records (an input and its decisions), copied once.

    Equal to applying :func:`evolve` record by record.

    Example:
        >>> evolve_all(None, []) is None
        True
    """
    it = iter(records)
    for rec in it:
        if isinstance(state, ProcessState) and state.status != "new" and not state.terminal:
            state = state.clone()
            _apply(state, rec)
            for more in it:
                _apply(state, more)
            return state
        state = evolve(state, rec)
    return state


def after_decisions(before: AnyState, record: Record, decisions: Sequence[Record]) -> AnyState:
    """The state after ``record`` and the ``decisions`` taken on it: equal to
    ``evolve_all(before, [record, *decisions])``.

    A planner has already applied its decisions to a scratch copy of the state;
    that copy is the answer when the process was new or running and no input
    was ignored, so the decisions are not applied a second time.

    Example:
        >>> after_decisions(None, DomainEvent(event_id="e", process_id="p",
        ...     correlation_id="c", event_type="Go", time_ms=1), []).seq
        1
    """
    state = getattr(decisions, "state", None)
    if (
        isinstance(state, ProcessState)
        and getattr(decisions, "applied", -1) == len(decisions)
        and getattr(decisions, "ignored", True) is False
        and (before is None or (isinstance(before, ProcessState) and not before.terminal))
    ):
        return state
    return evolve_all(before, [record, *decisions])


def _apply(state: ProcessState, record: Record) -> None:
    if record.IS_DECISION:
        apply_decision(state, record)
    elif not state.terminal:
        apply_input(state, record)


def apply_input(state: ProcessState, record: Record) -> None:
    """Apply an input to ``state`` in place (the fold's step for inputs)."""
    reason = classify(state, record)
    state.seq += 1
    if reason is not None:
        return
    if isinstance(record, DomainEvent):
        state.add_seen(record.event_id)
        state.set_context(record.event_type, record.data)
        if not state.correlation_id:
            state.correlation_id = record.correlation_id
    elif isinstance(record, _REQUESTS):
        state.add_seen(record.event_id)
    elif isinstance(record, TimerFired):
        timer = state.drop_timer(record.timer_id)
        if timer.purpose == "task-timeout":
            _stop_attempt(state, timer.task_id or "")
    elif isinstance(record, TaskCompleted):
        _drop_task_timers(state, record.task_id)
        _settle(state, record)
    elif isinstance(record, TaskFailed):
        _drop_task_timers(state, record.task_id)
        _stop_attempt(state, record.task_id)


def apply_decision(state: ProcessState, record: Record) -> None:
    """Apply a decision to ``state`` in place (the fold's step for decisions)."""
    if isinstance(record, TransitionPlanned):  # the commonest decision first
        _apply_transition(state, record)
    elif isinstance(record, ProcessStarted):
        state.saga, state.version, state.status = record.saga, record.version, "running"
        state.correlation_id = record.correlation_id
        for mid, first in record.machines.items():
            state.put_machine(mid, MachineState(first))
    elif isinstance(record, MachinesCreated):
        for mid, first in record.machines.items():
            state.put_machine(mid, MachineState(first))
    elif isinstance(record, TimerScheduled):
        state.add_timer(
            record.timer_id,
            Timer(
                record.due_ms,
                record.purpose,
                record.machine_id,
                record.transition,
                record.task_id,
                record.attempt,
            ),
        )
    elif isinstance(record, CompensationPlanned):
        top = state.last_completed()
        if top is not None and top.task_id == record.compensates:
            state.pop_completed()
        _give_up_compensation(state, keep=record.task_id)
        _drop_retry_timers(state, record.machine_id, record.task_id)
        state.set_compensation(
            PendingTask(
                record.task_id,
                record.task_type,
                record.machine_id,
                record.transition,
                record.attempt,
                record.mode,
                compensates=record.compensates,
                payload=record.payload,
            )
        )
        _arm_timeout(state, record)
    elif isinstance(record, ProcessStopping):
        _begin_stopping(state, record)
    elif isinstance(record, ProcessMigrated):
        migrate(state, record)
    elif isinstance(record, MachinesClosed):
        for mid in record.machines:
            m = state.machines[mid]
            for tid, _ in state.timers_of_machine(mid):
                state.drop_timer(tid)
            state.put_machine(mid, MachineState(CLOSED, m.entries + 1, None, m.result))
    elif isinstance(record, ProcessCompleted):
        state.status = "completed"
    elif isinstance(record, ProcessFailed):
        state.status, state.reason = "failed", record.reason
    elif isinstance(record, ProcessCancelled):
        state.status, state.reason = "cancelled", record.reason
    if state.terminal:
        _give_up_compensation(state, keep=None)
        state.clear_timers()


def migrate(state: ProcessState, record: ProcessMigrated) -> None:
    """Apply a migration's renames and its new version to ``state`` in place
    (O(machines of the renamed families), once)."""
    state.version = record.to_version
    states, transitions = record.states, record.transitions

    def task_of(task: PendingTask | None) -> PendingTask | None:
        if task is None:
            return None
        fam = family(task.machine_id)
        names = transitions.get(fam, {})
        source = states.get(fam, {}).get(task.source, task.source)
        return replace(task, transition=names.get(task.transition, task.transition), source=source)

    for fam in {*states, *transitions}:
        for mid in [m for m in state.order if family(m) == fam]:
            m = state.machines[mid]
            renamed = states.get(fam, {}).get(m.state, m.state)
            state.put_machine(mid, replace(m, state=renamed, task=task_of(m.task)))
        for tid, t in list(state.timers.items()):
            if family(t.machine_id) == fam and t.transition is not None:
                new = transitions.get(fam, {}).get(t.transition, t.transition)
                state.add_timer(tid, replace(t, transition=new))
        for i, done in list(state.completed.items()):
            if family(done.machine_id) == fam:
                new = transitions.get(fam, {}).get(done.transition, done.transition)
                state.completed = state.completed.set(i, replace(done, transition=new))
                state.touch(f"k:{i}")
    state.set_compensation(task_of(state.compensation))


def _give_up_compensation(state: ProcessState, keep: str | None) -> None:
    """A compensation replaced by another (or by the end) without completing failed."""
    comp = state.compensation
    if comp is not None and comp.task_id != keep:
        state.failed_compensations = (*state.failed_compensations, comp.task_type)
        state.set_compensation(None)


def _apply_transition(state: ProcessState, record: TransitionPlanned) -> None:
    machine = state.machines.get(record.machine_id)
    if machine is None:
        machine = MachineState(record.from_state, entries=0)
    task = None
    if record.task_type is not None and record.task_id is not None:
        retry = record.attempt > 1 and machine.task is not None
        task = PendingTask(
            record.task_id,
            record.task_type,
            record.machine_id,
            record.transition,
            record.attempt,
            record.mode or "async",
            compensable=record.compensable,
            source=machine.task.source if retry and machine.task else record.from_state,
            payload=record.payload,
        )
        if retry:  # the same visit of the state, another attempt
            _drop_retry_timers(state, record.machine_id, record.task_id)
            state.put_machine(record.machine_id, replace(machine, task=task))
            _arm_timeout(state, record)
            return
    armed = state.timers_of.get(record.machine_id)
    if armed:  # the machine leaves its state: its state timers and its task's go
        old = machine.task.task_id if machine.task else None
        for tid in armed:
            if (t := state.timers[tid].task_id) is None or t == old:
                state.drop_timer(tid)
    state.put_machine(
        record.machine_id, MachineState(record.to_state, machine.entries + 1, task, machine.result)
    )
    _arm_timeout(state, record)


def timeout_timer_id(request: TransitionPlanned | CompensationPlanned) -> str:
    """The id of the task-timeout timer a task request arms (``timeout_due_ms``):
    the id the separate ``TimerScheduled`` of older streams had, so a stream of
    either form folds to the same state and its ``TimerFired`` finds its timer.

    Example:
        >>> from procession.sagas import derive_id
        >>> from procession.topics import TransitionPlanned
        >>> tp = TransitionPlanned(event_id="d1", process_id="p", correlation_id="p",
        ...     causation_id="e1", seq=1, machine_id="m", transition="go",
        ...     from_state="A", to_state="B", task_id="t1", timeout_due_ms=30_000)
        >>> timeout_timer_id(tp) == derive_id("p", "e1", 1, "m", "timeout:t1:1")
        True
    """
    return prefix(request.process_id, request.causation_id, request.seq).derive(
        request.machine_id, f"timeout:{request.task_id}:{request.attempt}"
    )


def _arm_timeout(state: ProcessState, request: TransitionPlanned | CompensationPlanned) -> None:
    if request.timeout_due_ms is None:
        return
    timer = Timer(
        request.timeout_due_ms,
        "task-timeout",
        request.machine_id,
        None,
        request.task_id,
        request.attempt,
    )
    state.add_timer(timeout_timer_id(request), timer)


def _settle(state: ProcessState, record: TaskCompleted) -> None:
    comp = state.compensation
    if comp is not None and comp.task_id == record.task_id:
        state.set_compensation(None)
        return
    machine = state.machines[record.machine_id]
    task = machine.task
    if task is not None and task.compensable:
        state.push_completed(
            CompletedTask(
                record.machine_id, task.transition, task.task_id, task.task_type, record.result
            )
        )
    state.put_machine(
        record.machine_id, MachineState(machine.state, machine.entries, None, record.result)
    )


def _stop_attempt(state: ProcessState, task_id: str) -> None:
    """The current attempt of ``task_id`` can no longer report back."""
    comp = state.compensation
    if comp is not None and comp.task_id == task_id:
        state.set_compensation(replace(comp, in_flight=False))
        return
    mid = state.tasks.get(task_id)
    if mid is None:
        return
    machine = state.machines[mid]
    assert machine.task is not None
    if state.status == "stopping":  # no retries while winding down
        state.put_machine(mid, replace(machine, task=None))
    else:
        state.put_machine(mid, replace(machine, task=replace(machine.task, in_flight=False)))


def _drop_retry_timers(state: ProcessState, machine_id: str, task_id: str) -> None:
    """A new attempt of ``task_id`` was planned: a retry timer still armed for it
    (an operator's retry came first) is stale."""
    for tid, t in state.timers_of_machine(machine_id):
        if t.purpose == "retry" and t.task_id == task_id:
            state.drop_timer(tid)


def _drop_task_timers(state: ProcessState, task_id: str) -> None:
    task = state.pending_task(task_id)
    if task is None:
        return
    for tid in state.timers_of.get(task.machine_id, ()):
        if state.timers[tid].task_id == task_id:
            state.drop_timer(tid)


def _begin_stopping(state: ProcessState, record: ProcessStopping) -> None:
    """Wind down: tasks that cannot report back are dropped, and every timer
    but the timeouts of attempts still in flight (O(pending + timers), once)."""
    state.status, state.outcome, state.reason = "stopping", record.outcome, record.reason
    for mid in list(state.tasks.values()):
        machine = state.machines[mid]
        if machine.task is not None and not machine.task.in_flight:
            state.put_machine(mid, replace(machine, task=None))
    live = {p.task_id for p in state.pending().values() if p.in_flight}
    for tid, t in list(state.timers.items()):
        if t.purpose != "task-timeout" or t.task_id not in live:
            state.drop_timer(tid)


def fold(history: Iterable[Record]) -> AnyState:
    """Rebuild a process's state from its stream, in the order it was decided.

    Decisions are applied right after the input that caused them (matched by
    causation id and ``seq``), wherever other writers' records fell between.

    Example:
        >>> fold([]) is None
        True
    """
    state: AnyState = None
    for _, state in replay_steps(history):  # noqa: B007 - the last step's state is the result
        pass
    return state


def replay_steps(
    history: Iterable[Record],
) -> Iterable[tuple[tuple[Record, AnyState, list[Record]], AnyState]]:
    """Yield ``((input, state_before, recorded_decisions), state_after)`` per input.

    A process the runtime parked is replayed up to, not including, the input
    it could not decide or write.
    """
    records = _before_parking(list(history))
    # Decision batches by (cause, seq). The same input seen twice where nothing
    # counts inputs (no instance, or ended) gets batches with equal derived ids:
    # a repeat of a batch's first id starts the next batch.
    caused: dict[tuple[str | None, int], deque[list[Record]]] = defaultdict(deque)
    for rec in records:
        if rec.IS_DECISION:
            batches = caused[(rec.causation_id, rec.seq)]  # type: ignore[attr-defined]
            if not batches or batches[-1][0].event_id == rec.event_id:
                batches.append([])
            batches[-1].append(rec)
    state: AnyState = None
    for rec in records:
        if rec.IS_DECISION:
            continue
        before = state
        state = evolve(state, rec)
        mine = caused.get((rec.event_id, _input_seq(before, state)))
        decisions = mine.popleft() if mine else []
        for d in decisions:
            state = evolve(state, d)
        yield (rec, before, decisions), state


def _before_parking(records: list[Record]) -> list[Record]:
    """The records up to a parking that no resume followed (all of them if none)."""
    resumed = max((i for i, r in enumerate(records) if isinstance(r, ProcessResumed)), default=-1)
    at = next(
        (i for i, r in enumerate(records) if i > resumed and isinstance(r, ProcessParked)), None
    )
    if at is None:
        return records
    parked: ProcessParked = records[at]  # type: ignore[assignment]
    kept = records[:at]
    for i in range(len(kept) - 1, -1, -1):  # the input it names is the last one with its id
        if not kept[i].IS_DECISION and kept[i].event_id == parked.input_id:
            # it, and the inputs after it, were held: none of them was decided
            return [r for j, r in enumerate(kept) if j < i or r.IS_DECISION]
    return kept


def _input_seq(before: AnyState, after: AnyState) -> int:
    if ended(before):
        return 0
    return after.seq if isinstance(after, ProcessState) else 1

"""The decision of a DSL saga: given the state and one input, what happens next."""

from __future__ import annotations

import heapq
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ValidationError

from procession._errors import DecodeError, DefinitionMismatchError
from procession.topics._records import (
    CancelMode,
    CancelRequested,
    CompensationPlanned,
    DomainEvent,
    InputIgnored,
    MachinesClosed,
    MachinesCreated,
    Outcome,
    ProcessCancelled,
    ProcessCompleted,
    ProcessFailed,
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

from ._budget import check
from ._dsl import Context, Machine, Task, Transition, UnknownPartError
from ._fold import AnyState, classify
from ._joins import Join
from ._planner import Planner
from ._state import PendingTask, ProcessState, family

if TYPE_CHECKING:
    from ._saga import Saga

#: No transition open (a group not looked at yet).
_SHUT: frozenset[Transition] = frozenset()

#: Eventless transitions one machine takes in one decision before the saga is
#: judged to loop.
MAX_STEPS = 1_000


class Engine:
    """Runs one saga's rules against a planner."""

    def __init__(self, saga: Saga) -> None:
        self.saga = saga
        #: Eventless transitions by (machine family, source state).
        self._auto: dict[tuple[str, str], tuple[Transition, ...]] = {}
        for m in saga.machines:
            for t in m.transitions:
                if t.automatic:
                    key = (m.name, t.source.name)
                    self._auto[key] = (*self._auto.get(key, ()), t)
        #: (family, state) pairs with a transition on an event class, filled on use.
        self._on: dict[type[BaseModel], list[tuple[str, str]]] = {}
        #: Whether any state arms a timer on entry (most sagas: none).
        self._timed = any(m.timed for m in saga.machines)

    def decide(
        self, state: AnyState, record: Record, planner: Planner | None = None
    ) -> list[Record]:
        """The decisions for ``record``; ``planner`` continues one that already holds
        decisions of this input (a migration), ``state`` being the state it migrated."""
        saga = self.saga
        try:
            return self._decide(state, record, planner)
        except UnknownPartError as exc:
            raise DefinitionMismatchError(
                record.process_id, saga.name, saga.version, str(exc)
            ) from exc

    def _decide(self, state: AnyState, record: Record, planner: Planner | None) -> list[Record]:
        reason = classify(state, record)
        starting = state is None or (isinstance(state, ProcessState) and state.status == "new")
        if reason is None and starting and not self._starts(record):
            reason = "no process instance"
        p = planner or Planner(state, record)
        if reason is not None:
            p.emit(
                InputIgnored, input_type=record.type_name, input_id=record.event_id, reason=reason
            )
            return p.records
        if isinstance(state, ProcessState) and not starting and state.version != self.saga.version:
            raise DefinitionMismatchError(
                state.process_id,
                self.saga.name,
                state.version,
                f"this definition is v{self.saga.version} and no other version is registered",
            )
        assert isinstance(state, ProcessState) or starting
        if isinstance(record, TaskCompleted):
            pass  # the commonest input: applied by the planner; progress does the rest
        elif isinstance(record, DomainEvent):
            self._on_event(p, record, starting)
        elif isinstance(record, TaskFailed):
            self._on_failure(p, state, record.task_id, record.retryable, record.reason)
        elif isinstance(record, TimerFired):
            self._on_timer(p, state, record)
        elif isinstance(record, CancelRequested):
            self._cancel(p, record.mode, record.reason or "cancel requested")
        elif isinstance(record, ResumeRequested):
            p.emit(ProcessResumed, reason=record.reason)
        elif isinstance(record, RetryRequested):
            self._retry_now(p, record)
        self._progress(p)
        return p.records

    # ------------------------------------------------------------- triggers

    def _starts(self, record: Record) -> bool:
        return isinstance(record, DomainEvent) and record.event_type in self.saga.start_types

    def _on_event(self, p: Planner, record: DomainEvent, starting: bool) -> None:
        event = self._parse(record)
        if not starting and p.state.status != "running":
            p.emit(
                InputIgnored,
                input_type=record.event_type,
                input_id=record.event_id,
                reason="the process is winding down",
            )
            return
        created: dict[str, str] = {}
        for m in self.saga.machines:
            if m.per is None:
                if starting:
                    created[m.name] = m.initial.name
            elif isinstance(event, m.per.event):
                for key in m.per.keys(event):
                    mid = f"{m.name}:{key}"
                    if mid not in p.state.machines and mid not in created:
                        created[mid] = m.initial.name
        if starting:
            p.emit(ProcessStarted, saga=self.saga.name, version=self.saga.version, machines=created)
        elif created:
            p.emit(MachinesCreated, machines=created)
        for mid in created:
            self._arm_state_timers(p, mid)
        mode = self.saga.cancel_on.get(type(event))
        if mode is not None:
            self._cancel(p, mode, f"{record.event_type} received")
            return
        fired = 0
        for mid in self._listening(p.state, type(event)):
            check()
            for t in self._machine(mid).transitions_from(p.state.machines[mid].state):
                if t.on is not None and isinstance(event, t.on):
                    ctx = self._ctx(p, event, mid)
                    if t.allows(ctx):
                        self._plan(p, mid, t, ctx)
                        fired += 1
                        break
        if not fired and not created and not starting:
            p.emit(
                InputIgnored,
                input_type=record.event_type,
                input_id=record.event_id,
                reason="no transition for this event in the current states",
            )

    def _on_timer(self, p: Planner, before: AnyState, record: TimerFired) -> None:
        assert isinstance(before, ProcessState)
        timer = before.timers[record.timer_id]
        if timer.purpose == "state":
            t = self._machine(timer.machine_id).transition(timer.transition or "")
            ctx = self._ctx(p, record, timer.machine_id)
            if t.allows(ctx):
                self._plan(p, timer.machine_id, t, ctx)
        elif timer.purpose == "retry":
            task = p.state.pending_task(timer.task_id or "")
            if task is not None:
                self._replan(p, timer.machine_id, task, timer.attempt)
        else:
            task = before.pending_task(timer.task_id or "")
            assert task is not None, f"timer {record.timer_id} for a task not pending"
            spec = self._task_spec(timer.machine_id, task)
            seconds = spec.timeout.total_seconds() if spec.timeout else 0
            self._on_failure(p, before, task.task_id, True, f"timed out after {seconds:g}s")

    def _on_failure(
        self, p: Planner, before: AnyState, task_id: str, retryable: bool, reason: str
    ) -> None:
        assert isinstance(before, ProcessState)
        task = before.pending_task(task_id)
        assert task is not None, f"result of task {task_id}, not pending"
        if before.status == "stopping" and task.compensates is None:
            return  # winding down: a failed task simply has nothing to compensate
        mid = task.machine_id
        spec = self._task_spec(mid, task)
        if retryable and task.attempt < spec.retry.max_attempts:
            delay = spec.retry.delay_ms(task.task_id, task.attempt)
            p.emit(
                TimerScheduled,
                timer_id=p.task_id(mid, f"retry:{task.task_id}:{task.attempt + 1}"),
                due_ms=p.now_ms + delay,
                purpose="retry",
                machine_id=mid,
                transition=task.transition,
                task_id=task.task_id,
                attempt=task.attempt + 1,
            )
            return
        what = f"{spec.type} on {mid} failed after {task.attempt} attempt(s): {reason}"
        if task.compensates is not None:
            return  # _progress moves on to the next compensation and remembers this one
        t = self._machine(mid).transition(task.transition)
        if t.on_failure is not None:
            machine = p.state.machines[mid]
            p.emit(
                TransitionPlanned,
                machine_id=mid,
                transition=f"{t.name}:failed",
                from_state=machine.state,
                to_state=t.on_failure.name,
            )
            self._arm_state_timers(p, mid)
            return
        self._stop(p, "failed", what)

    def _retry_now(self, p: Planner, record: RetryRequested) -> None:
        """Plan now the next attempt of the failed tasks waiting for a retry timer."""
        s = p.state
        waiting = [t for t in s.pending().values() if not t.in_flight]
        if record.machine_id:
            waiting = [t for t in waiting if t.machine_id == record.machine_id]
        if s.status not in ("running", "stopping") or not waiting:
            why = "no failed task waits for a retry" if waiting == [] else "not running"
            why = "not running" if s.status not in ("running", "stopping") else why
            p.emit(InputIgnored, input_type=record.type_name, input_id=record.event_id, reason=why)
            return
        for task in sorted(waiting, key=lambda t: s.order.get(t.machine_id, -1)):
            self._replan(p, task.machine_id, task, task.attempt + 1)

    def _cancel(self, p: Planner, mode: CancelMode, reason: str) -> None:
        if mode == "hard":
            p.emit(ProcessCancelled, mode="hard", reason=reason)
        elif p.state.status == "running":
            self._stop(p, "cancelled", reason)

    def _stop(self, p: Planner, outcome: Outcome, reason: str) -> None:
        p.emit(ProcessStopping, outcome=outcome, reason=reason)

    # ------------------------------------------------------------- planning

    def _plan(self, p: Planner, mid: str, t: Transition, ctx: Context) -> None:
        source, task = p.state.machines[mid].state, t.task
        if task is None:
            p.emit(
                TransitionPlanned,
                machine_id=mid,
                transition=t.name,
                from_state=source,
                to_state=t.target.name,
            )
        else:
            p.emit(
                TransitionPlanned,
                machine_id=mid,
                transition=t.name,
                from_state=source,
                to_state=t.target.name,
                task_type=task.type,
                mode=task.mode,
                task_id=p.task_id(mid, t.name),
                payload=task.build_payload(ctx),
                compensable=task.compensation is not None,
                timeout_due_ms=_due(p, task),
            )
        self._arm_state_timers(p, mid)
        if t.when is not None:
            self._close_rest(p, t.when)

    def _close_rest(self, p: Planner, join: Join) -> None:
        """Close the machines a fired ``close_rest`` join leaves behind (once)."""
        for part in join.parts():
            if not part.close_rest:
                continue
            fam, target = part.machine.name, part.target.name
            done = p.state.ready.get((fam, target))
            rest = [
                mid
                for (f, _), group in p.state.members.items()
                if f == fam
                for mid in group
                if done is None or mid not in done
            ]
            if rest:
                rest.sort(key=p.state.order.__getitem__)
                p.emit(MachinesClosed, machines=rest, reason=f"{part.describe()}: decided")

    def _replan(self, p: Planner, mid: str, task: PendingTask, attempt: int) -> None:
        spec = self._task_spec(mid, task)
        if task.compensates is not None:
            p.emit(
                CompensationPlanned,
                machine_id=mid,
                transition=task.transition,
                task_id=task.task_id,
                compensates=task.compensates,
                task_type=task.task_type,
                mode=task.mode,
                attempt=attempt,
                payload=task.payload,
                timeout_due_ms=_due(p, spec),
            )
        else:
            machine = p.state.machines[mid]
            p.emit(
                TransitionPlanned,
                machine_id=mid,
                transition=task.transition,
                from_state=task.source,
                to_state=machine.state,
                task_type=task.task_type,
                mode=task.mode,
                task_id=task.task_id,
                attempt=attempt,
                payload=task.payload,
                compensable=task.compensable,
                timeout_due_ms=_due(p, spec),
            )

    def _arm_state_timers(self, p: Planner, mid: str) -> None:
        if not self._timed:
            return
        machine, spec = p.state.machines[mid], self._machine(mid)
        if machine.state not in spec.timed:
            return
        for t in spec.transitions_from(machine.state):
            if t.after is not None:
                p.emit(
                    TimerScheduled,
                    timer_id=p.task_id(mid, f"after:{t.name}:{machine.entries}"),
                    due_ms=p.now_ms + round(t.after.total_seconds() * 1000),
                    purpose="state",
                    machine_id=mid,
                    transition=t.name,
                    attempt=machine.entries,
                )

    # ------------------------------------------------------------- progress

    def _progress(self, p: Planner) -> None:
        """Take eventless and join transitions, then complete, compensate or end."""
        if p.state.status == "running":
            if self._auto:
                self._automatic(p)
            if self.saga.complete(p.state):
                p.emit(ProcessCompleted)
        elif p.state.status == "stopping":
            self._step_stopping(p)

    def _automatic(self, p: Planner) -> None:
        """Take every eventless transition that can be taken, lowest machine first.

        A machine is looked at when it is settled in a state with eventless
        transitions, and again after it moves; a whole group of machines waiting
        on a join is looked at once the join holds. Work is proportional to the
        machines that may move, never to the size of the process.
        """
        s = p.state
        heap: list[tuple[int, str]] = []
        queued: set[str] = set()
        opened: dict[tuple[str, str], frozenset[Transition]] = {}
        steps: dict[str, int] = {}

        def offer(mid: str) -> None:
            if mid not in queued:
                queued.add(mid)
                heapq.heappush(heap, (s.order[mid], mid))

        def open_groups() -> None:
            for key, ts in self._auto.items():
                ready = s.ready.get(key)
                if not ready:  # nobody to offer: a machine that arrives is offered itself
                    opened.pop(key, None)
                    continue
                now = frozenset([t for t in ts if t.when is None or t.when.holds(s)])
                if now - opened.get(key, _SHUT):
                    for mid in ready:
                        offer(mid)
                opened[key] = now

        open_groups()
        while heap:
            _, mid = heapq.heappop(heap)
            queued.discard(mid)
            check()
            machine = s.machines[mid]
            if not machine.settled:
                continue
            for t in self._auto.get((family(mid), machine.state), ()):
                if t.when is not None and not t.when.holds(s):
                    continue
                ctx = self._ctx(p, p.cause, mid)
                if t.allows(ctx):
                    steps[mid] = steps.get(mid, 0) + 1
                    if steps[mid] > MAX_STEPS:
                        raise RuntimeError(
                            f"saga {self.saga.name!r}: machine {mid!r} took more than "
                            f"{MAX_STEPS} eventless transitions in one decision (a loop?), "
                            f"the last {t.name!r}"
                        )
                    self._plan(p, mid, t, ctx)
                    offer(mid)
                    open_groups()
                    break

    def _step_stopping(self, p: Planner) -> None:
        s = p.state
        if s.in_flight() or (s.compensation is not None and self._retry_waiting(s)):
            return
        done = s.last_completed()
        if done is not None:
            spec = self._machine(done.machine_id).transition(done.transition).task
            comp = spec.compensation if spec is not None else None
            assert comp is not None
            ctx = Context(s, done, done.machine_id, self.saga.event_types)
            p.emit(
                CompensationPlanned,
                machine_id=done.machine_id,
                transition=done.transition,
                task_id=p.task_id(done.machine_id, f"compensate:{done.task_id}"),
                compensates=done.task_id,
                task_type=comp.type,
                mode=comp.mode,
                payload=comp.build_payload(ctx),
                timeout_due_ms=_due(p, comp),
            )
            return
        reason = s.reason
        failed = [*s.failed_compensations]
        if s.compensation is not None:
            failed.append(s.compensation.task_type)
        if failed:
            reason += f"; compensations that failed: {', '.join(failed)}"
        if s.outcome == "cancelled" and not failed:
            p.emit(ProcessCancelled, mode="cooperative", reason=reason)
        else:
            p.emit(ProcessFailed, reason=reason)

    def _retry_waiting(self, s: ProcessState) -> bool:
        comp = s.compensation
        return comp is not None and any(
            t.task_id == comp.task_id for _, t in s.timers_of_machine(comp.machine_id)
        )

    # ------------------------------------------------------------- lookups

    def _listening(self, s: ProcessState, event: type[BaseModel]) -> list[str]:
        """Machines in a state with a transition on ``event``, in creation order."""
        keys = self._on.get(event)
        if keys is None:
            keys = self._on[event] = list(
                dict.fromkeys(
                    (m.name, t.source.name)
                    for m in self.saga.machines
                    for t in m.transitions
                    if t.on is not None and issubclass(event, t.on)
                )
            )
        found: dict[str, int] = {}
        for key in keys:
            found.update(s.members.get(key, {}))
        return sorted(found, key=found.__getitem__)

    def _machine(self, machine_id: str) -> Machine:
        return self.saga.machine_for(machine_id)

    def _task_spec(self, mid: str, task: PendingTask) -> Task:
        spec = self._machine(mid).transition(task.transition).task
        if spec is not None and task.compensates is not None:
            spec = spec.compensation
        assert spec is not None, f"no task spec for {task.task_type} on {mid}"
        return spec

    def _ctx(self, p: Planner, event: Any, mid: str) -> Context:
        return Context(p.state, event, mid, self.saga.event_types)

    def _parse(self, record: DomainEvent) -> BaseModel:
        cls = self.saga.event_types[record.event_type]
        try:
            return cls.model_validate(record.data)
        except ValidationError as exc:
            raise DecodeError(str(exc).splitlines()[0], record.event_type) from exc


def _due(p: Planner, task: Task) -> int | None:
    """When an attempt of ``task`` planned now times out (None: it never does)."""
    timeout_ms = task.timeout_ms
    return None if timeout_ms is None else p.now_ms + timeout_ms

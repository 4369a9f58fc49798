"""The state of one process instance, as folded from its records.

The state is the framework's, not the user's: machines and their states, the
task each machine waits for, durable timers, completed tasks to compensate.

Its containers are persistent maps (``immutables.Map``): a copy costs O(1) and
a change O(log n), so a process with ten thousand machines is decided in time
independent of its size. Counts per (family, state) keep joins and completion
O(1); ``dirty`` names the parts changed since the state was last written, so
the changelog receives what changed and not the whole process.

What a guard may read: ``machines`` (machine id -> :class:`MachineState`, no
order; :meth:`ProcessState.ordered` gives creation order), ``context`` (event
type name -> the last such event's data), :meth:`ProcessState.settled` and
``family_size`` (the counts joins use), ``status`` and ``seq``. Everything else is bookkeeping.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

from immutables import Map

from procession._values import value
from procession.topics._records import Outcome, TaskMode, TimerPurpose

Status = Literal["new", "running", "stopping", "completed", "failed", "cancelled"]
TERMINAL: frozenset[str] = frozenset({"completed", "failed", "cancelled"})

#: How many of a process's latest accepted event ids are kept to recognise a
#: redelivered event (domain events and cancel requests). An event id older
#: than this many later ones is no longer recognised as a duplicate.
SEEN_WINDOW = 4096

#: Event ids per changelog record of the seen window.
SEEN_CHUNK = 64

#: The state of a machine closed by a join (``close_rest``): out of its family.
CLOSED = "(closed)"


def family(machine_id: str) -> str:
    """The machine definition a machine id belongs to (``instance:A`` -> ``instance``)."""
    return machine_id.partition(":")[0]


@value
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


@value
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


@value
class Timer:
    """A durable timer held in the state until it fires or goes stale."""

    due_ms: int
    purpose: TimerPurpose
    machine_id: str
    transition: str | None = None
    task_id: str | None = None
    attempt: int = 0


@value
class CompletedTask:
    """A completed task that has a compensation, kept until the process ends."""

    machine_id: str
    transition: str
    task_id: str
    task_type: str
    result: Any = None


@value
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


@value
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

_EMPTY: Map[Any, Any] = Map()


@dataclass(slots=True)
class ProcessState:
    """Everything the decision needs to know about one process instance.

    Change machines and timers through :meth:`put_machine`, :meth:`add_timer`
    and :meth:`drop_timer`: they keep the indexes and counts. :meth:`clone`
    is O(1).

    Example:
        >>> s = ProcessState(process_id="rebase:1")
        >>> s.status, s.seq
        ('new', 0)
        >>> s.put_machine("instance:A", MachineState("Working"))
        >>> s.settled("instance", "Working"), s.family_size["instance"]
        (1, 1)
    """

    process_id: str
    saga: str = ""
    version: int = 0
    correlation_id: str = ""
    status: Status = "new"
    seq: int = 0
    machines: Map[str, MachineState] = _EMPTY
    timers: Map[str, Timer] = _EMPTY
    context: Map[str, dict[str, Any]] = _EMPTY
    seen: Map[str, int] = _EMPTY
    seen_next: int = 0
    completed: Map[int, CompletedTask] = _EMPTY
    compensation: PendingTask | None = None
    outcome: Outcome | None = None
    reason: str = ""
    failed_compensations: tuple[str, ...] = ()
    # ---- derived from the above, rebuilt on restore; not compared
    order: Map[str, int] = field(default=_EMPTY, compare=False, repr=False)
    made: int = field(default=0, compare=False, repr=False)
    tasks: Map[str, str] = field(default=_EMPTY, compare=False, repr=False)
    timers_of: Map[str, tuple[str, ...]] = field(default=_EMPTY, compare=False, repr=False)
    members: dict[tuple[str, str], Map[str, int]] = field(
        default_factory=dict, compare=False, repr=False
    )
    ready: dict[tuple[str, str], Map[str, int]] = field(
        default_factory=dict, compare=False, repr=False
    )
    family_size: dict[str, int] = field(default_factory=dict, compare=False, repr=False)
    inflight: int = field(default=0, compare=False, repr=False)
    seen_ids: Map[int, str] = field(default=_EMPTY, compare=False, repr=False)
    #: Written part by part (a big process), not in one changelog value.
    split: bool = field(default=False, compare=False, repr=False)
    #: Parts changed since the state was last written: ``m:<machine>``,
    #: ``c:<event type>``, ``k:<index>`` (a completed task), ``s:<chunk>``.
    #: Kept only once the state is ``split`` (a small one is written whole).
    dirty: Map[str, None] = field(default=_EMPTY, compare=False, repr=False)

    @property
    def terminal(self) -> bool:
        """True once the process completed, failed or was cancelled."""
        return self.status in TERMINAL

    def clone(self) -> ProcessState:
        """A copy whose parts may be changed without touching this one (O(1))."""
        return ProcessState(
            self.process_id,
            self.saga,
            self.version,
            self.correlation_id,
            self.status,
            self.seq,
            self.machines,
            self.timers,
            self.context,
            self.seen,
            self.seen_next,
            self.completed,
            self.compensation,
            self.outcome,
            self.reason,
            self.failed_compensations,
            self.order,
            self.made,
            self.tasks,
            self.timers_of,
            dict(self.members),
            dict(self.ready),
            dict(self.family_size),
            self.inflight,
            self.seen_ids,
            self.split,
            self.dirty,
        )

    # ----------------------------------------------------------------- reads

    def ordered(self) -> Iterator[tuple[str, MachineState]]:
        """(machine id, machine) in the order the machines were created."""
        for mid in sorted(self.order, key=self.order.__getitem__):
            yield mid, self.machines[mid]

    def in_group(self, fam: str, state: str, *, settled: bool = False) -> list[str]:
        """Ids of ``fam``'s machines in ``state`` (only settled ones if asked), in
        creation order."""
        group = (self.ready if settled else self.members).get((fam, state), _EMPTY)
        return sorted(group, key=group.__getitem__)

    def pending_task(self, task_id: str) -> PendingTask | None:
        """The pending task (a machine's or the compensation) with ``task_id``."""
        comp = self.compensation
        if comp is not None and comp.task_id == task_id:
            return comp
        mid = self.tasks.get(task_id)
        return None if mid is None else self.machines[mid].task

    def pending(self) -> dict[str, PendingTask]:
        """Pending tasks by task id, machines' and the compensation's (O(pending))."""
        found = {tid: self.machines[mid].task for tid, mid in self.tasks.items()}
        if self.compensation is not None:
            found[self.compensation.task_id] = self.compensation
        return {k: v for k, v in found.items() if v is not None}

    def in_flight(self) -> bool:
        """True while some task attempt may still report back."""
        return self.inflight > 0

    def timers_of_machine(self, machine_id: str) -> list[tuple[str, Timer]]:
        """(timer id, timer) of the timers armed for ``machine_id``."""
        tids = self.timers_of.get(machine_id)
        return [(tid, self.timers[tid]) for tid in tids] if tids else []

    # --------------------------------------------------------------- changes

    def touch(self, part: str) -> None:
        """Mark a part as changed since the state was last written (when split)."""
        if self.split:
            self.dirty = self.dirty.set(part, None)

    def put_machine(self, mid: str, new: MachineState, ordinal: int | None = None) -> None:
        """Set machine ``mid`` (creating it), keeping every index and count.

        ``ordinal`` is a new machine's place in creation order (the next one
        when None; given when a state is restored).
        """
        machines = self.machines
        old = machines.get(mid)
        self.machines = machines.set(mid, new)
        if self.split:
            self.dirty = self.dirty.set("m:" + mid, None)
        fam = mid.partition(":")[0]
        task = new.task
        if old is not None:
            was = old.task
            if was is not None:
                self.tasks = self.tasks.delete(was.task_id)
                self.inflight -= was.in_flight
            if task is not None:
                self.tasks = self.tasks.set(task.task_id, mid)
                self.inflight += task.in_flight
            if old.state == new.state:
                if (was is None) != (task is None) and new.state != CLOSED:
                    # same state, so the same members: only whether it is settled changed
                    key, ordinal = (fam, new.state), self.order[mid]
                    if task is None:
                        self.ready[key] = self.ready.get(key, _EMPTY).set(mid, ordinal)
                    else:
                        _drop(self.ready, key, mid)
                return  # else the same group: another attempt, or a task that stopped
            if new.state == CLOSED:  # leaves the family and every group
                self.family_size[fam] -= 1
            key = (fam, old.state)
            _drop(self.members, key, mid)
            if was is None:
                _drop(self.ready, key, mid)
            ordinal = self.order[mid]
        else:
            if ordinal is None:
                ordinal = self.made
            if ordinal >= self.made:
                self.made = ordinal + 1
            self.order = self.order.set(mid, ordinal)
            size = self.family_size
            size[fam] = size.get(fam, 0) + 1
            if task is not None:
                self.tasks = self.tasks.set(task.task_id, mid)
                self.inflight += task.in_flight
        if new.state == CLOSED:
            if old is None:  # restored closed
                self.family_size[fam] -= 1
            return
        key = (fam, new.state)
        members = self.members
        members[key] = members.get(key, _EMPTY).set(mid, ordinal)
        if task is None:
            ready = self.ready
            ready[key] = ready.get(key, _EMPTY).set(mid, ordinal)

    def settled(self, fam: str, state: str) -> int:
        """How many machines of ``fam`` are settled in ``state`` (O(1))."""
        group = self.ready.get((fam, state))
        return 0 if group is None else len(group)

    def set_compensation(self, task: PendingTask | None) -> None:
        """Set the compensation in progress, keeping the in-flight count."""
        if self.compensation is not None:
            self.inflight -= self.compensation.in_flight
        if task is not None:
            self.inflight += task.in_flight
        self.compensation = task

    def add_timer(self, timer_id: str, timer: Timer) -> None:
        mid = timer.machine_id
        if timer_id not in self.timers:
            self.timers_of = self.timers_of.set(mid, (*self.timers_of.get(mid, ()), timer_id))
        self.timers = self.timers.set(timer_id, timer)
        if self.split:
            self.dirty = self.dirty.set("m:" + mid, None)

    def drop_timer(self, timer_id: str) -> Timer:
        timer = self.timers[timer_id]
        mid = timer.machine_id
        self.timers = self.timers.delete(timer_id)
        armed = self.timers_of[mid]
        left = () if len(armed) == 1 else tuple([t for t in armed if t != timer_id])
        self.timers_of = self.timers_of.set(mid, left) if left else self.timers_of.delete(mid)
        if self.split:
            self.dirty = self.dirty.set("m:" + mid, None)
        return timer

    def clear_timers(self) -> None:
        for mid in self.timers_of:
            if self.split:
                self.dirty = self.dirty.set("m:" + mid, None)
        self.timers, self.timers_of = _EMPTY, _EMPTY

    def set_context(self, event_type: str, data: dict[str, Any]) -> None:
        self.context = self.context.set(event_type, data)
        if self.split:
            self.dirty = self.dirty.set("c:" + event_type, None)

    def push_completed(self, done: CompletedTask) -> None:
        index = len(self.completed)
        self.completed = self.completed.set(index, done)
        if self.split:
            self.dirty = self.dirty.set(f"k:{index}", None)

    def pop_completed(self) -> None:
        index = len(self.completed) - 1
        self.completed = self.completed.delete(index)
        if self.split:
            self.dirty = self.dirty.set(f"k:{index}", None)

    def last_completed(self) -> CompletedTask | None:
        return self.completed.get(len(self.completed) - 1)

    def add_seen(self, event_id: str) -> None:
        """Remember an accepted event id, forgetting the oldest beyond the window."""
        n = self.seen_next
        self.seen = self.seen.set(event_id, n)
        self.seen_ids = self.seen_ids.set(n, event_id)
        self.seen_next = n + 1
        if self.split:
            self.dirty = self.dirty.set(f"s:{n // SEEN_CHUNK}", None)
        old = n - SEEN_WINDOW
        if old >= 0:
            gone = self.seen_ids.get(old)
            if gone is not None:
                self.seen_ids = self.seen_ids.delete(old)
                if self.seen.get(gone) == old:
                    self.seen = self.seen.delete(gone)
            if self.split and old % SEEN_CHUNK == SEEN_CHUNK - 1:  # a chunk left the window
                self.dirty = self.dirty.set(f"s:{old // SEEN_CHUNK}", None)


def ended(state: ProcessState | Ended | Parked | None) -> bool:
    """Whether a process is over: ended (its marker) or in a terminal status.

    Example:
        >>> ended(Ended.of("completed")), ended(None)
        (True, False)
    """
    return isinstance(state, Ended) or (isinstance(state, ProcessState) and state.terminal)


def _drop(groups: dict[tuple[str, str], Map[str, int]], key: tuple[str, str], mid: str) -> None:
    left = groups[key].delete(mid)
    if left:
        groups[key] = left
    else:
        del groups[key]

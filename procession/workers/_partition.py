"""One partition of the process topic: its store, its timers, its producer."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from typing import TYPE_CHECKING, Any

from immutables import Map

from procession._errors import FencedError, UnknownVersionError
from procession._tracing import hop
from procession.sagas._fold import fold
from procession.sagas._state import Parked, PendingTask, ProcessState
from procession.topics._records import (
    CompensationPlanned,
    InputIgnored,
    ProcessParked,
    ProcessStarted,
    Record,
    ResumeRequested,
    TaskRequest,
    TimerFired,
    TransitionPlanned,
)

from ._committer import commit
from ._execute import execute
from ._port import Batch, Message, Outgoing, TopicPartition
from ._rebuild import ChangelogLostError, decided_any
from ._step import Step
from ._timers import TimerQueue
from ._wire import Stored, dead_letter, encode, readable, restore
from ._writes import parking, state_record

if TYPE_CHECKING:
    from ._app import App
    from ._processor import Processor

#: Traceparents kept for armed timers, at most (the oldest are dropped).
_ARMED_KEPT = 100_000

log = logging.getLogger("procession.processor")


_RESUME = ResumeRequested.TYPE.encode()

#: Longest stretch of deciding before the partition yields the event loop.
_TURN_S = 0.05


class PartitionProcessor:
    """Consume-decide-produce for one partition, in its own asyncio task."""

    def __init__(self, owner: Processor, tp: TopicPartition) -> None:
        self.owner, self.tp = owner, tp
        topics = owner.topics
        self.producer = owner.producer_for(f"{topics.prefix}.processor.{tp.partition}")
        self.store: dict[str, Stored] = {}
        self.timers = TimerQueue()
        self.queue: deque[Message] = deque()
        self.outbox: list[Record] = []
        #: timer id -> the traceparent of the decision that armed it, so that its
        #: firing continues that trace (in memory: after a restart, the timer's
        #: firing starts from the process's id-derived trace)
        self.armed: dict[str, str] = {}
        self.notes: list[Outgoing] = []  # written with the next transaction
        self.wake = asyncio.Event()
        self.room = asyncio.Event()
        self.inline: set[asyncio.Task[None]] = set()
        self.alive = True
        self.started = False
        self.rewound = False  # records fetched before are dropped; they come again
        self._working = False
        self._task: asyncio.Task[None] | None = None
        self._flight: asyncio.Task[None] | None = None  # the batch committing
        self._open: Step | None = None  # deciding, until the batch in flight lands

    # ------------------------------------------------------------ lifecycle

    def launch(self) -> None:
        """Start in its own task (outside the consumer's callback, which would
        swallow a failure): fence, restore, then consume-decide-produce."""
        self._task = asyncio.create_task(
            self._main(), name=f"procession-partition-{self.tp.partition}"
        )

    async def _main(self) -> None:
        try:
            await self.producer.start()  # fences a zombie before we read anything
            committed = await self.owner.rewind(self.tp)  # its last commit counts from here
            self.rewound = True
            restoring = time.monotonic()
            await self._restore(committed or 0)
            self.owner.stats.observe("restore_seconds", time.monotonic() - restoring)
            self.started = True
            await self._run()
        except (asyncio.CancelledError, GeneratorExit):  # stopped, not failed
            raise
        except FencedError as exc:
            self.alive = False
            self.owner.fenced(exc, still_ours=self.owner.partitions.get(self.tp) is self)
        except BaseException as exc:  # noqa: BLE001 - whatever ends the partition is reported
            self.alive = False
            self.owner.died(exc)
        finally:
            self._working = False

    async def _restore(self, committed: int) -> None:
        transport = self.owner.transport
        changelog = TopicPartition(self.owner.topics.changelog, self.tp.partition)
        found = await transport.read_partition(changelog)
        if (
            not found
            and committed
            and decided_any(await transport.read_partition(self.tp), committed)
        ):
            raise ChangelogLostError(changelog.topic, changelog.partition, committed)
        states, bad = restore(found)
        _check_versions(self.owner.app, states)
        self.store.update(states)
        for msg, error in bad:
            self._park_unrestorable(msg, str(error))
        for pid, state in self.store.items():
            self.timers.add_from(pid, None, state)
            if isinstance(state, ProcessState):
                for task in state.pending().values():
                    if task.mode == "inline" and task.in_flight:
                        self._run_inline(_request_of(state, task))
        if self.notes:
            self.wake.set()

    async def stop(self, deadline_s: float) -> None:
        self.alive = False
        self.wake.set()
        for task in self.inline:
            task.cancel()
        await asyncio.gather(*self.inline, return_exceptions=True)
        if self._task is not None:
            _, late = await asyncio.wait({self._task}, timeout=deadline_s)
            for task in late:  # the open transaction did not finish in time: abandon it
                task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self.producer.stop()  # aborts a transaction still open

    def feed(self, msg: Message) -> None:
        if self.alive and self.rewound:
            self.queue.append(msg)
            self.wake.set()

    def full(self, limit: int) -> bool:
        """More than ``limit`` records wait to be decided (a restore, a slow step)."""
        return self.alive and len(self.queue) > limit

    async def wait_for_room(self, limit: int, timeout_s: float) -> None:
        """Until the queue is back to ``limit`` records, for at most ``timeout_s``."""
        if self.full(limit):
            self.room.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout_s):
                    await self.room.wait()

    def busy(self) -> bool:
        due = self.timers.next_due()
        return bool(
            not self.started
            or self.queue
            or self.outbox
            or self.notes
            or self.inline
            or self._working
            or self._flight is not None
            or self._open is not None
            or self.timers.pending()
            or (due is not None and due <= self.owner.clock.now_ms())
        )

    # ------------------------------------------------------------ loops

    async def _run(self) -> None:
        """Decide what arrives while the batch before it commits; commit when that lands.

        Records are decided as they arrive, into the open :class:`Step`, up to
        ``max_batch`` of them; the step leaves as one transaction the moment the
        one before it has committed (at once when none is in flight). So deciding
        overlaps the commit, and a transaction takes everything decided while the
        last one was out.

        A step applies its outcome to the store when it leaves, before its commit
        lands: the store runs one commit ahead of the changelog. That is safe
        because a commit either lands (an aborted transaction is retried with
        the same batch) or ends the partition (fenced, or still failing at its
        deadline), and then this store goes with it: the next owner restores
        from the changelog.
        """
        try:
            while self.alive:
                self._working = True
                if self._flight is not None and self._flight.done():
                    await self._landed()
                self.outbox.extend(self.timers.due(self.owner.clock.now_ms(), self.store))
                room = self.owner.max_batch - (self._open.read if self._open else 0)
                batch = [self.queue.popleft() for _ in range(min(len(self.queue), room))]
                self.room.set()
                resumes = _resumes(batch)
                if resumes:  # it reads the stream back: ours first
                    await self._send()
                    await self._landed()
                if batch:
                    await self._decide(batch, resumes)
                if self._flight is None and (self._open or self.outbox or self.notes):
                    await self._send()
                    continue
                if batch:
                    continue
                self._working = False
                self.wake.clear()
                await self.owner.clock.wait(self.wake, self.timers.next_due())
            await self._landed()  # stopping: the batch in flight ends first
        finally:
            if self._flight is not None:  # cancelled (or failed) while one commits
                self._flight.cancel()
                await asyncio.gather(self._flight, return_exceptions=True)
                self._flight = None

    async def _landed(self) -> None:
        """Wait for the batch in flight (if any) to commit; raise what its commit raised."""
        flight = self._flight
        if flight is not None:
            try:
                await asyncio.shield(flight)
            finally:
                if flight.done():
                    self._flight = None

    # ------------------------------------------------------------ decide

    async def _decide(self, batch: list[Message], resumes: bool) -> None:
        """Decide ``batch`` into the open step (opened if none is); ``resumes``:
        some record of it asks a process to resume."""
        step = self._open
        if step is None:
            step = self._open = Step(self.owner, self.tp, self.store)
        if resumes:
            await self._resume(step, batch)
        turn = time.monotonic() + _TURN_S
        for msg in batch:
            step.add(msg)
            if time.monotonic() > turn:  # let heartbeats and other partitions run
                await asyncio.sleep(0)
                turn = time.monotonic() + _TURN_S

    async def _send(self) -> None:
        """Close the open step (with the timer firings, inline results and notes
        waiting), apply it to the store and the timers, and commit it once the
        batch before it has landed."""
        owner = self.owner
        step, self._open = self._open or Step(owner, self.tp, self.store), None
        sent, self.outbox = self.outbox, []
        notes, self.notes = self.notes, []
        if not (step.read or sent or notes or step.staged):
            return
        out = step.finish(
            [
                *(
                    encode(
                        owner.topics.process,
                        r.process_id,
                        r,
                        owner.codec,
                        traceparent=self.armed.pop(r.timer_id, None)
                        if isinstance(r, TimerFired)
                        else None,
                    )
                    for r in sent
                ),
                *notes,
            ]
        )
        for pid, state in step.staged.items():
            old = self.store.get(pid)
            if state is None:
                self.store.pop(pid, None)
            else:
                self.store[pid] = state
            self.timers.add_from(pid, old, state)
            self.timers.settle(pid, state)
            if isinstance(state, ProcessState):
                state.dirty = Map()  # written by ``out``
        self.timers.prune(self.store)
        await self._landed()  # batches commit in order
        self._flight = asyncio.create_task(self._commit(step, out))
        self._flight.add_done_callback(lambda _: self.wake.set())

    async def _commit(self, step: Step, out: Batch) -> None:
        """Commit a decided batch; then count it and run its inline tasks."""
        owner = self.owner
        attributes = {
            "procession.partition": self.tp.partition,
            "procession.records": len(out.records),
        }
        with hop("procession commit", None, attributes, kind="producer", links=step.traced):
            label = f"partition {self.tp.partition}"
            await commit(self.producer, out, owner.metrics, label, owner.stats)
        self.armed.update(step.armed)
        while len(self.armed) > _ARMED_KEPT:  # timers cancelled before firing: oldest go
            del self.armed[next(iter(self.armed))]
        for decisions in step.decided:  # metrics count committed work only
            self._count(decisions)
        if not self.alive or not (self._open or self.queue or self.outbox or self.notes):
            self.producer.idle()  # no next batch to wait for
        if self.alive:  # else stopping: the next owner runs what is still pending
            for reqs in step.requests.values():
                for req in reqs:
                    self._run_inline(req)
        owner.metrics["transactions"] += 1

    async def _resume(self, step: Step, batch: list[Message]) -> None:
        """For each parked process asked to resume in ``batch``: fold its stream up
        to the parking and hand the step the inputs it held since."""
        asked: dict[str, int] = {}
        for msg in batch:
            key = msg.key
            if (
                _is_resume(msg)
                and key is not None
                and key not in asked
                and isinstance(self.store.get(key), Parked)
            ):
                asked[key] = msg.offset
        if not asked:
            return
        stream = await self.owner.transport.read_partition(self.tp)
        for pid, upto in asked.items():
            marker = self.store[pid]
            assert isinstance(marker, Parked)
            ours = (m for m in stream if m.key == pid and m.offset < upto)
            mine = [(rec, msg.offset) for msg, rec in readable(ours, self.owner.codec)]
            state = fold([r for r, _ in mine])
            parkings = [o for r, o in mine if isinstance(r, ProcessParked)]
            start = (
                marker.offset if marker.offset >= 0 else (parkings[-1] + 1 if parkings else upto)
            )
            held = [(r, o) for r, o in mine if not r.IS_DECISION and o >= start]
            log.info("process %s resumed: %d held input(s) decided again", pid, len(held))
            step.resume(pid, state if isinstance(state, ProcessState) else None, held, upto)

    def _park_unrestorable(self, msg: Message, reason: str) -> None:
        """A changelog value that cannot be read: dead-letter it, park its process."""
        pid, owner = msg.key or "", self.owner
        log.error("process %s parked: its %s", pid, reason)
        owner.metrics["parked"] += 1
        record, marker = parking(
            pid,
            correlation_id=pid,
            seq=0,
            reason=reason,
            time_ms=owner.clock.now_ms(),
            salt=(msg.topic, msg.offset),
        )
        self.notes += [
            dead_letter(msg, reason, owner.topics, owner.limits),
            encode(owner.topics.process, pid, record, owner.codec),
            state_record(pid, marker, owner.topics.changelog, self.tp.partition, owner.limits),
        ]
        self.store[pid] = marker

    def _count(self, decisions: list[Record]) -> None:
        m = self.owner.metrics
        m["decided"] += 1
        for d in decisions:
            name = _COUNTERS.get(d.__class__)
            if name is None:
                name = _COUNTERS[d.__class__] = _counter(d.__class__)
            if not name:
                continue
            m[name] += 1
            if isinstance(d, InputIgnored) and d.reason == "no process instance":
                m["unmatched"] += 1
                log.info("unmatched input %s %s for %s", d.input_type, d.input_id, d.process_id)

    # ------------------------------------------------------------ inline tasks

    def _run_inline(self, req: TaskRequest) -> None:
        async def run() -> None:
            try:
                result = await execute(self.owner.app, req, self.owner.clock.now_ms())
            except Exception as exc:  # noqa: BLE001 - execute() reports handler errors; not this
                self.owner.died(exc)
                return
            self.outbox.append(result)
            self.wake.set()

        task = asyncio.create_task(run())
        self.inline.add(task)
        task.add_done_callback(self.inline.discard)


def _is_resume(msg: Message) -> bool:
    """Whether ``msg`` asks a process to resume (by its type header)."""
    return bool(msg.headers) and msg.headers[0][1] == _RESUME


#: The metric each decision's class counts ("": none), filled on use.
_COUNTERS: dict[type[Record], str] = {}


def _counter(cls: type[Record]) -> str:
    """The metric a decision of ``cls`` counts: ``ignored``, ``started``, or the
    ending's name (``ProcessCompleted``...); "" for none."""
    if cls is InputIgnored:
        return "ignored"
    if cls is ProcessStarted:
        return "started"
    name = cls.TYPE.rpartition(".")[2]
    return name if name.endswith(("Completed", "Failed", "Cancelled")) else ""


def _resumes(batch: list[Message]) -> bool:
    """Whether ``batch`` asks a process to resume (looked at once per batch)."""
    return any(map(_is_resume, batch))


def _request_of(state: ProcessState, task: PendingTask) -> TaskRequest:
    """Rebuild the request of a pending inline task, to run it again after restore."""
    common: dict[str, Any] = {
        "event_id": f"resume:{task.task_id}:{task.attempt}",
        "process_id": state.process_id,
        "correlation_id": state.correlation_id,
        "seq": state.seq,
        "machine_id": task.machine_id,
        "transition": task.transition,
        "task_id": task.task_id,
        "mode": task.mode,
        "attempt": task.attempt,
        "payload": task.payload,
    }
    if task.compensates is not None:
        return CompensationPlanned(**common, compensates=task.compensates, task_type=task.task_type)
    machine = state.machines[task.machine_id]
    return TransitionPlanned(
        **common, from_state=task.source, to_state=machine.state, task_type=task.task_type
    )


def _check_versions(app: App, states: dict[str, Stored]) -> None:
    """Refuse to run processes whose saga version the app cannot decide with
    (a deploy that dropped a version still running): raise, naming them."""
    unknown: dict[tuple[str, int], list[str]] = {}
    for pid, state in states.items():
        if not isinstance(state, ProcessState) or state.terminal or state.status == "new":
            continue
        saga = app.saga_for(pid)
        runs = getattr(saga, "runs", None)
        if runs is not None and not runs(state.version):
            unknown.setdefault((state.saga, state.version), []).append(pid)
    if unknown:
        (name, version), pids = sorted(unknown.items())[0]
        saga = app.saga_for(pids[0])
        have = getattr(saga, "registered", None) or [getattr(saga, "version", 0)]
        raise UnknownVersionError(name, version, ", ".join(f"v{v}" for v in have), sorted(pids))

"""One partition of the process topic: its store, its timers, its producer."""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from procession._errors import DecodeError, FencedError
from procession.sagas._fold import after_decisions
from procession.sagas._ids import derive_id
from procession.sagas._state import Ended, Parked, PendingTask, ProcessState
from procession.topics._records import (
    RECORD_TYPES,
    CompensationPlanned,
    InputIgnored,
    ProcessParked,
    ProcessStarted,
    Record,
    TransitionPlanned,
    is_task_request,
)

from ._committer import commit
from ._execute import execute
from ._port import Batch, Message, Outgoing, TopicPartition, partition_for
from ._timers import TimerQueue
from ._wire import Stored, dead_letter, encode, encode_state, record_of, state_of, without_value

if TYPE_CHECKING:
    from ._processor import Processor

log = logging.getLogger("procession.processor")

#: The type headers of decision records. The processor reads its own decisions
#: back from the process topic; it recognises them by the codec's first header
#: and skips them without decoding (more than half of the topic's records).
_DECISION_TYPES = frozenset(cls.TYPE.encode() for cls in RECORD_TYPES.values() if cls.IS_DECISION)

TaskRequest = TransitionPlanned | CompensationPlanned


@dataclass
class _Step:
    """What one transaction of a partition writes, gathered process by process."""

    out: Batch
    staged: dict[str, Stored | None] = field(default_factory=dict)
    writes: dict[str, list[Outgoing]] = field(default_factory=dict)  # decisions, task requests
    firsts: dict[str, tuple[Record, int]] = field(default_factory=dict)  # first input, offset
    requests: dict[str, list[TaskRequest]] = field(default_factory=dict)  # inline tasks
    parks: dict[str, list[Outgoing]] = field(default_factory=dict)
    decided: list[list[Record]] = field(default_factory=list)


class _Unwritable(Exception):  # noqa: N818 - internal signal: park the process, with this reason
    pass


class PartitionProcessor:
    """Consume-decide-produce for one partition, in its own asyncio task."""

    def __init__(self, owner: Processor, tp: TopicPartition) -> None:
        self.owner, self.tp = owner, tp
        topics = owner.topics
        self.producer = owner.transport.producer(f"{topics.prefix}.processor.{tp.partition}")
        self.store: dict[str, Stored] = {}
        self.timers = TimerQueue()
        self.queue: deque[Message] = deque()
        self.outbox: list[Record] = []
        self.notes: list[Outgoing] = []  # written with the next transaction
        self.wake = asyncio.Event()
        self.room = asyncio.Event()
        self.inline: set[asyncio.Task[None]] = set()
        self.alive = True
        self.started = False
        self._working = False
        self._task: asyncio.Task[None] | None = None

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
            await self._restore()
            self.started = True
            await self._run()
        except asyncio.CancelledError:
            raise
        except FencedError as exc:
            self.alive = False
            self.owner.fenced(self, exc)
        except BaseException as exc:  # noqa: BLE001 - whatever ends the partition is reported
            self.alive = False
            self.owner.died(exc)
        finally:
            self._working = False

    async def _restore(self) -> None:
        changelog = TopicPartition(self.owner.topics.changelog, self.tp.partition)
        for msg in await self.owner.transport.read_partition(changelog):
            if msg.key is None:
                continue
            try:
                state = state_of(msg.value)
            except DecodeError as exc:
                self._park_unrestorable(msg, str(exc))
                continue
            if state is None:
                self.store.pop(msg.key, None)
            else:
                self.store[msg.key] = state
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
        if self.alive:
            self.queue.append(msg)
            self.wake.set()

    async def wait_for_room(self, limit: int) -> None:
        while self.alive and len(self.queue) > limit:
            self.room.clear()
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
            or self.timers.pending()
            or (due is not None and due <= self.owner.clock.now_ms())
        )

    # ------------------------------------------------------------ loops

    async def _run(self) -> None:
        while self.alive:
            self._working = True
            self.outbox.extend(self.timers.due(self.owner.clock.now_ms(), self.store))
            batch = [
                self.queue.popleft() for _ in range(min(len(self.queue), self.owner.max_batch))
            ]
            self.room.set()
            if batch or self.outbox or self.notes:
                await self._process(batch)
                continue
            self._working = False
            self.wake.clear()
            await self.owner.clock.wait(self.wake, self.timers.next_due())

    # ------------------------------------------------------------ decide

    async def _process(self, batch: list[Message]) -> None:
        owner = self.owner
        step = _Step(Batch(group=owner.group))
        for msg in batch:
            if (
                msg.headers
                and msg.headers[0][0] == "procession-type"
                and (msg.headers[0][1] in _DECISION_TYPES)
            ):
                continue  # our own decision, read back (already applied): not decoded
            rec = self._input(msg, step.out)
            if rec is not None:
                self._decide(rec, msg.offset, step)
        out = step.out
        sent, self.outbox = self.outbox, []
        out.records.extend(encode(owner.topics.process, r.process_id, r, owner.codec) for r in sent)
        notes, self.notes = self.notes, []
        out.records.extend(notes)
        for pid in list(step.staged):
            self._write_state(pid, step)
        if batch:
            out.offsets[self.tp] = batch[-1].offset + 1
        await commit(self.producer, out, owner.metrics, f"partition {self.tp.partition}")
        for decisions in step.decided:  # metrics count committed work only
            self._count(decisions)
        for pid, state in step.staged.items():
            old = self.store.get(pid)
            if state is None:
                self.store.pop(pid, None)
            else:
                self.store[pid] = state
            self.timers.add_from(pid, old, state)
            self.timers.settle(pid, state)
        self.timers.prune(self.store)
        for reqs in step.requests.values():
            for req in reqs:
                self._run_inline(req)
        owner.metrics["transactions"] += 1

    def _decide(self, rec: Record, offset: int, step: _Step) -> None:
        """Decide one input into ``step``; a process whose input cannot be decided
        or written is parked."""
        pid = rec.process_id
        before = step.staged[pid] if pid in step.staged else self.store.get(pid)
        if isinstance(before, Parked):
            self.owner.metrics["held"] += 1  # stays in the stream until the process resumes
            return
        step.firsts.setdefault(pid, (rec, offset))
        saga = self.owner.app.saga_for(pid)
        assert saga is not None  # checked by _input
        try:
            decisions = saga.decide(before, rec)
            mine = self._encode(pid, decisions)
        except _Unwritable as exc:
            step.staged[pid] = self._park(rec, offset, before, str(exc), step)
            return
        except Exception as exc:  # noqa: BLE001 - a failing decision parks its process
            step.staged[pid] = self._park(rec, offset, before, f"decision failed: {exc!r}", step)
            return
        step.staged[pid] = after_decisions(before, rec, decisions)
        step.writes.setdefault(pid, []).extend(mine)
        step.decided.append(decisions)
        for d in decisions:
            if is_task_request(d) and d.mode == "inline":  # type: ignore[attr-defined]
                step.requests.setdefault(pid, []).append(d)  # type: ignore[arg-type]

    def _write_state(self, pid: str, step: _Step) -> None:
        """Add a process's writes and its new state to the transaction, or park it
        when the state cannot be written (then none of its inputs here is decided)."""
        state = step.staged[pid]
        if state is None:
            return  # nothing to keep (an input for no process)
        if not isinstance(state, Parked):
            state = self._keep(state)
            assert state is not None
            try:
                change = self._state_record(pid, state)
            except _Unwritable as exc:
                rec, offset = step.firsts[pid]
                step.writes.pop(pid, None)
                state = self._park(rec, offset, self.store.get(pid), str(exc), step)
        if isinstance(state, Parked):
            step.requests.pop(pid, None)
            change = self._state_record(pid, state)
        step.staged[pid] = state
        step.out.records.extend(step.writes.get(pid, ()))
        step.out.records.extend(step.parks.get(pid, ()))  # after the decisions it follows
        step.out.records.append(change)

    def _input(self, msg: Message, out: Batch) -> Record | None:
        """The input record ``msg`` holds, or None (dead-lettered, or a decision)."""
        try:
            rec = record_of(msg, self.owner.codec)
        except DecodeError as exc:
            self._dead(msg, str(exc), out)
            return None
        if rec.IS_DECISION:
            return None  # our own decisions, read back: already applied
        pid = rec.process_id
        why = ""
        if self.owner.app.saga_for(pid) is None:
            why = f"no saga for process {pid!r}"
        elif msg.key != pid:
            why = f"key {msg.key!r} is not {pid!r}"
        elif (home := partition_for(pid, self.owner.partition_count)) != self.tp.partition:
            why = (
                f"key {pid!r} belongs on partition {home}, found on {self.tp.partition} "
                "(written with another partitioner than murmur2?)"
            )
        if why:
            self._dead(msg, why, out)
            return None
        return rec

    def _encode(self, pid: str, decisions: list[Record]) -> list[Outgoing]:
        """The records ``decisions`` write, each checked against its topic's limit."""
        topics, codec, limits = self.owner.topics, self.owner.codec, self.owner.limits
        mine: list[Outgoing] = []
        for d in decisions:
            try:
                rec = encode(topics.process, pid, d, codec)
            except TypeError as exc:
                raise _Unwritable(f"{d.type_name} cannot be encoded: {exc}") from exc
            mine.append(rec)
            if is_task_request(d) and d.mode != "inline":  # type: ignore[attr-defined]
                task_topic = topics.tasks(d.task_type or "")  # type: ignore[attr-defined]
                mine.append(Outgoing(task_topic, pid, rec.value, rec.headers))
        for rec in mine:
            limit = limits[rec.topic]
            if rec.size() > limit:
                raise _Unwritable(
                    f"a record of {rec.size()} bytes is over {rec.topic!r}'s "
                    f"max.message.bytes ({limit})"
                )
        return mine

    def _state_record(self, pid: str, state: Stored) -> Outgoing:
        topic = self.owner.topics.changelog
        try:
            value = encode_state(state)
        except TypeError as exc:
            raise _Unwritable(f"the state cannot be encoded: {exc}") from exc
        rec = Outgoing(topic, pid, value, partition=self.tp.partition)
        if rec.size() > self.owner.limits[topic]:
            raise _Unwritable(
                f"the state of {rec.size()} bytes is over {topic!r}'s "
                f"max.message.bytes ({self.owner.limits[topic]})"
            )
        return rec

    def _park(
        self, rec: Record, offset: int, before: Stored | None, reason: str, step: _Step
    ) -> Parked:
        """Set a process aside: record why, hold its later inputs; the partition goes on."""
        pid = rec.process_id
        log.error("process %s parked at %s@%s: %s", pid, self.tp.partition, offset, reason)
        self.owner.metrics["parked"] += 1
        state = before if isinstance(before, ProcessState) else None
        parked = ProcessParked(
            event_id=derive_id(pid, rec.event_id, "parked"),
            process_id=pid,
            correlation_id=state.correlation_id if state else rec.correlation_id,
            causation_id=rec.event_id,
            time_ms=self.owner.clock.now_ms(),
            seq=state.seq if state else 0,
            input_type=rec.type_name,
            input_id=rec.event_id,
            reason=reason[:2000],
        )
        step.parks[pid] = [encode(self.owner.topics.process, pid, parked, self.owner.codec)]
        return Parked(reason[:2000], rec.event_id, offset)

    def _park_unrestorable(self, msg: Message, reason: str) -> None:
        """A changelog value that cannot be read: dead-letter it, park its process."""
        pid = msg.key or ""
        owner = self.owner
        log.error("process %s parked: its %s", pid, reason)
        owner.metrics["parked"] += 1
        self.notes.append(self._fit(dead_letter(msg, reason, owner.topics)))
        parked = ProcessParked(
            event_id=derive_id(pid, msg.topic, msg.offset, "parked"),
            process_id=pid,
            correlation_id=pid,
            time_ms=owner.clock.now_ms(),
            seq=0,
            input_type="",
            input_id="",
            reason=reason[:2000],
        )
        self.notes.append(encode(owner.topics.process, pid, parked, owner.codec))
        marker = Parked(reason[:2000])
        self.notes.append(self._state_record(pid, marker))
        self.store[pid] = marker

    def _dead(self, msg: Message, reason: str, out: Batch) -> None:
        log.warning("dead letter from %s@%s: %s", msg.partition, msg.offset, reason)
        self.owner.metrics["dead_lettered"] += 1
        out.records.append(self._fit(dead_letter(msg, reason, self.owner.topics)))

    def _fit(self, out: Outgoing) -> Outgoing:
        limit = self.owner.limits[out.topic]
        return out if out.size() <= limit else without_value(out, limit)

    def _keep(self, state: Stored | None) -> Stored | None:
        if isinstance(state, ProcessState) and state.terminal and not self.owner.app.keep_completed:
            return Ended.of(state.status)
        return state

    def _count(self, decisions: list[Record]) -> None:
        m = self.owner.metrics
        m["decided"] += 1
        for d in decisions:
            if isinstance(d, InputIgnored):
                m["ignored"] += 1
                if d.reason == "no process instance":
                    m["unmatched"] += 1
                    log.info("unmatched input %s %s for %s", d.input_type, d.input_id, d.process_id)
            elif isinstance(d, ProcessStarted):
                m["started"] += 1
            elif d.type_name.endswith(("Completed", "Failed", "Cancelled")):
                m[d.type_name.rpartition(".")[2]] += 1

    # ------------------------------------------------------------ inline tasks

    def _run_inline(self, req: TaskRequest) -> None:
        async def run() -> None:
            result = await execute(self.owner.app, req, self.owner.clock.now_ms())
            self.outbox.append(result)
            self.wake.set()

        task = asyncio.create_task(run())
        self.inline.add(task)
        task.add_done_callback(self.inline.discard)


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

"""One partition of the process topic: its store, its timers, its producer."""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import TYPE_CHECKING, Any

from procession._errors import DecodeError, FencedError
from procession.sagas._fold import AnyState, after_decisions
from procession.sagas._state import Ended, PendingTask, ProcessState
from procession.topics._records import (
    RECORD_TYPES,
    CompensationPlanned,
    InputIgnored,
    ProcessStarted,
    Record,
    TransitionPlanned,
    is_task_request,
)

from ._committer import commit
from ._execute import execute
from ._port import Batch, Message, Outgoing, TopicPartition
from ._timers import TimerQueue
from ._wire import dead_letter, record_of, state_of

if TYPE_CHECKING:
    from ._processor import Processor

log = logging.getLogger("procession.processor")

#: The type headers of decision records. The processor reads its own decisions
#: back from the process topic; it recognises them by the codec's first header
#: and skips them without decoding (more than half of the topic's records).
_DECISION_TYPES = frozenset(cls.TYPE.encode() for cls in RECORD_TYPES.values() if cls.IS_DECISION)

TaskRequest = TransitionPlanned | CompensationPlanned


class PartitionProcessor:
    """Consume-decide-produce for one partition, in its own asyncio task."""

    def __init__(self, owner: Processor, tp: TopicPartition) -> None:
        self.owner, self.tp = owner, tp
        topics = owner.topics
        self.producer = owner.transport.producer(f"{topics.prefix}.processor.{tp.partition}")
        self.store: dict[str, ProcessState | Ended] = {}
        self.timers = TimerQueue()
        self.queue: deque[Message] = deque()
        self.outbox: list[Record] = []
        self.wake = asyncio.Event()
        self.room = asyncio.Event()
        self.inline: set[asyncio.Task[None]] = set()
        self.alive = True
        self._working = False
        self._task: asyncio.Task[None] | None = None

    # ------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        await self.producer.start()  # fences a zombie before we read anything
        changelog = TopicPartition(self.owner.topics.changelog, self.tp.partition)
        for msg in await self.owner.transport.read_partition(changelog):
            state = state_of(msg.value)
            if msg.key is None:
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
        self._task = asyncio.create_task(
            self._run(), name=f"procession-partition-{self.tp.partition}"
        )

    async def stop(self, deadline_s: float) -> None:
        self.alive = False
        self.wake.set()
        for task in self.inline:
            task.cancel()
        if self._task is not None:
            _, late = await asyncio.wait({self._task}, timeout=deadline_s)
            for task in late:  # the open transaction did not finish in time: abandon it
                task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self.producer.stop()

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
            self.queue
            or self.outbox
            or self.inline
            or self._working
            or self.timers.pending()
            or (due is not None and due <= self.owner.clock.now_ms())
        )

    # ------------------------------------------------------------ loops

    async def _run(self) -> None:
        try:
            while self.alive:
                self._working = True
                self.outbox.extend(self.timers.due(self.owner.clock.now_ms(), self.store))
                batch = [
                    self.queue.popleft() for _ in range(min(len(self.queue), self.owner.max_batch))
                ]
                self.room.set()
                if batch or self.outbox:
                    await self._process(batch)
                    continue
                self._working = False
                self.wake.clear()
                await self.owner.clock.wait(self.wake, self.timers.next_due())
        except FencedError as exc:
            log.error("partition %s dropped: %s", self.tp.partition, exc)
            self.alive = False
        except BaseException as exc:
            if not isinstance(exc, asyncio.CancelledError):
                log.exception("partition %s died", self.tp.partition)
                self.owner.died(exc)
            raise
        finally:
            self._working = False

    # ------------------------------------------------------------ decide

    async def _process(self, batch: list[Message]) -> None:
        owner, topics = self.owner, self.owner.topics
        out = Batch(group=owner.group)
        staged: dict[str, AnyState] = {}
        requests: list[TaskRequest] = []
        decided: list[list[Record]] = []
        for msg in batch:
            if (
                msg.headers
                and msg.headers[0][0] == "procession-type"
                and (msg.headers[0][1] in _DECISION_TYPES)
            ):
                continue  # our own decision, read back (already applied): not decoded
            rec = self._decode(msg, out)
            if rec is None or rec.IS_DECISION:
                continue  # our own decisions, read back: already applied
            pid = rec.process_id
            saga = owner.app.saga_for(pid)
            if saga is None or msg.key != pid:
                why = (
                    f"no saga for process {pid!r}"
                    if saga is None
                    else f"key {msg.key!r} is not {pid!r}"
                )
                self._dead(msg, why, out)
                continue
            before = staged[pid] if pid in staged else self.store.get(pid)
            try:
                decisions = saga.decide(before, rec)
            except Exception as exc:  # noqa: BLE001 - a failing decision goes to the dead letters
                self._dead(msg, f"decision failed: {exc!r}", out)
                continue
            staged[pid] = after_decisions(before, rec, decisions)
            decided.append(decisions)
            for d in decisions:
                out.records.append(Outgoing(topics.process, pid, d))
                if is_task_request(d):
                    req: TaskRequest = d  # type: ignore[assignment]
                    if req.mode == "inline":
                        requests.append(req)
                    else:
                        out.records.append(Outgoing(topics.tasks(req.task_type or ""), pid, req))
        sent, self.outbox = self.outbox, []
        out.records.extend(Outgoing(topics.process, r.process_id, r) for r in sent)
        for pid, state in staged.items():
            if isinstance(state, ProcessState | Ended):
                value = self._keep(state)
                out.records.append(
                    Outgoing(topics.changelog, pid, value, partition=self.tp.partition)
                )
        if batch:
            out.offsets[self.tp] = batch[-1].offset + 1
        await commit(self.producer, out, self.owner.metrics, f"partition {self.tp.partition}")
        for decisions in decided:  # metrics count committed work only
            self._count(decisions)
        for pid, state in staged.items():
            if isinstance(state, ProcessState | Ended):
                old = self.store.get(pid)
                kept = self._keep(state)
                self.store[pid] = kept
                self.timers.add_from(pid, old, kept)
                self.timers.settle(pid, kept)
        self.timers.prune(self.store)
        for req in requests:
            self._run_inline(req)
        self.owner.metrics["transactions"] += 1

    def _decode(self, msg: Message, out: Batch) -> Record | None:
        try:
            return record_of(msg, self.owner.codec)
        except DecodeError as exc:
            self._dead(msg, str(exc), out)
            return None

    def _dead(self, msg: Message, reason: str, out: Batch) -> None:
        log.warning("dead letter from %s@%s: %s", msg.partition, msg.offset, reason)
        self.owner.metrics["dead_lettered"] += 1
        out.records.append(dead_letter(msg, reason, self.owner.topics, self.owner.codec))

    def _keep(self, state: ProcessState | Ended) -> ProcessState | Ended:
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

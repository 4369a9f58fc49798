"""One transaction of a partition of the process topic, decided input by input."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from procession._errors import DecodeError, ProcessionError, UnwritableError
from procession._tracing import Attributes, hop, parent_of, tracing
from procession.sagas._budget import OverBudget, within
from procession.sagas._fold import after_decisions, timeout_timer_id
from procession.sagas._state import Ended, Parked, ProcessState
from procession.topics._codec import BATCH_TYPE
from procession.topics._records import (
    RECORD_TYPES,
    CompensationPlanned,
    Record,
    TaskRequest,
    TimerScheduled,
    TransitionPlanned,
    is_task_request,
)

from ._port import Batch, Headers, Message, Outgoing, TopicPartition, partition_for
from ._wire import Stored, dead_letter, encode, records_of, refused_id
from ._writes import decision_records, parking, state_changes, state_record

if TYPE_CHECKING:
    from procession.sagas._decider import ProcessDefinition

    from ._processor import Processor

log = logging.getLogger("procession.processor")

#: The type headers of decision records and batches. The processor reads its own
#: decisions back from the process topic; it recognises them by the codec's first
#: header and skips them without decoding (more than half of the topic's records).
_DECISION_TYPES = frozenset(
    [BATCH_TYPE.encode()] + [cls.TYPE.encode() for cls in RECORD_TYPES.values() if cls.IS_DECISION]
)


class _Deadline:
    """A decision's budget on the wall clock (the event loop's time, not the saga's)."""

    __slots__ = ("at",)

    def __init__(self, seconds: float) -> None:
        self.at = time.monotonic() + seconds

    def spent(self) -> bool:
        return time.monotonic() > self.at


class Step:
    """What one transaction of a partition writes, gathered process by process.

    :meth:`add` decides each fetched record against the partition's ``store``
    (never changing it); :meth:`finish` gives the batch to commit. A process
    whose input cannot be decided or written is parked; bad records become
    dead letters. After the commit, ``staged`` holds the new states,
    ``requests`` the inline tasks to run and ``decided`` what to count.
    """

    def __init__(self, owner: Processor, tp: TopicPartition, store: dict[str, Stored]) -> None:
        self.owner, self.tp, self.store = owner, tp, store
        self.out = Batch(group=owner.group)
        self.staged: dict[str, Stored | None] = {}
        self.writes: dict[str, list[Outgoing]] = {}  # decisions and task requests
        self.firsts: dict[str, tuple[Record, int]] = {}  # first input here, its offset
        self.requests: dict[str, list[TaskRequest]] = {}  # inline tasks
        self.parks: dict[str, list[Outgoing]] = {}
        self.decided: list[list[Record]] = []
        self.skip: dict[str, int] = {}  # decided by a resume: records below this offset
        self.traced: list[str] = []  # the decide spans, for the commit span's links
        self.armed: dict[str, str] = {}  # timer id -> the decide span that armed it
        self.read = 0  # records added
        self.upto: int | None = None  # the offset after the last record added

    def resume(
        self, pid: str, state: ProcessState | None, held: list[tuple[Record, int]], upto: int
    ) -> None:
        """Take a parked process up again from ``state`` (its stream folded up to the
        parking) and decide the inputs it ``held``, in order; its records in this
        batch below ``upto`` (the resume request's offset) are among them."""
        self.staged[pid] = state
        self.skip[pid] = upto
        for rec, offset in held:
            self._decide(rec, offset)

    def add(self, msg: Message) -> None:
        self.read += 1
        self.upto = msg.offset + 1
        if (
            msg.headers
            and msg.headers[0][0] == "procession-type"
            and (msg.headers[0][1] in _DECISION_TYPES)
        ):
            return  # our own decision, read back (already applied): not decoded
        rec = self._input(msg)
        if rec is not None and msg.offset >= self.skip.get(rec.process_id, -1):
            self._decide(rec, msg.offset, msg.headers)

    def finish(self, first: list[Outgoing]) -> Batch:
        """The transaction: ``first`` (timer firings, inline results, notes), then
        each process's decisions and new state."""
        self.out.records.extend(first)
        for pid in list(self.staged):
            self._write_state(pid)
        if self.upto is not None:
            self.out.offsets[self.tp] = self.upto
        return self.out

    def _decide(self, rec: Record, offset: int, headers: Headers = ()) -> None:
        """Decide one input (a span, a child of the ``traceparent`` in its
        ``headers``); a process whose input cannot be decided or written is parked."""
        pid = rec.process_id
        before = self.staged[pid] if pid in self.staged else self.store.get(pid)
        if isinstance(before, Parked):
            self.owner.metrics["held"] += 1  # stays in the stream until the process resumes
            return
        self.firsts.setdefault(pid, (rec, offset))
        saga = self.owner.app.saga_for(pid)
        assert saga is not None  # checked by _input
        if not tracing():  # the common case: no span to describe
            self._decide_traced(rec, offset, before, saga, None)
            return
        attributes: Attributes = {
            "procession.process_id": pid,
            "procession.saga": saga.name,
            "procession.input": rec.type_name,
            "procession.partition": self.tp.partition,
        }
        parent = parent_of(headers)
        with hop("procession decide", parent, attributes, kind="internal") as traceparent:
            if traceparent is not None:
                self.traced.append(traceparent)
            self._decide_traced(rec, offset, before, saga, traceparent)

    def _decide_traced(
        self,
        rec: Record,
        offset: int,
        before: ProcessState | Ended | None,
        saga: ProcessDefinition,
        traceparent: str | None,
    ) -> None:
        pid, owner = rec.process_id, self.owner
        try:
            with within(_Deadline(owner.decision_budget_s)):
                decisions = saga.decide(before, rec)
            mine = decision_records(
                pid,
                decisions,
                owner.topics,
                owner.codec,
                owner.limits,
                traceparent=traceparent,
                batch=owner.decision_batches,
            )
        except UnwritableError as exc:
            self.staged[pid] = self._park(rec, offset, before, str(exc))
            return
        except OverBudget as exc:
            why = (
                f"decision over its budget of {owner.decision_budget_s:g} s after "
                f"{exc.work:,} steps (PROCESSION_DECISION_BUDGET_S)"
            )
            self.staged[pid] = self._park(rec, offset, before, why)
            return
        except ProcessionError as exc:  # says what is wrong in its own words
            self.staged[pid] = self._park(rec, offset, before, f"decision failed: {exc}")
            return
        except Exception as exc:  # noqa: BLE001 - a failing decision parks its process
            self.staged[pid] = self._park(rec, offset, before, f"decision failed: {exc!r}")
            return
        self.staged[pid] = after_decisions(before, rec, decisions)
        self.writes.setdefault(pid, []).extend(mine)
        self.decided.append(decisions)
        if traceparent is not None:  # its firing continues this trace
            for d in decisions:
                if isinstance(d, TimerScheduled):
                    self.armed[d.timer_id] = traceparent
                elif isinstance(d, TransitionPlanned | CompensationPlanned) and d.timeout_due_ms:
                    self.armed[timeout_timer_id(d)] = traceparent
        for d in decisions:
            if is_task_request(d) and d.mode == "inline":  # type: ignore[attr-defined]
                self.requests.setdefault(pid, []).append(d)  # type: ignore[arg-type]

    def _write_state(self, pid: str) -> None:
        """Add a process's writes and its new state to the transaction, or park it
        when the state cannot be written (then none of its inputs here is decided)."""
        state = self.staged[pid]
        if state is None:
            if pid in self.skip:  # resumed, and still no process: the marker goes
                topic = self.owner.topics.changelog
                self.out.records.append(Outgoing(topic, pid, None, partition=self.tp.partition))
            return  # nothing to keep (an input for no process)
        changes: list[Outgoing] = []
        if isinstance(state, ProcessState):
            ended = None
            if state.terminal and not self.owner.app.keep_completed:
                ended = Ended.of(state.status)
            try:
                changes = self._state_changes(pid, state, ended)
                state = ended or state
            except UnwritableError as exc:
                rec, offset = self.firsts[pid]
                self.writes.pop(pid, None)
                state = self._park(rec, offset, self.store.get(pid), str(exc))
        if not changes:
            if isinstance(state, Parked):
                self.requests.pop(pid, None)
            changes = [self._state_record(pid, state)]
        self.staged[pid] = state
        self.out.records.extend(self.writes.get(pid, ()))
        self.out.records.extend(self.parks.get(pid, ()))  # after the decisions it follows
        self.out.records.extend(changes)

    def _input(self, msg: Message) -> Record | None:
        """The input record ``msg`` holds, or None (dead-lettered, or a decision)."""
        try:
            rec = records_of(msg, self.owner.codec)[0]
        except DecodeError as exc:
            self._dead(msg, str(exc))
            return None
        if rec.IS_DECISION:
            return None  # our own decisions (or a batch of them), read back: already applied
        pid = rec.process_id
        why = ""
        if (refused := refused_id(pid)) is not None:
            why = refused
        elif self.owner.app.saga_for(pid) is None:
            why = f"no saga for process {pid!r}"
        elif msg.key != pid:
            why = f"key {msg.key!r} is not {pid!r}"
        elif (home := partition_for(pid, self.owner.partition_count)) != self.tp.partition:
            why = (
                f"key {pid!r} belongs on partition {home}, found on {self.tp.partition} "
                "(written with another partitioner than murmur2?)"
            )
        if why:
            self._dead(msg, why)
            return None
        return rec

    def _park(self, rec: Record, offset: int, before: Stored | None, reason: str) -> Parked:
        """Set a process aside: record why, hold its later inputs; the partition goes on."""
        pid, owner = rec.process_id, self.owner
        log.error("process %s parked at %s@%s: %s", pid, self.tp.partition, offset, reason)
        owner.metrics["parked"] += 1
        state = before if isinstance(before, ProcessState) else None
        record, marker = parking(
            pid,
            correlation_id=state.correlation_id if state else rec.correlation_id,
            seq=state.seq if state else 0,
            reason=reason,
            time_ms=owner.clock.now_ms(),
            cause=rec,
            offset=offset,
        )
        self.parks[pid] = [encode(owner.topics.process, pid, record, owner.codec)]
        return marker

    def _state_record(self, pid: str, state: Stored) -> Outgoing:
        topic = self.owner.topics.changelog
        return state_record(pid, state, topic, self.tp.partition, self.owner.limits)

    def _state_changes(self, pid: str, state: ProcessState, ended: Ended | None) -> list[Outgoing]:
        topic, limits = self.owner.topics.changelog, self.owner.limits
        return state_changes(pid, state, topic, self.tp.partition, limits, ended=ended)

    def _dead(self, msg: Message, reason: str) -> None:
        log.warning("dead letter from %s@%s: %s", msg.partition, msg.offset, reason)
        self.owner.metrics["dead_lettered"] += 1
        self.out.records.append(dead_letter(msg, reason, self.owner.topics, self.owner.limits))

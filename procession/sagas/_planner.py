"""Build decision records with derived ids, applying each to a scratch state.

Hand-written deciders use it too: ``Planner(state, input)`` then ``emit``.
"""

from __future__ import annotations

from typing import Any, TypeVar

from procession.topics._records import Decided, InputIgnored, Record

from ._budget import check
from ._fold import AnyState, apply_decision, evolve
from ._ids import IdPrefix, prefix
from ._state import ProcessState, ended

D = TypeVar("D", bound=Decided)


class Planned(list[Record]):
    """A planner's decisions, with the scratch state they were applied to.

    ``state`` is the planner's state after the input and ``applied`` decisions
    (``ignored``: one of them is an ``InputIgnored``);
    :func:`procession.sagas._fold.after_decisions` uses it instead of folding
    the same decisions a second time, when it is that fold's result.
    """

    __slots__ = ("applied", "ignored", "state")

    def __init__(self, state: ProcessState) -> None:
        super().__init__()
        self.state, self.applied, self.ignored = state, 0, False


class Planner:
    """Collects the decisions for one input.

    ``state`` is the process state after the input was applied; every emitted
    record is applied to it at once, so later choices see earlier ones.

    Example:
        >>> from procession.topics import DomainEvent, ProcessStarted
        >>> e = DomainEvent(event_id="e1", process_id="p", correlation_id="c",
        ...                 event_type="Go", time_ms=5)
        >>> p = Planner(None, e)
        >>> rec = p.emit(ProcessStarted, saga="s", version=1, machines={"m": "A"})
        >>> rec.causation_id, rec.seq, p.state.status
        ('e1', 1, 'running')
    """

    def __init__(self, before: AnyState, cause: Record) -> None:
        self.cause = cause
        self.now_ms = cause.time_ms
        after = evolve(before, cause)
        self.seq = 0 if ended(before) else (after.seq if isinstance(after, ProcessState) else 1)
        self.state: ProcessState = (
            after if isinstance(after, ProcessState) else ProcessState(cause.process_id)
        )
        self.records = Planned(self.state)
        #: the position of the next decision, which its id is derived from
        self.position = 0
        self._ids: IdPrefix | None = None

    @property
    def correlation_id(self) -> str:
        return self.state.correlation_id or self.cause.correlation_id

    def emit(self, kind: type[D], **fields: Any) -> D:
        """Record a decision of ``kind`` and apply it to the scratch state."""
        check()
        cause, records, state = self.cause, self.records, self.state
        position = self.position
        # a task request carrying its timeout holds the two decisions (the request,
        # the TimerScheduled) older writers made of it: the ids after it stay theirs
        self.position += 1 if fields.get("timeout_due_ms") is None else 2
        record = kind(
            event_id=(self._ids or self._prefix).derive(position),
            process_id=cause.process_id,
            correlation_id=state.correlation_id or cause.correlation_id,
            causation_id=cause.event_id,
            time_ms=self.now_ms,
            seq=self.seq,
            **fields,
        )
        records.append(record)
        apply_decision(state, record)
        records.applied += 1
        if kind is InputIgnored:
            records.ignored = True
        return record

    def task_id(self, machine_id: str, transition: str) -> str:
        """The id of a task planned now: stable across replays, new per planning."""
        return (self._ids or self._prefix).derive(machine_id, transition)

    @property
    def _prefix(self) -> IdPrefix:
        """The prefix of this input's decisions' ids (made on first use)."""
        ids = self._ids
        if ids is None:
            ids = self._ids = prefix(self.cause.process_id, self.cause.event_id, self.seq)
        return ids

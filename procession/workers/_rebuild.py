"""Rebuild the changelog from the process topic, and notice when it was lost.

The process topic holds every input and every decision; a process's state is
the fold of its stream. What the processor had committed is the inputs below
its group's committed offset plus every decision (decisions are written after
the inputs they answer, in the same transaction as that offset). Folding
exactly those gives the states the changelog should hold.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from procession._errors import ProcessionError
from procession.sagas._fold import fold
from procession.sagas._state import Ended, Parked, ProcessState
from procession.topics._codec import BATCH_TYPE, Codec
from procession.topics._records import ProcessParked, Record

from ._port import Message
from ._wire import Stored, readable


@dataclass
class ChangelogLostError(ProcessionError):
    """A changelog partition that is empty while the process topic shows that
    processes were decided there: the changelog was deleted or recreated."""

    changelog: str
    partition: int
    committed: int

    def message(self) -> str:
        return (
            f"{self.changelog} partition {self.partition} is empty, but the processor group "
            f"has decided {self.committed} records of its process topic partition: the "
            "changelog was lost or recreated; stop the processors and run "
            "`procession recover MODULE:APP` to rebuild it from the process topic"
        )


def rebuild(
    messages: Sequence[Message], committed: int, codec: Codec, *, keep_completed: bool = False
) -> dict[str, Stored]:
    """The states a process-topic partition gives: its inputs below ``committed``
    and every decision, folded per process (a parked process as its marker, an
    ended one as its end marker unless ``keep_completed``).

    Example:
        >>> rebuild([], 0, Codec())
        {}
    """
    streams: dict[str, list[tuple[int, Record]]] = {}
    for msg, rec in readable(messages, codec):
        if rec.IS_DECISION or msg.offset < committed:
            streams.setdefault(rec.process_id, []).append((msg.offset, rec))
    out: dict[str, Stored] = {}
    for pid, items in streams.items():
        records = [r for _, r in items]
        parked = next((r for r in records if isinstance(r, ProcessParked)), None)
        if parked is not None:
            at = next(
                (o for o, r in items if not r.IS_DECISION and r.event_id == parked.input_id), -1
            )
            out[pid] = Parked(parked.reason, parked.input_id, at)
            continue
        state = fold(records)
        if isinstance(state, ProcessState) and state.terminal and not keep_completed:
            state = Ended.of(state.status)
        if state is not None:
            out[pid] = state
    return out


#: A process's first decision, alone or in a batch (which holds decisions only
#: of a process that has started).
_STARTED = (b"procession.ProcessStarted", BATCH_TYPE.encode())


def decided_any(messages: Sequence[Message], committed: int) -> bool:
    """Whether a decision was recorded among the first ``committed`` records."""
    return any(
        m.offset < committed
        and m.headers
        and m.headers[0][0] == "procession-type"
        and m.headers[0][1] in _STARTED
        for m in messages
    )

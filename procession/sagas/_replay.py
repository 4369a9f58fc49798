"""Replay check: re-run today's decision code over a recorded history.

A change to a saga that would decide differently for processes already
running shows up as the first divergence: the input, what was recorded, and
what the code decides now.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from procession.topics._records import (
    CompensationPlanned,
    Record,
    TimerScheduled,
    TransitionPlanned,
)

from ._fold import AnyState, replay_steps

Decide = Callable[[AnyState, Record], list[Record]]


@dataclass(frozen=True)
class Divergence:
    """Where the current code stops reproducing a recorded history."""

    position: int
    input: Record
    expected: list[Record]
    got: list[Record]

    def __str__(self) -> str:
        def names(rs: list[Record]) -> str:
            return ", ".join(r.type_name.rpartition(".")[2] for r in rs) or "nothing"

        first = next(
            (i for i, (a, b) in enumerate(zip(self.expected, self.got, strict=False)) if a != b),
            min(len(self.expected), len(self.got)),
        )
        detail = ""
        if first < len(self.expected) and first < len(self.got):
            was, now = self.expected[first], self.got[first]
            if type(was) is type(now):
                fields = [
                    f"{f.name} {getattr(was, f.name)!r} -> {getattr(now, f.name)!r}"
                    for f in dataclasses.fields(was)
                    if getattr(was, f.name) != getattr(now, f.name)
                ]
                detail = f"; #{first} {was.type_name.rpartition('.')[2]}: " + ", ".join(fields)
            else:
                detail = f"; first difference:\n  recorded {was}\n  now      {now}"
        return (
            f"input #{self.position} {self.input.type_name} ({self.input.event_id}): "
            f"recorded [{names(self.expected)}], now [{names(self.got)}]{detail}"
        )


def replay_check(decide: Decide, history: Iterable[Record]) -> Divergence | None:
    """The first input whose decisions differ from the recorded ones, or None.

    With ``Versions(...).decide``, each process is replayed on the version its
    ``ProcessStarted`` names (and on through the migrations it recorded), so
    a change shows up only in the histories of the version it changed.

    Example::

        assert replay_check(saga.decide, recorded) is None
    """
    # several versions (Versions.decide): each step as it was taken, on its version
    replay = getattr(getattr(decide, "__self__", None), "replay", None)
    for position, ((rec, before, recorded), _) in enumerate(replay_steps(history)):
        got = replay(before, rec, recorded) if replay is not None else decide(before, rec)
        if got != recorded and got != one_record_per_request(recorded):
            return Divergence(position, rec, recorded, got)
    return None


def one_record_per_request(decisions: list[Record]) -> list[Record]:
    """Decisions as today's writer makes them: a task request's ``TimerScheduled``
    of purpose ``task-timeout`` (older writers wrote one after each request) folded
    into the request's ``timeout_due_ms``. Ids are unchanged: the request keeps its
    own, and the records after it keep theirs (the planner counts it as two)."""
    out: list[Record] = []
    for rec in decisions:
        last = out[-1] if out else None
        if (
            isinstance(rec, TimerScheduled)
            and rec.purpose == "task-timeout"
            and isinstance(last, TransitionPlanned | CompensationPlanned)
            and last.timeout_due_ms is None
            and (last.task_id, last.attempt) == (rec.task_id, rec.attempt)
        ):
            out[-1] = dataclasses.replace(last, timeout_due_ms=rec.due_ms)
        else:
            out.append(rec)
    return out

"""The per-partition timer queue: due times of the durable timers held in states."""

from __future__ import annotations

import heapq
from collections.abc import Iterable

from procession.sagas._ids import derive_id
from procession.sagas._state import Ended, Parked, ProcessState, Timer
from procession.topics._records import TimerFired

_NONE: dict[str, object] = {}


class TimerQueue:
    """A heap of (due, process, timer) checked against the states when popped."""

    def __init__(self) -> None:
        self._heap: list[tuple[int, str, str]] = []
        self._fired: dict[str, set[str]] = {}
        self._live = 0

    def add_from(self, pid: str, old: object, new: object) -> None:
        """Queue the timers ``new`` has that ``old`` had not.

        For a big (split) state only the machines it changed since ``old`` are
        looked at (its ``dirty`` parts); a small one's timers are few.
        """
        known = old.timers if isinstance(old, ProcessState) else _NONE
        self._live -= len(known)
        if not isinstance(new, ProcessState):
            return
        self._live += len(new.timers)
        found: Iterable[tuple[str, Timer]] = new.timers.items()
        if isinstance(old, ProcessState) and old.split:
            found = (
                t for key in new.dirty if key[:2] == "m:" for t in new.timers_of_machine(key[2:])
            )
        for timer_id, timer in found:
            if timer_id not in known:
                heapq.heappush(self._heap, (timer.due_ms, pid, timer_id))

    def prune(self, store: dict[str, ProcessState | Ended | Parked]) -> None:
        """Drop entries of timers no state holds any more, once they are most of the heap."""
        if len(self._heap) < 1024 or len(self._heap) < 4 * self._live:
            return
        self._heap = [e for e in self._heap if _live(store.get(e[1]), e[2])]
        heapq.heapify(self._heap)
        self._live = len(self._heap)

    def next_due(self) -> int | None:
        return self._heap[0][0] if self._heap else None

    def due(self, now_ms: int, store: dict[str, ProcessState | Ended | Parked]) -> list[TimerFired]:
        """TimerFired inputs for every live timer due by ``now_ms``, each once."""
        out: list[TimerFired] = []
        while self._heap and self._heap[0][0] <= now_ms:
            due_ms, pid, timer_id = heapq.heappop(self._heap)
            state = store.get(pid)
            if not isinstance(state, ProcessState) or not _live(state, timer_id):
                continue
            fired = self._fired.setdefault(pid, set())
            if timer_id in fired:
                continue
            fired.add(timer_id)
            out.append(
                TimerFired(
                    event_id=derive_id(pid, timer_id, "fired"),
                    process_id=pid,
                    correlation_id=state.correlation_id,
                    causation_id=None,
                    time_ms=now_ms,
                    timer_id=timer_id,
                    due_ms=due_ms,
                )
            )
        return out

    def settle(self, pid: str, state: object) -> None:
        """Forget fired timers that ``state`` no longer holds."""
        fired = self._fired.get(pid)
        if fired is None:
            return
        live = state.timers if isinstance(state, ProcessState) else {}
        fired.intersection_update(live)
        if not fired:
            del self._fired[pid]

    def pending(self) -> int:
        """Fired timers not yet read back."""
        return sum(len(f) for f in self._fired.values())


def _live(state: object, timer_id: str) -> bool:
    return isinstance(state, ProcessState) and timer_id in state.timers

"""Clocks: the real one, and a virtual one that tests move by hand."""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import time
from datetime import timedelta
from typing import Protocol


class Clock(Protocol):
    """Where the runtimes (never the core) read the time and wait for it."""

    def now_ms(self) -> int: ...

    async def wait(self, event: asyncio.Event, due_ms: int | None) -> None:
        """Until ``event`` is set or the time reaches ``due_ms`` (None: no deadline)."""
        ...


class SystemClock:
    """Wall-clock time."""

    def now_ms(self) -> int:
        return int(time.time() * 1000)

    async def wait(self, event: asyncio.Event, due_ms: int | None) -> None:
        timeout = None if due_ms is None else max(0.0, (due_ms - self.now_ms()) / 1000)
        # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation
        # that arrives as it times out (CPython issue 86296), and a loop would not stop.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await event.wait()


class VirtualClock:
    """Time that moves only when told; sleepers wake as it passes their due time.

    Example:
        >>> clock = VirtualClock(start_ms=1_000)
        >>> clock.advance(timedelta(seconds=2))
        >>> clock.now_ms()
        3000
    """

    def __init__(self, start_ms: int = 0) -> None:
        self._now = start_ms
        self._sleepers: list[tuple[int, int, asyncio.Event]] = []
        self._armed: set[tuple[int, int]] = set()

    def now_ms(self) -> int:
        return self._now

    async def wait(self, event: asyncio.Event, due_ms: int | None) -> None:
        if due_ms is not None:
            if due_ms <= self._now:
                return
            if (due_ms, id(event)) not in self._armed:
                self._armed.add((due_ms, id(event)))
                heapq.heappush(self._sleepers, (due_ms, id(event), event))
        await event.wait()

    def advance(self, delta: timedelta) -> None:
        """Move time forward and wake every waiter now due."""
        self._now += round(delta.total_seconds() * 1000)
        while self._sleepers and self._sleepers[0][0] <= self._now:
            due, key, event = heapq.heappop(self._sleepers)
            self._armed.discard((due, key))
            event.set()

"""Clocks: the real one, and a virtual one that tests move by hand."""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from datetime import timedelta
from typing import Protocol


class Clock(Protocol):
    """Where the runtimes (never the core) read the time and wait for it."""

    def now_ms(self) -> int: ...

    async def sleep_until(self, due_ms: int) -> None: ...


class SystemClock:
    """Wall-clock time."""

    def now_ms(self) -> int:
        return int(time.time() * 1000)

    async def sleep_until(self, due_ms: int) -> None:
        await asyncio.sleep(max(0.0, (due_ms - self.now_ms()) / 1000))


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
        self._sleepers: list[tuple[int, int, asyncio.Future[None]]] = []
        self._order = itertools.count()

    def now_ms(self) -> int:
        return self._now

    async def sleep_until(self, due_ms: int) -> None:
        if due_ms <= self._now:
            await asyncio.sleep(0)
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (due_ms, next(self._order), fut))
        await fut

    def advance(self, delta: timedelta) -> None:
        """Move time forward and wake every sleeper now due."""
        self._now += round(delta.total_seconds() * 1000)
        while self._sleepers and self._sleepers[0][0] <= self._now:
            _, _, fut = heapq.heappop(self._sleepers)
            if not fut.done():
                fut.set_result(None)

"""Try again with exponential backoff until a deadline, then give up loudly."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


async def until_deadline(
    attempt: Callable[[], Awaitable[T]],
    retry_on: type[BaseException] | tuple[type[BaseException], ...],
    deadline_s: float,
    on_retry: Callable[[BaseException, float], None],
    *,
    first_s: float = 0.05,
    most_s: float = 2.0,
) -> T:
    """``attempt()`` until it returns, retrying ``retry_on`` errors after pauses
    that double from ``first_s`` up to ``most_s``; ``on_retry(error, pause)``
    before each pause. The last pause ends at the deadline, where one more
    try is made: its error is raised as it is.

    Example:
        >>> tries = []
        >>> async def flaky() -> str:
        ...     tries.append(1)
        ...     if len(tries) < 3:
        ...         raise ConnectionError("not yet")
        ...     return "done"
        >>> asyncio.run(until_deadline(flaky, ConnectionError, 5.0, lambda e, s: None, first_s=0))
        'done'
    """
    delay, give_up = first_s, time.monotonic() + deadline_s
    while True:
        try:
            return await attempt()
        except retry_on as exc:
            if (left := give_up - time.monotonic()) <= 0:
                raise
            pause = min(delay, left)
            on_retry(exc, pause)
            await asyncio.sleep(pause)
            delay = min(delay * 2, most_s)

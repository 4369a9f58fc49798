"""What a running process is waiting on: every asyncio task's and thread's stack.

A long-lived command logs this on SIGUSR1 (``kill -USR1 <pid>``), so a replica
that seems stuck (a rebalance that does not end, a partition that does not
move) can be asked where it is without stopping it.
"""

from __future__ import annotations

import asyncio
import io
import sys
import threading
import traceback
from types import FrameType

#: The frames shown per task or thread, innermost last.
DEPTH = 12


def stacks(loop: asyncio.AbstractEventLoop | None = None) -> str:
    """A report of every pending task of ``loop`` (the running one by default)
    and every thread, each with its stack.

    Example:
        >>> import asyncio
        >>> async def main() -> str:
        ...     asleep = asyncio.create_task(asyncio.sleep(5), name="napping")
        ...     await asyncio.sleep(0)
        ...     report = stacks()
        ...     asleep.cancel()
        ...     return report
        >>> report = asyncio.run(main())
        >>> "task napping" in report and "thread MainThread" in report
        True
    """
    loop = loop or asyncio.get_running_loop()
    out = io.StringIO()
    tasks = sorted(asyncio.all_tasks(loop), key=lambda t: t.get_name())
    out.write(f"{len(tasks)} tasks, {threading.active_count()} threads\n")
    for task in tasks:
        out.write(f"task {task.get_name()}:\n")
        frames = _awaiting(task.get_coro())
        awaited = getattr(task, "_fut_waiter", None)  # what it is blocked on, if a future
        if not frames:
            out.write("  (not started)\n")
        for frame in frames[-DEPTH:]:  # outermost first, as a traceback reads
            out.write(_line(frame.f_code.co_filename, frame.f_lineno, frame.f_code.co_name))
        if awaited is not None:  # a future: a task, a thread's result, a timer
            out.write(f"  awaits {awaited!r:.200}\n")
    names = {t.ident: t.name for t in threading.enumerate()}
    for ident, frame in sys._current_frames().items():
        out.write(f"thread {names.get(ident, ident)}:\n")
        for summary in traceback.extract_stack(frame, limit=DEPTH):
            out.write(_line(summary.filename, summary.lineno or 0, summary.name))
    return out.getvalue()


def _awaiting(coro: object) -> list[FrameType]:
    """The frames of a coroutine and of what it awaits, down the chain (a task's
    own ``get_stack()`` stops at its outermost coroutine)."""
    frames: list[FrameType] = []
    while coro is not None:
        frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
        frame = frame or getattr(coro, "ag_frame", None)
        if frame is None:
            break
        frames.append(frame)
        coro = (
            getattr(coro, "cr_await", None)
            or getattr(coro, "gi_yieldfrom", None)
            or getattr(coro, "ag_await", None)
        )
    return frames


def _line(filename: str, lineno: int, name: str) -> str:
    return f"  {filename}:{lineno} in {name}\n"

"""An executor of one daemon thread, for client calls that may never return."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from concurrent.futures import Executor, Future
from typing import Any, ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")

_Job = tuple[Future[Any], Callable[..., Any], tuple[Any, ...], dict[str, Any]]


class OneThread(Executor):
    """Runs calls one at a time, in order, on one daemon thread.

    A ``ThreadPoolExecutor`` is joined when the interpreter exits, so one call
    stuck inside a C library (librdkafka can block past its own timeouts) keeps
    a process that has already failed from exiting. This thread is not joined:
    the process exits, and its supervisor starts a new one.

    Example:
        >>> pool = OneThread("example")
        >>> pool.submit(sum, [1, 2, 3]).result()
        6
        >>> pool.shutdown()
    """

    def __init__(self, name: str) -> None:
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._lock = threading.Lock()
        self._shut = False

    def submit(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> Future[T]:
        with self._lock:
            if self._shut:
                raise RuntimeError(f"{self._thread.name}: shut down")
            if self._thread.ident is None:  # not started yet
                self._thread.start()
            future: Future[T] = Future()
            self._jobs.put((future, fn, args, kwargs))
            return future

    def _run(self) -> None:
        while (job := self._jobs.get()) is not None:
            future, fn, args, kwargs = job
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(fn(*args, **kwargs))
            except BaseException as exc:  # noqa: BLE001 - handed to whoever awaits it
                future.set_exception(exc)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """No more calls; the thread ends after those queued (``wait``: wait for that)."""
        with self._lock:
            if self._shut:
                return
            self._shut = True
            self._jobs.put(None)
        if wait and self._thread.ident is not None:
            self._thread.join()

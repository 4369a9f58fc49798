"""Ready-made applications of the example sagas, for the ``procession`` command.

Example::

    procession topics create procession.examples.apps:rebase_app
    procession processor procession.examples.apps:rebase_app
    procession worker procession.examples.apps:rebase_app
"""

from __future__ import annotations

import threading
from datetime import timedelta

from procession._errors import TaskError
from procession.topics._layout import Topics
from procession.workers import App, TaskCall

from .rebase import rebase_saga


class FlakyCloser:
    """Closes instances; the first attempt on ``flaky`` fails (a busy instance)."""

    def __init__(self, flaky: str) -> None:
        self.flaky = flaky
        self.calls: list[tuple[str, int]] = []
        self._lock = threading.Lock()

    def __call__(self, call: TaskCall) -> dict[str, object]:
        instance = call.payload["instance"]
        with self._lock:
            self.calls.append((instance, call.attempt))
        if instance == self.flaky and call.attempt == 1:
            raise TaskError(f"instance {instance} is busy (injected failure)", retryable=True)
        return {"closed": instance}


def rebase_app() -> App:
    """The rebase saga on topics ``procession-demo.*``; closing instance B fails once.

    ``procession demo --bootstrap-servers ...`` runs the same app.

    Example:
        >>> rebase_app().task_types()
        ['CloseInstance']
    """
    return App(
        [rebase_saga(backoff=timedelta(milliseconds=200))],
        {"CloseInstance": FlakyCloser(flaky="B")},
        topics=Topics("procession-demo"),
    )

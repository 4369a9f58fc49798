"""The app the Kafka tests run in subprocesses (``procession processor tests.kafka_app:app``).

Its topic prefix comes from ``PROCESSION_TEST_PREFIX``; ``PROCESSION_TEST_SLOW_S``
makes every task take that long (to kill a worker mid-task), and
``PROCESSION_TEST_STARTED_FILE`` gets a line per task a handler has started.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from procession.examples import rebase_saga
from procession.topics._layout import Topics
from procession.workers import App, TaskCall


async def close(call: TaskCall) -> dict[str, Any]:
    started = os.environ.get("PROCESSION_TEST_STARTED_FILE")
    if started:  # tells a test that this handler holds the task now
        with open(started, "a") as f:  # noqa: ASYNC230 - a tiny test-only marker write
            f.write(f"{call.task_id}\n")
    await asyncio.sleep(float(os.environ.get("PROCESSION_TEST_SLOW_S", "0")))
    return {"closed": call.payload["instance"], "attempt": call.attempt}


def app() -> App:
    prefix = os.environ.get("PROCESSION_TEST_PREFIX", "procession-test")
    return App(
        [rebase_saga()],
        {"CloseInstance": close},
        topics=Topics(prefix, partitions=3, task_partitions=3),
    )

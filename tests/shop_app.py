"""The shop's app as a test's worker subprocess runs it
(``procession worker tests.shop_app:app``): its database is ``SHOP_DB``, its
topic prefix ``PROCESSION_TEST_PREFIX``. The first ``ChargeCard`` to commit
its effect writes its task id to ``SHOP_CRASH_MARKER`` and SIGKILLs the
process before the result can be committed: the task is then delivered again.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

from procession.examples.shop import Shop
from procession.topics._layout import Topics
from procession.workers import App, TaskCall


def app() -> App:
    prefix = os.environ["PROCESSION_TEST_PREFIX"]
    shop = Shop(os.environ["SHOP_DB"], topics=Topics(prefix, partitions=3, task_partitions=3))
    handlers: dict[str, Any] = shop.handlers()
    marker = Path(os.environ["SHOP_CRASH_MARKER"])
    charge = handlers["ChargeCard"]

    def charge_then_die(call: TaskCall) -> Any:
        result = charge(call)  # committed to the database
        with open(f"{marker}.calls", "a") as f:
            f.write(f"{call.task_id} {call.attempt}\n")
        try:  # the first one only, however many threads get here
            fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return result
        os.write(fd, call.task_id.encode())
        os.close(fd)
        os.kill(os.getpid(), signal.SIGKILL)
        return result

    handlers["ChargeCard"] = charge_then_die
    return App(shop.app().sagas.values(), handlers, topics=shop.topics)  # type: ignore[arg-type]

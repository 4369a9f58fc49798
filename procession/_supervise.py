"""Run a process's components until a signal or until one of them can go on no longer.

A long-lived command (processor, router, worker) must never stay alive and
idle after a part of it died: the first crash stops everything else and the
process exits 1, so its supervisor (systemd, Kubernetes) restarts it.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Sequence
from typing import Any, Protocol

from procession._errors import one_line as reason
from procession._stacks import stacks

log = logging.getLogger("procession")

#: How long one component may take to stop before the others are stopped anyway.
STOP_DEADLINE_S = 30.0


class Supervised(Protocol):
    """A processor, router or worker.

    After ``start()`` a component has ``crashed``, an ``asyncio.Future`` that
    gets the exception that ended it once it cannot go on (or None when it
    runs nothing, e.g. a worker without task types).
    """

    crashed: asyncio.Future[BaseException] | None

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


async def supervise(parts: Sequence[tuple[str, Supervised]], stop: asyncio.Event) -> int:
    """Start ``parts`` (role, component) in order; 0 once ``stop`` is set, 1 on a failure.

    A failure is a component's ``start()`` raising or its ``crashed`` future
    completing; it is logged as one line at ERROR, without a traceback, and
    every started component is stopped (in reverse order) before returning.
    SIGTERM and SIGINT set ``stop``; SIGUSR1 logs every task's and thread's
    stack at WARNING (what the process waits on) and lets it run on.
    """
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGUSR1, _log_stacks, loop)
    previous = loop.get_exception_handler()
    loop.set_exception_handler(dropped_connection)
    started: list[tuple[str, Supervised]] = []
    try:
        for role, part in parts:
            started.append((role, part))  # a half-started component has things to close
            try:
                await part.start()
            except Exception as exc:  # noqa: BLE001 - whatever it was, one line and exit 1
                log.error("%s could not start: %s", role, reason(exc))
                return 1
        return await _watch(started, stop)
    finally:
        await _stop_all(started)
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1):
            loop.remove_signal_handler(sig)
        loop.set_exception_handler(previous)


def _log_stacks(loop: asyncio.AbstractEventLoop) -> None:
    log.warning("SIGUSR1: the stacks of %s", stacks(loop))


def dropped_connection(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """The event loop's handler of errors nobody retrieved, while components run.

    aiokafka leaves the error of a connection the broker reset mid-read in a
    future nobody awaits (its clients reconnect by themselves); that one is
    logged as one WARNING line. Anything else keeps asyncio's report, traceback
    included: it is a bug to see.
    """
    exc = context.get("exception")
    if isinstance(exc, ConnectionError):
        log.warning("%s: %s", context.get("message", "connection lost"), reason(exc))
        return
    loop.default_exception_handler(context)


async def _watch(parts: Sequence[tuple[str, Supervised]], stop: asyncio.Event) -> int:
    watched: dict[asyncio.Future[BaseException], str] = {}
    for role, part in parts:
        if part.crashed is not None:  # None: it runs nothing (a worker without task types)
            watched[part.crashed] = role
    log.info("%s running", " and ".join(role for role, _ in parts))
    stopping = asyncio.ensure_future(stop.wait())
    waits: list[asyncio.Future[Any]] = [stopping, *watched]
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopping.cancel()
    for future in watched:
        if future.done():  # the component logged its one line when it died
            return 1
    return 0


async def _stop_all(parts: Sequence[tuple[str, Supervised]]) -> None:
    for role, part in reversed(parts):
        try:
            async with asyncio.timeout(STOP_DEADLINE_S):
                await part.stop()
        except TimeoutError:
            log.error("%s did not stop within %.0f s", role, STOP_DEADLINE_S)
        except Exception as exc:  # noqa: BLE001 - the others must still be stopped
            log.error("%s failed to stop: %s", role, reason(exc))

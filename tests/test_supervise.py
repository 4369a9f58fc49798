"""The supervisor of a long-lived command, with stand-in components (no broker needed):
the first crash stops everything and exits 1; a stop request exits 0."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import subprocess
import sys

import pytest

from procession._errors import FencedError
from procession._supervise import supervise
from procession.workers._component import Component


class Part(Component):
    """A component that records its life and can be made to crash or fail to start."""

    def __init__(self, life: list[str], name: str, *, fails: BaseException | None = None) -> None:
        self.life, self.name, self.fails = life, name, fails

    async def start(self) -> None:
        self.life.append(f"start {self.name}")
        if self.fails is not None:
            raise self.fails
        self.arm()

    async def stop(self) -> None:
        self.life.append(f"stop {self.name}")


async def running(life: list[str], n: int) -> None:
    async with asyncio.timeout(5):
        while sum(e.startswith("start") for e in life) < n:
            await asyncio.sleep(0)


async def test_the_first_crash_of_any_part_stops_all_and_exits_1(
    caplog: pytest.LogCaptureFixture,
) -> None:
    life: list[str] = []
    parts = [Part(life, "a"), Part(life, "b"), Part(life, "c")]
    run = asyncio.create_task(supervise([(p.name, p) for p in parts], asyncio.Event()))
    await running(life, 3)
    await asyncio.sleep(0)
    assert not run.done()
    parts[1].died(FencedError("shop.router.1"))
    assert await asyncio.wait_for(run, 5) == 1
    assert life == ["start a", "start b", "start c", "stop c", "stop b", "stop a"]
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert [r.getMessage() for r in errors] == [
        "b stopped: producer 'shop.router.1' was fenced by a newer instance "
        "(or the broker aborted its transaction after transaction.timeout.ms)"
    ]
    assert errors[0].exc_info is None


async def test_a_foreign_exception_is_named_by_its_type(
    caplog: pytest.LogCaptureFixture,
) -> None:
    life: list[str] = []
    part = Part(life, "worker")
    run = asyncio.create_task(supervise([("worker", part)], asyncio.Event()))
    await running(life, 1)
    part.died(ConnectionResetError())
    assert await asyncio.wait_for(run, 5) == 1
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == ["worker stopped: ConnectionResetError"]


async def test_a_stop_request_stops_every_part_and_exits_0(
    caplog: pytest.LogCaptureFixture,
) -> None:
    life: list[str] = []
    stop = asyncio.Event()
    parts = [Part(life, "processor"), Part(life, "router")]
    run = asyncio.create_task(supervise([(p.name, p) for p in parts], stop))
    await running(life, 2)
    stop.set()
    assert await asyncio.wait_for(run, 5) == 0
    assert life[-2:] == ["stop router", "stop processor"]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_a_part_that_cannot_start_stops_those_started_and_exits_1(
    caplog: pytest.LogCaptureFixture,
) -> None:
    life: list[str] = []
    parts = [Part(life, "processor"), Part(life, "router", fails=OSError("no route"))]
    ok = Part(life, "never")
    code = await asyncio.wait_for(
        supervise([*((p.name, p) for p in parts), ("never", ok)], asyncio.Event()), 5
    )
    assert code == 1
    assert life == ["start processor", "start router", "stop router", "stop processor"]
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == [
        "router could not start: OSError: no route"
    ]


async def test_a_part_without_a_crash_report_is_run_until_stopped() -> None:
    life: list[str] = []
    quiet = Part(life, "worker")
    stop = asyncio.Event()

    async def start_without_report() -> None:
        life.append("start worker")

    quiet.start = start_without_report  # type: ignore[method-assign]
    run = asyncio.create_task(supervise([("worker", quiet)], stop))
    await running(life, 1)
    await asyncio.sleep(0)
    assert not run.done()
    stop.set()
    assert await asyncio.wait_for(run, 5) == 0


async def test_a_connection_error_nobody_retrieved_is_one_warning_line_others_keep_a_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """aiokafka leaves a reset connection's error in a future nobody awaits."""
    life: list[str] = []
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    before = loop.get_exception_handler()
    run = asyncio.create_task(supervise([("worker", Part(life, "worker"))], stop))
    await running(life, 1)
    for error in (ConnectionResetError(104, "Connection reset by peer"), ValueError("a bug")):
        lost = loop.create_future()
        lost.set_exception(error)
        del lost  # asyncio reports it when the future is collected
        gc.collect()
    stop.set()
    assert await run == 0
    assert loop.get_exception_handler() is before
    reset = [r for r in caplog.records if "Connection reset by peer" in r.getMessage()]
    assert [(r.levelname, r.name, r.exc_info) for r in reset] == [("WARNING", "procession", None)]
    assert "ConnectionResetError" in reset[0].getMessage()
    bug = [r for r in caplog.records if r.exc_info and r.exc_info[0] is ValueError]
    assert [(r.levelname, r.name) for r in bug] == [("ERROR", "asyncio")]


async def test_sigusr1_logs_every_task_and_thread_stack_and_the_process_runs_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """``kill -USR1`` asks a replica that seems stuck what it waits on."""
    life: list[str] = []
    stop = asyncio.Event()
    run = asyncio.create_task(supervise([("worker", Part(life, "worker"))], stop), name="the-run")
    await running(life, 1)
    waiting = asyncio.create_task(asyncio.Event().wait(), name="a-waiting-task")
    os.kill(os.getpid(), signal.SIGUSR1)
    async with asyncio.timeout(5):
        while not any("SIGUSR1" in r.getMessage() for r in caplog.records):
            await asyncio.sleep(0.01)
    [report] = [r.getMessage() for r in caplog.records if "SIGUSR1" in r.getMessage()]
    assert "task a-waiting-task:\n" in report and "in wait\n  awaits <Future pending" in report
    assert "task the-run:\n" in report and "in _watch\n" in report
    assert "thread MainThread:\n" in report
    assert not run.done()
    stop.set()
    assert await asyncio.wait_for(run, 5) == 0
    assert signal.getsignal(signal.SIGUSR1) == signal.SIG_DFL  # the handler is gone with it
    waiting.cancel()


def test_a_call_stuck_on_a_client_thread_does_not_keep_the_process_from_exiting() -> None:
    """A process whose librdkafka call never returns must still exit once it failed
    (a ThreadPoolExecutor's thread is joined at exit: this one is not)."""
    script = (
        "import threading\n"
        "from procession.workers._thread import OneThread\n"
        "OneThread('stuck').submit(threading.Event().wait)\n"
        "print('exiting')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=30, check=False
    )
    assert (done.returncode, done.stdout) == (0, "exiting\n")

"""One task attempt run by ``execute``: the handler's outcome as a result record."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from pydantic import BaseModel

from procession.sagas import Decider, Task
from procession.topics import TaskCompleted, TaskFailed
from procession.workers import App, TaskCall
from procession.workers._execute import execute
from tests.records import task_request


class Poke(BaseModel):
    id: str


def _app(handler: Any, timeout: timedelta | None) -> App:
    go = Task("Go", timeout=timeout)
    saga = Decider("t", lambda s, r: [], correlate={Poke: lambda e: e.id}, tasks=[go])
    return App([saga], {"Go": handler})


async def test_a_handler_past_its_task_timeout_fails_retryably() -> None:
    never = asyncio.Event()

    async def stuck(call: TaskCall) -> None:
        await never.wait()

    run = execute(_app(stuck, timedelta(milliseconds=20)), task_request(), 5)
    result = await asyncio.wait_for(run, 10)  # not cut short by the task's timeout: fails
    assert isinstance(result, TaskFailed)
    assert (result.reason, result.error_type, result.retryable) == (
        "handler timed out after 0.02s",
        "TimeoutError",
        True,
    )
    assert (result.task_id, result.attempt, result.causation_id) == ("t", 1, "d1")


async def test_a_handler_without_a_timeout_runs_to_its_end() -> None:
    async def slow(call: TaskCall) -> dict[str, Any]:
        for _ in range(3):
            await asyncio.sleep(0)  # gives the loop away: nothing may cut it short
        return {"seen": call.task_id}

    result = await execute(_app(slow, None), task_request(), 5)
    assert isinstance(result, TaskCompleted)
    assert result.result == {"seen": "t"}


async def test_a_handler_raising_cancelled_error_itself_fails_its_attempt() -> None:
    async def cancelled_inside(call: TaskCall) -> None:
        raise asyncio.CancelledError  # an awaited call of its own was cancelled

    result = await execute(_app(cancelled_inside, None), task_request(), 5)
    assert isinstance(result, TaskFailed)
    assert (result.error_type, result.retryable) == ("CancelledError", False)  # not an Exception


async def test_a_running_attempt_cancelled_from_outside_stays_cancelled() -> None:
    started, never = asyncio.Event(), asyncio.Event()

    async def waits(call: TaskCall) -> None:
        started.set()
        await never.wait()

    run = asyncio.create_task(execute(_app(waits, None), task_request(), 5))
    await started.wait()
    run.cancel()  # the worker stopping, or giving the partition up
    done, _ = await asyncio.wait([run], timeout=10)
    assert done == {run} and run.cancelled()

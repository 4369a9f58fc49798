"""Run one task attempt and turn its outcome into a result record."""

from __future__ import annotations

import asyncio
import inspect
import logging
from typing import Any

import orjson

from procession._errors import TaskError
from procession.sagas._ids import derive_id
from procession.topics._records import (
    CompensationPlanned,
    TaskCompleted,
    TaskFailed,
    TransitionPlanned,
)

from ._app import App, TaskCall

log = logging.getLogger("procession.tasks")


async def execute(
    app: App, request: TransitionPlanned | CompensationPlanned, now_ms: int
) -> TaskCompleted | TaskFailed:
    """Run the handler for ``request``; never raises for a handler's failure."""
    task_type = request.task_type or ""
    spec = app.tasks[task_type]
    call = TaskCall(
        task_type,
        request.task_id or "",
        request.attempt,
        request.payload,
        request.process_id,
        request.machine_id,
        request.correlation_id,
    )
    common: dict[str, Any] = {
        "event_id": derive_id(request.process_id, call.task_id, call.attempt, "result"),
        "process_id": request.process_id,
        "correlation_id": request.correlation_id,
        "causation_id": request.event_id,
        "time_ms": now_ms,
        "machine_id": request.machine_id,
        "task_id": call.task_id,
        "task_type": task_type,
        "attempt": call.attempt,
    }
    timeout = spec.timeout.total_seconds() if spec.timeout else None
    try:
        if timeout is None:  # no deadline to keep (a timeout context costs a tenth of a task)
            result = await _call(app, task_type, call)
        else:
            async with asyncio.timeout(timeout):
                result = await _call(app, task_type, call)
    except TaskError as exc:
        return TaskFailed(
            **common, reason=exc.reason, error_type="TaskError", retryable=exc.retryable
        )
    except TimeoutError:
        reason = f"handler timed out after {timeout:g}s"
        return TaskFailed(**common, reason=reason, error_type="TimeoutError")
    except Exception as exc:  # noqa: BLE001 - any handler error becomes a TaskFailed record
        return _failed(common, exc, spec.retry.retryable(exc))
    except asyncio.CancelledError as exc:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise  # the worker is stopping or gave the partition up: not the handler's doing
        # the handler raised it itself (an awaited call of its own was cancelled): a
        # failure like any other, else its attempt would never report back
        return _failed(common, exc, spec.retry.retryable(exc))
    try:
        orjson.dumps(result)
    except TypeError as exc:
        reason = f"result is not JSON: {exc}"
        return TaskFailed(**common, reason=reason, error_type="TypeError", retryable=False)
    return TaskCompleted(**common, result=result)


def _failed(common: dict[str, Any], exc: BaseException, retryable: bool) -> TaskFailed:
    log.info("task %s attempt %s failed: %r", common["task_id"], common["attempt"], exc)
    return TaskFailed(
        **common, reason=repr(exc), error_type=type(exc).__name__, retryable=retryable
    )


async def _call(app: App, task_type: str, call: TaskCall) -> Any:
    handler = app.handlers[task_type]
    if inspect.iscoroutinefunction(handler):
        return await handler(call)
    result = await asyncio.to_thread(handler, call)
    if inspect.isawaitable(result):
        return await result
    return result

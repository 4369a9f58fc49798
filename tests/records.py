"""Records the tests write by hand, with defaults: a task request and its result."""

from __future__ import annotations

from typing import Any

from procession.topics import TaskCompleted, TransitionPlanned


def task_request(pid: str = "t:1", **fields: Any) -> TransitionPlanned:
    """An async request of task ``t`` (type ``Go``) on machine ``m`` of process ``pid``."""
    defaults: dict[str, Any] = {
        "event_id": "d1",
        "process_id": pid,
        "correlation_id": pid,
        "seq": 1,
        "machine_id": "m",
        "transition": "go",
        "from_state": "A",
        "to_state": "B",
        "task_type": "Go",
        "mode": "async",
        "task_id": "t",
    }
    return TransitionPlanned(**{**defaults, **fields})


def task_result(pid: str = "t:1", **fields: Any) -> TaskCompleted:
    """Task ``t`` (type ``Go``, attempt 1) of machine ``m`` of process ``pid`` completed."""
    defaults: dict[str, Any] = {
        "event_id": "e1",
        "process_id": pid,
        "correlation_id": pid,
        "machine_id": "m",
        "task_id": "t",
        "task_type": "Go",
        "attempt": 1,
    }
    return TaskCompleted(**{**defaults, **fields})

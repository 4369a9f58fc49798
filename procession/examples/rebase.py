"""The seed scenario: a failed rebase closes its environment instances.

``RebaseFailed(rebase_id, [A, B, C])`` creates one machine per instance, moves
each Working -> Closing through an async ``CloseInstance`` task, and the
process completes when all of them have closed.
"""

from __future__ import annotations

from datetime import timedelta

from pydantic import BaseModel

from procession.sagas import ForEach, Machine, RetryPolicy, Saga, State, Task, all_of


class RebaseFailed(BaseModel):
    """A rebase failed; its environment instances must be closed."""

    rebase_id: str
    instances: list[str]


def rebase_saga(backoff: timedelta = timedelta(milliseconds=200)) -> Saga:
    """The rebase saga; ``backoff`` is the first retry delay of ``CloseInstance``."""
    working = State("Working", initial=True)
    closing = State("Closing", final=True)
    close_instance = Task(
        "CloseInstance",
        payload=lambda c: {"instance": c.key, "rebase_id": c.event.rebase_id},
        retry=RetryPolicy(max_attempts=3, initial=backoff, jitter=0.2),
        timeout=timedelta(seconds=30),
    )
    instance = Machine(
        "instance",
        states=[working, closing],
        transitions=[working.to(closing, on=RebaseFailed, task=close_instance)],
        per=ForEach(RebaseFailed, lambda e: e.instances),
    )
    return Saga(
        "rebase",
        machines=[instance],
        correlate={RebaseFailed: lambda e: e.rebase_id},
        starts=[RebaseFailed],
        completes_when=all_of(instance, closing),
    )

"""Task workers: a consumer group on task topics that runs handlers and reports back.

Each fetched batch (at most ``concurrency`` tasks) runs concurrently; the
results go to the process topic, keyed by process id, in one transaction with
the batch's offsets. Retries are the processor's decision, never a loop here.
"""

from __future__ import annotations

import asyncio
import itertools
import os
from collections.abc import Sequence

from procession._errors import DecodeError, RegistrationError
from procession.topics._codec import DEFAULT_CODEC, Codec
from procession.topics._records import CompensationPlanned, TaskFailed, TransitionPlanned

from ._app import App
from ._clock import Clock, SystemClock
from ._execute import execute
from ._loop import BatchLoop
from ._port import Batch, Message, Outgoing, Transport
from ._wire import dead_letter, record_of

_instances = itertools.count(1)


class Worker(BatchLoop):
    """Runs task handlers for some (default: all) task types of an app.

    Example::

        worker = Worker(app, transport, task_types=["CloseInstance"], concurrency=32)
        await worker.start()
    """

    def __init__(
        self,
        app: App,
        transport: Transport,
        clock: Clock | None = None,
        *,
        task_types: Sequence[str] | None = None,
        concurrency: int = 16,
        codec: Codec = DEFAULT_CODEC,
        poll_s: float = 0.1,
        name: str | None = None,
    ) -> None:
        task_types = list(task_types or app.task_types())
        missing = [t for t in task_types if t not in app.handlers]
        if missing:
            raise RegistrationError("*", f"worker has no handler for task types {missing}")
        name = name or f"{app.topics.prefix}.worker.{os.getpid()}.{next(_instances)}"
        super().__init__(transport, f"{app.topics.prefix}.workers", name, poll_s, concurrency)
        self.app, self.codec, self.task_types = app, codec, task_types
        self.clock = clock or SystemClock()

    async def start(self) -> None:
        if self.task_types:  # an app without tasks needs no worker
            await self.start_loop([self.app.topics.tasks(t) for t in self.task_types])

    def busy(self) -> bool:
        return bool(self.task_types) and super().busy()

    async def handle(self, msgs: list[Message]) -> Batch:
        """Run the batch's tasks concurrently; their results, and dead letters."""
        batch = Batch()
        jobs: list[tuple[Message, TransitionPlanned | CompensationPlanned]] = []
        for msg in msgs:
            try:
                rec = record_of(msg, self.codec)
            except DecodeError as exc:
                batch.records.append(dead_letter(msg, str(exc), self.app.topics, self.codec))
                continue
            if not isinstance(rec, TransitionPlanned | CompensationPlanned) or not rec.task_type:
                why = f"not a task request: {rec.type_name}"
                batch.records.append(dead_letter(msg, why, self.app.topics, self.codec))
                continue
            jobs.append((msg, rec))
        results = await asyncio.gather(
            *(execute(self.app, r, self.clock.now_ms()) for _, r in jobs)
        )
        for (msg, _), result in zip(jobs, results, strict=True):
            batch.records.append(Outgoing(self.app.topics.process, result.process_id, result))
            self.metrics["failed" if isinstance(result, TaskFailed) else "completed"] += 1
            if isinstance(result, TaskFailed) and not result.retryable:
                why = f"non-retryable failure: {result.reason}"
                batch.records.append(dead_letter(msg, why, self.app.topics, self.codec))
        return batch

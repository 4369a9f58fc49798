"""Task workers: a consumer group on task topics that runs handlers and reports back.

Each fetched batch (at most ``concurrency`` tasks) runs concurrently; the
results go to the process topic, keyed by process id, in one transaction with
the batch's offsets. Retries are the processor's decision, never a loop here.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
from collections import Counter
from collections.abc import Sequence

from procession._errors import DecodeError, FencedError, RegistrationError
from procession.topics._codec import DEFAULT_CODEC, Codec
from procession.topics._records import CompensationPlanned, TaskFailed, TransitionPlanned

from ._app import App
from ._clock import Clock, SystemClock
from ._committer import commit
from ._execute import execute
from ._port import Batch, Consumer, Message, Outgoing, Transport
from ._wire import dead_letter, record_of

log = logging.getLogger("procession.worker")
_instances = itertools.count(1)


class Worker:
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
        self.app, self.transport, self.codec = app, transport, codec
        self.clock = clock or SystemClock()
        self.task_types = list(task_types or app.task_types())
        missing = [t for t in self.task_types if t not in app.handlers]
        if missing:
            raise RegistrationError("*", f"worker has no handler for task types {missing}")
        self.concurrency, self.poll_s = concurrency, poll_s
        self.group = f"{app.topics.prefix}.workers"
        self.name = name or f"{app.topics.prefix}.worker.{os.getpid()}.{next(_instances)}"
        self.metrics: Counter[str] = Counter()
        self._producer = transport.producer(self.name)
        self._consumer: Consumer | None = None
        self._task: asyncio.Task[None] | None = None
        self._working = False
        #: Why the loop stopped on its own (None while it runs or after stop()).
        self.failure: BaseException | None = None

    async def start(self) -> None:
        if not self.task_types:
            return  # an app without tasks needs no worker
        await self._producer.start()
        topics = [self.app.topics.tasks(t) for t in self.task_types]
        self._consumer = await self.transport.consumer(self.group, topics)
        self._task = asyncio.create_task(self._loop(), name=f"procession-{self.name}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._consumer is not None:
            await self._consumer.stop()
            await self._producer.stop()

    def busy(self) -> bool:
        """Working on a batch, or not yet read up to the end of its partitions."""
        if not self.task_types:
            return False
        return self._working or self._consumer is None or not self._consumer.caught_up()

    async def _loop(self) -> None:
        assert self._consumer is not None
        try:
            while True:
                msgs = await self._consumer.fetch(self.poll_s, self.concurrency)
                if msgs:
                    self._working = True
                    await self._run(msgs)
                    self._working = False
        except FencedError as exc:
            log.error("worker %s stopped: %s", self.name, exc)
            self.failure = exc
        except Exception as exc:
            log.exception("worker %s died", self.name)
            self.failure = exc
            raise
        finally:
            self._working = False

    async def _run(self, msgs: list[Message]) -> None:
        batch = Batch(group=self.group)
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
        for msg in msgs:
            batch.offsets[msg.tp] = max(batch.offsets.get(msg.tp, 0), msg.offset + 1)
        await commit(self._producer, batch, self.metrics, self.name)

"""Task workers: a consumer group on task topics that runs handlers and reports back.

Tasks run concurrently, up to ``concurrency`` at a time. Each task-topic
partition has its own transactional producer (a static id, see
:class:`Writers`) and commits results as tasks finish, with the offset up to
which every task has finished: a slow task never holds a fast one's result.
Retries are the processor's decision, never a loop here.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Sequence

from procession._errors import DecodeError, RecordTooLargeError, RegistrationError
from procession.topics._codec import DEFAULT_CODEC, Codec
from procession.topics._records import (
    CompensationPlanned,
    TaskCompleted,
    TaskFailed,
    TaskRequest,
    TransitionPlanned,
)

from ._app import App
from ._clock import Clock, SystemClock
from ._component import Component
from ._loop import Claims
from ._port import Consumer, Message, Outgoing, TopicPartition, Transport, record_limits
from ._stats import Stats
from ._task_partition import TaskPartition
from ._topic_check import verify
from ._wire import dead_letter, encode, record_of
from ._writers import Writers

log = logging.getLogger("procession.worker")


class Worker(Component):
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
        revoke_deadline_s: float = 10.0,
    ) -> None:
        task_types = list(task_types or [t for t in app.task_types() if t not in app.external])
        missing = [t for t in task_types if t not in app.handlers]
        if missing:
            known = app.task_types()
            raise RegistrationError(
                "*", f"no handler for task types {missing}; the app has {known}"
            )
        self.app, self.transport, self.codec, self.task_types = app, transport, codec, task_types
        self.clock = clock or SystemClock()
        self.concurrency, self.poll_s = concurrency, poll_s
        self.revoke_deadline_s = revoke_deadline_s
        prefix = app.topics.prefix
        self.name, self.group = f"{prefix}.worker", f"{prefix}.workers"
        self.metrics: Counter[str] = Counter()
        self.stats = Stats()
        self.writers = Writers(transport, self.name)
        self.parts: dict[TopicPartition, TaskPartition] = {}
        self.unclaimed: set[TopicPartition] = set()  # assigned, previous owner not fenced yet
        self.limits: dict[str, int] = {}
        self.freed = asyncio.Event()
        self._consumer: Consumer | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        if not self.task_types:  # an app without tasks needs no worker
            return
        t = self.app.topics
        names = {t.process, t.dead_letter, *(t.tasks(x) for x in self.task_types)}
        specs = [s for s in t.specs(self.app.task_types()) if s.name in names]
        found = await verify(self.transport, specs, settings=False)
        self.limits = record_limits(found)
        self.arm()
        self._consumer = await self.transport.consumer(
            self.group, [t.tasks(x) for x in self.task_types], self._on_assign, self._on_revoke
        )
        self.writers.consumer = self._consumer
        self._task = asyncio.create_task(self._loop(), name=f"procession-{self.name}")

    async def stop(self) -> None:
        """Let running tasks finish (within the revoke deadline), commit, leave the group."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self._on_revoke(list(self.parts))
        if self._consumer is not None:
            await self._consumer.stop()
        await self._on_revoke(list(self.parts))  # assigned while the consumer was leaving
        await self.writers.close()

    def busy(self) -> bool:
        """Tasks running or results uncommitted, a partition not yet taken over, or
        records unread."""
        if not self.task_types:
            return False
        if self.unclaimed or self._consumer is None or not self._consumer.caught_up():
            return True
        return any(p.busy() for p in self.parts.values())

    def ready(self) -> bool:
        """Joined, and every assigned partition taken over (a worker with no task
        types runs nothing and is always ready)."""
        return not self.task_types or self.member_ready(self._consumer, self.unclaimed)

    def gauges(self) -> dict[str, float]:
        return {**self.lag_of(self._consumer), "tasks_running": self.running()}

    def running(self) -> int:
        return sum(len(p.pending) for p in self.parts.values())

    async def _loop(self) -> None:
        assert self._consumer is not None
        claims = Claims(self.unclaimed, self.writers, f"procession-{self.name}")
        try:
            while True:
                claims.step(self._consumer)
                room = self.concurrency - self.running()
                if room <= 0:  # every slot busy: keep the group served, wait for one
                    self.freed.clear()
                    await self._consumer.fetch(0, 0)
                    await _wait(self.freed, self.poll_s)
                    continue
                for msg in await self._consumer.fetch(self.poll_s, room):
                    part = self.parts.get(msg.tp)
                    if part is not None and msg.tp not in self.unclaimed:  # else not ours yet
                        part.add(msg)
        except (asyncio.CancelledError, GeneratorExit):  # stopped, not failed
            raise
        except BaseException as exc:  # noqa: BLE001 - whatever ends the loop is reported
            self.died(exc)
        finally:
            await claims.stop()

    async def _on_assign(self, tps: Sequence[TopicPartition]) -> None:
        for tp in tps:
            if tp not in self.parts:  # one per partition, however often it is told
                self.parts[tp] = TaskPartition(self, tp)
        self.unclaimed.update(tps)

    async def _on_revoke(self, tps: Sequence[TopicPartition]) -> None:
        self.unclaimed.difference_update(tps)
        parts = [self.parts.pop(tp) for tp in tps if tp in self.parts]
        try:
            await asyncio.gather(*(p.close(self.revoke_deadline_s) for p in parts))
            await self.writers.drop(tps)
        except Exception as exc:  # noqa: BLE001 - the consumer's callback would only log it
            self.died(exc)

    # ------------------------------------------------------------ one task

    def request_of(self, msg: Message) -> TaskRequest | str:
        """The task request a message holds, or why it is not one."""
        try:
            rec = record_of(msg, self.codec)
        except DecodeError as exc:
            return str(exc)
        if not isinstance(rec, TransitionPlanned | CompensationPlanned) or not rec.task_type:
            return f"not a task request: {rec.type_name}"
        if rec.task_type not in self.app.handlers:
            return f"no handler for task type {rec.task_type!r}"
        return rec

    def dead(self, msg: Message, reason: str) -> list[Outgoing]:
        log.warning("dead letter from %s@%s: %s", msg.partition, msg.offset, reason)
        self.metrics["dead_lettered"] += 1
        return [dead_letter(msg, reason, self.app.topics, self.limits)]

    def results(
        self, msg: Message, result: TaskCompleted | TaskFailed, traceparent: str | None = None
    ) -> list[Outgoing]:
        """The result record for the process topic (and a dead letter for a final
        failure), carrying the task span's ``traceparent``."""
        topic, limit = self.app.topics.process, self.limits[self.app.topics.process]
        out = encode(topic, result.process_id, result, self.codec, traceparent=traceparent)
        if too_large := out.too_large(limit, "result"):
            result = _too_large(result, str(too_large))
            out = encode(topic, result.process_id, result, self.codec, traceparent=traceparent)
        self.metrics["failed" if isinstance(result, TaskFailed) else "completed"] += 1
        if isinstance(result, TaskFailed) and not result.retryable:
            return [out, *self.dead(msg, f"non-retryable failure: {result.reason}")]
        return [out]


def _too_large(result: TaskCompleted | TaskFailed, reason: str) -> TaskFailed:
    """What is recorded when a result is too large to record: a final failure."""
    return TaskFailed(
        event_id=result.event_id,
        process_id=result.process_id,
        correlation_id=result.correlation_id,
        causation_id=result.causation_id,
        time_ms=result.time_ms,
        machine_id=result.machine_id,
        task_id=result.task_id,
        task_type=result.task_type,
        attempt=result.attempt,
        reason=reason,
        error_type=RecordTooLargeError.__name__,
        retryable=False,
    )


async def _wait(event: asyncio.Event, timeout_s: float) -> None:
    try:
        async with asyncio.timeout(timeout_s):
            await event.wait()
    except TimeoutError:
        pass

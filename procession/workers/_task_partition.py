"""The tasks of one task-topic partition: run concurrently, committed as they finish."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

from procession._errors import FencedError
from procession._tracing import Attributes, hop, parent_of, tracing
from procession.topics._records import TaskCompleted, TaskFailed

from ._committer import commit
from ._execute import execute
from ._port import Batch, Message, Outgoing, TopicPartition

if TYPE_CHECKING:
    from procession.topics._records import TaskRequest

    from ._worker import Worker


class TaskPartition:
    """Runs a partition's tasks and commits their results as they finish.

    Each commit carries the results ready so far and the offset below which
    every task has finished, so a crash re-delivers from the oldest unfinished
    task on, finished tasks after it included (at least once, never lost).
    """

    def __init__(self, worker: Worker, tp: TopicPartition) -> None:
        self.worker, self.tp = worker, tp
        self.pending: dict[int, asyncio.Task[None]] = {}  # offset -> running task
        self.ready: list[Outgoing] = []
        self.first = -1  # the first offset handed over: nothing to commit before it
        self.fetched = -1  # the highest offset handed over
        self.committed = -1  # the offset committed last
        self.wake = asyncio.Event()
        self.closing = False
        self.committing = False
        self.committer = asyncio.create_task(self._commit_loop(), name=f"procession-commit-{tp}")

    def busy(self) -> bool:
        return bool(self.pending or self.ready or self.committing or self.wake.is_set())

    def add(self, msg: Message) -> None:
        if msg.offset <= self.fetched:
            return  # read again after a rewind: it runs, or its result awaits the commit
        if self.first < 0:
            self.first = msg.offset
        self.fetched = msg.offset
        request = self.worker.request_of(msg)
        if isinstance(request, str):
            self.ready += self.worker.dead(msg, request)
            self.wake.set()
            return
        self.pending[msg.offset] = asyncio.create_task(self._run(msg, request))

    async def _run(self, msg: Message, request: TaskRequest) -> None:
        worker = self.worker
        try:
            started = time.monotonic()
            if tracing():
                result, traceparent = await self._traced(msg, request)
            else:  # the common case: no span to make
                result, traceparent = (
                    await execute(worker.app, request, worker.clock.now_ms()),
                    None,
                )
            outcome = "completed" if isinstance(result, TaskCompleted) else "failed"
            worker.stats.observe(
                "task_seconds",
                time.monotonic() - started,
                task_type=request.task_type or "",
                outcome=outcome,
            )
            del self.pending[msg.offset]  # a cancelled task stays pending: not committed
            self.ready += worker.results(msg, result, traceparent)
        except (asyncio.CancelledError, GeneratorExit):  # stopped, not failed
            raise
        except BaseException as exc:  # noqa: BLE001 - execute() reports handler errors; not this
            worker.died(exc)
            return
        self.wake.set()
        worker.freed.set()

    async def _traced(
        self, msg: Message, request: TaskRequest
    ) -> tuple[TaskCompleted | TaskFailed, str | None]:
        """Run ``request`` in a span, a child of the ``traceparent`` ``msg`` carries;
        the result and the span's ``traceparent``."""
        attributes: Attributes = {
            "procession.process_id": request.process_id,
            "procession.machine_id": request.machine_id,
            "procession.task_type": request.task_type or "",
            "procession.task_id": request.task_id or "",
            "procession.attempt": request.attempt,
        }
        worker = self.worker
        parent = parent_of(msg.headers)
        with hop("procession task", parent, attributes, current=True) as traceparent:
            return await execute(worker.app, request, worker.clock.now_ms()), traceparent

    async def _commit_loop(self) -> None:
        try:
            while not (self.closing and not self.wake.is_set()):
                await self.wake.wait()
                self.wake.clear()
                self.committing = True
                records, self.ready = self.ready, []
                upto = min(self.pending) if self.pending else self.fetched + 1
                moved = self.fetched >= 0 and upto > max(self.committed, self.first)
                offsets = {self.tp: upto} if moved else {}
                if records or offsets:
                    batch = Batch(records, offsets, self.worker.group)
                    producer = await self.worker.writers.get(self.tp)
                    worker = self.worker
                    await commit(producer, batch, worker.metrics, worker.name, worker.stats)
                    self.committed = upto
                self.committing = False
        except (asyncio.CancelledError, GeneratorExit):  # stopped, not failed
            raise
        except FencedError as exc:
            self.worker.fenced(exc, still_ours=self.worker.parts.get(self.tp) is self)
        except BaseException as exc:  # noqa: BLE001 - whatever ends the loop is reported
            self.worker.died(exc)
        finally:
            self.committing = False

    async def close(self, deadline_s: float) -> None:
        """Give running tasks until the deadline, commit what finished, stop."""
        if self.pending:
            _, late = await asyncio.wait(set(self.pending.values()), timeout=deadline_s)
            for task in late:  # the next owner runs these again
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)
        self.closing = True
        self.wake.set()
        _, late = await asyncio.wait({self.committer}, timeout=deadline_s)
        for task in late:
            task.cancel()
        await asyncio.gather(self.committer, return_exceptions=True)

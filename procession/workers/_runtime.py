"""A whole application on one transport: router, processor and workers together.

The in-memory transport is the default; the same class drives Kafka.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Sequence
from datetime import timedelta
from types import TracebackType

from pydantic import BaseModel

from procession.sagas._derive import cancel_request, resume_request, retry_request
from procession.sagas._fold import AnyState, fold
from procession.sagas._state import Ended, Parked, ProcessState, ended
from procession.topics._codec import DEFAULT_CODEC, Codec
from procession.topics._records import CancelMode, Record

from ._app import App
from ._clock import Clock, SystemClock, VirtualClock
from ._memory import MemoryTransport
from ._port import Batch, Outgoing, TopicPartition, Transport, messages_of, partition_for
from ._processor import Processor
from ._router import Router, event_headers
from ._wire import encode, readable
from ._worker import Worker


class Runtime:
    """Runs an :class:`App`: publish events, watch processes, stop.

    Example::

        async with Runtime(app) as rt:
            await rt.publish(RebaseFailed(rebase_id="r1", instances=["A", "B"]))
            await rt.settle()
            print(await rt.state("rebase:r1"))
    """

    def __init__(
        self,
        app: App,
        transport: Transport | None = None,
        clock: Clock | None = None,
        *,
        workers: int = 1,
        concurrency: int = 16,
        codec: Codec = DEFAULT_CODEC,
        poll_s: float | None = None,
        decision_budget_s: float | None = None,
    ) -> None:
        self.app, self.codec = app, codec
        self.clock = clock or SystemClock()
        memory = transport is None or isinstance(transport, MemoryTransport)
        self.transport: Transport = transport or MemoryTransport(clock_ms=self.clock.now_ms)
        poll = poll_s if poll_s is not None else (0.05 if memory else 0.1)
        self._quiet_s = 0.005 if memory else 3 * poll
        self.router = Router(app, self.transport, self.clock, codec=codec, poll_s=poll)
        self.processor = Processor(app, self.transport, self.clock, codec=codec, poll_s=poll)
        if decision_budget_s is not None:
            self.processor.decision_budget_s = decision_budget_s
        self.workers = [
            Worker(
                app, self.transport, self.clock, concurrency=concurrency, codec=codec, poll_s=poll
            )
            for _ in range(workers)
        ]
        self._producer = self.transport.producer(f"{app.topics.prefix}.client.{id(self)}")

    async def __aenter__(self) -> Runtime:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def start(self) -> None:
        """Create the topics, then start the producer and the components; a start
        that fails (topics that cannot work, a broker out of reach) stops what it
        had started before it raises: nothing is left connected."""
        try:
            await self.transport.create_topics(self.app.topics.specs(self.app.task_types()))
            await self._producer.start()
            await self.processor.start()
            for worker in self.workers:
                await worker.start()
            await self.router.start()
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        await self.router.stop()
        for worker in self.workers:
            await worker.stop()
        await self.processor.stop()
        await self._producer.stop()

    async def publish(
        self,
        event: BaseModel,
        *,
        event_id: str | None = None,
        correlation_id: str | None = None,
        key: str | None = None,
    ) -> None:
        """Publish a domain event to the app's input topic."""
        value = event.model_dump_json().encode()
        headers = event_headers(event, event_id, correlation_id)
        out = Outgoing(self.app.topics.inputs, key, value, headers)
        await self._producer.commit(Batch(records=[out]))

    async def publish_many(self, events: Sequence[BaseModel]) -> None:
        """Publish several domain events in one transaction (all or none)."""
        topic = self.app.topics.inputs
        outs = [
            Outgoing(topic, None, e.model_dump_json().encode(), event_headers(e, None, None))
            for e in events
        ]
        await self._producer.commit(Batch(records=outs))

    async def cancel(
        self, process_id: str, mode: CancelMode = "cooperative", reason: str = ""
    ) -> None:
        """Ask a process to cancel: ``hard`` at once, ``cooperative`` with compensations."""
        await self.inject(cancel_request(process_id, self.clock.now_ms(), mode, reason))

    async def resume(self, process_id: str, reason: str = "") -> None:
        """Resume a parked process: its held inputs are decided again, from the
        one it was parked on (fix what parked it first)."""
        await self.inject(resume_request(process_id, self.clock.now_ms(), reason))

    async def retry(self, process_id: str, machine_id: str = "", reason: str = "") -> None:
        """Run the next attempt of a failed task now instead of at its retry timer
        (one machine's, or every failed task's of the process)."""
        await self.inject(retry_request(process_id, self.clock.now_ms(), machine_id, reason))

    async def inject(self, *records: Record) -> None:
        """Write input records straight into their processes' streams (tools, tests)."""
        topic = self.app.topics.process
        outs = [encode(topic, r.process_id, r, self.codec) for r in records]
        await self._producer.commit(Batch(records=outs))

    async def history(self, process_id: str) -> list[Record]:
        """Every record of one process's stream, in log order (read from its
        partition only).

        Records that cannot be decoded are left out: the processor dead-letters them.
        """
        found = await messages_of(self.transport, self.app.topics.process, process_id)
        return [rec for _, rec in readable(found, self.codec)]

    async def state(self, process_id: str) -> AnyState:
        """The process's state, folded from its stream."""
        return fold(await self.history(process_id))

    async def wait(self, process_id: str, timeout_s: float = 30.0) -> AnyState:
        """Wait until the process has ended (completed, failed or cancelled),
        retries and timers included, and return its state; ``TimeoutError``
        naming where it stands if it has not ended within ``timeout_s``.

        On a :class:`VirtualClock` time moves only by :meth:`advance`.

        Example: ``assert (await runtime.wait("rebase:r1")).status == "completed"``.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        read_at = loop.time()  # when to read the stream next, if no member here holds it
        while True:
            self._check_alive()
            held = self._held(process_id)
            now = loop.time()
            # A commit returns before the broker has written its markers, so the
            # stream may not show yet the end this processor holds: the stream's
            # own view is what is returned, read again until it shows the end.
            if ended(held) or (held is None and now >= read_at) or now >= deadline:
                seen = await self.state(process_id)  # another member owns it, or a last look
                if ended(seen):
                    return seen
                held = held if held is not None else seen
                read_at = now + 0.25  # a whole partition read: not every turn
            if loop.time() >= deadline:
                where = "no such process" if held is None else _where(held)
                raise TimeoutError(
                    f"process {process_id!r} has not ended after {timeout_s:g} s: {where}"
                )
            await asyncio.sleep(0.005)

    def _held(self, process_id: str) -> AnyState | Parked:
        """The committed state this runtime's processor holds, if it owns the process."""
        count = self.processor.partition_count
        if not count:
            return None
        tp = TopicPartition(self.app.topics.process, partition_for(process_id, count))
        part = self.processor.partitions.get(tp)
        return None if part is None else part.store.get(process_id)

    def metrics(self) -> Counter[str]:
        total: Counter[str] = Counter()
        total.update(self.router.metrics)
        total.update(self.processor.metrics)
        for worker in self.workers:
            total.update(worker.metrics)
        return total

    async def idle(self, *, workers: bool = True) -> bool:
        """Nothing left to do until a timer is due or new input arrives.

        With ``workers=False`` only the router and the processor are asked (a
        test may hold a task handler on purpose).
        """
        if self.processor.busy() or self.router.busy():
            return False
        return not (workers and any(w.busy() for w in self.workers))

    async def settle(self, timeout_s: float = 30.0, *, workers: bool = True) -> None:
        """Wait until :meth:`idle` holds for a quiet period (a few poll intervals, so
        every consumer has fetched since), or raise ``TimeoutError``.

        It asks this runtime's own members. On Kafka, while a group rebalances
        after another member left, a partition nobody owns yet looks idle:
        wait for an outcome instead (a process's end) when members come and go.
        """
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(timeout_s):
            quiet_since = None
            while True:
                self._check_alive()
                if await self.idle(workers=workers):
                    quiet_since = quiet_since or loop.time()
                    if loop.time() - quiet_since >= self._quiet_s:
                        return
                else:
                    quiet_since = None
                await asyncio.sleep(0.002)

    def _check_alive(self) -> None:
        parts = [("processor", self.processor), ("router", self.router)]
        for name, part in [*parts, *(("worker", w) for w in self.workers)]:
            if part.failure is not None:
                raise RuntimeError(f"the {name} stopped") from part.failure

    async def advance(self, delta: timedelta) -> None:
        """Move a virtual clock forward and settle (tests and simulations)."""
        if not isinstance(self.clock, VirtualClock):
            raise TypeError("advance() needs the runtime to run on a VirtualClock")
        self.clock.advance(delta)
        await self.settle()


def _where(state: ProcessState | Ended | Parked) -> str:
    """Where a process that has not ended stands: parked, or what it waits for."""
    if isinstance(state, Parked):
        return f"parked ({state.reason})"
    if isinstance(state, Ended):
        return state.status
    waiting = [f"{t.task_type} attempt {t.attempt}" for t in state.pending().values()]
    timers = len(state.timers)
    parts: list[str] = [state.status]
    if waiting:
        parts.append("waiting for " + ", ".join(sorted(waiting)[:5]))
    if timers:
        parts.append(f"{timers} timer(s) armed")
    return "; ".join(parts)

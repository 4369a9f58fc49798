"""The floor: Procession's records through Procession's topics, with no saga logic.

Raw aiokafka, the same deployment shape and the same transactional pattern
(consume, produce, send offsets, commit): a processor process running a router
stage and a processor stage (one transactional producer per process-topic
partition), and a worker process. The record values and headers are the bytes
Procession writes for one order, captured from an in-memory run, so sizes
match; the processor stage only counts task results per process to know which
step comes next, and writes one changelog record per process per batch, as
Procession does. What it reaches is the limit of this design on this machine.

    python -m benchmarks.floor processor|worker --servers HOST:PORT --prefix P
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import uuid
from collections import defaultdict
from collections.abc import Callable, Coroutine
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from benchmarks import order_app
from benchmarks.kafka_load import create_topics, drive, running
from benchmarks.load import Result
from procession._gc import tune
from procession.topics._codec import DEFAULT_CODEC
from procession.workers import Batch, MemoryLog, MemoryTransport, Outgoing, Runtime
from procession.workers._kafka import send_all
from procession.workers._kafka_settings import TXN_RETRY_BACKOFF_MS

Headers = list[tuple[str, bytes]]
Out = tuple[str, bytes, bytes, Headers]  # topic, key, value, headers
_PARTITIONS: dict[str, list[int]] = {}  # partition ids per topic, for send_all


@dataclass(frozen=True)
class Templates:
    """What Procession writes for one order, by record kind, as bytes."""

    process: dict[str, list[tuple[bytes, Headers]]]
    tasks: dict[str, tuple[bytes, Headers]]
    changelog: list[bytes]

    def state(self, step: int) -> bytes:
        """The changelog value after ``step`` (the in-memory run may have coalesced some)."""
        return self.changelog[min(step, len(self.changelog) - 2)]


class RecordingLog(MemoryLog):
    """An in-memory log that also keeps every record committed, compacted or not."""

    def __init__(self) -> None:
        super().__init__()
        self.written: list[Outgoing] = []

    def commit(self, transactional_id: str, epoch: int, batch: Batch, now_ms: int) -> None:
        super().commit(transactional_id, epoch, batch, now_ms)
        self.written += batch.records


async def one_order(prefix: str) -> RecordingLog:
    """The log after one order ran through the in-memory runtime, every changelog
    write kept (``written``)."""
    app = order_app.app(prefix)
    log = RecordingLog()
    async with Runtime(app, MemoryTransport(log)) as rt:
        await rt.publish(order_app.order(0))
        await rt.settle()
    return log


def kind(value: bytes) -> str:
    """A process-topic record's kind: its record class, or ``Decisions`` for a batch."""
    found = DEFAULT_CODEC.decode_all(value)
    return "Decisions" if len(found) > 1 else type(found[0]).__name__


async def templates() -> Templates:
    """Every record Procession writes for one order, as bytes."""
    app = order_app.app("floor-template")
    log = await one_order(app.topics.prefix)
    process: dict[str, list[tuple[bytes, Headers]]] = defaultdict(list)
    for m in log.records(app.topics.process):
        assert m.value is not None
        process[kind(m.value)].append((m.value, list(m.headers)))
    tasks = {}
    for task_type in ("ReserveStock", "ChargeCard", "Ship"):
        (m,) = log.records(app.topics.tasks(task_type))
        assert m.value is not None
        tasks[task_type] = (m.value, list(m.headers))
    changelog = [o.value or b"" for o in log.written if o.topic == app.topics.changelog]
    return Templates(dict(process), tasks, changelog)


class Script:
    """The order saga's records, step by step, without deciding anything."""

    def __init__(self, t: Templates, prefix: str) -> None:
        self.t, self.topics = t, order_app.topics(prefix)
        self.results: dict[bytes, int] = defaultdict(int)

    def route(self, key: bytes) -> list[Out]:
        value, headers = self.t.process["DomainEvent"][0]
        return [(self.topics.process, b"order:" + key, value, headers)]

    def work(self, key: bytes) -> list[Out]:
        value, headers = self.t.process["TaskCompleted"][0]
        return [(self.topics.process, key, value, headers)]

    def step(self, kind: bytes, key: bytes) -> tuple[list[Out], bytes | None]:
        """(records, changelog value) for one consumed process-topic record."""
        t, topics, process = self.t, self.topics, self.topics.process
        if not kind.startswith(b"procession."):  # a domain event's own type
            if "Decisions" in t.process:  # the start's three decisions in one batch
                out = [(process, key, *t.process["Decisions"][0])]
            else:
                out = [(process, key, *t.process["ProcessStarted"][0])]
                out += [(process, key, *p) for p in t.process["TransitionPlanned"][:2]]
            out += [(topics.tasks(n), key, *t.tasks[n]) for n in ("ReserveStock", "ChargeCard")]
            return out, t.state(0)
        if kind != b"procession.TaskCompleted":
            return [], None  # the processor's own decisions come back; nothing to do
        self.results[key] += 1
        seen = self.results[key]
        if seen == 1:
            return [], t.state(1)
        if seen == 2:
            ship = [(process, key, *t.process["TransitionPlanned"][-1])]
            return [*ship, (topics.tasks("Ship"), key, *t.tasks["Ship"])], t.state(2)
        del self.results[key]
        return [(process, key, *t.process["ProcessCompleted"][0])], t.changelog[-1]


async def _producer(servers: str, txn_id: str) -> AIOKafkaProducer:
    p = AIOKafkaProducer(
        bootstrap_servers=servers,
        transactional_id=txn_id,
        enable_idempotence=True,
        acks="all",
        linger_ms=2,
        retry_backoff_ms=TXN_RETRY_BACKOFF_MS,  # the same producer settings as Procession's
    )
    await p.start()
    return p


async def _commit(
    p: AIOKafkaProducer, outs: list[Out], offsets: dict[TopicPartition, int], group: str
) -> None:
    await p.begin_transaction()
    # the same batching into one record batch per partition as Procession's producer
    await send_all(p, ((t, None, k, v, h) for t, k, v, h in outs), _PARTITIONS)
    await p.send_offsets_to_transaction(offsets, group)
    await p.commit_transaction()


async def stage(
    servers: str, group: str, topics: list[str], transform: Callable[[bytes], list[Out]]
) -> None:
    """Consume, transform each record, produce and send offsets in one transaction."""
    consumer = AIOKafkaConsumer(
        *topics,
        bootstrap_servers=servers,
        group_id=group,
        isolation_level="read_committed",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    producer = await _producer(servers, f"{group}.{uuid.uuid4().hex[:6]}")
    await consumer.start()
    try:
        while True:
            got = await consumer.getmany(timeout_ms=100, max_records=500)
            if not got:
                continue
            outs = [o for records in got.values() for r in records for o in transform(r.key)]
            offsets = {tp: records[-1].offset + 1 for tp, records in got.items()}
            await _commit(producer, outs, offsets, group)
    finally:
        await consumer.stop()
        await producer.stop()


async def processor_stage(servers: str, prefix: str, script: Script) -> None:
    """One consumer; per partition a queue, a task and a transactional producer."""
    group = f"{prefix}.processor"
    consumer = AIOKafkaConsumer(
        f"{prefix}.process",
        bootstrap_servers=servers,
        group_id=group,
        isolation_level="read_committed",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    queues: dict[TopicPartition, asyncio.Queue[list[object]]] = {}
    tasks: list[asyncio.Task[None]] = []

    async def partition(tp: TopicPartition, queue: asyncio.Queue[list[object]]) -> None:
        producer = await _producer(servers, f"{group}.{tp.partition}")
        try:
            while True:
                records = await queue.get()
                while not queue.empty():
                    records += queue.get_nowait()
                outs: list[Out] = []
                changelog: dict[bytes, bytes] = {}
                for r in records:
                    kind = next((v for k, v in r.headers if k == "procession-type"), b"")  # type: ignore[attr-defined]
                    more, state = script.step(kind, r.key)  # type: ignore[attr-defined]
                    outs += more
                    if state is not None:
                        changelog[r.key] = state  # type: ignore[attr-defined]
                outs += [(f"{prefix}.changelog", k, v, []) for k, v in changelog.items()]
                last = records[-1].offset + 1  # type: ignore[attr-defined]
                await _commit(producer, outs, {tp: last}, group)
        finally:
            await producer.stop()

    await consumer.start()
    try:
        while True:
            got = await consumer.getmany(timeout_ms=100, max_records=500)
            for tp, records in got.items():
                if tp not in queues:
                    queues[tp] = asyncio.Queue()
                    tasks.append(asyncio.create_task(partition(tp, queues[tp])))
                queues[tp].put_nowait(list(records))
            for t in tasks:
                if t.done():
                    t.result()
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await consumer.stop()


async def serve(role: str, servers: str, prefix: str) -> None:
    script = Script(await templates(), prefix)
    topics = order_app.topics(prefix)
    if role == "processor":
        parts = [
            stage(servers, f"{prefix}.router", [topics.inputs], script.route),
            processor_stage(servers, prefix, script),
        ]
    else:
        names = [topics.tasks(n) for n in ("ReserveStock", "ChargeCard", "Ship")]
        parts = [stage(servers, f"{prefix}.worker", names, script.work)]
    runs = [asyncio.ensure_future(p) for p in parts]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    waiting = [asyncio.ensure_future(stop.wait()), *runs]
    await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
    for r in runs:
        r.cancel()
    results = await asyncio.gather(*runs, return_exceptions=True)
    for r in results:
        if isinstance(r, Exception):
            raise r


async def run(servers: str, n: int, window: int) -> Result:
    """The floor for ``n`` orders, driven and measured like Procession on Kafka."""
    system = "floor (raw aiokafka)"
    return await run_stages(
        servers, n, window, module="benchmarks.floor", tag="floor", system=system
    )


async def run_stages(
    servers: str, n: int, window: int, *, module: str, tag: str, system: str
) -> Result:
    """Drive ``n`` orders through a floor whose stages run as ``python -m module``
    (a processor and a worker) on topics of their own, named ``tag-…``."""
    prefix = f"{tag}-{uuid.uuid4().hex[:8]}"
    await create_topics(servers, prefix)
    argv = ["-m", module, "--servers", servers, "--prefix", prefix]
    with running({}) as procs:
        procs.spawn("processor", [*argv, "processor"])
        procs.spawn("worker", [*argv, "worker"])
        return await drive(servers, prefix, n, window, procs=procs, system=system)


def stage_main(
    doc: str | None, serve: Callable[[str, str, str], Coroutine[object, object, None]]
) -> None:
    """The command line of a floor's stage: ``processor|worker --servers --prefix``."""
    parser = argparse.ArgumentParser(description=doc)
    parser.add_argument("role", choices=["processor", "worker"])
    parser.add_argument("--servers", required=True)
    parser.add_argument("--prefix", required=True)
    args = parser.parse_args()
    tune()  # the collector settings of Procession's commands
    asyncio.run(serve(args.role, args.servers, args.prefix))


if __name__ == "__main__":
    stage_main(__doc__, serve)

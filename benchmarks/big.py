"""One big process: a rebase with thousands of environment instances.

``run_core(n)`` measures the pure decision: the fan-out of one ``RebaseFailed``
with ``n`` instances, a later ``TaskCompleted`` in that process beside the same
input in a 3-machine process, and the changelog bytes that completion writes.
``run_kafka(servers, n)`` runs the whole rebase end to end on Kafka with the
broker's default limits, processor and worker in subprocesses.

python -m benchmarks.big [n]            # the core figures
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import time
import uuid
from typing import Any

from benchmarks.core import completed
from procession.examples import RebaseFailed, rebase_saga
from procession.sagas import ProcessState
from procession.sagas._fold import after_decisions
from procession.topics import DomainEvent, TransitionPlanned
from procession.topics._layout import Topics
from procession.workers import App, TaskCall
from procession.workers._writes import state_changes

SAMPLES = 200


def run_core(n: int) -> dict[str, float]:
    """Decide a fan-out to ``n`` machines and later completions; bytes they write."""
    saga = rebase_saga()
    state, requests, fanout_s = _fan_out(n)
    small, small_requests, _ = _fan_out(3)
    per_big = _median(_completions(state, requests[: min(SAMPLES, n)]))
    per_small = _median([_completions(small, small_requests[:1])[0] for _ in range(SAMPLES)])
    limits = {"changelog": 2**20}
    state_changes(state.process_id, state, "changelog", 0, limits)  # the fan-out's commit
    state.dirty = type(state.dirty)()
    done = completed(requests[-1])
    after = after_decisions(state, done, saga.decide(state, done))
    assert isinstance(after, ProcessState)
    writes = state_changes(after.process_id, after, "changelog", 0, limits)
    return {
        "machines": n,
        "fanout_s": fanout_s,
        "completion_us": per_big * 1e6,
        "completion_small_us": per_small * 1e6,
        "changelog_bytes": sum(w.size() for w in writes),
        "changelog_records": len(writes),
    }


def _fan_out(n: int) -> tuple[ProcessState, list[TransitionPlanned], float]:
    saga = rebase_saga()
    pid = "rebase:big"
    event = DomainEvent(
        event_id="e",
        process_id=pid,
        correlation_id=pid,
        time_ms=1,
        event_type="RebaseFailed",
        data={"rebase_id": "big", "instances": [f"env-{i:05}" for i in range(n)]},
    )
    start = time.perf_counter()
    decisions = saga.decide(None, event)
    state = after_decisions(None, event, decisions)
    seconds = time.perf_counter() - start
    assert isinstance(state, ProcessState)
    return state, [d for d in decisions if isinstance(d, TransitionPlanned)], seconds


def _completions(state: ProcessState, requests: list[TransitionPlanned]) -> list[float]:
    """Seconds of each completion, decided and folded as the processor does."""
    saga = rebase_saga()
    current: Any = state
    took = []
    for req in requests:
        done = completed(req)
        start = time.perf_counter()
        current = after_decisions(current, done, saga.decide(current, done))
        took.append(time.perf_counter() - start)
    return took


def _median(values: list[float]) -> float:
    return sorted(values)[len(values) // 2]


# ------------------------------------------------------------------ on Kafka


async def close(call: TaskCall) -> dict[str, Any]:
    return {"closed": call.payload["instance"]}


def app(prefix: str | None = None) -> App:
    """The rebase saga, for the benchmark's processor and worker processes."""
    topics = Topics(prefix or os.environ.get("BENCH_PREFIX", "big"), partitions=3)
    return App([rebase_saga()], {"CloseInstance": close}, topics=topics)


async def run_kafka(servers: str, n: int) -> dict[str, float]:
    """One rebase of ``n`` instances end to end: seconds and peak RSS per role."""
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer  # noqa: PLC0415
    from aiokafka.structs import TopicPartition  # noqa: PLC0415

    from benchmarks.kafka_load import running  # noqa: PLC0415
    from procession.workers._kafka import KafkaTransport  # noqa: PLC0415

    prefix = f"big-{uuid.uuid4().hex[:8]}"
    the_app = app(prefix)
    transport = KafkaTransport(servers)
    try:  # the broker's defaults: no topic setting overridden beyond the app's own
        await transport.create_topics(the_app.topics.specs(the_app.task_types()))
    finally:
        await transport.close()
    cli = ["-m", "procession._cli", "--log-level", "WARNING"]
    target = ["benchmarks.big:app", "--bootstrap-servers", servers]
    producer = AIOKafkaProducer(bootstrap_servers=servers, acks="all", max_request_size=2**21)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=servers, isolation_level="read_committed", enable_auto_commit=False
    )
    with running({"BENCH_PREFIX": prefix}) as procs:
        procs.spawn("processor", [*cli, "processor", *target])
        procs.spawn("worker", [*cli, "worker", *target, "--concurrency", "256"])
        await producer.start()
        await consumer.start()
        try:
            tps = [TopicPartition(the_app.topics.process, p) for p in range(3)]
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            event = RebaseFailed(rebase_id="big", instances=[f"env-{i:05}" for i in range(n)])
            start = time.perf_counter()
            await producer.send_and_wait(
                the_app.topics.inputs,
                value=event.model_dump_json().encode(),
                key=b"big",
                headers=[("procession-type", b"RebaseFailed")],
            )
            async with asyncio.timeout(max(120.0, n / 20)):
                while not await _ended(consumer, procs):
                    pass
            seconds = time.perf_counter() - start
            rss = procs.peak_rss_mib()
        finally:
            with contextlib.suppress(Exception):
                await producer.stop()
            with contextlib.suppress(Exception):
                await consumer.stop()
    return {"machines": n, "seconds": seconds, **{f"rss_{k}_mib": v for k, v in rss.items()}}


async def _ended(consumer: Any, procs: Any) -> bool:
    got = await consumer.getmany(timeout_ms=500, max_records=10_000)
    if not got:
        procs.check()
    for records in got.values():
        for r in records:
            kind = next((v for k, v in r.headers if k == "procession-type"), b"")
            if kind == b"procession.ProcessCompleted":
                return True
            if kind in (b"procession.ProcessFailed", b"procession.ProcessParked"):
                raise RuntimeError(f"the rebase ended with {kind.decode()}: {r.value[:300]!r}")
    return False


if __name__ == "__main__":
    size = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000
    print(run_core(size))
    if servers := os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
        print(asyncio.run(run_kafka(servers, size)))

"""The librdkafka floor: the floor's records and shape on confluent-kafka, EOS v2.

The same topics, partitions, record bytes and headers as ``benchmarks.floor``
(the :class:`~benchmarks.floor.Script` of one order, no saga logic), with
librdkafka's transactional pattern at its simplest: per stage a plain
synchronous loop on a thread of its own, one consumer and one transactional
producer covering every partition it holds (offsets sent with the consumer's
group metadata, KIP-447). What it reaches is the limit of this client here.

    python -m benchmarks.floor_rdkafka processor|worker --servers HOST:PORT --prefix P
"""

from __future__ import annotations

import asyncio
import functools
import signal
import threading
import uuid
from collections.abc import Callable

from confluent_kafka import Consumer, Producer, TopicPartition

from benchmarks import order_app
from benchmarks.floor import Out, Script, run_stages, stage_main, templates
from benchmarks.load import Result
from procession.workers._kafka_settings import FETCH_WAIT_MS, TXN_RETRY_BACKOFF_MS
from procession.workers._rdkafka_consumer import take

#: What one consumed record becomes: (records, changelog value or None).
Step = Callable[[bytes, bytes], tuple[list[Out], bytes | None]]


def stage(
    servers: str,
    group: str,
    topics: list[str],
    step: Step,
    *,
    changelog: str | None,
    stop: threading.Event,
) -> None:
    """Consume, step each record, produce and send offsets in one transaction, until ``stop``."""
    consumer = Consumer(
        {
            "bootstrap.servers": servers,
            "group.id": group,
            "isolation.level": "read_committed",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "partition.assignment.strategy": "cooperative-sticky",
            "fetch.wait.max.ms": FETCH_WAIT_MS,  # as Procession's members
        }
    )
    producer = Producer(
        {
            "bootstrap.servers": servers,
            "transactional.id": f"{group}.{uuid.uuid4().hex[:6]}",
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 2,
            "batch.size": 16_384,
            "retry.backoff.ms": TXN_RETRY_BACKOFF_MS,  # the same producer settings as Procession's
            "retry.backoff.max.ms": 4 * TXN_RETRY_BACKOFF_MS,
            "partitioner": "murmur2_random",
        }
    )
    producer.init_transactions()
    consumer.subscribe(topics)
    try:
        while not stop.is_set():
            got = [m for m in take(consumer, 500, 0.1) if m.error() is None]
            if not got:
                continue
            outs: list[Out] = []
            states: dict[bytes, bytes] = {}
            offsets: dict[tuple[str, int], int] = {}
            for m in got:
                key = m.key() or b""
                kind = next((v for k, v in m.headers() or () if k == "procession-type"), b"")
                more, state = step(kind or b"", key)
                outs += more
                if state is not None:
                    states[key] = state
                offsets[m.topic() or "", m.partition() or 0] = (m.offset() or 0) + 1
            if changelog is not None:
                outs += [(changelog, k, v, []) for k, v in states.items()]
            producer.begin_transaction()
            for topic, key, value, headers in outs:
                producer.produce(topic, value, key, headers=headers or None)
            producer.send_offsets_to_transaction(
                [TopicPartition(t, p, o) for (t, p), o in offsets.items()],
                consumer.consumer_group_metadata(),
            )
            producer.commit_transaction()
            producer.poll(0)
    finally:
        consumer.close()
        producer.flush(5)


async def serve(role: str, servers: str, prefix: str) -> None:
    script = Script(await templates(), prefix)
    topics = order_app.topics(prefix)
    stop = threading.Event()
    if role == "processor":
        stages = [
            (f"{prefix}.router", [topics.inputs], lambda _k, key: (script.route(key), None), None),
            (f"{prefix}.processor", [topics.process], script.step, topics.changelog),
        ]
    else:
        names = [topics.tasks(n) for n in ("ReserveStock", "ChargeCard", "Ship")]
        stages = [(f"{prefix}.worker", names, lambda _k, key: (script.work(key), None), None)]
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    runs = [
        asyncio.to_thread(functools.partial(stage, changelog=c, stop=stop), servers, g, t, s)
        for g, t, s, c in stages
    ]
    await asyncio.gather(*runs)


async def run(servers: str, n: int, window: int) -> Result:
    """The librdkafka floor for ``n`` orders, driven and measured like Procession on Kafka."""
    system = "floor (raw librdkafka, EOS v2)"
    module = "benchmarks.floor_rdkafka"
    return await run_stages(servers, n, window, module=module, tag="floor-rd", system=system)


if __name__ == "__main__":
    stage_main(__doc__, serve)

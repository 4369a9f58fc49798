"""The wire contract (docs/wire.md), played by a service that uses a bare Kafka
client and none of Procession's code: it publishes a domain event twice with
one event id, and serves a task type and replies."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest

from procession.examples import rebase_saga
from procession.topics import InputIgnored, ProcessCompleted, TaskCompleted
from procession.workers import App, Runtime
from tests.conftest import Backend, kafka_servers

pytestmark = pytest.mark.backends("kafka")


async def test_another_service_publishes_an_event_twice_and_serves_the_task(
    backend: Backend,
) -> None:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer  # noqa: PLC0415

    app = App([rebase_saga()], {}, external=["CloseInstance"], topics=backend.topics())
    rt: Runtime = await backend.runtime(app)
    servers = kafka_servers()
    producer = AIOKafkaProducer(bootstrap_servers=servers)  # murmur2, as the Java client
    tasks = AIOKafkaConsumer(
        app.topics.tasks("CloseInstance"),
        bootstrap_servers=servers,
        group_id=f"{backend.prefix}.external-closer",
        isolation_level="read_committed",
        auto_offset_reset="earliest",
    )
    await producer.start()
    await tasks.start()
    try:
        event = json.dumps({"rebase_id": "w1", "instances": ["A"]}).encode()
        headers = [("procession-type", b"RebaseFailed"), ("event-id", b"outbox-row-17")]
        for _ in range(2):  # an outbox that delivered twice
            await producer.send_and_wait(app.topics.inputs, event, key=b"w1", headers=headers)
        request = await _one_request(tasks)
        assert request["type"] == "procession.TransitionPlanned"
        assert request["payload"] == {"instance": "A", "rebase_id": "w1"}
        reply = {
            "event_id": f"{request['task_id']}:{request['attempt']}:done",
            "process_id": request["process_id"],
            "correlation_id": request["correlation_id"],
            "causation_id": request["event_id"],
            "time_ms": int(time.time() * 1000),
            "machine_id": request["machine_id"],
            "task_id": request["task_id"],
            "task_type": request["task_type"],
            "attempt": request["attempt"],
            "result": {"closed": "A", "by": "external-closer"},
            "type": "procession.TaskCompleted",
            "v": 1,
        }
        await producer.send_and_wait(
            app.topics.process,
            json.dumps(reply).encode(),
            key=request["process_id"].encode(),
            headers=[("procession-type", b"procession.TaskCompleted")],
        )
        state = await rt.wait("rebase:w1", timeout_s=30)
    finally:
        await tasks.stop()
        await producer.stop()
    assert state is not None and state.status == "completed"
    history = await rt.history("rebase:w1")
    assert isinstance(history[-1], ProcessCompleted)
    ignored = [r for r in history if isinstance(r, InputIgnored)]
    assert [(r.input_id, r.reason) for r in ignored] == [("outbox-row-17", "duplicate")]
    (done,) = [r for r in history if isinstance(r, TaskCompleted)]
    assert done.result == {"closed": "A", "by": "external-closer"}


async def _one_request(consumer: Any) -> dict[str, Any]:
    async with asyncio.timeout(30):
        while True:
            got = await consumer.getmany(timeout_ms=200)
            for records in got.values():
                for r in records:
                    return json.loads(r.value)  # type: ignore[no-any-return]

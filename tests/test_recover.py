"""A lost changelog is noticed, and rebuilt from the process topic with no
duplicate effect; a changelog is verified against the process topic."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta
from typing import Any

import pytest

from procession._recover import recover
from procession.examples import RebaseFailed, rebase_saga
from procession.topics import ProcessCompleted
from procession.workers import App, TaskCall
from procession.workers._rebuild import ChangelogLostError
from tests.conftest import KAFKA_BACKENDS, Backend, kafka_servers


class Closer:
    """Closes instances; ``B`` fails its first attempt (a retry an hour later)."""

    def __init__(self) -> None:
        self.calls: Counter[tuple[str, int]] = Counter()

    def __call__(self, call: TaskCall) -> dict[str, Any]:
        self.calls[(call.task_id, call.attempt)] += 1
        if call.payload["instance"] == "B" and call.attempt == 1:
            raise RuntimeError("busy")
        return {"closed": call.payload["instance"]}


def app_of(backend: Backend, closer: Closer) -> App:
    return backend.app([rebase_saga(backoff=timedelta(hours=1))], {"CloseInstance": closer})


async def run_some(backend: Backend, app: App) -> None:
    rt = await backend.runtime(app)
    for n in range(6):
        await rt.publish(RebaseFailed(rebase_id=f"r{n}", instances=["A", "C"]))
    await rt.publish(RebaseFailed(rebase_id="waiting", instances=["A", "B"]))
    await rt.publish(RebaseFailed(rebase_id="r0", instances=["A", "C"]))  # late: ignored
    await rt.settle()
    await rt.stop()


async def test_recover_verifies_a_healthy_changelog_against_the_process_topic(
    backend: Backend,
) -> None:
    app = app_of(backend, Closer())
    await run_some(backend, app)
    said: list[str] = []
    assert await recover(app, backend.transport(), said.append) == 0
    assert len(said) == 3 and all("the changelog agrees with the process topic" in s for s in said)
    assert sum(int(s.rpartition("(")[2].split()[0]) for s in said) == 7


@pytest.mark.backends(*KAFKA_BACKENDS)
async def test_a_lost_changelog_stops_the_processor_and_recover_rebuilds_it(
    backend: Backend,
) -> None:
    """On either client: a processor restoring from an emptied changelog refuses
    to run, naming `procession recover`; recover rebuilds it, and the processes
    go on with no task run twice."""
    from aiokafka.admin import AIOKafkaAdminClient  # noqa: PLC0415

    closer = Closer()
    app = app_of(backend, closer)
    await run_some(backend, app)
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_servers())
    await admin.start()
    try:  # the changelog is deleted and created again, empty
        await admin.delete_topics([app.topics.changelog])
        await _until_gone(admin, app.topics.changelog)
    finally:
        await admin.close()
    spec = next(s for s in app.topics.specs(app.task_types()) if s.name == app.topics.changelog)
    await backend.transport().create_topics([spec])

    refused = await backend.runtime(app)
    with pytest.raises(RuntimeError, match="the processor stopped") as caught:
        await refused.settle()
    assert isinstance(caught.value.__cause__, ChangelogLostError)
    assert "run `procession recover MODULE:APP`" in str(caught.value.__cause__)
    await refused.stop()

    said: list[str] = []
    assert await recover(app, backend.transport(), said.append) == 0
    assert sum(int(s.split("rebuilt ")[1].split()[0]) for s in said) == 7
    assert await recover(app, backend.transport(), said.append) == 0  # now it verifies

    rt = await backend.runtime(app)
    backend.clock.advance(timedelta(hours=2))  # B's retry comes due
    await rt.settle()
    assert isinstance((await rt.history("rebase:waiting"))[-1], ProcessCompleted)
    await rt.publish(RebaseFailed(rebase_id="r1", instances=["A", "C"]))  # ended: ignored
    await rt.settle()
    assert all(n == 1 for n in closer.calls.values())  # no task ran twice
    assert len(closer.calls) == 6 * 2 + 2 + 1  # six twice, A, B's two attempts


async def _until_gone(admin: Any, topic: str) -> None:
    import asyncio  # noqa: PLC0415

    async with asyncio.timeout(30):
        while topic in await admin.list_topics():
            await asyncio.sleep(0.1)


async def test_rebuild_leaves_out_inputs_the_processor_had_not_decided(backend: Backend) -> None:
    from procession.topics import DEFAULT_CODEC, TaskCompleted  # noqa: PLC0415
    from procession.workers._port import TopicPartition, partition_for  # noqa: PLC0415
    from procession.workers._rebuild import rebuild  # noqa: PLC0415

    app = app_of(backend, Closer())
    await run_some(backend, app)
    pid = "rebase:waiting"
    tp = TopicPartition(app.topics.process, partition_for(pid, 3))
    stream = await backend.transport().read_partition(tp)
    (done_a,) = [
        m
        for m in stream
        if m.key == pid
        and isinstance(rec := DEFAULT_CODEC.decode_all(m.value or b"")[0], TaskCompleted)
        and rec.machine_id == "instance:A"
    ]
    decided = rebuild(stream, stream[-1].offset + 1, DEFAULT_CODEC)[pid]
    undecided = rebuild(stream, done_a.offset, DEFAULT_CODEC)[pid]
    assert decided.machines["instance:A"].task is None  # type: ignore[union-attr]
    assert undecided.machines["instance:A"].task is not None  # type: ignore[union-attr]

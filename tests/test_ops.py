"""The operations commands over a running app: ps, show, stuck, cancel, dlq."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from procession import _ops as ops
from procession.examples import RebaseFailed, rebase_saga
from procession.topics import ProcessCancelled
from procession.workers import App, Batch, Outgoing, Runtime, TaskCall
from tests.conftest import Backend


def close(call: TaskCall) -> dict[str, Any]:
    if call.payload["instance"] == "B":
        raise RuntimeError("busy")  # retried an hour later
    return {"closed": call.payload["instance"]}


async def started(backend: Backend) -> tuple[App, Runtime]:
    app = backend.app([rebase_saga(backoff=timedelta(hours=1))], {"CloseInstance": close})
    rt = await backend.runtime(app)
    for key in ("done-1", "done-2"):
        await rt.publish(RebaseFailed(rebase_id=key, instances=["A"]))
    await rt.publish(RebaseFailed(rebase_id="waiting", instances=["A", "B"]))
    await rt.settle()
    return app, rt


async def test_ps_stuck_and_show_tell_where_each_process_stands(backend: Backend) -> None:
    app, _ = await started(backend)
    t, lines = backend.transport(), []
    assert await ops.ps(app, t, None, None, lines.append) == 0
    assert lines[0].split() == ["PROCESS", "STATUS", "VERSION", "MACHINES", "CHANGED"]
    assert [ln.split()[:2] for ln in lines[1:-1]] == [
        ["rebase:done-1", "completed"],
        ["rebase:done-2", "completed"],
        ["rebase:waiting", "running"],
    ]
    assert lines[-1] == "2 completed, 1 running"
    lines.clear()
    assert await ops.stuck(app, t, 0, lines.append) == 1
    (why,) = [ln for ln in lines if ln.startswith("rebase:waiting")]
    assert "waiting for CloseInstance attempt 1 on instance:B (failed, retry due)" in why
    assert "1 timer(s), next in" in why
    assert lines[-1].startswith("1 process(es) with no progress")
    lines.clear()
    assert await ops.show(app, t, "rebase:done-1", lines.append) == 0
    assert "ProcessCompleted" in lines[0] and lines[1].startswith("status: completed")
    assert await ops.show(app, t, "rebase:nope", lines.append) == 1


async def test_cancel_is_an_input_that_names_who_asked_and_why(backend: Backend) -> None:
    app, rt = await started(backend)
    said: list[str] = []
    code = await ops.cancel(
        app, backend.transport(), "rebase:waiting",
        mode="cooperative", reason="rebase abandoned", by="alice", say=said.append,
    )  # fmt: skip
    assert code == 0 and said == [
        "rebase:waiting: cooperative cancel requested (rebase abandoned (by alice))"
    ]
    await rt.settle()
    last = (await rt.history("rebase:waiting"))[-1]
    assert isinstance(last, ProcessCancelled) and "(by alice)" in last.reason


async def test_dead_letters_are_listed_shown_and_replayed_to_their_origin(
    backend: Backend,
) -> None:
    app, rt = await started(backend)
    writer = backend.transport().producer(f"{backend.prefix}.test-writer")
    await writer.start()
    bad = Outgoing(app.topics.inputs, "k", b"{not json", (("procession-type", b"RebaseFailed"),))
    await writer.commit(Batch(records=[bad]))
    await writer.stop()
    await rt.settle()
    t, lines = backend.transport(), []
    assert await ops.dlq_ls(app, t, lines.append) == 0
    assert len(lines) == 2 and lines[-1] == "1 dead letter(s)"
    assert f"{app.topics.inputs}@" in lines[0] and "RebaseFailed" in lines[0]
    offset = int(lines[0].split()[0])
    lines.clear()
    assert await ops.dlq_show(app, t, offset, lines.append) == 0
    assert lines[-1] == "{not json" and any(ln.startswith("dlq-reason: ") for ln in lines)
    lines.clear()
    assert await ops.dlq_replay(app, t, [offset], lines.append) == 0
    assert lines[0].startswith(f"dead letter {offset} replayed to {app.topics.inputs}")
    await rt.settle()  # still bad: dead-lettered again, saying where it was replayed from
    lines.clear()
    await ops.dlq_ls(app, t, lines.append)
    assert lines[-1] == "2 dead letter(s)" and f"(replayed from {offset})" in lines[1]
    assert await ops.dlq_replay(app, t, [999], lines.append) == 1


def test_durations_read_as_operators_write_them() -> None:
    assert [ops.duration_ms(d) for d in ("45s", "10m", "2h", "1d")] == [
        45_000, 600_000, 7_200_000, 86_400_000,
    ]  # fmt: skip

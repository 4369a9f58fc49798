"""Health, readiness and metrics endpoints: what a probe or a scraper reads."""

from __future__ import annotations

import asyncio
import re
import signal
from pathlib import Path

import pytest

from procession._health import HealthServer
from procession.examples import RebaseFailed, rebase_saga
from procession.workers import Runtime
from tests.conftest import Backend, until
from tests.test_cli import create_topics, get, has, publish_one, ready, routed, spawn


def parts_of(rt: Runtime) -> list[tuple[str, object]]:
    return [("processor", rt.processor), ("router", rt.router), ("worker", rt.workers[0])]


async def test_ready_once_started_healthy_until_a_component_dies(backend: Backend) -> None:
    app = backend.app([rebase_saga()], {"CloseInstance": lambda call: None})
    rt = Runtime(app, backend.transport(), backend.clock)
    backend.runtimes.append(rt)
    async with HealthServer(parts_of(rt)) as health:  # type: ignore[arg-type]
        assert await get(health.port, "/readyz") == (
            503,
            "processor not ready\nrouter not ready\nworker not ready",
        )
        await rt.start()

        async def ready() -> bool:
            return (await get(health.port, "/readyz"))[0] == 200

        await until(ready, timeout_s=30)
        assert await get(health.port, "/healthz") == (200, "ok")
        await rt.publish(RebaseFailed(rebase_id="h1", instances=["A", "B"]))
        assert (await rt.wait("rebase:h1")).status == "completed"  # type: ignore[union-attr]

        status, text = await get(health.port, "/metrics")
        assert status == 200
        assert 'procession_ready{role="processor"} 1' in text
        decided = re.search(r'procession_decided_total\{role="processor"\} (\d+)', text)
        assert decided is not None and int(decided[1]) >= 3  # the event and two results
        assert 'procession_completed_total{role="worker"} 2' in text

        rt.processor.died(RuntimeError("disk on fire"))
        assert await get(health.port, "/healthz") == (
            503,
            "processor stopped: RuntimeError: disk on fire",
        )
        assert await get(health.port, "/readyz") == (503, "processor not ready")
        assert (await get(health.port, "/nope"))[0] == 404


async def test_metrics_show_latencies_lag_and_backlog(backend: Backend) -> None:
    app = backend.app([rebase_saga()], {"CloseInstance": lambda call: None})
    rt = await backend.runtime(app)
    async with HealthServer(parts_of(rt)) as health:  # type: ignore[arg-type]
        await rt.publish(RebaseFailed(rebase_id="m1", instances=["A", "B", "C"]))
        assert (await rt.wait("rebase:m1")).status == "completed"  # type: ignore[union-attr]
        await rt.settle()
        _, text = await get(health.port, "/metrics")

    def value(pattern: str) -> float:
        found = re.search(re.escape(pattern) + r" (\S+)$", text, re.M)
        assert found is not None, f"{pattern} not in\n{text}"
        return float(found[1])

    # every transaction of each role timed, and the +Inf bucket holds them all
    for role in ("processor", "router", "worker"):
        commits = value(f'procession_commit_seconds_count{{role="{role}"}}')
        assert commits >= 1
        assert value(f'procession_commit_seconds_bucket{{role="{role}",le="+Inf"}}') == commits
    assert value('procession_transactions_total{role="processor"}') >= value(
        'procession_commit_seconds_count{role="processor"}'
    )
    task = 'role="worker",outcome="completed",task_type="CloseInstance"'
    assert value(f"procession_task_seconds_count{{{task}}}") == 3
    assert value('procession_restore_seconds_count{role="processor"}') == 3  # one per partition
    assert value('procession_consumer_lag{role="processor"}') == 0  # settled: read to the end
    assert value('procession_timer_backlog{role="processor"}') == 0
    assert value('procession_parked_processes{role="processor"}') == 0
    assert value('procession_tasks_running{role="worker"}') == 0
    assert "# TYPE procession_commit_seconds histogram" in text


async def test_a_request_that_is_not_a_get_is_refused() -> None:
    async with HealthServer([]) as health:
        reader, writer = await asyncio.open_connection("127.0.0.1", health.port)
        writer.write(b"POST /healthz HTTP/1.1\r\n\r\n")
        raw = await reader.read()
        writer.close()
        await writer.wait_closed()
    assert raw.startswith(b"HTTP/1.1 405 ")


@pytest.mark.backends("kafka")
async def test_a_long_lived_command_serves_its_health_on_the_port_given(
    backend: Backend, tmp_path: Path
) -> None:
    await create_topics(backend)
    stderr = tmp_path / "stderr"
    proc = spawn(
        "processor",
        "tests.kafka_app:app",
        "--health-port",
        "0",
        prefix=backend.prefix,
        stderr=stderr,
    )
    try:
        await until(lambda: has(stderr, "health and metrics on port "), timeout_s=30)
        port = int(re.findall(r"on port (\d+)", stderr.read_text())[0])
        await until(lambda: ready(stderr), timeout_s=30)
        assert await get(port, "/healthz") == (200, "ok")
        await publish_one(backend)
        await until(lambda: routed(backend), timeout_s=30)

        async def counted() -> bool:
            return 'procession_routed_total{role="router"} 1' in (await get(port, "/metrics"))[1]

        await until(counted, timeout_s=30)
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(proc.wait, 30) == 0, stderr.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()

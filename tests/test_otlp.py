"""The OTLP path for real: `procession processor` and `procession worker` export
their spans to an OTLP/HTTP receiver inside the test; without the exporter the
command refuses in one line."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from benchmarks.otlp_sink import Sink, running
from tests.conftest import Backend, kafka_servers, until
from tests.test_cli import ROOT, create_topics, publish_one, spawn


@pytest.fixture
def receiver() -> Iterator[Sink]:
    with running() as sink:
        yield sink


@pytest.mark.backends("kafka")
async def test_processor_and_worker_export_one_trace_over_otlp(
    backend: Backend, receiver: Sink, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    await create_topics(backend)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint)
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "100")
    monkeypatch.setenv("OTEL_METRIC_EXPORT_INTERVAL", "200")
    args = ("tests.kafka_app:app", "--bootstrap-servers", kafka_servers())
    procs = [
        spawn("processor", *args, prefix=backend.prefix, stderr=tmp_path / "processor.log"),
        spawn("worker", *args, prefix=backend.prefix, stderr=tmp_path / "worker.log"),
    ]
    try:
        await publish_one(backend)

        async def exported() -> bool:
            names = receiver.names()
            return {
                ("procession-processor", "procession route"),
                ("procession-processor", "procession decide"),
                ("procession-processor", "procession commit"),
                ("procession-worker", "procession task"),
            } <= names and sum(n == "procession decide" for _, n in names) >= 1

        await until(exported, timeout_s=60)

        async def measured() -> bool:
            with receiver.lock:
                got = set(receiver.metrics)
            return {
                ("procession-processor", "procession.count"),
                ("procession-processor", "procession.commit.duration"),
                ("procession-processor", "procession.consumer_lag"),
                ("procession-processor", "procession.timer_backlog"),
                ("procession-worker", "procession.task.duration"),
                ("procession-worker", "procession.tasks_running"),
            } <= got

        await until(measured, timeout_s=60)
    finally:
        for proc in procs:
            proc.terminate()
        codes = [proc.wait(timeout=30) for proc in procs]
    assert codes == [0, 0], [
        (tmp_path / f).read_text()[-2000:] for f in ("processor.log", "worker.log")
    ]
    with receiver.lock:
        hops = {t for _, name, t in receiver.spans if name != "procession commit"}
    assert len(hops) == 1  # route, decisions and the task: one trace


def test_tracing_asked_for_without_the_exporter_is_one_line_and_exit_1(tmp_path: Path) -> None:
    blocker = tmp_path / "sitecustomize.py"  # the exporter "not installed" in the child
    blocker.write_text(
        "import sys\nsys.modules['opentelemetry.exporter.otlp.proto.http.trace_exporter'] = None\n"
    )
    out = subprocess.run(
        [sys.executable, "-m", "procession._cli", "worker", "tests.kafka_app:app"],
        cwd=ROOT,
        env={
            "PATH": "/usr/bin:/bin",
            "PYTHONPATH": f"{tmp_path}:{ROOT}",
            "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1",
            "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:1",
        },
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 1, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "install the otel extra" in lines[0], out.stderr


def test_latencies_go_to_opentelemetry_only_when_the_environment_asks_for_metrics() -> None:
    from procession._telemetry import observe  # noqa: PLC0415
    from procession.workers._stats import Stats  # noqa: PLC0415

    class Part:
        def __init__(self) -> None:
            self.stats, self.metrics = Stats(), {"completed": 0}

        def gauges(self) -> dict[str, float]:
            return {}

    quiet, asked = Part(), Part()
    observe([("worker", quiet)], env={})
    observe([("worker", asked)], env={"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9"})
    assert quiet.stats.forward is None
    assert asked.stats.forward is not None

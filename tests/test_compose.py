"""docker-compose.yml for real: the images built from local parts, the system
up on the host's network, every published rebase completed, and the collector
forwarding spans of every role to a receiver in the test."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from benchmarks.otlp_sink import Sink, render, running
from procession.examples.apps import rebase_app
from procession.topics import ProcessCompleted
from procession.workers._kafka import KafkaTransport
from procession.workers._port import TopicPartition
from tests.conftest import free_ports, until

ROOT = Path(__file__).parent.parent
SCRIPT = ROOT / "scripts" / "compose-local"
LOAD = 40


def engine_available() -> bool:
    return (shutil.which("docker") is not None and shutil.which("dockerd") is not None) or (
        shutil.which("apt-get") is not None and os.geteuid() == 0
    )


@pytest.fixture(scope="module")
def images() -> None:
    if not engine_available():
        if os.environ.get("CI") == "true":
            pytest.fail("no Docker engine and no apt-get to install one")
        pytest.skip("no Docker engine here (and no apt-get as root to install one)")
    out = subprocess.run(
        [str(SCRIPT), "build"], cwd=ROOT, capture_output=True, text=True, timeout=1500, check=False
    )
    assert out.returncode == 0, out.stderr[-3000:]


def _remove_orphans() -> None:
    """Remove the containers of this test's projects whose test process is gone
    (killed outright, it could not take them down): on the host network they
    hold ports and a broker's CPU. A project names its process: composePIDxHEX."""
    docker = shutil.which("docker") or "/usr/bin/docker"  # the images fixture installed it
    listed = subprocess.run(
        [docker, "ps", "-a", "--format", '{{.ID}} {{.Label "com.docker.compose.project"}}'],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    for line in listed.stdout.splitlines():
        cid, _, project = line.partition(" ")
        owner = re.fullmatch(r"compose(\d+)x[0-9a-f]+", project)
        if owner and not Path(f"/proc/{owner[1]}").exists():
            subprocess.run(
                [docker, "rm", "-f", "-v", cid], capture_output=True, timeout=60, check=True
            )


@pytest.fixture
def system(images: None, tmp_path: Path) -> Iterator[tuple[dict[str, str], Sink]]:
    kafka, collector = free_ports(2), free_ports(1)
    _remove_orphans()
    run = f"compose{os.getpid()}x{uuid.uuid4().hex[:6]}"
    shared = Path(tempfile.mkdtemp(prefix="procession-compose-"))  # readable by the containers
    shared.chmod(0o755)
    with running() as sink:
        config = shared / "collector.yaml"
        config.write_text(
            "receivers:\n  otlp:\n    protocols:\n"
            f'      http: {{endpoint: "127.0.0.1:{collector}"}}\n'
            "processors:\n  batch: {timeout: 200ms}\n"
            f"exporters:\n  otlphttp: {{endpoint: {sink.endpoint}}}\n"
            # host network: the collector's own metrics would take a fixed port (8888)
            "service:\n  telemetry: {metrics: {level: none}}\n  pipelines:\n"
            "    traces: {receivers: [otlp], processors: [batch], exporters: [otlphttp]}\n"
            "    metrics: {receivers: [otlp], processors: [batch], exporters: [otlphttp]}\n"
        )
        config.chmod(0o644)
        env = {
            **os.environ,
            "COMPOSE_PROJECT_NAME": run,
            "COMPOSE_FILES": str(ROOT / "tests" / "compose.host.yml"),
            "KAFKA_PORT": str(kafka),
            "KAFKA_CONTROLLER_PORT": str(kafka + 1),
            "KAFKA_ADVERTISED_HOST": "127.0.0.1",
            "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{kafka}",
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{collector}",
            "OTEL_COLLECTOR_CONFIG": str(config),
            "PROCESSION_HEALTH_PORT": "",  # one host network: no fixed ports
            "LOAD_COUNT": str(LOAD),
            "LOAD_RUN": run,
        }

        def compose(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [str(SCRIPT), "compose", *args],
                cwd=ROOT,
                env=env,
                capture_output=True,
                text=True,
                timeout=300,
                check=False,
            )

        up = compose("up", "-d", "--scale", "worker=2")
        try:
            assert up.returncode == 0, up.stderr[-3000:]
            yield env, sink
        finally:
            (tmp_path / "compose.log").write_text(compose("logs", "--no-color").stdout)
            compose("down", "-v", "--remove-orphans")
            shutil.rmtree(shared, ignore_errors=True)


@pytest.mark.timeout(1800)  # on a new machine the set-up builds every image first
async def test_compose_completes_every_rebase_and_the_collector_gets_every_role(
    system: tuple[dict[str, str], Sink], tmp_path: Path
) -> None:
    env, sink = system
    run = env["LOAD_RUN"]
    topics = rebase_app().topics
    transport = KafkaTransport(env["KAFKA_BOOTSTRAP_SERVERS"], security={})
    completed = ProcessCompleted.TYPE.encode()

    async def all_completed() -> bool:
        try:
            done = set()
            for p in range(topics.partitions):
                for m in await transport.read_partition(TopicPartition(topics.process, p)):
                    if dict(m.headers).get("procession-type") == completed and (
                        m.key or ""
                    ).startswith(f"rebase:{run}-"):
                        done.add(m.key)
        except Exception:  # noqa: BLE001 - the broker is still starting
            return False
        return len(done) == LOAD

    try:
        await until(all_completed, timeout_s=240)
        wanted = {
            ("procession-processor", "procession route"),
            ("procession-processor", "procession decide"),
            ("procession-processor", "procession commit"),
            ("procession-worker", "procession task"),
        }

        async def spans() -> bool:
            return wanted <= sink.names()

        try:
            await until(spans, timeout_s=60)
        except TimeoutError:
            pytest.fail(f"no spans from the collector for {sorted(wanted - sink.names())}")

        async def metrics() -> bool:  # exported every 5 s (OTEL_METRIC_EXPORT_INTERVAL)
            with sink.lock:
                got = set(sink.metrics)
            return {
                ("procession-processor", "procession.commit.duration"),
                ("procession-worker", "procession.task.duration"),
            } <= got

        await until(metrics, timeout_s=60)
    finally:
        await transport.close()
    with sink.lock:
        traces = {t for _, name, t in sink.spans if name == "procession route"}
        details = list(sink.details)
    assert len(traces) >= LOAD  # a trace per published rebase, at least
    # one rebase's trace, as the collector passed it on (kept beside the logs)
    tree = render(details, sorted(traces)[0])
    (tmp_path / "trace.txt").write_text(tree + "\n")
    assert "procession route" in tree.splitlines()[0]
    assert "procession task" in tree and "procession decide" in tree

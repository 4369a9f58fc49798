"""The benchmarks still run (tiny sizes; no speed is asserted)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from benchmarks import big, floor, order_app, procession_memory, step
from benchmarks.compare import SYSTEMS
from benchmarks.core import run_core
from benchmarks.memory import run_memory
from tests.conftest import Backend

ROOT = Path(__file__).parent.parent


def test_core_benchmark_decides_every_input() -> None:
    result = run_core(20)
    assert result["decisions"] == 20 * 4


async def test_step_benchmark_decides_every_input_of_the_captured_orders() -> None:
    records = await step.capture(12)
    assert step.decide_all(records) == 12 * 4  # the order and three task results each


async def test_memory_benchmark_completes_every_process() -> None:
    result = await run_memory(50, window=10)
    assert result["processes"] == 50
    assert result["stored_states"] == 50


async def test_order_benchmark_in_memory_times_every_order() -> None:
    result = await procession_memory.run(30, 7, warmup=3)
    assert len(result.latencies_ms) == 30
    assert result.records_per_order is not None and result.records_per_order > 10
    assert result.percentile(50) <= result.percentile(99)


async def test_the_floor_writes_what_procession_writes_for_an_order() -> None:
    app = order_app.app("count")
    log = await floor.one_order("count")
    written = Counter(floor.kind(m.value or b"") for m in log.records(app.topics.process))
    script = floor.Script(await floor.templates(), "count")
    outs, kinds = [], [b"OrderPlaced"] + [b"procession.TaskCompleted"] * 3
    for kind in kinds:
        outs += script.step(kind, b"order:o-0")[0]
    routed = script.route(b"o-0") + [o for t in ("a", "b", "c") for o in script.work(t.encode())]
    floor_process = [o for o in outs + routed if o[0] == "count.process"]
    floor_tasks = [o for o in outs if ".tasks." in o[0]]
    assert len(floor_process) == sum(written.values())
    tasks = [m for t in order_app.TASKS for m in log.records(app.topics.tasks(t))]
    assert len(floor_tasks) == len(tasks) == 3
    assert script.results == {}  # the last result finished the order


@pytest.mark.backends("kafka")
def test_the_comparison_runs_every_system_end_to_end(backend: Backend) -> None:
    backend.transport()  # the session's broker
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.compare", "--n", "6", "--windows", "3", "--repeat", "1"],
        cwd=ROOT,
        env={**os.environ, "KAFKA_BOOTSTRAP_SERVERS": os.environ["KAFKA_BOOTSTRAP_SERVERS"]},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    rows = [line for line in out.stdout.splitlines() if line.startswith("| 3 |")]
    assert len(rows) == len(SYSTEMS)
    assert "% of its records/s" in out.stdout
    assert "Best of each across the windows" in out.stdout


@pytest.mark.backends("kafka")
def test_the_shop_benchmark_runs_the_event_sourced_loop_end_to_end(backend: Backend) -> None:
    from benchmarks.compare import run_system  # noqa: PLC0415
    from benchmarks.shop import store_cost  # noqa: PLC0415

    backend.transport()  # the session's broker
    figures = run_system("shop-sqlite", 6, 3)
    assert figures["system"] == "event-sourced shop" and figures["n"] == 6
    assert len(figures["rss_mib"]) == 2 and figures["records_per_order"] >= 14
    cost = store_cost(5)
    assert list(cost) == ["place the order", "ReserveStock", "ChargeCard", "Ship"]
    assert all(v > 0 for v in cost.values())


@pytest.mark.backends("kafka")
def test_the_traced_benchmark_exports_every_hop(backend: Backend) -> None:
    from benchmarks.compare import run_system  # noqa: PLC0415

    backend.transport()  # the session's broker
    figures = run_system("procession-kafka-traced", 6, 3)
    assert figures["system"] == "Procession on Kafka (librdkafka), traced (100% sampled)"
    assert figures["n"] == 6
    spans = float(figures["notes"].split()[0])
    assert spans >= 8  # route, 4 decisions and 3 tasks per order, and commits


def test_big_process_benchmark_decides_and_writes_a_part_per_completion() -> None:
    result = big.run_core(300)
    assert result["machines"] == 300
    assert result["changelog_records"] == 2  # the header and the completed machine's part
    assert big.run_core(3)["changelog_records"] == 1  # a small process: one value


@pytest.mark.backends("kafka")
async def test_big_process_benchmark_completes_on_kafka(backend: Backend) -> None:
    backend.transport()  # the session's broker
    result = await big.run_kafka(os.environ["KAFKA_BOOTSTRAP_SERVERS"], 300)
    assert result["seconds"] > 0 and result["rss_processor_mib"] > 0


def test_percentiles_are_taken_from_the_sorted_latencies() -> None:
    from benchmarks.load import Result  # noqa: PLC0415

    r = Result("x", 4, 2.0, [40.0, 10.0, 30.0, 20.0])
    assert (r.percentile(50), r.percentile(99), r.per_s) == (30.0, 40.0, 2.0)


@pytest.mark.backends("kafka")
def test_the_incident_walkthrough_runs_end_to_end(backend: Backend) -> None:
    backend.transport()  # the session's broker
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.incident"],
        cwd=ROOT,
        env={**os.environ, "INCIDENT_N": "5"},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    assert "all 5 completed" in out.stdout
    assert "is empty, but the processor group has decided" in out.stdout
    assert "CloseInstance ran 11 times for 6 tasks" in out.stdout

"""The benchmarks still run (tiny sizes; no speed is asserted)."""

from __future__ import annotations

import os

import pytest

from benchmarks.core import run_core
from benchmarks.kafka import run_kafka
from benchmarks.memory import run_memory
from tests.conftest import Backend


def test_core_benchmark_decides_every_input() -> None:
    result = run_core(20)
    assert result["decisions"] == 20 * 4


async def test_memory_benchmark_completes_every_process() -> None:
    result = await run_memory(50, window=10)
    assert result["processes"] == 50
    assert result["stored_states"] == 50


@pytest.mark.backends("kafka")
async def test_kafka_benchmark_completes_every_process(backend: Backend) -> None:
    backend.transport()  # the session's broker
    result = await run_kafka(os.environ["KAFKA_BOOTSTRAP_SERVERS"], 20, batch=7)
    assert result["processes"] == 20
    assert result["processor_transactions"] >= 1

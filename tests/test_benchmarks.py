"""The benchmarks still run (tiny sizes; no speed is asserted)."""

from __future__ import annotations

from benchmarks.core import run_core
from benchmarks.memory import run_memory


def test_core_benchmark_decides_every_input() -> None:
    result = run_core(20)
    assert result["decisions"] == 20 * 4


async def test_memory_benchmark_completes_every_process() -> None:
    result = await run_memory(50, window=10)
    assert result["processes"] == 50
    assert result["stored_states"] == 50

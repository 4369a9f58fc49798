"""What every system in the comparison reports, and the closed loop that drives it.

Each system runs the same order saga (reserve stock and charge the card in
parallel, then ship) for ``n`` orders, with at most ``window`` orders in
flight: a new order starts when one completes, as a steady load would keep
them. Latency is from starting an order (producing its event, or starting its
workflow) to seeing it completed.
"""

from __future__ import annotations

import asyncio
import resource
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Result:
    """One system's figures; ``records_per_order`` counts what it wrote to its log."""

    system: str
    n: int
    seconds: float
    latencies_ms: list[float] = field(repr=False)
    records_per_order: float | None = None
    rss_mib: dict[str, float] = field(default_factory=dict)
    notes: str = ""
    #: CPU milliseconds per measured order, by subprocess (user and system)
    cpu_ms: dict[str, float] = field(default_factory=dict)

    @property
    def per_s(self) -> float:
        return self.n / self.seconds

    def percentile(self, p: float) -> float:
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]

    def summary(self) -> dict[str, Any]:
        """What goes into the table (and the JSON a system's subprocess prints)."""
        out = {k: v for k, v in asdict(self).items() if k != "latencies_ms"}
        out.update(
            per_s=self.per_s,
            records_per_s=None
            if self.records_per_order is None
            else self.records_per_order * self.per_s,
            p50_ms=self.percentile(50),
            p95_ms=self.percentile(95),
            p99_ms=self.percentile(99),
        )
        return out


def peak_rss_mib(pid: int | str = "self") -> float:
    """A process's peak resident set size so far (``VmHWM``; Linux).

    Not ``ru_maxrss``: that survives fork and exec, so a subprocess would
    report its parent's peak when that was higher.
    """
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:  # no procfs: the best this platform offers
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    kib = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM"))
    return kib / 1024


async def closed_loop(
    n: int, window: int, run_one: Callable[[int], Awaitable[None]]
) -> tuple[float, list[float]]:
    """Run ``run_one(i)`` for i < n with at most ``window`` at once; (seconds, latencies)."""
    latencies: list[float] = []
    next_i = 0

    async def lane() -> None:
        nonlocal next_i
        while next_i < n:
            i, next_i = next_i, next_i + 1
            t0 = time.perf_counter()
            await run_one(i)
            latencies.append((time.perf_counter() - t0) * 1000)

    start = time.perf_counter()
    await asyncio.gather(*(lane() for _ in range(min(window, n))))
    return time.perf_counter() - start, latencies

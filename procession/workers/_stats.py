"""What a component measures besides its counters: latencies as histograms and
the state of the moment as gauges. ``/metrics`` serves them as Prometheus
text; with tracing set up, they are OpenTelemetry metrics as well.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable
from dataclasses import dataclass, field

#: Upper bounds, in seconds, of the latency buckets (Prometheus' ``le``).
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

Labels = tuple[tuple[str, str], ...]


@dataclass
class Histogram:
    """Observations counted per bucket, with their sum.

    Example:
        >>> h = Histogram()
        >>> h.observe(0.003); h.observe(0.2)
        >>> h.count, round(h.sum, 3), h.cumulative()[2]  # at or under 5 ms
        (2, 0.203, 1)
    """

    counts: list[int] = field(default_factory=lambda: [0] * (len(BUCKETS) + 1))
    sum: float = 0.0
    count: int = 0

    def observe(self, seconds: float) -> None:
        self.counts[bisect_left(BUCKETS, seconds)] += 1
        self.sum += seconds
        self.count += 1

    def cumulative(self) -> list[int]:
        """Counts at or under each bound of :data:`BUCKETS`, then the total (+Inf)."""
        out, running = [], 0
        for n in self.counts:
            running += n
            out.append(running)
        return out


@dataclass
class Stats:
    """A component's histograms, by name and labels; ``forward`` (set when
    OpenTelemetry metrics are on) also gets every observation."""

    histograms: dict[tuple[str, Labels], Histogram] = field(default_factory=dict)
    forward: Callable[[str, float, Labels], None] | None = None

    def observe(self, name: str, seconds: float, **labels: str) -> None:
        key = (name, tuple(sorted(labels.items())))
        histogram = self.histograms.get(key)
        if histogram is None:
            histogram = self.histograms[key] = Histogram()
        histogram.observe(seconds)
        if self.forward is not None:
            self.forward(name, seconds, key[1])

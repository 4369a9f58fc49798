"""Health, readiness and metrics over HTTP for a long-lived command.

``GET /healthz``: 200 while every component runs, 503 naming the one that
stopped (an event loop that is blocked does not answer at all, which a
liveness probe also counts as a failure). ``GET /readyz``: 200 once every
component is ready (a member of its group, its partitions taken over and,
for the processor, restored), 503 naming those that are not. ``GET
/metrics``: the components' counters, gauges (consumer lag, timer backlog,
parked processes, running tasks) and latency histograms (commit, restore,
task) in the Prometheus text format.

Example::

    async with HealthServer([("processor", processor)], port=8080):
        ...  # curl localhost:8080/readyz
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections import Counter
from collections.abc import Sequence
from types import TracebackType
from typing import Protocol

from procession._errors import one_line
from procession.workers._stats import BUCKETS, Labels, Stats

#: How long a client may take to send its request line and headers.
_READ_DEADLINE_S = 5.0


class Observed(Protocol):
    """What the endpoints read from a component (a processor, router or worker)."""

    metrics: Counter[str]
    stats: Stats

    @property
    def failure(self) -> BaseException | None: ...

    def ready(self) -> bool: ...

    def gauges(self) -> dict[str, float]: ...


def _labels(labels: Labels) -> str:
    """Prometheus label pairs, values escaped.

    Example:
        >>> _labels((("role", "worker"), ("task_type", 'a"b')))
        'role="worker",task_type="a\\\\"b"'
    """
    return ",".join(f'{k}="{_escape(v)}"' for k, v in labels)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class HealthServer:
    """Serves ``/healthz``, ``/readyz`` and ``/metrics`` for ``parts`` (role, component).

    Binds ``host:port`` on :meth:`start` (port 0: a free one, then in ``port``).
    """

    def __init__(
        self, parts: Sequence[tuple[str, Observed]], host: str = "127.0.0.1", port: int = 0
    ) -> None:
        self.parts, self.host, self.port = list(parts), host, port
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> HealthServer:
        await self.start()
        return self

    async def __aexit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    def answer(self, path: str) -> tuple[int, str]:
        """The status and body for a GET of ``path``."""
        if path == "/healthz":
            dead = [f"{role} stopped: {one_line(p.failure)}" for role, p in self.parts if p.failure]
            return (503, "\n".join(dead)) if dead else (200, "ok")
        if path == "/readyz":
            waiting = [f"{role} not ready" for role, p in self.parts if not p.ready()]
            return (503, "\n".join(waiting)) if waiting else (200, "ready")
        if path == "/metrics":
            return 200, self.exposition()
        return 404, f"no such endpoint {path!r}: /healthz, /readyz, /metrics"

    def exposition(self) -> str:
        """Prometheus text: ``procession_<name>_total{role="..."}`` per counter,
        ``procession_<gauge>``, and ``procession_<name>_seconds`` histograms."""
        lines = [
            "# TYPE procession_ready gauge",
            *(f'procession_ready{{role="{r}"}} {int(p.ready())}' for r, p in self.parts),
        ]
        names = sorted({name for _, p in self.parts for name in p.metrics})
        for name in names:
            metric = f"procession_{_METRIC.sub('_', name).lower()}_total"
            lines.append(f"# TYPE {metric} counter")
            lines += [f'{metric}{{role="{r}"}} {p.metrics[name]}' for r, p in self.parts]
        gauges = [(r, p.gauges()) for r, p in self.parts]
        for name in sorted({name for _, g in gauges for name in g}):
            lines.append(f"# TYPE procession_{name} gauge")
            lines += [
                f'procession_{name}{{role="{r}"}} {g[name]:g}' for r, g in gauges if name in g
            ]
        histograms = sorted(
            (name, r, labels, h)
            for r, p in self.parts
            for (name, labels), h in p.stats.histograms.items()
        )
        typed: set[str] = set()
        for name, role, labels, h in histograms:
            metric = f"procession_{name}"
            if metric not in typed:
                typed.add(metric)
                lines.append(f"# TYPE {metric} histogram")
            base = _labels((("role", role), *labels))
            bounds = [*(f"{b:g}" for b in BUCKETS), "+Inf"]
            lines += [
                f'{metric}_bucket{{{base},le="{le}"}} {n}'
                for le, n in zip(bounds, h.cumulative(), strict=True)
            ]
            lines += [f"{metric}_sum{{{base}}} {h.sum:.6f}", f"{metric}_count{{{base}}} {h.count}"]
        return "\n".join(lines)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(_READ_DEADLINE_S):
                request = await reader.readuntil(b"\r\n\r\n")
            method, _, rest = request.decode("latin-1").partition(" ")
            path = rest.partition(" ")[0].partition("?")[0]
            status, body = (405, "GET only") if method != "GET" else self.answer(path)
            data = (body + "\n").encode()
            head = (
                f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\n"
                f"Content-Type: text/plain; version=0.0.4; charset=utf-8\r\n"
                f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n"
            )
            writer.write(head.encode() + data)
            await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, OSError):
            pass  # a client that hung up or sent nothing usable gets nothing
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()


_METRIC = re.compile(r"[^A-Za-z0-9_]")
_REASONS = {200: "OK", 404: "Not Found", 405: "Method Not Allowed", 503: "Service Unavailable"}

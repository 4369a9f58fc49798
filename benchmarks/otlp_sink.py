"""An OTLP/HTTP trace receiver in a thread: what a collector would receive.

Used as the trace sink of the tracing-overhead benchmark and by the OTLP
tests: it parses every export request and keeps (service, span name, trace
id) for each span.

``python -m benchmarks.otlp_sink --port-file F`` runs one on a free port
(written to F) until SIGTERM, for scripts (scripts/k8s-local): ``GET
/summary`` answers the span counts per service and name as JSON, ``GET
/trace`` the fullest trace so far, rendered by :func:`render`.
"""

from __future__ import annotations

import argparse
import gzip
import http.server
import json
import os
import signal
import sys
import threading
from collections import Counter
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest


class Sink(http.server.ThreadingHTTPServer):
    """Every span exported to ``endpoint`` (``/v1/traces``), as (service, name, trace id)."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.spans: list[tuple[str, str, str]] = []
        self.details: list[Span] = []
        self.metrics: set[tuple[str, str]] = set()  # (service, metric name)
        self.lock = threading.Lock()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def names(self) -> set[tuple[str, str]]:
        with self.lock:
            return {(service, name) for service, name, _ in self.spans}


class _Handler(http.server.BaseHTTPRequestHandler):
    server: Sink

    def do_GET(self) -> None:
        with self.server.lock:
            spans, details = list(self.server.spans), list(self.server.details)
        if self.path == "/summary":
            names = Counter(f"{service} {name}" for service, name, _ in spans)
            body = json.dumps({"spans": len(spans), "names": dict(sorted(names.items()))})
        elif self.path == "/trace":
            body = render(details, fullest(details)) + "\n" if details else ""
        else:
            self.send_error(404)
            return
        data = body.encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if self.headers.get("Content-Encoding") == "gzip":  # a collector's default
            body = gzip.decompress(body)
        if self.path == "/v1/metrics":
            self._metrics(body)
        else:
            self._spans(body)
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _metrics(self, body: bytes) -> None:
        request = ExportMetricsServiceRequest()
        request.ParseFromString(body)
        got = {
            (_service(rm.resource.attributes), m.name)
            for rm in request.resource_metrics
            for sm in rm.scope_metrics
            for m in sm.metrics
        }
        with self.server.lock:
            self.server.metrics |= got

    def _spans(self, body: bytes) -> None:
        request = ExportTraceServiceRequest()
        request.ParseFromString(body)
        got, details = [], []
        for rs in request.resource_spans:
            service = _service(rs.resource.attributes)
            for ss in rs.scope_spans:
                got += [(service, s.name, s.trace_id.hex()) for s in ss.spans]
                details += [
                    Span(
                        service,
                        s.name,
                        s.trace_id.hex(),
                        s.span_id.hex(),
                        s.parent_span_id.hex(),
                        s.start_time_unix_nano,
                        s.end_time_unix_nano,
                        {a.key: _value(a.value) for a in s.attributes},
                    )
                    for s in ss.spans
                ]
        with self.server.lock:
            self.server.spans += got
            self.server.details += details

    def log_message(self, format: str, *args: object) -> None:
        pass  # one line per request would drown the output


@dataclass(frozen=True)
class Span:
    service: str
    name: str
    trace_id: str
    span_id: str
    parent_id: str
    start_ns: int
    end_ns: int
    attributes: dict[str, Any]


def render(spans: Iterable[Span], trace_id: str) -> str:
    """One trace as an indented tree: offset from its first span, duration,
    service, name and the attributes that say what the hop was about.

    Example:
        >>> a = Span("p", "procession route", "t", "a", "", 0, 2_000_000, {})
        >>> b = Span("p", "procession decide", "t", "b", "a", 1_000_000, 1_500_000, {})
        >>> print(render([a, b], "t"))
        +   0.0 ms    2.0 ms  p  procession route
        +   1.0 ms    0.5 ms  p    procession decide
    """
    mine = sorted((s for s in spans if s.trace_id == trace_id), key=lambda s: s.start_ns)
    if not mine:
        return f"(no spans of trace {trace_id})"
    ids = {s.span_id for s in mine}
    children: dict[str, list[Span]] = {}
    for s in mine:
        children.setdefault(s.parent_id if s.parent_id in ids else "", []).append(s)
    t0, lines, width = mine[0].start_ns, [], max(len(s.service) for s in mine)

    def walk(parent: str, depth: int) -> None:
        for s in children.get(parent, []):
            keys = ("procession.input", "procession.task_type", "procession.machine_id")
            about = " ".join(
                f"{k.split('.')[1]}={s.attributes[k]}" for k in keys if k in s.attributes
            )
            lines.append(
                f"+{(s.start_ns - t0) / 1e6:6.1f} ms {(s.end_ns - s.start_ns) / 1e6:6.1f} ms  "
                f"{s.service:<{width}}  {'  ' * depth}{s.name}{'  ' + about if about else ''}"
            )
            walk(s.span_id, depth + 1)

    walk("", 0)
    return "\n".join(lines)


def fullest(spans: Iterable[Span]) -> str:
    """The id of the trace with the most spans (the earliest of those tied)."""
    count: Counter[str] = Counter()
    first: dict[str, int] = {}
    for s in spans:
        count[s.trace_id] += 1
        first[s.trace_id] = min(first.get(s.trace_id, s.start_ns), s.start_ns)
    return min(count, key=lambda t: (-count[t], first[t]))


def _value(v: Any) -> Any:
    kind = v.WhichOneof("value")
    return getattr(v, kind) if kind else None


def _service(attributes: Iterable[Any]) -> str:
    return next((a.value.string_value for a in attributes if a.key == "service.name"), "")


@contextmanager
def running() -> Iterator[Sink]:
    sink = Sink()
    thread = threading.Thread(target=sink.serve_forever, name="otlp-sink", daemon=True)
    thread.start()
    try:
        yield sink
    finally:
        sink.shutdown()
        thread.join()
        sink.server_close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.otlp_sink")
    parser.add_argument("--port-file", required=True, help="where to write the port it listens on")
    args = parser.parse_args(argv)
    sink = Sink()
    tmp = f"{args.port_file}.tmp"
    with open(tmp, "w") as f:
        f.write(f"{sink.server_address[1]}\n")
    os.replace(tmp, args.port_file)  # whole or absent: the script waits for it

    def stop(*_: object) -> None:  # shutdown() waits for serve_forever: not on its thread
        threading.Thread(target=sink.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    sink.serve_forever()
    sink.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())

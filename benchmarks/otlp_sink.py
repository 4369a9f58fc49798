"""An OTLP/HTTP trace receiver in a thread: what a collector would receive.

Used as the trace sink of the tracing-overhead benchmark and by the OTLP
tests: it parses every export request and keeps (service, span name, trace
id) for each span.
"""

from __future__ import annotations

import gzip
import http.server
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
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
        got = []
        for rs in request.resource_spans:
            service = _service(rs.resource.attributes)
            for ss in rs.scope_spans:
                got += [(service, s.name, s.trace_id.hex()) for s in ss.spans]
        with self.server.lock:
            self.server.spans += got

    def log_message(self, format: str, *args: object) -> None:
        pass  # one line per request would drown the output


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

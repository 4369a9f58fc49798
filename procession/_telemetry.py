"""OpenTelemetry set-up for the long-lived commands, from the standard ``OTEL_*``
variables.

Tracing is on when ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``) is set and ``OTEL_TRACES_EXPORTER`` is
not ``none``. Spans then go to that endpoint over OTLP/HTTP in batches
(``OTEL_BSP_*`` tune them), under ``OTEL_SERVICE_NAME``, or
``procession-<role>`` when that is unset. Log lines written inside a task's
span carry its trace and span ids.

Example::

    OTEL_EXPORTER_OTLP_ENDPOINT=http://collector:4318 procession processor shop:app
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping

from procession._errors import ProcessionError


class TelemetryError(ProcessionError):
    """Tracing was asked for and cannot be set up."""

    def __init__(self, reason: str) -> None:
        super().__init__()
        self.reason = reason

    def message(self) -> str:
        return self.reason


def wanted(env: Mapping[str, str] = os.environ) -> bool:
    """Whether the environment asks for traces to be exported.

    Example:
        >>> wanted({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"})
        True
        >>> wanted({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_TRACES_EXPORTER": "none"})
        False
    """
    if env.get("OTEL_TRACES_EXPORTER", "").strip().lower() == "none":
        return False
    return bool(
        env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    )


def setup(role: str, env: Mapping[str, str] = os.environ) -> Callable[[], None]:
    """Install an OTLP-exporting tracer provider if the environment asks for one;
    returns what flushes and stops it at exit (a no-op otherwise)."""
    if not wanted(env):
        return lambda: None
    try:
        from opentelemetry import trace  # noqa: PLC0415 - the optional otel extra
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import (  # noqa: PLC0415
            OTLPSpanExporter,
        )
        from opentelemetry.sdk.resources import Resource  # noqa: PLC0415
        from opentelemetry.sdk.trace import TracerProvider  # noqa: PLC0415
        from opentelemetry.sdk.trace.export import BatchSpanProcessor  # noqa: PLC0415
    except ImportError as exc:
        raise TelemetryError(
            f"OTEL_EXPORTER_OTLP_ENDPOINT is set but {exc.name} is missing: "
            "install the otel extra (pip install 'procession[otel]') or unset it"
        ) from exc
    name = env.get("OTEL_SERVICE_NAME") or f"procession-{role}"
    provider = TracerProvider(resource=Resource.create({"service.name": name}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    for handler in logging.getLogger().handlers:
        handler.addFilter(_TraceIds())
        if handler.formatter is not None and handler.formatter._fmt:
            fmt = handler.formatter._fmt.replace(
                "%(message)s", "[trace=%(trace_id)s span=%(span_id)s] %(message)s"
            )
            handler.setFormatter(logging.Formatter(fmt))
    return provider.shutdown


class _TraceIds(logging.Filter):
    """Puts the current span's trace and span ids on each log record ("-" outside one)."""

    def filter(self, record: logging.LogRecord) -> bool:
        from opentelemetry import trace  # noqa: PLC0415

        ctx = trace.get_current_span().get_span_context()
        record.trace_id = format(ctx.trace_id, "032x") if ctx.is_valid else "-"
        record.span_id = format(ctx.span_id, "016x") if ctx.is_valid else "-"
        return True

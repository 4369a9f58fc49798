"""OpenTelemetry set-up for the long-lived commands, from the standard ``OTEL_*``
variables.

Tracing is on when ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``) is set and ``OTEL_TRACES_EXPORTER`` is
not ``none``. Spans then go to that endpoint over OTLP/HTTP in batches
(``OTEL_BSP_*`` tune them), under ``OTEL_SERVICE_NAME``, or
``procession-<role>`` when that is unset. The components' counters, gauges
and latencies go to the same endpoint as metrics
(``OTEL_METRIC_EXPORT_INTERVAL``). Log lines written inside a task's span
carry its trace and span ids.

Example::

    OTEL_EXPORTER_OTLP_ENDPOINT=http://collector:4318 procession processor shop:app
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from procession._errors import SettingError

if TYPE_CHECKING:
    from procession._health import Observed
    from procession.workers._stats import Labels


class TelemetryError(SettingError):
    """Tracing was asked for and cannot be set up."""


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
    """Install OTLP-exporting tracer and meter providers if the environment asks
    for them; returns what flushes and stops them at exit (a no-op otherwise)."""
    if not wanted(env):
        return lambda: None
    try:
        from opentelemetry import metrics, trace  # noqa: PLC0415 - the optional otel extra
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import (  # noqa: PLC0415
            OTLPMetricExporter,
        )
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import (  # noqa: PLC0415
            OTLPSpanExporter,
        )
        from opentelemetry.sdk.metrics import MeterProvider  # noqa: PLC0415
        from opentelemetry.sdk.metrics.export import (  # noqa: PLC0415
            PeriodicExportingMetricReader,
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
    resource = Resource.create({"service.name": name})
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    reader = PeriodicExportingMetricReader(OTLPMetricExporter())  # OTEL_METRIC_EXPORT_INTERVAL
    meters = MeterProvider(resource=resource, metric_readers=[reader])
    metrics.set_meter_provider(meters)
    for handler in logging.getLogger().handlers:
        handler.addFilter(_TraceIds())
        if handler.formatter is not None and handler.formatter._fmt:
            fmt = handler.formatter._fmt.replace(
                "%(message)s", "[trace=%(trace_id)s span=%(span_id)s] %(message)s"
            )
            handler.setFormatter(logging.Formatter(fmt))

    def shutdown() -> None:
        meters.shutdown()  # a last export of the metrics, then the spans
        provider.shutdown()

    return shutdown


#: The gauges every component may report (``Component.gauges``).
GAUGES = {
    "consumer_lag": "records between the position and the end of the assigned partitions",
    "timer_backlog": "durable timers armed and not yet fired",
    "parked_processes": "processes set aside until an operator resumes them",
    "processes": "process states held in memory",
    "tasks_running": "task handlers running now",
}


def observe(parts: Sequence[tuple[str, Observed]], env: Mapping[str, str] = os.environ) -> None:
    """Export the components' counters, gauges and latencies as OpenTelemetry
    metrics when the environment asks for them, as :func:`setup` does; else
    nothing (not even a no-op histogram's record per task and commit)."""
    if not wanted(env):
        return
    try:
        from opentelemetry import metrics  # noqa: PLC0415
        from opentelemetry.metrics import CallbackOptions, Observation  # noqa: PLC0415
    except ImportError:
        return
    meter = metrics.get_meter("procession")

    def counters(options: CallbackOptions) -> Iterable[Observation]:
        for role, part in parts:
            for name, n in list(part.metrics.items()):
                yield Observation(n, {"role": role, "counter": name})

    meter.create_observable_counter(
        "procession.count", [counters], description="the components' counters, by name"
    )
    for gauge, description in GAUGES.items():

        def read(options: CallbackOptions, gauge: str = gauge) -> Iterable[Observation]:
            for role, part in parts:
                value = part.gauges().get(gauge)
                if value is not None:
                    yield Observation(value, {"role": role})

        meter.create_observable_gauge(f"procession.{gauge}", [read], description=description)
    histograms: dict[str, Any] = {}
    for role, part in parts:

        def forward(name: str, seconds: float, labels: Labels, role: str = role) -> None:
            histogram = histograms.get(name)
            if histogram is None:
                metric = f"procession.{name.removesuffix('_seconds')}.duration"
                histogram = histograms[name] = meter.create_histogram(metric, unit="s")
            histogram.record(seconds, {"role": role, **dict(labels)})

        part.stats.forward = forward


class _TraceIds(logging.Filter):
    """Puts the current span's trace and span ids on each log record ("-" outside one)."""

    def filter(self, record: logging.LogRecord) -> bool:
        from opentelemetry import trace  # noqa: PLC0415

        ctx = trace.get_current_span().get_span_context()
        record.trace_id = format(ctx.trace_id, "032x") if ctx.is_valid else "-"
        record.span_id = format(ctx.span_id, "016x") if ctx.is_valid else "-"
        return True

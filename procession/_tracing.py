"""OpenTelemetry spans for every hop, continuing the trace each record carries.

A hop (route, decide, task) starts its span as a child of the ``traceparent``
on the record it consumes, and writes its own span's ``traceparent`` on the
records it produces. One trace then runs from the publisher's span to
``ProcessCompleted``. Nothing is exported unless the application installed an
OpenTelemetry SDK tracer provider; without the ``otel`` extra every function
here does nothing and the codec's id-derived ``traceparent`` stays on the
records.

Example::

    with hop("procession decide", parent, {"procession.process_id": pid}) as tp:
        records = encode_all(decisions, traceparent=tp)
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from procession.workers._port import Headers

try:  # the optional otel extra
    from opentelemetry import trace
    from opentelemetry.context import Context
except ImportError:  # exercised in a subprocess by tests/test_tracing.py
    trace = None  # type: ignore[assignment]

#: Follows whatever provider the application installs, even later on.
_TRACER = trace.get_tracer("procession") if trace is not None else None
_ROOT = Context() if trace is not None else None

Attributes = Mapping[str, str | int | bool]

_TRACING = False  # a provider was seen installed
_PUBLIC = object()  # the API's global is not there: ask its getter


def tracing() -> bool:
    """Whether spans go anywhere: an SDK tracer provider is installed. It may be
    installed later than this module is imported, so this is asked per hop; it
    is cheap (a global's value) until one is, and constant after."""
    global _TRACING  # noqa: PLW0603 - a provider, once installed, stays
    if _TRACING:
        return True
    if trace is None:
        return False
    # The API's own global: None until a provider is set (by code, or by
    # OTEL_PYTHON_TRACER_PROVIDER when get_tracer above first ran). Its public
    # getter looks the environment up on every call, which cost the decide hop
    # a few percent of its time; where the global is gone, the getter answers.
    if getattr(trace, "_TRACER_PROVIDER", _PUBLIC) is None:
        return False
    provider = trace.get_tracer_provider()
    _TRACING = not isinstance(provider, (trace.ProxyTracerProvider, trace.NoOpTracerProvider))
    return _TRACING


def parent_of(headers: Headers | None) -> str | None:
    """The ``traceparent`` a record carries, if any.

    Example:
        >>> parent_of([("traceparent", b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")])
        '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01'
    """
    for name, value in headers or ():
        if name == "traceparent" and value:
            return value.decode("ascii", "replace")
    return None


def _span_context(traceparent: str) -> Any:
    """The span context a W3C ``traceparent`` names, or None when it is malformed."""
    parts = traceparent.split("-")
    if len(parts) != 4 or parts[0] != "00" or len(parts[1]) != 32 or len(parts[2]) != 16:
        return None
    try:
        trace_id, span_id, flags = int(parts[1], 16), int(parts[2], 16), int(parts[3], 16)
    except ValueError:
        return None
    if not trace_id or not span_id:
        return None
    return trace.SpanContext(trace_id, span_id, True, trace.TraceFlags(flags & 1))


def _traceparent(ctx: Any) -> str:
    return f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{int(ctx.trace_flags):02x}"


@contextmanager
def hop(
    name: str,
    parent: str | None,
    attributes: Attributes,
    *,
    kind: str = "consumer",
    links: Sequence[str] = (),
    current: bool = False,
) -> Iterator[str | None]:
    """A span for one hop, a child of ``parent`` (a ``traceparent``), linked to
    ``links``; yields the ``traceparent`` to write on what the hop produces (None
    when no tracer provider is installed: the records keep their id-derived
    one). A span the sampler left out still passes its trace on, unsampled. An
    exception leaves the block after it is recorded on the span. ``current``
    makes the span the current one inside the block (a task handler's own spans
    and log lines then belong to it); that costs as much again as the span, so
    the runtime's own hops leave it off."""
    if _TRACER is None or not tracing():
        yield None
        return
    parent_ctx = _span_context(parent) if parent else None
    context = (
        trace.set_span_in_context(trace.NonRecordingSpan(parent_ctx), _ROOT)
        if parent_ctx is not None
        else _ROOT  # a root: never the caller's current span by accident
    )
    span_links = [trace.Link(c) for c in map(_span_context, links) if c is not None]
    span = _TRACER.start_span(
        name, context=context, kind=_KINDS[kind], attributes=attributes, links=span_links
    )
    ctx = span.get_span_context()
    if not span.is_recording():
        span.end()
        sampled_out = ctx.is_valid and (parent_ctx is None or ctx.span_id != parent_ctx.span_id)
        yield _traceparent(ctx) if sampled_out else None
        return
    if current:
        with trace.use_span(span, end_on_exit=True):
            yield _traceparent(ctx)
        return
    try:
        yield _traceparent(ctx)
    except BaseException as exc:
        span.record_exception(exc)
        span.set_status(trace.Status(trace.StatusCode.ERROR, str(exc)))
        raise
    finally:
        span.end()


def with_traceparent(headers: Headers, traceparent: str | None) -> Headers:
    """``headers`` with their ``traceparent`` replaced (unchanged for None).

    Example:
        >>> with_traceparent((("event-id", b"e1"), ("traceparent", b"old")), "new")
        (('event-id', b'e1'), ('traceparent', b'new'))
    """
    if traceparent is None:
        return headers
    value = traceparent.encode()
    return tuple((n, value if n == "traceparent" else v) for n, v in headers)


_KINDS: dict[str, Any] = (
    {
        "consumer": trace.SpanKind.CONSUMER,
        "internal": trace.SpanKind.INTERNAL,
        "producer": trace.SpanKind.PRODUCER,
    }
    if trace is not None
    else {}
)

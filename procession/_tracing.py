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
from typing import Any

from procession.workers._port import Headers

try:  # the optional otel extra
    from opentelemetry import trace
    from opentelemetry.context import Context
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
except ImportError:  # pragma: no cover - exercised where the extra is absent
    trace = None  # type: ignore[assignment]

_PROPAGATOR = TraceContextTextMapPropagator() if trace is not None else None

Attributes = Mapping[str, str | int | bool]


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


def _context(traceparent: str | None) -> Any:
    if traceparent is None or _PROPAGATOR is None:
        return Context()  # a root: never the caller's current span by accident
    return _PROPAGATOR.extract({"traceparent": traceparent}, context=Context())


@contextmanager
def hop(
    name: str,
    parent: str | None,
    attributes: Attributes,
    *,
    kind: str = "consumer",
    links: Sequence[str] = (),
) -> Iterator[str | None]:
    """A span for one hop, a child of ``parent`` (a ``traceparent``), linked to
    ``links``; yields the ``traceparent`` to write on what the hop produces (None
    when nothing records spans: the records keep their id-derived one). An
    exception leaves the block after it is recorded on the span."""
    if trace is None:
        yield None
        return
    tracer = trace.get_tracer("procession")
    span_links = []
    for link in links:
        ctx = trace.get_current_span(_context(link)).get_span_context()
        if ctx.is_valid:
            span_links.append(trace.Link(ctx))
    with tracer.start_as_current_span(
        name,
        context=_context(parent),
        kind=_KINDS[kind],
        attributes=dict(attributes),
        links=span_links,
    ) as span:
        if not span.is_recording():
            yield None
            return
        carrier: dict[str, str] = {}
        assert _PROPAGATOR is not None
        _PROPAGATOR.inject(carrier)
        yield carrier.get("traceparent")


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

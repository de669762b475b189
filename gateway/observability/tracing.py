"""OpenTelemetry traces: one per query, a span for each step of its path.

The gateway keeps a TracerProvider of its own (not the process-global one), exporting over
OTLP/HTTP when ``tracing.otlp_endpoint`` is set. A client's W3C trace context (``traceparent``
and ``tracestate`` gRPC metadata, e.g. ADBC's ``adbc.flight.sql.rpc.call_header.traceparent``)
is taken by a Flight server middleware, so the query's spans continue the client's trace.

The span tree of a federated query::

    meshgate.query                         (SERVER; statement, principal's roles, outcome)
                                           (meshgate.prepare for prepare / GetFlightInfo)
    ├── meshgate.plan                      (plan_cache.hit; on a miss:)
    │   ├── parse  ├── resolve  ├── govern  └── optimize
    ├── meshgate.execute                   (fragments started, builds read)
    │   ├── meshgate.fragment ×N           (store, store kind, rows, bytes; until read out)
    │   └── meshgate.local_engine          (DuckDB starts the query over the fragments)
    └── meshgate.stream                    (first batch to the end: rows, bytes)
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator, Mapping

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SimpleSpanProcessor,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from gateway.observability.settings import TracingSettings

log = logging.getLogger(__name__)

TRACER_NAME = "meshgate"

_propagator = TraceContextTextMapPropagator()


class _LogExporter(SpanExporter):
    """Finished spans as log lines (``tracing.console``), for debugging without a collector."""

    def export(self, spans) -> SpanExportResult:
        for span in spans:
            log.info("span %s", span.to_json(indent=None))
        return SpanExportResult.SUCCESS


def tracer_provider(
    settings: TracingSettings, *, exporter: SpanExporter | None = None
) -> TracerProvider:
    """A provider exporting to ``exporter`` (tests: an in-memory one, synchronously), else to the
    configured OTLP endpoint in batches off the query path, else to the log."""
    from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

    provider = TracerProvider(
        resource=Resource.create({"service.name": settings.service_name}),
        sampler=ParentBased(TraceIdRatioBased(settings.sample_ratio)),
    )
    if exporter is not None:
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    elif settings.otlp_endpoint is not None:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(
            BatchSpanProcessor(OTLPSpanExporter(endpoint=settings.otlp_endpoint))
        )
    else:
        provider.add_span_processor(BatchSpanProcessor(_LogExporter()))
    return provider


def incoming_context(headers: Mapping[str, list[str]]) -> otel_context.Context | None:
    """The W3C trace context a client sent in its call's headers, or None without one."""
    if not any(key.lower() == "traceparent" for key in headers):
        return None
    lowered = {key.lower(): value for key, value in headers.items()}
    extracted = _propagator.extract(carrier=lowered)
    if not trace.get_current_span(extracted).get_span_context().is_valid:
        return None
    return extracted


def trace_id_of(span: Span | None) -> str | None:
    """The 32-hex-digit trace id of ``span`` (what logs and the audit event carry)."""
    if span is None:
        return None
    context = span.get_span_context()
    return format(context.trace_id, "032x") if context.is_valid else None


def child_context(span: Span) -> otel_context.Context:
    return trace.set_span_in_context(span)


def end_span(span: Span, error: BaseException | str | None = None, **attributes) -> None:
    """Set ``attributes``, mark the span failed if there is an ``error``, and end it."""
    span.set_attributes({k: v for k, v in attributes.items() if v is not None})
    if error is not None:
        span.set_status(Status(StatusCode.ERROR, str(error) or type(error).__name__))
    span.end()


class StepTracer:
    """Spans for the steps of one query under one parent span: ``step(name)`` contexts, each
    the parent of the steps opened inside it (steps run on the query's thread)."""

    def __init__(self, tracer: trace.Tracer, parent: Span):
        self._tracer = tracer
        self.parent = child_context(parent)
        self._open = [self.parent]

    @contextlib.contextmanager
    def step(self, name: str, **attributes) -> Iterator[Span]:
        span = self._tracer.start_span(name, context=self._open[-1], attributes=attributes or None)
        self._open.append(child_context(span))
        try:
            yield span
        except BaseException as exc:
            end_span(span, exc)
            raise
        finally:
            self._open.pop()
        span.end()

    def nested(self, span: Span) -> StepTracer:
        """Steps under ``span`` instead."""
        return StepTracer(self._tracer, span)


_CALL_PARENTS: dict[int, otel_context.Context] = {}
"""The trace context each Flight call's client sent, by the OS thread serving the call. pyarrow
runs a call's middleware and handler on one thread, but each in a fresh Python context, so the
context cannot travel in contextvars."""


def call_parent() -> otel_context.Context | None:
    """The trace context the client of the Flight call this thread serves sent, if any."""
    return _CALL_PARENTS.get(threading.get_ident())


def start_query_span(
    tracer: trace.Tracer,
    *,
    name: str,
    parent: otel_context.Context | None,
    attributes: dict,
    start_time: int | None = None,
) -> Span:
    """The root span of a query: a child of the client's span when it sent one."""
    return tracer.start_span(
        name,
        context=parent or otel_context.Context(),
        kind=SpanKind.SERVER,
        attributes=attributes,
        start_time=start_time,
    )


def flight_middleware():
    """A Flight server middleware factory noting the client's trace context for the call."""
    import pyarrow.flight as flight

    class TraceContextMiddleware(flight.ServerMiddleware):
        def __init__(self, thread: int | None):
            self.thread = thread

        def call_completed(self, exception):
            if self.thread is not None:
                _CALL_PARENTS.pop(self.thread, None)

    class TraceContextMiddlewareFactory(flight.ServerMiddlewareFactory):
        def start_call(self, info, headers):
            thread = threading.get_ident()
            parent = incoming_context(headers)
            if parent is None:
                _CALL_PARENTS.pop(thread, None)
                return None
            _CALL_PARENTS[thread] = parent
            return TraceContextMiddleware(thread)

    return TraceContextMiddlewareFactory()

"""OpenTelemetry traces: one per query, a span for each step of its path.

The gateway keeps its tracing to itself (not the process-global provider): a query notes its
spans as plain records on its path, and a background thread exports them in batches, over
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
import time
from collections.abc import Mapping

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.trace import SpanKind, Status, StatusCode
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


class Tracing:
    """The gateway's tracing: which queries are sampled, and their spans exported off the path.

    A query notes its spans as plain records (:class:`QueryTrace`); when it ends, the records
    are queued, and a background thread turns them into OpenTelemetry ``ReadableSpan`` objects
    and exports them in batches. Starting and ending SDK spans on the query's thread cost about
    0.1 ms each (locks, attribute validation, a processor call); a record costs a dict.
    """

    def __init__(self, settings: TracingSettings, *, exporter: SpanExporter | None = None):
        from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
        from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
        from opentelemetry.sdk.util.instrumentation import InstrumentationScope

        from gateway.observability.batches import Batches

        self.sampler = ParentBased(TraceIdRatioBased(settings.sample_ratio))
        self.sample_all = settings.sample_ratio >= 1.0
        self.ids = RandomIdGenerator()
        self.resource = Resource.create({"service.name": settings.service_name})
        self.scope = InstrumentationScope(TRACER_NAME)
        if exporter is None and settings.otlp_endpoint is not None:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            exporter = OTLPSpanExporter(
                endpoint=settings.otlp_endpoint, timeout=settings.timeout_seconds
            )
        self.exporter = exporter or _LogExporter()
        self.on_export = lambda result, count: None
        """Told (``sent``/``failed``/``dropped``, number of traces) after each export."""
        self._failing = False
        self._batches = Batches(
            self._export,
            name="meshgate-spans",
            seconds=settings.batch_seconds,
            size=settings.batch_size,
            capacity=settings.queue_size,
            on_drop=lambda trace: self.on_export("dropped", 1),
        )

    def begin(self, parent: otel_context.Context | None) -> QueryTrace:
        """The trace of a new query, continuing the client's ``parent`` context if it sent one;
        sampled as the configured sampler decides (a client's sampled trace is continued)."""
        parent_span = trace.get_current_span(parent).get_span_context() if parent else None
        if parent_span is not None and parent_span.is_valid:
            trace_id = parent_span.trace_id
        else:
            parent_span, trace_id = None, self.ids.generate_trace_id()
        if parent_span is None and self.sample_all:
            sampled = True  # what the sampler would say, without asking it on every query
        else:
            decision = self.sampler.should_sample(parent, trace_id, "meshgate.query")
            sampled = decision.decision.is_sampled()
        return QueryTrace(trace_id, parent_span, sampled=sampled, new_id=self.ids.generate_span_id)

    def finished(self, query_trace: QueryTrace) -> None:
        """Queue a query's spans for export (never waits)."""
        if query_trace.sampled and query_trace.records:
            self._batches.put(query_trace)

    def flush(self, timeout: float = 10.0) -> bool:
        return self._batches.flush(timeout)

    def close(self) -> None:
        self._batches.close()
        with contextlib.suppress(Exception):
            self.exporter.shutdown()

    def _export(self, traces: list[QueryTrace]) -> None:
        spans = [span for each in traces for span in self.readable(each)]
        try:
            result = self.exporter.export(spans)
        except Exception as exc:  # noqa: BLE001 - an exporter that fails must not stop us
            result, error = None, exc
        else:
            error = None if result == SpanExportResult.SUCCESS else result
        if error is None:
            self.on_export("sent", len(traces))
            if self._failing:
                self._failing = False
                log.warning("spans are exported again")
            return
        self.on_export("failed", len(traces))
        if not self._failing:  # once per outage
            self._failing = True
            log.warning("could not export spans (%s); retrying with the next batch", error)

    def readable(self, query_trace: QueryTrace) -> list[ReadableSpan]:
        """The query's records as the SDK's finished spans (a span still open ends now)."""
        from opentelemetry.attributes import BoundedAttributes

        flags = trace.TraceFlags(trace.TraceFlags.SAMPLED)
        state = query_trace.parent.trace_state if query_trace.parent is not None else None
        now = time.time_ns()
        spans = []
        for record in query_trace.records:
            context = trace.SpanContext(query_trace.trace_id, record.span_id, False, flags, state)
            if record.parent_id is not None:
                parent = trace.SpanContext(
                    query_trace.trace_id, record.parent_id, False, flags, state
                )
            else:
                parent = query_trace.parent
            status = (
                Status(StatusCode.ERROR, record.error)
                if record.error is not None
                else Status(StatusCode.UNSET)
            )
            spans.append(
                ReadableSpan(
                    record.name,
                    context=context,
                    parent=parent,
                    resource=self.resource,
                    attributes=BoundedAttributes(attributes=record.attributes, immutable=True),
                    kind=record.kind,
                    status=status,
                    start_time=record.start,
                    end_time=record.end or now,
                    instrumentation_scope=self.scope,
                )
            )
        return spans


class SpanRecord:
    """One span of a query as its path notes it: ids, times, attributes, error."""

    __slots__ = ("name", "span_id", "parent_id", "start", "end", "attributes", "error", "kind")

    def __init__(
        self,
        name: str,
        span_id: int,
        parent_id: int | None,
        attributes: dict,
        *,
        kind: SpanKind = SpanKind.INTERNAL,
        start: int | None = None,
    ):
        self.name = name
        self.span_id = span_id
        self.parent_id = parent_id
        self.attributes = attributes
        self.kind = kind
        self.start = start or time.time_ns()
        self.end = 0
        self.error: str | None = None

    def finish(self, error: BaseException | str | None = None, **attributes: object) -> None:
        """Set ``attributes`` (None values left out), note an ``error``, and end the span."""
        for key, value in attributes.items():
            if value is not None:
                self.attributes[key] = value
        if error is not None:
            self.error = str(error) or type(error).__name__
        if not self.end:
            self.end = time.time_ns()


class QueryTrace:
    """The spans of one query: ``start`` one under a parent record (or as the root), or open
    ``step(name)`` contexts, each the parent of the steps opened inside it (on one thread)."""

    def __init__(
        self,
        trace_id: int,
        parent: trace.SpanContext | None,
        *,
        sampled: bool,
        new_id=lambda: 0,
    ):
        self.trace_id = trace_id
        self.parent = parent
        """The client's span this query continues, if it sent one."""
        self.sampled = sampled
        self.records: list[SpanRecord] = []
        self._new_id = new_id
        self._open: list[int | None] = [None]

    @property
    def trace_id_hex(self) -> str:
        """The 32-hex-digit trace id (what logs and the audit event carry)."""
        return format(self.trace_id, "032x")

    def start(
        self,
        name: str,
        *,
        parent: SpanRecord | None = None,
        attributes: dict | None = None,
        kind: SpanKind = SpanKind.INTERNAL,
        start: int | None = None,
    ) -> SpanRecord:
        """A new span under ``parent`` (the innermost open step without one)."""
        parent_id = parent.span_id if parent is not None else self._open[-1]
        record = SpanRecord(
            name, self._new_id(), parent_id, attributes or {}, kind=kind, start=start
        )
        if self.sampled:
            self.records.append(record)
        return record

    def root(self, name: str, *, attributes: dict, start: int | None = None) -> SpanRecord:
        """The query's root span (SERVER), the parent of every step opened after it."""
        record = self.start(name, attributes=attributes, kind=SpanKind.SERVER, start=start)
        self._open = [record.span_id]
        return record

    def step(self, name: str, **attributes: object) -> Step:
        """A span for the ``with`` block, the parent of the steps opened inside it."""
        return Step(self, self.start(name, attributes=attributes), nest=True)


class Step:
    """A span open for a ``with`` block: ended when it ends, failed if it raises (a class, not
    a generator context manager: the query path opens a few per query)."""

    __slots__ = ("_trace", "_record", "_nest")

    def __init__(self, query_trace: QueryTrace, record: SpanRecord, *, nest: bool = False):
        self._trace = query_trace
        self._record = record
        self._nest = nest

    def __enter__(self) -> SpanRecord:
        if self._nest:
            self._trace._open.append(self._record.span_id)
        return self._record

    def __exit__(self, kind, error, traceback) -> None:
        if self._nest:
            self._trace._open.pop()
        self._record.finish(error)


def incoming_context(headers: Mapping[str, list[str]]) -> otel_context.Context | None:
    """The W3C trace context a client sent in its call's headers, or None without one."""
    if not any(key.lower() == "traceparent" for key in headers):
        return None
    lowered = {key.lower(): value for key, value in headers.items()}
    extracted = _propagator.extract(carrier=lowered)
    if not trace.get_current_span(extracted).get_span_context().is_valid:
        return None
    return extracted


_CALL_PARENTS: dict[int, otel_context.Context] = {}
"""The trace context each Flight call's client sent, by the OS thread serving the call. pyarrow
runs a call's middleware and handler on one thread, but each in a fresh Python context, so the
context cannot travel in contextvars."""


def call_parent() -> otel_context.Context | None:
    """The trace context the client of the Flight call this thread serves sent, if any."""
    return _CALL_PARENTS.get(threading.get_ident())


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

"""The observability of one gateway, and of each query it runs.

The gateway makes one :class:`QueryObservation` per query (``Observability.query``) and finishes
it once, where the query is audited; everything reported about a query — metrics, the trace's
spans, the OpenLineage events, the ids on the audit event and the log lines — comes from it.
Fragments are observed through :class:`ObservedConnector`, a per-query view of each store that
counts and traces what the executor reads, so the executor itself knows nothing of this.
"""

from __future__ import annotations

import contextlib
import logging
import time
import uuid
import weakref
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import pyarrow as pa

from gateway.errors import DeniedAsNotFound, PermissionDenied, status_name
from gateway.observability.logs import CURRENT_QUERY
from gateway.observability.metrics import PENDING_LIMIT, Metrics, role_label
from gateway.observability.settings import ObservabilitySettings
from gateway.streaming import arrow_bytes, close_stream, stream_reader

log = logging.getLogger(__name__)

_NO_STEP = contextlib.nullcontext()
DOWN_CODES = frozenset({"UNAVAILABLE", "TIMED_OUT"})


def no_step(name: str, **attributes: object) -> contextlib.AbstractContextManager:
    """A step of the query path that nobody traces."""
    return _NO_STEP


class Observability:
    """Metrics, tracing and lineage of one gateway, each present only when switched on."""

    def __init__(
        self,
        settings: ObservabilitySettings,
        *,
        mesh: Any,
        connectors: Mapping[str, Any],
        policy: Any,
        span_exporter: Any = None,
        hide: Callable[[str], str] = lambda text: text,
    ):
        self.settings = settings
        self.hide = hide
        self.kinds = {name: connector.kind for name, connector in connectors.items()}
        self.metrics: Metrics | None = None
        if settings.metrics:
            self.metrics = Metrics(principal_labels=settings.metrics_principal_labels)
            self.metrics.add_pool_sizes(
                {n: (c.kind, c.connection_slots) for n, c in connectors.items()}
            )
        self.tracing = None
        if settings.tracing.enabled or span_exporter is not None:
            from gateway.observability.tracing import Tracing

            self.tracing = Tracing(settings.tracing, exporter=span_exporter)
            self.tracing.on_export = self._traces_exported
        self.lineage = None
        if settings.lineage.transport != "off":
            from gateway.observability.lineage import LineageEmitter

            self.lineage = LineageEmitter(
                settings.lineage,
                mesh=mesh,
                connectors=connectors,
                policy=policy,
                on_sent=self._lineage_sent,
            )
        self.observes_fragments = self.metrics is not None or self.tracing is not None

    def query(self, statement: str, principal: Any, *, planning_only: bool = False):
        """The observation of one query (``planning_only``: a prepare or GetFlightInfo call,
        which becomes a query only if it is refused)."""
        return QueryObservation(self, statement, principal, planning_only=planning_only)

    def stores(self, query: QueryObservation, connectors: Mapping[str, Any]) -> Mapping[str, Any]:
        """``connectors`` as ``query`` reads them: observed when anything watches fragments."""
        return _ObservedStores(connectors, query) if self.observes_fragments else connectors

    def plan_cache(self, hit: bool) -> None:
        if self.metrics is not None:
            self.metrics.child(self.metrics.plan_cache, "hit" if hit else "miss").inc()

    def policy_reloaded(self) -> None:
        if self.metrics is not None:
            self.metrics.child(self.metrics.policy_reloads).inc()

    def flight_middleware(self) -> dict[str, Any]:
        """Flight server middleware to install: the trace context reader when tracing is on."""
        if self.tracing is None:
            return {}
        from gateway.observability.tracing import flight_middleware

        return {"trace": flight_middleware()}

    def flush(self, timeout: float = 10.0) -> bool:
        """Send what is queued: lineage events, spans (tests and shutdown); False if some of it
        is still waiting after ``timeout`` (each)."""
        done = True
        if self.lineage is not None:
            done = self.lineage.flush(timeout) and done
        if self.tracing is not None:
            done = self.tracing.flush(timeout) and done
        return done

    def close(self) -> None:
        if self.lineage is not None:
            self.lineage.close()
        if self.tracing is not None:
            self.tracing.close()

    def _lineage_sent(self, event_type: str, result: str) -> None:
        if self.metrics is not None:
            self.metrics.child(self.metrics.lineage_events, event_type, result).inc()

    def _traces_exported(self, result: str, count: int) -> None:
        if self.metrics is not None:
            self.metrics.child(self.metrics.trace_exports, result).inc(count)


class QueryObservation:
    """What is reported about one query, from its start to its audit event."""

    def __init__(
        self, observe: Observability, statement: str, principal: Any, *, planning_only: bool
    ):
        self.observe = observe
        self.statement = statement
        self.principal = principal
        self.planning_only = planning_only
        self.started = time.perf_counter()
        self._query_id: str | None = None
        self.plan = None
        self.key_tables: dict[str, int] = {}
        self.span = None
        self.trace_id: str | None = None
        self._trace = None
        self._execute_span = None
        self._stream_span = None
        self._streaming = False
        self._started_lineage = False
        self._parent = None
        if observe.tracing is not None:
            from gateway.observability import tracing

            self._start_ns = time.time_ns()
            self._parent = tracing.call_parent()
            if not planning_only:
                self._open_span()
        if not planning_only:
            CURRENT_QUERY.set((self.query_id, principal.name, self.trace_id))

    def _open_span(self) -> None:
        """Start the query's root span (a prepare's only once it plans or is refused: a prepare
        answered from the plan cache has nothing to show)."""
        attributes = {
            "meshgate.query_id": self.query_id,
            "meshgate.roles": list(self.principal.roles),
        }
        if self.observe.settings.tracing.include_sql:
            attributes["db.query.text"] = self.statement
        self._trace = self.observe.tracing.begin(self._parent)
        self.span = self._trace.root(
            "meshgate.prepare" if self.planning_only else "meshgate.query",
            attributes=attributes,
            start=self._start_ns,
        )
        self.trace_id = self._trace.trace_id_hex

    @property
    def query_id(self) -> str:
        """The query's id (a UUID): its OpenLineage run id, on its audit event and log lines."""
        if self._query_id is None:
            self._query_id = str(uuid.uuid4())
        return self._query_id

    # --- steps of the path -------------------------------------------------------------------

    def step(self, name: str, **attributes: object) -> contextlib.AbstractContextManager:
        """A span for one step under the query (nothing when tracing is off)."""
        if self._trace is None:
            if self.observe.tracing is None:
                return _NO_STEP
            self._open_span()
        return self._trace.step(name, **attributes)

    def execute_step(self, name: str, **attributes: object) -> contextlib.AbstractContextManager:
        """A span for one step under ``meshgate.execute`` (the executor's local engine)."""
        if self._trace is None:
            return _NO_STEP
        from gateway.observability.tracing import Step

        parent = self._execute_span or self.span
        return Step(self._trace, self._trace.start(name, parent=parent, attributes=attributes))

    @contextlib.contextmanager
    def executing(self) -> Iterator[None]:
        """The ``meshgate.execute`` span: fragments start, builds are read, the engine starts."""
        if self._trace is None:
            yield
            return
        with self._trace.step("meshgate.execute") as span:
            self._execute_span = span
            yield

    def planned(self, plan: Any, *, cached: bool) -> None:
        """The query is planned: its lineage START goes out with its inputs."""
        self.plan = plan
        self.observe.plan_cache(cached)
        if self.observe.metrics is not None and not self.planning_only:
            self.observe.metrics.child(self.observe.metrics.duration, "plan").observe(
                time.perf_counter() - self.started
            )
        if not self.planning_only:
            self._lineage("START")

    def streaming(self) -> None:
        """The client pulled the first batch: the stream span starts, the stream is active."""
        CURRENT_QUERY.set((self.query_id, self.principal.name, self.trace_id))
        metrics = self.observe.metrics
        self._streaming = True
        if metrics is not None:
            metrics.child(metrics.active_streams).inc()
            metrics.child(metrics.duration, "first_batch").observe(
                time.perf_counter() - self.started
            )
        if self._trace is not None:
            self._stream_span = self._trace.start("meshgate.stream", parent=self.span)

    # --- fragments ---------------------------------------------------------------------------

    def fragment(
        self, connector: Any, sql: str, start: Callable[[], pa.RecordBatchReader], *, tables: int
    ) -> pa.RecordBatchReader:
        """Start one fragment at its store (``start()``) and observe it until it is read out."""
        store, kind = connector.name, connector.kind
        metrics = self.observe.metrics
        span = None
        if self._trace is not None:
            attributes: dict[str, Any] = {"meshgate.store": store, "meshgate.store.kind": kind}
            if tables:
                attributes["meshgate.key_tables"] = tables
            if self.observe.settings.tracing.include_sql:
                from gateway.audit import abbreviated

                attributes["db.query.text"] = self.observe.hide(abbreviated(sql))
            span = self._trace.start(
                "meshgate.fragment", parent=self._execute_span or self.span, attributes=attributes
            )
        if tables:
            self.key_tables[store] = self.key_tables.get(store, 0) + 1
        if metrics is not None:
            metrics.child(metrics.connections, store, kind).inc()
        try:
            reader = start()
        except BaseException as exc:
            self._fragment_done(store, kind, span, 0, 0, exc)
            raise
        return _counted(reader, lambda rows, size, error: self._fragment_done(
            store, kind, span, rows, size, error
        ))  # fmt: skip

    def _fragment_done(
        self, store: str, kind: str, span: Any, rows: int, size: int, error: BaseException | None
    ) -> None:
        metrics = self.observe.metrics
        code = status_name(error)
        if metrics is not None:
            metrics.child(metrics.connections, store, kind).dec()
            metrics.child(metrics.store_rows, store, kind).inc(rows)
            metrics.child(metrics.store_bytes, store, kind).inc(size)
            if error is not None and code != "CANCELLED":
                metrics.child(metrics.store_errors, store, kind, code).inc()
            if error is None or code in DOWN_CODES:
                metrics.child(metrics.store_up, store, kind).set(0 if code in DOWN_CODES else 1)
        if span is not None:
            span.finish(error, **{"meshgate.rows": rows, "meshgate.bytes": size})

    # --- the end -----------------------------------------------------------------------------

    def finish(
        self,
        *,
        outcome: str,
        error: BaseException | None,
        plan: Any,
        rows: int = 0,
        size: int = 0,
        sent: list[tuple[str, str]] | None = None,
    ) -> None:
        """The query ended (answered, refused or failed): count it, end its spans, send its
        lineage COMPLETE or FAIL. A prepare that succeeded only ends its span."""
        observe = self.observe
        code = status_name(error)
        refused = error is not None
        if self.planning_only and not refused:
            if self.span is not None:
                self._end_span(outcome, code, error, rows, size)
            return
        if self.span is None and observe.tracing is not None:
            self._open_span()  # a refused prepare
        # pyarrow runs each Flight callback in a fresh context: name the query again here
        CURRENT_QUERY.set((self.query_id, self.principal.name, self.trace_id))
        if log.isEnabledFor(logging.DEBUG):
            log.debug(
                "query %s: %s (%s), %d rows, %.1f ms",
                "prepare" if self.planning_only else "run",
                outcome,
                code,
                rows,
                (time.perf_counter() - self.started) * 1000,
            )
        if self._stream_span is not None:
            self._stream_span.finish(error, **{"meshgate.rows": rows, "meshgate.bytes": size})
        if observe.metrics is not None:
            self._count(
                observe.metrics,
                outcome=outcome,
                code=code,
                error=error,
                plan=plan if plan is not None else self.plan,
                rows=rows,
                size=size,
                sent=sent,
            )
        self._end_span(outcome, code, error, rows, size)
        if not self._started_lineage:
            self._lineage("START")
        self._lineage(
            "COMPLETE" if error is None else "FAIL",
            rows=rows,
            size=size,
            error=None if error is None else str(error) or type(error).__name__,
            outcome=outcome,
        )
        CURRENT_QUERY.set(None)

    def _count(
        self,
        metrics: Metrics,
        *,
        outcome: str,
        code: str,
        error: BaseException | None,
        plan: Any,
        rows: int,
        size: int,
        sent: list[tuple[str, str]] | None,
    ) -> None:
        """The query's counters and histograms: by outcome, per product, denials, duration."""
        role = role_label(self.principal.roles)
        who = (role, self.principal.name) if metrics.principal_labels else (role,)
        metrics.child(metrics.queries, outcome, code, *who).inc()
        for product in plan.products if plan is not None else ():
            metrics.child(metrics.product_queries, product, outcome, code, *who).inc()
            if rows:
                metrics.child(metrics.product_rows, product).inc(rows)
                metrics.child(metrics.product_bytes, product).inc(size)
        if isinstance(error, PermissionDenied | DeniedAsNotFound):
            metrics.child(metrics.denials, getattr(error, "product", None) or "", role).inc()
        if not self.planning_only:
            metrics.child(metrics.duration, "total").observe(time.perf_counter() - self.started)
            if self._streaming:
                metrics.child(metrics.active_streams).dec()
        if plan is not None and sent:
            self._count_fragments(metrics, plan, sent)
        if len(metrics.pending) > PENDING_LIMIT:
            metrics.apply_pending()

    def _count_fragments(self, metrics: Metrics, plan: Any, sent: list[tuple[str, str]]) -> None:
        kinds = self.observe.kinds
        planned = {fragment.sql for fragment in plan.fragments}
        if plan.dynamic_filters:
            metrics.child(metrics.dynamic_filters).inc(len(plan.dynamic_filters))
        key_tables = dict(self.key_tables)
        for store, sql in sent:
            metrics.child(metrics.fragments, store, kinds.get(store, "")).inc()
            if sql not in planned:
                how = "key_table" if key_tables.get(store, 0) > 0 else "sql"
                if how == "key_table":
                    key_tables[store] -= 1
                metrics.child(metrics.narrowed, store, how).inc()

    def _end_span(self, outcome: str, code: str, error, rows: int, size: int) -> None:
        if self.span is None:
            return
        self.span.finish(
            error,
            **{
                "meshgate.outcome": outcome,
                "meshgate.status_code": code,
                "meshgate.rows": rows,
                "meshgate.bytes": size,
                "meshgate.products": list(self.plan.products) if self.plan is not None else None,
            },
        )
        self.observe.tracing.finished(self._trace)

    def _lineage(self, event_type: str, **record: Any) -> None:
        lineage = self.observe.lineage
        if lineage is None:
            return
        from gateway.observability.lineage import LineageRecord

        plan = self.plan
        self._started_lineage = True
        lineage.emit(
            LineageRecord(
                event_type=event_type,
                run_id=self.query_id,
                statement=self.statement,
                principal=self.principal,
                products=plan.products if plan is not None else (),
                schema=plan.schema if plan is not None else None,
                trace_id=self.trace_id,
                rows=record.get("rows"),
                bytes=record.get("size"),
                error=record.get("error"),
                outcome=record.get("outcome"),
                at=time.time(),
            )
        )


class ObservedConnector:
    """A store as one query reads it: ``execute`` is observed, everything else is the store's."""

    def __init__(self, connector: Any, query: QueryObservation):
        self._connector = connector
        self._query = query

    def __getattr__(self, name: str) -> Any:
        return getattr(self._connector, name)

    def execute(self, sql: str, **options: Any) -> pa.RecordBatchReader:
        return self._query.fragment(
            self._connector, sql, lambda: self._connector.execute(sql, **options), tables=0
        )

    def execute_with_tables(self, sql: str, *, tables: Mapping[str, pa.Table]):
        return self._query.fragment(
            self._connector,
            sql,
            lambda: self._connector.execute_with_tables(sql, tables=tables),
            tables=len(tables),
        )


class _ObservedStores(Mapping):
    """``connectors`` with each store wrapped for one query when it is looked up."""

    def __init__(self, connectors: Mapping[str, Any], query: QueryObservation):
        self._connectors = connectors
        self._query = query

    def __getitem__(self, name: str) -> ObservedConnector:
        return ObservedConnector(self._connectors[name], self._query)

    def __iter__(self):
        return iter(self._connectors)

    def __len__(self) -> int:
        return len(self._connectors)


def _counted(
    reader: pa.RecordBatchReader, done: Callable[[int, int, BaseException | None], None]
) -> pa.RecordBatchReader:
    """``reader``, counting rows and bytes; ``done(rows, bytes, error)`` once it is read out,
    fails or is closed (also when it is dropped unread)."""
    counted = [0, 0]
    finished = []

    def finish(error: BaseException | None = None) -> None:
        if not finished:
            finished.append(True)
            done(counted[0], counted[1], error)

    def batches() -> Iterator[pa.RecordBatch]:
        error: BaseException | None = None
        try:
            for batch in reader:
                counted[0] += batch.num_rows
                counted[1] += arrow_bytes(batch)
                yield batch
        except BaseException as exc:
            error = exc
            raise
        finally:
            close_stream(reader)
            finish(error)

    stream = batches()
    weakref.finalize(stream, finish)
    return stream_reader(reader.schema, stream)

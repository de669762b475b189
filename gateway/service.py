"""The gateway as one object: a loaded mesh, its open connectors, principals and policies.

The Flight SQL server, the CLI and the tests all go through :class:`Gateway`; it is the one
source of truth for what products exist, who may see them and how a query runs.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
from sqlglot import exp

import connectors
from gateway.contracts import ContractReport, check_contracts
from gateway.errors import (
    ContractBroken,
    DeniedAsNotFound,
    GatewayError,
    MeshConfigError,
    PermissionDenied,
    QueryCancelled,
    QueryTimeout,
    SourceUnavailable,
    with_messages,
)
from gateway.executor import execute_plan
from gateway.limits import Admission, limits_for
from gateway.local_engine import configure_local_engine
from gateway.mesh import Mesh, Product, load_mesh
from gateway.observability.core import Observability, QueryObservation, no_step
from gateway.plan_cache import PLAN_CACHE_SIZE, PlanCache, plan_key
from gateway.planner import Plan, plan_query
from gateway.planner.context import PlanContext, Policy
from gateway.planner.parameters import exact_key, shape_key
from gateway.principals import Principal, PrincipalDirectory
from gateway.query_stream import QueryDeadline, QueryStream
from gateway.redact import Redactor
from gateway.streaming import close_stream

log = logging.getLogger(__name__)


def open_stores(mesh: Mesh) -> dict[str, connectors.Connector]:
    """A connector per store of ``mesh``; MeshConfigError lists every store's problems at once."""
    opened: dict[str, connectors.Connector] = {}
    problems: list[str] = []
    for name, store in mesh.config.stores.items():
        try:
            opened[name] = connectors.open_connector(
                name, {"kind": store.kind, **store.settings}, base_dir=mesh.root
            )
        except MeshConfigError as exc:
            problems.extend(exc.problems)
    if problems:
        for connector in opened.values():
            connector.close()
        raise MeshConfigError(problems)
    return opened


def _outcome(error: GatewayError) -> str:
    return "denied" if isinstance(error, PermissionDenied | DeniedAsNotFound) else "error"


def _reached_stores(error: BaseException | None) -> bool:
    """Whether a query that ended with ``error`` reached its stores (for availability)."""
    if isinstance(error, ContractBroken):
        return True
    return not isinstance(error, SourceUnavailable | QueryTimeout)


POLICY_RELOAD_SECONDS = 1.0


@dataclass
class _Running:
    """What the end of one running query reports: who ran what, under which plan, since when,
    the queries it sent (as sent) and the warnings it was given."""

    principal: Principal
    statement: str
    plan: Plan
    started: float
    query: QueryObservation
    warnings: list[str] = field(default_factory=list)
    sent: list[tuple[str, str]] = field(default_factory=list)


@dataclass(frozen=True)
class Listing:
    """A product as a principal may see it listed: the product, and whether it may read it
    (if not, reading it fails with PERMISSION_DENIED naming the owner to ask)."""

    product: Product
    readable: bool


class Gateway:
    def __init__(
        self,
        mesh: Mesh,
        *,
        policy: Policy,
        principals: PrincipalDirectory,
        span_exporter: object | None = None,
    ):
        self.mesh = mesh
        self.policy = policy
        self.principals = principals
        self.settings = mesh.config.gateway
        self._policy_checked_at = time.monotonic()
        self._policy_generation = 0
        self.plans: PlanCache[Plan] = PlanCache()
        self._listings: PlanCache[dict[str, Listing]] = PlanCache()
        """Each principal's listing (gateway.listed_products), while the policy holds."""
        self._governance_notes: dict[tuple, tuple[list[str], dict[str, str], dict[str, str]]] = {}
        self._audit_log = None
        if self.settings.audit_log is not None:
            from gateway.audit import AuditLog

            self._audit_log = AuditLog(mesh.root / self.settings.audit_log)
        self.connectors: dict[str, connectors.Connector] = {}
        self.observe: Observability | None = None
        from gateway.monitor import ProductMonitor
        from gateway.usage import UsageReader

        self.monitor = ProductMonitor(self)
        self._deprecated_names = {
            p.name for p in mesh.products.values() if p.descriptor.deprecated is not None
        }
        audit_path = None if self._audit_log is None else self._audit_log.path
        self.usage = UsageReader(audit_path, mesh.products)
        self.engine = None
        try:
            self.connectors = open_stores(mesh)
            if mesh.config.engines:
                from gateway.engines import Engine

                self.engine = Engine(mesh, self.connectors, on_change=self.plans.clear)
        except MeshConfigError:
            self.close()
            raise
        self.redactor = Redactor(mesh, self.connectors)
        self.admission = Admission(self.settings.limits)
        configure_local_engine(
            memory_limit=self.settings.limits.memory_limit,
            temp_directory=self._spill_directory(),
        )
        self._runners = dict(self.connectors)
        """Where fragments run: every store, and the engine under its name."""
        if self.engine is not None:
            self._runners[self.engine.name] = self.engine.connector
        self.observe = Observability(
            self.settings.observability,
            mesh=mesh,
            connectors=self.connectors,
            policy=policy,
            span_exporter=span_exporter,
            hide=getattr(policy, "hide_mask_key", lambda text: text),
        )
        if self.observe.metrics is not None:
            self.observe.metrics.add_gauges(
                "meshgate_product_status",
                "1 for each product version's current status of each SLO, its contract and each "
                "quality rule (status: met, at_risk, broken, drift, unchecked, ...).",
                ["product", "check", "status"],
                self._product_statuses,
            )

    @classmethod
    def open(
        cls,
        mesh_dir: str | Path,
        *,
        policy: Policy | None = None,
        span_exporter: object | None = None,
    ) -> Gateway:
        """Load and open the mesh in ``mesh_dir``; ``span_exporter`` (an OpenTelemetry
        SpanExporter) receives every span, synchronously, whatever the tracing settings."""
        mesh = load_mesh(mesh_dir, known_store_kinds=set(connectors.KINDS))
        principals = PrincipalDirectory.load(mesh.root)
        if policy is None:
            from policies import PolicyEngine

            policy = PolicyEngine.load(mesh)
        gateway = cls(mesh, policy=policy, principals=principals, span_exporter=span_exporter)
        try:
            gateway.check_contracts_on_load()
        except BaseException:
            gateway.close()
            raise
        return gateway

    def _spill_directory(self) -> str | None:
        """Where the local engine spills past its memory limit (absolute; None: no limit)."""
        limits = self.settings.limits
        if limits.temp_directory is not None:
            return str((self.mesh.root / limits.temp_directory).resolve())
        if limits.memory_limit is not None:
            import tempfile

            return str(Path(tempfile.gettempdir()) / "meshgate-spill")
        return None

    def reload_policies(self) -> None:
        """Pick up changed policy files, looking at most once a second (deny stays the default)."""
        now = time.monotonic()
        if now - self._policy_checked_at >= POLICY_RELOAD_SECONDS:
            self._policy_checked_at = now
            reload = getattr(self.policy, "reload_if_changed", None)
            if reload is not None and reload():
                self._policy_generation += 1  # plans made under the old policy are never reused
                self.plans.clear()
                self._listings.clear()
                self._governance_notes.clear()
                self._reload_principals()
                if self.observe is not None:
                    self.observe.policy_reloaded()
                log.info("policy files changed: the new policy is in force")

    def _reload_principals(self) -> None:
        try:
            self.principals = PrincipalDirectory.load(self.mesh.root)
        except MeshConfigError as exc:
            log.error("principals.yaml changed but is invalid; keeping the previous one\n%s", exc)

    @property
    def policy_generation(self) -> int:
        """How many times the policy has changed since the gateway started: what is worked out
        under one policy (plans, listings, parameter types) is keyed by it."""
        return self._policy_generation

    def current_principals(self) -> PrincipalDirectory:
        """The principals in force now (principals.yaml is re-read when it changes)."""
        self.reload_policies()
        return self.principals

    def context(self, principal: Principal) -> PlanContext:
        self.reload_policies()
        return PlanContext(
            mesh=self.mesh,
            principal=principal,
            policy=self.policy,
            connectors=self._runners,
            dialect=self.settings.dialect,
            engine=self.engine.view() if self.engine is not None else None,
        )

    def plan(
        self,
        sql: str,
        principal: Principal,
        parameters: list[object] | None = None,
        *,
        query: QueryObservation | None = None,
    ) -> Plan:
        """The plan of ``sql`` for ``principal`` with ``parameters`` bound."""
        return self._template(sql, principal, parameters, query=query).bind(parameters or ())

    def _template(
        self,
        sql: str,
        principal: Principal,
        parameters: list[object] | None,
        *,
        query: QueryObservation | None = None,
    ) -> Plan:
        """A plan of ``sql`` for values of the shape of ``parameters`` (planner.parameters),
        made once and reused while the policy holds."""
        context = self.context(principal)
        values = list(parameters or ())
        generation = self._policy_generation
        shape = plan_key(sql, principal, shape_key(sql, context.dialect, values), generation)
        exact = plan_key(sql, principal, exact_key(values), generation)
        plan = self.plans.get(shape, exact)
        cached = plan is not None
        if plan is None:
            step = no_step if query is None else query.step
            plan = plan_query(sql, context=context, parameters=values, step=step)
            self.plans.put(shape if plan.reusable else exact, plan)
        self._refuse_unservable(plan)
        if query is not None:
            query.planned(plan, cached=cached)
        return plan

    def _refuse_unservable(self, plan: Plan) -> None:
        """Retired versions and products whose store drifted from the contract are not served,
        however the plan was made (cached plans included)."""
        from gateway import lifecycle

        lifecycle.refuse_retired(plan.products, self.mesh.products, lifecycle.today())
        self.monitor.refuse_drifted(plan.products)

    def warnings(self, plan: Plan) -> list[str]:
        """What the client reading ``plan`` should be told: deprecated versions it reads."""
        from gateway import lifecycle

        return lifecycle.warnings_for(plan.products, self.mesh.products, lifecycle.today())

    def statement_warnings(
        self, sql: str, principal: Principal, parameters: list[object] | None = None
    ) -> list[str]:
        """The warnings of a statement (planned once and cached, as for running it). Free for
        the many statements that name no deprecated product."""
        text = sql.lower()
        if not any(name in text for name in self._deprecated_names):
            return []
        return self.warnings(self._template(sql, principal, parameters))

    def _product_statuses(self) -> Iterator[tuple[tuple[str, str, str], int]]:
        """(product version, check, status) of every product, as scraped for metrics."""
        seen = set()
        for product in self.mesh.products.values():
            if product.versioned_address in seen:
                continue
            seen.add(product.versioned_address)
            for check, status in self.monitor.statuses(product).items():
                yield (product.versioned_address, check, status), 1

    def explain(self, plan: Plan) -> str:
        """The plan as text for the principal who asked; secrets such as the hash key hidden."""
        hide = getattr(self.policy, "hide_mask_key", None)
        return hide(plan.explain()) if hide is not None else plan.explain()

    def explain_for(self, plan: Plan, principal: Principal) -> str:
        """The plan as EXPLAIN shows it to ``principal``: physical relations only where the
        policies' roles let them see those (gateway.redact), product addresses elsewhere."""
        policy_set = getattr(self.policy, "policy", None)
        includes = getattr(policy_set, "roles", None) or {}
        return self.redactor.explain(self.explain(plan), principal, includes=includes)

    def execute(
        self,
        plan: Plan,
        *,
        sent: list[tuple[str, str]] | None = None,
        query: QueryObservation | None = None,
        cancellers: list | None = None,
        cancelled: Callable[[], bool] | None = None,
    ) -> pa.RecordBatchReader:
        """Run ``plan``; ``sent`` collects the (store, SQL) pairs actually sent; ``cancellers``
        receives what interrupts the local engine's part (the query's deadline calls it);
        ``cancelled`` says whether the client has cancelled (gateway.executor.LocalWatch)."""
        if query is None:
            return execute_plan(
                plan,
                self._runners,
                max_batch_bytes=self.settings.max_batch_bytes,
                sent=sent,
                cancellers=cancellers,
                cancelled=cancelled,
            )
        with query.executing():
            return execute_plan(
                plan,
                self.observe.stores(query, self._runners),
                max_batch_bytes=self.settings.max_batch_bytes,
                sent=sent,
                step=query.execute_step,
                cancellers=cancellers,
                cancelled=cancelled,
            )

    def _fallback(self, plan: Plan, error: SourceUnavailable, principal: Principal) -> Plan | None:
        """The plan to run instead when ``plan`` went to an engine that is down and routing is
        ``auto`` (the same query, local); None when there is none."""
        engine = self.engine
        if engine is None or plan.engine != engine.name or error.store != engine.name:
            return None
        engine.failed()
        if engine.mode != "auto":
            return None
        log.warning("engine %r is down; running the query locally: %s", engine.name, error)
        return self.plan(plan.statement, principal, list(plan.parameters))

    def describe(
        self,
        sql: str,
        principal: Principal,
        parameters: list[object] | None = None,
        *,
        query: QueryObservation | None = None,
    ) -> Plan:
        """Plan without running (EXPLAIN, and the first step of ``run``); refusals are audited."""
        return self._audited(self.plan, sql, principal, parameters, query=query)

    def schema(
        self, sql: str, principal: Principal, parameters: list[object] | None = None
    ) -> pa.Schema:
        """The answer's schema without running (prepare, bind, GetFlightInfo); refusals are
        audited. The schema depends on the values' shape only, so they are not bound for it."""
        return self._audited(self._template, sql, principal, parameters).schema

    def _audited(
        self,
        make,
        sql: str,
        principal: Principal,
        parameters: list[object] | None,
        *,
        query: QueryObservation | None = None,
    ) -> Plan:
        started = time.perf_counter()
        planning_only = query is None
        if query is None:
            query = self.observe.query(sql, principal, planning_only=True)
        try:
            if planning_only:  # traced only if it plans: its root span is the plan
                plan = make(sql, principal, parameters, query=query)
            else:
                with query.step("meshgate.plan"):
                    plan = make(sql, principal, parameters, query=query)
        except GatewayError as exc:
            self._audit(
                principal, sql, None, started, outcome=_outcome(exc), error=exc, query=query
            )
            raise
        if planning_only:
            query.finish(outcome="ok", error=None, plan=plan)
        return plan

    def run(
        self,
        sql: str,
        principal: Principal,
        parameters: list[object] | None = None,
        *,
        cancelled: Callable[[], bool] | None = None,
    ) -> pa.RecordBatchReader:
        """Plan, execute and stream; one audit event when the stream ends, however it ends.
        ``cancelled`` tells whether the client has cancelled or gone away."""
        return self.stream(sql, principal, parameters, cancelled=cancelled).reader()

    def stream(
        self,
        sql: str,
        principal: Principal,
        parameters: list[object] | None = None,
        *,
        cancelled: Callable[[], bool] | None = None,
    ) -> QueryStream:
        """The query's answer as the one object that owns it until it ends (gateway.query_stream):
        a query refused or failed before its first batch is ended here."""
        query = self.observe.query(sql, principal)
        plan = self.describe(sql, principal, parameters, query=query)
        running = _Running(principal, sql, plan, time.perf_counter(), query)
        limits = limits_for(self.settings.limits, principal)
        try:
            slot = self.admission.admit(principal, limits)
        except GatewayError as exc:
            self._audit(
                principal, sql, plan, running.started, outcome="refused", error=exc, query=query
            )
            raise
        running.warnings = self.warnings(plan)
        self.monitor.on_read(plan.products)
        deadline = QueryDeadline(limits)
        try:
            reader = self._start(running, deadline, cancelled)
        except GatewayError as exc:
            deadline.stop()
            slot.release()
            public = self._store_failure(running.plan, self._public_error(exc))
            self._query_ended(running, public, outcome=_outcome(exc))
            raise public from None
        except BaseException:
            deadline.stop()
            slot.release()
            raise
        return QueryStream(
            reader,
            deadline=deadline,
            limits=limits,
            release=slot.release,
            publish=lambda error: self._store_failure(running.plan, self._public_error(error)),
            started=query.streaming,
            ended=lambda error, rows, size: self._query_ended(
                running, error, outcome="ok" if error is None else "error", rows=rows, size=size
            ),
        )

    def _start(
        self, running: _Running, deadline: QueryDeadline, cancelled: Callable[[], bool] | None
    ) -> pa.RecordBatchReader:
        """Start ``running``'s plan (locally instead when its engine is down and routing is
        ``auto``); a deadline passed before the stores' first answers is a QueryTimeout."""

        def execute() -> pa.RecordBatchReader:
            running.sent = []
            return self.execute(
                running.plan,
                sent=running.sent,
                query=running.query,
                cancellers=deadline.cancellers,
                cancelled=cancelled,
            )

        try:
            reader = execute()
        except SourceUnavailable as exc:
            fallback = self._fallback(running.plan, exc, running.principal)
            if fallback is None:
                raise
            running.plan = fallback
            reader = execute()
        if deadline.passed:  # the stores' first answers came too late
            close_stream(reader)
            raise deadline.error()
        return reader

    def _query_ended(
        self,
        running: _Running,
        error: BaseException | None,
        *,
        outcome: str,
        rows: int = 0,
        size: int = 0,
    ) -> None:
        """The one end of a query that ran: the monitor's availability and latency, then the
        audit event (and with it the query's observation)."""
        elapsed_ms = (time.perf_counter() - running.started) * 1000
        self.monitor.record_query(
            running.plan.products,
            reached=_reached_stores(error),
            ms=elapsed_ms if error is None else None,
        )
        self._audit(
            running.principal,
            running.statement,
            running.plan,
            running.started,
            outcome=outcome,
            error=error,
            sent=running.sent,
            query=running.query,
            warnings=running.warnings,
            rows=rows,
            bytes=size,
        )

    def _store_failure(self, plan: Plan, error: GatewayError) -> GatewayError:
        """A store failed a query: if its product drifted from the contract (a column dropped
        or retyped under the gateway), say so, naming the column, instead of the store's words."""
        if isinstance(error, QueryCancelled | ContractBroken):
            return error
        try:
            self.monitor.recheck_contracts(plan.products)
        except ContractBroken as drift:
            log.warning("a query failed on contract drift: %s", drift)
            return drift
        except GatewayError:  # the check itself could not run: report the first failure
            pass
        return error

    def _public_error(self, error: Exception) -> GatewayError:
        """``error`` as the client may see it, without the excerpt of the SQL that DuckDB quotes
        (``LINE 1: ...``: physical names, file paths, row filters) and without the hash key."""
        message = str(error).split("\nLINE ")[0].rstrip()
        hide = getattr(self.policy, "hide_mask_key", None)
        message = hide(message) if hide is not None else message
        if isinstance(error, GatewayError) and not isinstance(error, MeshConfigError):
            public = error.public
            public = hide(public) if hide is not None and public is not None else public
            return with_messages(error, message, public)
        log.error("a query failed while streaming", exc_info=error)
        return GatewayError(
            f"the query failed while streaming: {message}",
            public="the query failed while streaming",
        )

    def _audit(
        self,
        principal: Principal,
        statement: str,
        plan: Plan | None,
        started: float,
        *,
        outcome: str,
        error: BaseException | None = None,
        rows: int = 0,
        bytes: int = 0,  # noqa: A002 - the audit event's field name
        sent: list[tuple[str, str]] | None = None,
        query: QueryObservation | None = None,
        warnings: list[str] | None = None,
    ) -> None:
        """The one place a query ends: its observation is finished and its audit event written."""
        if query is not None:
            query.finish(outcome=outcome, error=error, plan=plan, rows=rows, size=bytes, sent=sent)
        if self._audit_log is None:
            return
        from gateway.audit import AuditEvent, SentQuery, abbreviated

        hide = getattr(self.policy, "hide_mask_key", lambda text: text)
        event = AuditEvent(
            principal=principal.name,
            statement=statement,
            outcome=outcome,
            rows=rows,
            bytes=bytes,
            duration_ms=round((time.perf_counter() - started) * 1000, 3),
            error=None if error is None else str(error) or type(error).__name__,
            query_id=None if query is None else query.query_id,
            trace_id=None if query is None else query.trace_id,
            warnings=list(warnings or ()),
        )
        if plan is not None:
            event.engine = plan.engine
            event.products = list(plan.products)
            columns, masks, filters = self._governance_applied(principal, plan)
            event.columns, event.masks, event.filters = list(columns), dict(masks), dict(filters)
            sent = sent or [(f.store, f.sql) for f in plan.fragments]
            event.fragments = [SentQuery(store, hide(abbreviated(sql))) for store, sql in sent]
        try:
            self._audit_log.record(event)
        except OSError:
            log.exception("could not append to the audit log %s", self._audit_log.path)

    def _governance_applied(
        self, principal: Principal, plan: Plan
    ) -> tuple[list[str], dict[str, str], dict[str, str]]:
        """The columns, masks and row filters ``plan`` read for ``principal``, as the audit log
        names them; worked out once per principal and products while the policy holds."""
        key = (principal.cache_key(), plan.products, self._policy_generation)
        applied = self._governance_notes.get(key)
        if applied is not None:
            return applied
        hide = getattr(self.policy, "hide_mask_key", lambda text: text)
        columns: list[str] = []
        masks: dict[str, str] = {}
        filters: dict[str, str] = {}
        for address in plan.products:
            product = self.mesh.products[address]
            decision = self.policy.decide(principal, product)
            columns.extend(f"{address}.{c.name}" for c in product.columns)
            for column in product.columns:
                if column.name in decision.masks:
                    masked = decision.column(column.name, column.type, exp.column(column.name))
                    masks[f"{address}.{column.name}"] = hide(masked.sql("duckdb"))
            if decision.row_filter is not None:
                filters[address] = decision.row_filter.sql("duckdb")
        if len(self._governance_notes) >= PLAN_CACHE_SIZE:
            self._governance_notes.clear()
        self._governance_notes[key] = (columns, masks, filters)
        return columns, masks, filters

    def visible_products(self, principal: Principal) -> dict[str, Product]:
        """Every address the principal may read, versioned and latest."""
        return {
            a: entry.product
            for a, entry in self.listed_products(principal).items()
            if entry.readable
        }

    def listed_products(self, principal: Principal) -> dict[str, Listing]:
        """Every address the principal may know of, versioned and latest, and whether it may
        read it: the products it may read, and those denied to it that are discoverable
        (``denied_products: discoverable`` in mesh.yaml, or ``when_denied`` in a descriptor).
        Flight SQL's metadata listings and the discovery page both show exactly these.

        Every prepared statement asks (its parameters' types), so the policy is asked once per
        principal while it holds, not once per product per statement; callers get a copy."""
        self.reload_policies()
        key = plan_key("", principal, "listing", self._policy_generation)
        listing = self._listings.get(key)
        if listing is None:
            listing = {}
            for address, product in sorted(self.mesh.products.items()):
                readable = self.policy.readable(principal, product)
                if readable or self.mesh.when_denied(product) == "discoverable":
                    listing[address] = Listing(product, readable)
            self._listings.put(key, listing)
        return dict(listing)

    def check_contracts(self) -> list[ContractReport]:
        return check_contracts(self.mesh, self.connectors)

    def check_contracts_on_load(self) -> None:
        mode = self.settings.contract_check
        if mode == "off":
            return
        failures = []
        reports = self.check_contracts()
        self.monitor.record_contracts(reports)  # drift found at load is reported and refused
        for report in reports:
            if not report.checked:
                log.warning("contract of %s %s", report.address, report.problems[0])
            for problem in report.problems if report.checked else ():
                message = f"{self.mesh.products[report.address].path}: field `columns`: {problem}"
                failures.append(message)
                log.warning("contract drift: %s", message)
        if failures and mode == "strict":
            raise MeshConfigError(failures)

    def product_metadata(self, product: Product) -> dict[str, str]:
        """The product's life cycle and measured statuses, as GetTables schema metadata."""
        found = {f"meshgate:status:{k}": v for k, v in self.monitor.statuses(product).items()}
        deprecated = product.descriptor.deprecated
        if deprecated is not None:
            found["meshgate:deprecated"] = (
                f"since {deprecated.since}; sunset {deprecated.sunset}; "
                f"replacement {deprecated.replacement}"
            )
        return found

    def close(self) -> None:
        monitor = getattr(self, "monitor", None)
        if monitor is not None:
            monitor.stop()
        if self._audit_log is not None:
            self._audit_log.close()
        if self.engine is not None:
            self.engine.close()
        if getattr(self, "observe", None) is not None:
            self.observe.close()
        for connector in self.connectors.values():
            try:
                connector.close()
            except Exception:  # noqa: BLE001 - closing one store must not stop closing the others
                log.warning("closing store %s failed", connector.name, exc_info=True)

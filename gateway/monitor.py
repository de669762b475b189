"""Products observed while serving: SLOs measured, contracts and quality checked at the stores.

The monitor asks each product's store, on a schedule (``gateway.monitor_interval_seconds``), when
a product is read (at most every :data:`READ_CHECK_SECONDS`, in the background) and on demand
(:meth:`ProductMonitor.check_now`):

- **freshness**: ``max(<column>)`` against ``max_age``;
- **volume**: ``count(*)`` against ``min_rows``/``max_rows``;
- **availability**: whether those probes and the product's queries reached the store;
- **latency**: p50/p95 of the product's queries' durations;
- **contract**: the store's columns against the descriptor (gateway.contracts);
- **quality**: each declared ODCS rule, counted at the store.

A breach (an SLO or quality rule turning *broken*, a contract drifting) is logged once when it
starts and once when it ends. A product whose contract drifted is refused with
:class:`~gateway.errors.ContractBroken` naming what differs, never served with changed data.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlglot import exp

from gateway import slos
from gateway.catalog import Measurements
from gateway.contracts import ContractReport, check_contract
from gateway.errors import ContractBroken, GatewayError, QueryTimeout, SourceUnavailable
from gateway.mesh import Product, QualityRule, duration_seconds

if TYPE_CHECKING:
    from gateway.service import Gateway

log = logging.getLogger("meshgate.monitor")

READ_CHECK_SECONDS = 10.0
"""A read re-measures a product whose last check is older than this."""
WINDOW_SECONDS = 3600.0
"""Availability and latency are judged over this window."""
MAX_SAMPLES = 1000
JUDGE_SECONDS = 1.0
"""A busy product's query samples are judged for breaches at most this often (and at once when
its store stops or starts answering)."""


@dataclass
class _ProductState:
    """Everything measured about one product version; guarded by the monitor's lock."""

    checked_at: float = 0.0
    newest: Any = None
    age_seconds: float | None = None
    rows: int | None = None
    outcomes: deque = field(default_factory=lambda: deque(maxlen=MAX_SAMPLES))
    """(time, reached the store)"""
    latencies: deque = field(default_factory=lambda: deque(maxlen=MAX_SAMPLES))
    """(time, milliseconds) of answered queries"""
    contract: dict[str, Any] = field(default_factory=lambda: {"status": "unchecked"})
    quality: dict[int, float | None] = field(default_factory=dict)
    statuses: dict[str, str] = field(default_factory=dict)
    """What was last logged per SLO / rule, to log a breach once when it starts and ends."""
    judged_at: float = 0.0
    """When queries' outcomes and latencies were last judged for breaches."""


def _age_seconds(newest: Any, now: float) -> float | None:
    """How old the newest value is; dates count from the end of their day (UTC)."""
    if newest is None:
        return None
    if isinstance(newest, dt.datetime):
        moment = newest if newest.tzinfo else newest.replace(tzinfo=dt.UTC)
    elif isinstance(newest, dt.date):
        moment = dt.datetime.combine(newest + dt.timedelta(days=1), dt.time(), tzinfo=dt.UTC)
    else:
        return None
    return max(0.0, now - moment.timestamp())


STORE_COLUMNS = re.compile(r" \(it has: [^)]*\)")


def public_problems(problems: Iterable[str]) -> list[str]:
    """Contract problems as any reader of the product may see them: what differs from the
    contract, without the store's other column names (which may be physical or private).

    >>> public_problems(["column 'a' is not in the store (it has: b, ssn); fix it"])
    ["column 'a' is not in the store; fix it"]
    """
    return [STORE_COLUMNS.sub("", problem) for problem in problems]


def _human_seconds(seconds: float) -> str:
    """An age as a person reads it.

    >>> _human_seconds(7200), _human_seconds(90), _human_seconds(86400 * 400)
    ('2.0h', '1.5m', '400 days')
    """
    if seconds >= 2 * 86400:
        return f"{seconds / 86400:,.0f} days"
    for unit, size in (("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f}{unit}"
    return f"{seconds:.0f}s"


def quality_sql(rule: QualityRule, relation: exp.Expression) -> exp.Select:
    """The count a quality rule measures, as one query over the product's store relation."""
    source = relation.copy()
    if rule.metric == "rowCount":
        return exp.select(exp.func("count", exp.Star()).as_("v")).from_(source)
    column = exp.column(rule.column)
    if rule.metric == "duplicateValues":
        distinct = exp.Count(this=exp.Distinct(expressions=[column.copy()]))
        return exp.select(
            exp.Sub(this=exp.func("count", column.copy()), expression=distinct).as_("v")
        ).from_(source)
    if rule.metric == "nullValues":
        condition: exp.Expression = column.is_(exp.null())
    else:  # invalidValues: outside the accepted values or the range
        checks: list[exp.Expression] = []
        if "validValues" in rule.arguments:
            values = [exp.convert(v) for v in rule.arguments["validValues"]]
            checks.append(exp.not_(column.copy().isin(*values)))
        if rule.arguments.get("minimum") is not None:
            checks.append(column.copy() < exp.convert(rule.arguments["minimum"]))
        if rule.arguments.get("maximum") is not None:
            checks.append(column.copy() > exp.convert(rule.arguments["maximum"]))
        condition = exp.and_(column.copy().is_(exp.null()).not_(), exp.or_(*checks))
    return exp.select(exp.func("count", exp.Star()).as_("v")).from_(source).where(condition)


class ProductMonitor:
    """Measures and remembers the state of every product version of one gateway."""

    def __init__(self, gateway: Gateway, *, clock: Callable[[], float] = time.time):
        self.gateway = gateway
        self.clock = clock
        self._states: dict[str, _ProductState] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._background = ThreadPoolExecutor(max_workers=1, thread_name_prefix="meshgate-monitor")
        self._pending: set[str] = set()

    # --- running -----------------------------------------------------------------------------

    def start(self, interval_seconds: float | None = None) -> None:
        """Measure every product now and then every ``interval_seconds`` (mesh.yaml default)."""
        interval = (
            self.gateway.settings.monitor_interval_seconds
            if interval_seconds is None
            else interval_seconds
        )
        if interval <= 0 or self._thread is not None:
            return
        self._thread = threading.Thread(
            target=self._run, args=(interval,), daemon=True, name="meshgate-monitor-schedule"
        )
        self._thread.start()

    def _run(self, interval: float) -> None:
        while not self._stop.is_set():
            try:
                self.check_now()
            except Exception:  # noqa: BLE001 - the schedule must survive any one failure
                log.exception("a scheduled product check failed")
            self._stop.wait(interval)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        self._background.shutdown(wait=False, cancel_futures=True)

    def _versions(self, addresses: Iterable[str] | None = None) -> list[Product]:
        products = self.gateway.mesh.products
        chosen = products.values() if addresses is None else (products[a] for a in addresses)
        return list({p.versioned_address: p for p in chosen}.values())

    def _state(self, product: Product) -> _ProductState:
        with self._lock:
            return self._states.setdefault(product.versioned_address, _ProductState())

    # --- measuring ---------------------------------------------------------------------------

    def check_now(self, addresses: Iterable[str] | None = None) -> None:
        """Measure the products at ``addresses`` (default all) at their stores, now."""
        for product in self._versions(addresses):
            self._check(product)

    def _scalar(self, product: Product, query: exp.Select) -> Any:
        connector = self.gateway.connectors[product.store]
        reader = connector.execute(query.sql(dialect=connector.capabilities.dialect))
        try:
            table = reader.read_all()
        finally:
            reader.close()
        return table.column(0)[0].as_py() if table.num_rows else None

    def _relation(self, product: Product) -> exp.Expression:
        connector = self.gateway.connectors[product.store]
        return connector.relation(
            product.descriptor.table,
            product.descriptor.sql,
            columns={c.name: c.type for c in product.columns},
        )

    def _check(self, product: Product) -> None:
        state = self._state(product)
        now = self.clock()
        report = check_contract(product, self.gateway.connectors[product.store])
        reached = report.checked
        contract = {
            "status": "ok" if report.ok else "drift" if report.checked else "unchecked",
            "problems": public_problems(report.problems) if report.checked else [],
            "checked_at": _iso(now),
        }
        if not report.checked:
            log.info("contract of %s not checked: %s", product.versioned_address, report.problems)
        newest = rows = None
        quality: dict[int, float | None] = {}
        if reached and report.ok:
            try:
                newest, rows, quality = self._measure(product)
            except (SourceUnavailable, QueryTimeout):
                reached = False
            except GatewayError as exc:
                log.warning("measuring %s failed: %s", product.versioned_address, exc)
        with self._lock:
            state.checked_at = now
            state.outcomes.append((now, reached))
            if reached:
                state.newest, state.rows, state.quality = newest, rows, quality
                state.age_seconds = _age_seconds(newest, now)
            if report.checked or state.contract.get("status") == "unchecked":
                state.contract = contract
        self._log_transitions(product)

    def _measure(self, product: Product) -> tuple[Any, int | None, dict[int, float | None]]:
        relation = self._relation(product)
        slo = product.descriptor.slo
        newest = rows = None
        if slo is not None and slo.freshness is not None:
            newest = self._scalar(
                product,
                exp.select(exp.func("max", exp.column(slo.freshness.column)).as_("v")).from_(
                    relation.copy()
                ),
            )
        if slo is not None and slo.volume is not None:
            rows = self._scalar(
                product, exp.select(exp.func("count", exp.Star()).as_("v")).from_(relation.copy())
            )
        quality = {
            i: self._scalar(product, quality_sql(rule, relation))
            for i, rule in enumerate(product.descriptor.quality)
        }
        return newest, rows, quality

    def record_query(self, addresses: Iterable[str], *, reached: bool, ms: float | None) -> None:
        """A query over ``addresses`` ended: did it reach the stores, how long it took (when it
        was answered). Cheap: called on every query."""
        now = self.clock()
        for product in self._versions(addresses):
            state = self._state(product)
            with self._lock:
                flipped = bool(state.outcomes) and state.outcomes[-1][1] != reached
                state.outcomes.append((now, reached))
                if ms is not None:
                    state.latencies.append((now, ms))
                due = flipped or not reached or now - state.judged_at >= JUDGE_SECONDS
                if due:
                    state.judged_at = now
            if due:  # judging computes percentiles: not on every query of a busy product
                self._log_transitions(product)

    def on_read(self, addresses: Iterable[str]) -> None:
        """A query reads ``addresses``: re-measure those not checked lately, in the background."""
        now = self.clock()
        for product in self._versions(addresses):
            state = self._state(product)
            key = product.versioned_address
            with self._lock:
                due = now - state.checked_at >= READ_CHECK_SECONDS and key not in self._pending
                if due:
                    self._pending.add(key)
            if due:
                try:
                    self._background.submit(self._check_pending, product)
                except RuntimeError:  # shut down
                    return

    def _check_pending(self, product: Product) -> None:
        try:
            self._check(product)
        except Exception:  # noqa: BLE001 - a background check must not take the monitor down
            log.exception("checking %s failed", product.versioned_address)
        finally:
            with self._lock:
                self._pending.discard(product.versioned_address)

    # --- contracts ---------------------------------------------------------------------------

    def refuse_drifted(self, addresses: Iterable[str]) -> None:
        """ContractBroken naming what differs, if any of ``addresses`` drifted from its contract."""
        for address in addresses:
            product = self.gateway.mesh.products[address]
            with self._lock:
                state = self._states.get(product.versioned_address)
                contract = dict(state.contract) if state is not None else {}
            if contract.get("status") == "drift":
                raise ContractBroken(
                    f"{address} is not served: its store no longer matches the contract: "
                    f"{'; '.join(contract['problems'])}. Data is never served changed; ask its "
                    f"owner ({product.descriptor.owner}) to fix the store or the descriptor"
                )

    def record_contracts(self, reports: Iterable[ContractReport]) -> None:
        """Contract reports made elsewhere (the check at load), as if measured here."""
        now = self.clock()
        for report in reports:
            product = self.gateway.mesh.products[report.address]
            state = self._state(product)
            with self._lock:
                if report.checked:
                    state.contract = {
                        "status": "ok" if report.ok else "drift",
                        "problems": public_problems(report.problems),
                        "checked_at": _iso(now),
                    }
            self._log_transitions(product)

    def recheck_contracts(self, addresses: Iterable[str]) -> None:
        """After a store failed a query over ``addresses``: was it drift? (ContractBroken if so)."""
        for product in self._versions(addresses):
            self._check(product)
        self.refuse_drifted(addresses)

    # --- reporting ---------------------------------------------------------------------------

    def measurements(self, product: Product) -> Measurements:
        """What is known of ``product`` now, for the catalog."""
        state = self._state(product)
        now = self.clock()
        with self._lock:
            outcomes = [ok for t, ok in state.outcomes if now - t <= WINDOW_SECONDS]
            latencies = [ms for t, ms in state.latencies if now - t <= WINDOW_SECONDS]
            snapshot = (state.age_seconds, state.newest, state.rows, dict(state.quality))
            contract = dict(state.contract)
        age, newest, rows, quality = snapshot
        return Measurements(
            slos=self._slos(product, age, newest, rows, outcomes, latencies),
            contract=contract,
            quality=self._quality(product, quality),
        )

    def _slos(self, product, age, newest, rows, outcomes, latencies) -> list[dict[str, Any]]:
        slo = product.descriptor.slo
        if slo is None:
            return []
        found = []
        if slo.freshness is not None:
            limit = duration_seconds(slo.freshness.max_age)
            found.append(
                {
                    "kind": "freshness",
                    "objective": f"max({slo.freshness.column}) at most {slo.freshness.max_age} old",
                    "measured": (
                        f"{_human_seconds(age)} old (newest {newest})" if age is not None else None
                    ),
                    "status": slos.freshness_status(age, limit),
                }
            )
        if slo.availability is not None:
            found.append(
                {
                    "kind": "availability",
                    "objective": f"{slo.availability.min_percent:g}% of probes and queries answer",
                    "measured": (
                        f"{slos.availability_percent(outcomes):.1f}% of {len(outcomes)} "
                        f"in the last hour{'' if outcomes[-1] else '; the store is down now'}"
                        if outcomes
                        else None
                    ),
                    "status": slos.availability_status(outcomes, slo.availability.min_percent),
                }
            )
        if slo.latency is not None:
            bounds = [
                f"p{q} ≤ {v:g} ms"
                for q, v in ((50, slo.latency.p50_ms), (95, slo.latency.p95_ms))
                if v is not None
            ]
            found.append(
                {
                    "kind": "latency",
                    "objective": ", ".join(bounds),
                    "measured": (
                        f"p50 {slos.percentile(latencies, 50):.0f} ms, "
                        f"p95 {slos.percentile(latencies, 95):.0f} ms over {len(latencies)} queries"
                        if latencies
                        else None
                    ),
                    "status": slos.latency_status(
                        latencies, p50_ms=slo.latency.p50_ms, p95_ms=slo.latency.p95_ms
                    ),
                }
            )
        if slo.volume is not None:
            bounds = []
            if slo.volume.min_rows is not None:
                bounds.append(f"at least {slo.volume.min_rows:,} rows")
            if slo.volume.max_rows is not None:
                bounds.append(f"at most {slo.volume.max_rows:,} rows")
            found.append(
                {
                    "kind": "volume",
                    "objective": ", ".join(bounds),
                    "measured": f"{rows:,} rows" if rows is not None else None,
                    "status": slos.volume_status(
                        rows, min_rows=slo.volume.min_rows, max_rows=slo.volume.max_rows
                    ),
                }
            )
        return found

    def _quality(self, product: Product, measured: dict[int, float | None]) -> list[dict]:
        found = []
        for i, rule in enumerate(product.descriptor.quality):
            operator, operand = rule.operator()
            value = measured.get(i)
            found.append(
                {
                    "name": rule.label,
                    "metric": rule.metric,
                    "column": rule.column,
                    "rule": f"{operator} {operand}",
                    "measured": None if value is None else f"{value:g}",
                    "status": slos.quality_status(value, operator, operand),
                }
            )
        return found

    def statuses(self, product: Product) -> dict[str, str]:
        """Each SLO's, the contract's and each quality rule's status, by name."""
        measured = self.measurements(product)
        found = {s["kind"]: s["status"] for s in measured.slos}
        found["contract"] = measured.contract.get("status", "unchecked")
        found.update({f"quality:{q['name']}": q["status"] for q in measured.quality})
        return found

    def _log_transitions(self, product: Product) -> None:
        """Log each breach once as it starts and once as it ends."""
        state = self._state(product)
        now = self.statuses(product)
        address = product.versioned_address
        with self._lock:
            before, state.statuses = state.statuses, now
        for name, status in now.items():
            was = before.get(name)
            bad = status in (slos.BROKEN, "drift")
            was_bad = was in (slos.BROKEN, "drift")
            if bad and not was_bad:
                detail = self._detail(product, name)
                log.warning("breach started: %s %s is %s%s", address, name, status, detail)
            elif was_bad and not bad and status not in (slos.UNKNOWN, "unchecked"):
                log.info("breach ended: %s %s is %s again", address, name, status)

    def _detail(self, product: Product, name: str) -> str:
        measured = self.measurements(product)
        if name == "contract":
            return ": " + "; ".join(measured.contract.get("problems", []))
        for item in (*measured.slos, *measured.quality):
            if name in (item.get("kind"), f"quality:{item.get('name')}"):
                return f" ({item.get('measured')})" if item.get("measured") else ""
        return ""


def _iso(seconds: float) -> str:
    return dt.datetime.fromtimestamp(seconds, dt.UTC).isoformat(timespec="seconds")

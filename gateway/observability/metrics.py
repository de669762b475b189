"""Prometheus metrics of one gateway, in a registry of its own (several gateways, e.g. in tests,
can live in one process).

Label values are bounded: outcomes, status code names, role sets, product addresses and store
names come from the mesh, never from SQL; principal names only with
``metrics_principal_labels: true``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

DURATION_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300,
)  # fmt: skip
"""Seconds: from a cached point query (well under a millisecond to plan) to a long scan."""

PENDING_LIMIT = 50_000
"""Updates left for the next scrape beyond which a query applies them itself."""

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def role_label(roles: Iterable[str]) -> str:
    """A principal's roles as one label value: sorted, joined with ``+`` (``none`` if none).

    >>> role_label(("analyst", "admin"))
    'admin+analyst'
    """
    return "+".join(sorted(roles)) or "none"


class _Callback(Collector):
    """A gauge family computed when scraped (store pools, SLO status): no cost between scrapes."""

    def __init__(self, name: str, doc: str, labels: list[str], read: Callable[[], Iterable]):
        self._family = (name, doc, labels)
        self._read = read

    def collect(self):
        name, doc, labels = self._family
        family = GaugeMetricFamily(name, doc, labels=labels)
        for values, value in self._read():
            family.add_metric(list(values), value)
        yield family


class Metrics:
    """Every meshgate metric, registered in ``self.registry``."""

    def __init__(self, *, principal_labels: bool = False):
        self.registry = CollectorRegistry(auto_describe=True)
        self._children: dict[tuple, Deferred] = {}
        self.pending: deque[tuple[Callable[[float], None], float]] = deque()
        """Updates the query path made, applied at the next scrape (``apply_pending``)."""
        self.principal_labels = principal_labels
        who = ["role", "principal"] if principal_labels else ["role"]
        r = self.registry
        self.queries = Counter(
            "meshgate_queries",
            "Queries by outcome (ok, denied, error), Flight status code and principal role.",
            ["outcome", "code", *who],
            registry=r,
        )
        self.product_queries = Counter(
            "meshgate_product_queries",
            "Queries per product read (a query reading two products counts for each).",
            ["product", "outcome", "code", *who],
            registry=r,
        )
        self.duration = Histogram(
            "meshgate_query_duration_seconds",
            "Query time by phase: plan (parse to plan, cached or not), first_batch (from the "
            "query's start to its first batch), total (to the end of its stream).",
            ["phase"],
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.product_rows = Counter(
            "meshgate_product_rows_served", "Rows served in answers reading each product.",
            ["product"], registry=r,
        )  # fmt: skip
        self.product_bytes = Counter(
            "meshgate_product_bytes_served", "Arrow bytes served in answers reading each product.",
            ["product"], registry=r,
        )  # fmt: skip
        self.fragments = Counter(
            "meshgate_store_fragments", "Queries (fragments) sent to each store.",
            ["store", "kind"], registry=r,
        )  # fmt: skip
        self.store_rows = Counter(
            "meshgate_store_rows_read", "Rows read from each store.", ["store", "kind"], registry=r
        )
        self.store_bytes = Counter(
            "meshgate_store_bytes_read", "Arrow bytes read from each store.",
            ["store", "kind"], registry=r,
        )  # fmt: skip
        self.store_errors = Counter(
            "meshgate_store_errors", "Fragments that failed at their store, by status code.",
            ["store", "kind", "code"], registry=r,
        )  # fmt: skip
        self.store_up = Gauge(
            "meshgate_store_up",
            "1 if the store answered its last fragment, 0 if it was unreachable or timed out.",
            ["store", "kind"],
            registry=r,
        )
        self.connections = Gauge(
            "meshgate_store_connections_in_use",
            "Fragments reading from each store now (each holds one of its pooled connections).",
            ["store", "kind"],
            registry=r,
        )
        self.dynamic_filters = Counter(
            "meshgate_dynamic_filters", "Dynamic filters in the plans that ran.", registry=r
        )
        self.narrowed = Counter(
            "meshgate_narrowed_fragments",
            "Fragments sent narrowed by a dynamic filter: `how` is sql (IN list or key range in "
            "the SQL) or key_table (an Arrow table of keys the store semi-joins).",
            ["store", "how"],
            registry=r,
        )
        self.plan_cache = Counter(
            "meshgate_plan_cache_lookups", "Plan cache lookups by result (hit, miss).",
            ["result"], registry=r,
        )  # fmt: skip
        self.active_streams = Gauge(
            "meshgate_active_streams", "Answers streaming to clients now.", registry=r
        )
        self.policy_reloads = Counter(
            "meshgate_policy_reloads", "Times changed policy files were put in force.", registry=r
        )
        self.denials = Counter(
            "meshgate_policy_denials", "Queries a policy refused, by product and role.",
            ["product", "role"], registry=r,
        )  # fmt: skip
        self.trace_exports = Counter(
            "meshgate_trace_exports", "Queries whose spans were exported, by result (sent, "
            "failed, dropped: the export queue was full).", ["result"], registry=r,
        )  # fmt: skip
        self.lineage_events = Counter(
            "meshgate_lineage_events", "OpenLineage events sent, by event type and result.",
            ["type", "result"], registry=r,
        )  # fmt: skip

    def child(self, metric, *labels: str) -> Deferred:
        """``metric.labels(*labels)`` (or ``metric`` without labels) as the query path updates
        it: looked up in a dict (``labels()`` locks and checks its arguments each time), and
        updated at the next scrape (:class:`Deferred`)."""
        key = (id(metric), labels)
        found = self._children.get(key)
        if found is None:
            target = metric.labels(*labels) if labels else metric
            found = self._children[key] = Deferred(target, self.pending)
        return found

    def apply_pending(self) -> None:
        """Apply the updates queries left in ``pending``, in their order (a scrape does first;
        a query does when too many wait, so a gateway nobody scrapes stays small)."""
        pending = self.pending
        while True:
            try:
                update, amount = pending.popleft()
            except IndexError:
                return
            update(amount)

    def add_gauges(
        self, name: str, doc: str, labels: list[str], read: Callable[[], Iterable]
    ) -> None:
        """A gauge family whose samples ``read()`` yields as ``(label values, value)`` at each
        scrape (pool sizes, SLO status from other parts of the gateway)."""
        self.registry.register(_Callback(name, doc, labels, read))

    def add_pool_sizes(self, stores: Mapping[str, tuple[str, int | None]]) -> None:
        """``meshgate_store_pool_size`` from each store's (kind, connection slots)."""
        self.add_gauges(
            "meshgate_store_pool_size",
            "Connections each pooled store may hold at once (its pool_size).",
            ["store", "kind"],
            lambda: (((s, k), n) for s, (k, n) in stores.items() if n is not None),
        )

    def exposition(self) -> bytes:
        """The Prometheus text format of every metric, as ``GET /metrics`` serves it."""
        self.apply_pending()
        return generate_latest(self.registry)


class Deferred:
    """A metric (child) whose updates wait in a queue until the next scrape applies them.

    A prometheus_client update checks the metric, takes a lock and runs a few Python calls:
    about 2 µs, 20 times per point query; appending it to a deque (thread-safe) is a tenth of
    that, and who scrapes sees every update made before the scrape, in order (so gauges such as
    active streams read as they would live).
    """

    __slots__ = ("_target", "_pending")

    def __init__(self, target, pending: deque):
        self._target = target
        self._pending = pending

    def inc(self, amount: float = 1) -> None:
        self._pending.append((self._target.inc, amount))

    def dec(self, amount: float = 1) -> None:
        self._pending.append((self._target.dec, amount))

    def observe(self, value: float) -> None:
        self._pending.append((self._target.observe, value))

    def set(self, value: float) -> None:
        self._pending.append((self._target.set, value))

"""The mesh's execution engine (a Trino cluster), as the gateway holds it between queries.

:class:`Engine` owns the engine's connector, the names under which the cluster reaches each
product (from every store's ``trino:`` entry in mesh.yaml, through the store's connector) and,
for ``auto`` routing, the products' row counts, taken in the background so that no planner rule
does I/O. :meth:`Engine.view` is the data the planner reads.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping

from sqlglot import exp

import connectors
from gateway.errors import GatewayError, MeshConfigError
from gateway.mesh import Mesh
from gateway.planner.route import EngineView

log = logging.getLogger(__name__)

DOWN_SECONDS = 15.0
"""After a failure, auto routing keeps queries local this long before trying the engine again."""


def engine_names(mesh: Mesh, stores: Mapping[str, connectors.Connector]) -> dict[str, exp.Table]:
    """Product address -> its relation in the engine's names, for every product it reaches."""
    names = {}
    for address, product in mesh.products.items():
        reach = mesh.config.stores[product.store].trino
        if reach is None:
            continue
        name = stores[product.store].trino_name(
            product.descriptor.table,
            product.descriptor.sql,
            catalog=reach.catalog,
            schema=reach.schema_name,
        )
        if name is not None:
            names[address] = name
    return names


class RowCounts:
    """Each product's row count, taken at start and every ``refresh_seconds`` in a thread.

    A count that fails (a store down) keeps its last value; ``on_change`` is called after a pass
    that changed any count, so plans routed on the old counts can be dropped.
    """

    def __init__(
        self,
        mesh: Mesh,
        stores: Mapping[str, connectors.Connector],
        *,
        refresh_seconds: float,
        on_change: Callable[[], None],
    ):
        self._mesh = mesh
        self._stores = stores
        self._refresh = refresh_seconds
        self._on_change = on_change
        self.rows: dict[str, int] = {}
        self.ready = threading.Event()
        """Set once every product has been counted (or failed to be) once."""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="meshgate-row-counts", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            counted = self._count_all()
            changed = counted != {a: self.rows.get(a) for a in counted}
            self.rows = {**self.rows, **counted}  # one assignment: readers see old or new
            self.ready.set()
            if changed:
                self._on_change()
            self._stop.wait(self._refresh)

    def _count_all(self) -> dict[str, int]:
        counted = {}
        by_product: dict[str, list[str]] = {}
        for address, product in self._mesh.products.items():
            by_product.setdefault(product.versioned_address, []).append(address)
        for versioned, addresses in by_product.items():
            if self._stop.is_set():
                break
            product = self._mesh.products[versioned]
            try:
                rows = self._count(product)
            except (GatewayError, OSError) as exc:
                log.warning("could not count the rows of %s: %s", versioned, exc)
                continue
            counted.update(dict.fromkeys(addresses, rows))
        return counted

    def _count(self, product) -> int:
        connector = self._stores[product.store]
        relation = connector.relation(
            product.descriptor.table,
            product.descriptor.sql,
            columns={c.name: c.type for c in product.columns},
        )
        query = exp.select(exp.Count(this=exp.Star()).as_("n")).from_(relation)
        reader = connector.execute(query.sql(dialect=connector.capabilities.dialect))
        try:
            table = reader.read_all()
        finally:
            reader.close()
        return int(table.column(0)[0].as_py() or 0)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


class Engine:
    """The mesh's Trino engine: its connector, what it reaches, and whether it is up."""

    def __init__(self, mesh: Mesh, stores: Mapping[str, connectors.Connector], *, on_change):
        ((name, config),) = mesh.config.engines.items()
        routing = mesh.config.gateway.routing
        self.name = name
        self.mode = routing.mode
        self.min_rows = routing.min_rows
        try:
            self.connector = connectors.open_connector(
                name, {"kind": config.kind, **config.settings}, base_dir=mesh.root
            )
        except MeshConfigError as exc:  # the connector names its fields as a store's
            raise MeshConfigError(
                [p.replace(f"`stores.{name}.", f"`engines.{name}.") for p in exc.problems]
            ) from None
        self.connector.role = "engine"
        self.names = engine_names(mesh, stores)
        self._on_change = on_change
        self._down_until = 0.0
        self._down = False
        self.counts: RowCounts | None = None
        if self.mode == "auto":
            self.counts = RowCounts(
                mesh, stores, refresh_seconds=routing.refresh_seconds, on_change=on_change
            )

    def view(self) -> EngineView | None:
        """What the planner reads now; None when routing is local."""
        if self.mode == "local":
            return None
        available = time.monotonic() >= self._down_until
        if available and self._down:  # back: plans made while it was down are dropped
            self._down = False
            self._on_change()
        return EngineView(
            name=self.name,
            mode=self.mode,
            min_rows=self.min_rows,
            names=self.names,
            rows=self.counts.rows if self.counts is not None else {},
            available=available,
        )

    def failed(self) -> None:
        """The engine did not answer: auto keeps queries local for DOWN_SECONDS."""
        first = not self._down
        self._down = True
        self._down_until = time.monotonic() + DOWN_SECONDS
        if first:
            log.warning("engine %r is down: auto routing runs queries locally", self.name)
            self._on_change()

    def close(self) -> None:
        if self.counts is not None:
            self.counts.close()
        self.connector.close()

"""choose_route: whether the cross-store part of a governed query runs locally or on Trino.

A mesh may name a Trino cluster whose catalogs reach its stores (``engines:`` in mesh.yaml). The
route is chosen after governance, so what goes to Trino is the governed query: masks and row
filters are part of its SQL and Trino never reads more than the principal may. Products Trino
reaches are then *placed* at the engine (``Route.placement``): the pushdown and split rules see
one more store that holds all of them, so the largest part Trino can run becomes one fragment in
Trino's SQL, and what it cannot reach (or run) stays with the local engine as before.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from sqlglot import exp

from gateway.planner.sources import source_address, sources_of

if TYPE_CHECKING:
    from gateway.planner.state import PlanState

LOCAL = "local"


@dataclass(frozen=True)
class EngineView:
    """What the planner knows of the mesh's Trino engine: no connections, only data."""

    name: str
    mode: str
    """``trino`` or ``auto`` (a ``local`` mesh has no view)."""
    min_rows: int
    """auto: the estimated rows read from which a query goes to the engine."""
    names: Mapping[str, exp.Table]
    """Product address -> its relation in the engine's names, for the products it reaches."""
    rows: Mapping[str, int] = field(default_factory=dict)
    """Product address -> rows when last counted (auto); a product not counted yet counts 0."""
    available: bool = True
    """False while the engine is known to be down: auto routes everything locally."""


@dataclass(frozen=True)
class Route:
    """Where the cross-store part of one query runs, and why (EXPLAIN and the audit show it)."""

    engine: str = LOCAL
    reason: str = "no engine is configured"
    placement: Mapping[str, str] = field(default_factory=dict)
    """Product address -> the engine it is read through instead of its own store."""


def choose_route(
    addresses: set[str], *, homes: Mapping[str, str], engine: EngineView | None
) -> Route:
    """The route for a query reading ``addresses`` (``homes``: address -> its store).

    >>> view = EngineView("trino", "trino", 0, {"a.x": exp.to_table("c.s.x"),
    ...                                          "b.y": exp.to_table("c.s.y")})
    >>> choose_route({"a.x", "b.y"}, homes={"a.x": "pg", "b.y": "my"}, engine=view).engine
    'trino'
    >>> choose_route({"a.x"}, homes={"a.x": "pg"}, engine=view).reason
    'one store answers it'
    """
    if engine is None:
        return Route()
    stores = {homes[a] for a in addresses}
    if len(stores) < 2:
        return Route(reason="one store answers it")
    reachable = {a for a in addresses if a in engine.names}
    reached = {homes[a] for a in reachable}
    if len(reached) < 2:
        return Route(
            reason=f"{engine.name!r} reaches fewer than two of its stores "
            f"({', '.join(sorted(stores - reached))} not reachable there)"
        )
    if engine.mode == "auto":
        if not engine.available:
            return Route(reason=f"auto: engine {engine.name!r} is down")
        rows = sum(engine.rows.get(a, 0) for a in addresses)
        estimate = f"auto: about {rows:,} rows read"
        if rows < engine.min_rows:
            return Route(reason=f"{estimate}, below min_rows {engine.min_rows:,}")
        why = f"{estimate}, at least min_rows {engine.min_rows:,}"
    else:
        why = "routing mode trino"
    kept = sorted(stores - reached)
    if kept:
        why += f"; {', '.join(kept)} not reachable there, read locally"
    return Route(
        engine=engine.name, reason=why, placement=dict.fromkeys(sorted(reachable), engine.name)
    )


def route_query(state: PlanState) -> PlanState:
    """The step: the route of the governed query, in the context the later steps read
    (``context.route``: which store or engine reads each source)."""
    context = state.context
    addresses = {source_address(s) for s in sources_of(state.tree)}
    homes = {a: context.mesh.products[a].store for a in addresses}
    chosen = choose_route(addresses, homes=homes, engine=context.engine)
    return replace(state, context=replace(context, route=chosen))

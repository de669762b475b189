"""What the planner's rules read: mesh, principal, policies and the stores' capabilities."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

from sqlglot import exp

from connectors.base import Connector
from gateway.mesh import Mesh, Product
from gateway.planner.route import EngineView, Route
from gateway.principals import Principal


class Decision(Protocol):
    readable: bool
    masks: Mapping[str, object]
    row_filter: exp.Expression | None

    def column(self, name: str, type: str, column: exp.Expression) -> exp.Expression:
        """``column`` as the principal may see it (masked with the decision's own key)."""


class Policy(Protocol):
    def decide(self, principal: Principal, product: Product) -> Decision: ...

    def readable(self, principal: Principal, product: Product) -> bool: ...


@dataclass(frozen=True)
class PlanContext:
    mesh: Mesh
    principal: Principal
    policy: Policy
    connectors: Mapping[str, Connector]
    """Every store's connector, and the engine's under its name."""
    dialect: str = "duckdb"
    engine: EngineView | None = None
    """The mesh's Trino engine, when ``engines:`` names one and routing may use it."""
    route: Route = field(default_factory=Route)
    """Where this query's cross-store part runs; set by the ``route_query`` step (planner.route)."""

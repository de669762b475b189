"""transpile_fragment: a single-store piece of the query, in that store's own SQL."""

from __future__ import annotations

from sqlglot import exp

from gateway.planner.context import PlanContext
from gateway.planner.sources import source_address


def transpile_fragment(expression: exp.Expression, *, context: PlanContext, store: str) -> str:
    """SQL text for ``store``: placeholders become physical relations, then sqlglot transpiles."""
    connector = context.connectors[store]

    def physical(node: exp.Expression) -> exp.Expression:
        address = source_address(node)
        if address is not None:
            product = context.mesh.products[address]
            return connector.relation(product.descriptor.table, product.descriptor.sql)
        return node

    return expression.transform(physical, copy=True).sql(dialect=connector.capabilities.dialect)

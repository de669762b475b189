"""transpile_fragment: a single-store piece of the query, in that store's own SQL."""

from __future__ import annotations

from sqlglot import exp

from gateway.planner.context import PlanContext


def sources_of(expression: exp.Expression) -> list[exp.Table]:
    """The source placeholders (physical relations to be) under ``expression``."""
    return [t for t in expression.find_all(exp.Table) if t._meta and "source" in t.meta]


def store_of(source: exp.Table, context: PlanContext) -> str:
    return context.mesh.products[source.meta["source"]].store


def transpile_fragment(expression: exp.Expression, *, context: PlanContext, store: str) -> str:
    """SQL text for ``store``: placeholders become physical relations, then sqlglot transpiles."""
    connector = context.connectors[store]

    def physical(node: exp.Expression) -> exp.Expression:
        if isinstance(node, exp.Table) and node._meta and "source" in node.meta:
            product = context.mesh.products[node.meta["source"]]
            return connector.relation(product.descriptor.table, product.descriptor.sql)
        return node

    return expression.transform(physical, copy=True).sql(dialect=connector.capabilities.dialect)

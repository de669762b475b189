"""transpile_fragment: a single-store piece of the query, in that store's own SQL."""

from __future__ import annotations

from sqlglot import exp

from gateway.planner.context import PlanContext
from gateway.planner.sources import PREFIX, source_address


def transpile_fragment(expression: exp.Expression, *, context: PlanContext, store: str) -> str:
    """SQL text for ``store``: placeholders become physical relations, then sqlglot transpiles."""
    connector = context.connectors[store]

    def physical(node: exp.Expression) -> exp.Expression:
        address = source_address(node)
        if address is None:
            return node
        product = context.mesh.products[address]
        relation = connector.relation(
            product.descriptor.table,
            product.descriptor.sql,
            columns={c.name: c.type for c in product.columns},
        )
        alias = node.args.get("alias")
        if alias is not None:  # qualified columns name the placeholder's alias
            relation.set("alias", alias.copy())
        return relation

    return _neutral_aliases(expression.transform(physical, copy=True)).sql(
        dialect=connector.capabilities.dialect
    )


def _neutral_aliases(expression: exp.Expression) -> exp.Expression:
    """Rename the placeholders' aliases (``"__source:sales.orders"``) to ``source_1`` and so on."""
    renamed: dict[str, str] = {}
    for alias in expression.find_all(exp.TableAlias):
        if alias.name.startswith(PREFIX):
            new = renamed.setdefault(alias.name, f"source_{len(renamed) + 1}")
            alias.set("this", exp.to_identifier(new, quoted=True))
    if renamed:
        for column in expression.find_all(exp.Column):
            if column.table in renamed:
                column.set("table", exp.to_identifier(renamed[column.table], quoted=True))
    return expression

"""Source placeholders: where a product's physical relation will stand once a store is chosen.

Governance puts ``"__source:<address>"`` (``names.SOURCE``) where the product's rows come from;
the schema step replaces it with an empty table of the contract schema, and transpile with the
store's relation.
The address lives in the name itself, so every sqlglot rewrite carries it along.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlglot import exp

from gateway.planner.names import ROW_FILTERED, SOURCE

if TYPE_CHECKING:
    from gateway.planner.context import PlanContext


def source_placeholder(address: str) -> exp.Table:
    return exp.Table(this=exp.to_identifier(f"{SOURCE}{address}", quoted=True))


def source_address(node: exp.Expression) -> str | None:
    """The product address a placeholder stands for, or None for any other node."""
    if isinstance(node, exp.Table) and isinstance(node.this, exp.Identifier):
        name = node.name
        if name.startswith(SOURCE):
            return name[len(SOURCE) :]
    return None


def sources_of(expression: exp.Expression) -> list[exp.Table]:
    """The source placeholders under ``expression``."""
    return [t for t in expression.find_all(exp.Table) if source_address(t) is not None]


def store_of(source: exp.Table, context: PlanContext) -> str:
    """Where ``source`` is read: its product's store, or the engine the route placed it at."""
    address = source_address(source)
    return context.route.placement.get(address) or context.mesh.products[address].store


def contract_schema(expression: exp.Expression, context: PlanContext) -> dict[str, dict[str, str]]:
    """Each placeholder's columns and contract types, as sqlglot's optimizer takes a schema."""
    return {
        source.name: {c.name: c.type for c in context.mesh.products[source_address(source)].columns}
        for source in sources_of(expression)
    }


def is_row_filtered(node: exp.Expression) -> bool:
    """A governed relation whose row filter (its WHERE) must run before the query's predicates."""
    return row_filtered_address(node) is not None


def row_filtered_address(node: exp.Expression) -> str | None:
    """The product a governed relation with a row filter reads, or None for any other node:
    ``(SELECT ... FROM (SELECT ... FROM "__source:<address>") AS "__filtered_<name>" WHERE
    ...)``, as govern writes it."""
    if not isinstance(node, exp.Subquery) or not isinstance(node.this, exp.Select):
        return None
    if node.this.args.get("where") is None:
        return None
    source = node.this.args.get("from_")
    inner = source.this if source is not None else None
    if not isinstance(inner, exp.Subquery) or not inner.alias.startswith(ROW_FILTERED):
        return None
    contract = inner.this.args.get("from_") if isinstance(inner.this, exp.Select) else None
    return source_address(contract.this) if contract is not None else None

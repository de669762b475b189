"""apply_governance: every product reference becomes its governed relation, before any pushdown.

A reference ``sales.customer AS c`` becomes::

    (SELECT <column or its mask> AS <column>, ...
       FROM (SELECT <contract columns> FROM <source>) AS customer
      WHERE <row filter>) AS c

(the inner alias is ``names.ROW_FILTERED`` + the product's name when there is a row filter: the
mark by which predicate pushdown keeps the query's own predicates outside it)

so whatever the query does with ``c`` — aliases, CTEs, subqueries, UNION, ``SELECT *``, functions,
predicates, joins, grouping — it only ever sees masked values and permitted rows, and only the
columns the descriptor publishes. ``<source>`` is a placeholder the split rule later replaces with
the store's physical relation.
"""

from __future__ import annotations

from dataclasses import replace

from sqlglot import exp

from gateway.errors import PermissionDenied
from gateway.planner.context import PlanContext
from gateway.planner.names import ROW_FILTERED
from gateway.planner.resolve import product_address, resolve_products
from gateway.planner.sources import source_placeholder
from gateway.planner.state import PlanState

MAX_FILTER_DEPTH = 4


def governed_relation(address: str, *, context: PlanContext, depth: int = 0) -> exp.Select:
    """The SELECT that a principal reads instead of the product at ``address``."""
    product = context.mesh.products[address]
    decision = context.policy.decide(context.principal, product)
    if not decision.readable:
        raise PermissionDenied(
            f"{context.principal.name!r} may not read {address}; ask its owner "
            f"({product.descriptor.owner}) for access",
            product=address,
        )
    contract = exp.select(*(exp.column(c.name, quoted=True) for c in product.columns)).from_(
        source_placeholder(address)
    )
    # Inside a row filter (depth > 0) columns stay clear: the filter compares the values its authors
    # wrote it against, and only its verdict reaches the principal. Masked, `c_name <> 'X'` would
    # let X's rows through, and a hashed key would never match.
    masked = depth == 0 and bool(decision.masks)
    if not masked and decision.row_filter is None:
        return contract
    projections = []
    for column in product.columns:
        value = exp.column(column.name, quoted=True)
        if masked:
            value = decision.column(column.name, column.type, value)
        projections.append(exp.alias_(value, column.name, quoted=True))
    inner = product.name if decision.row_filter is None else f"{ROW_FILTERED}{product.name}"
    governed = exp.select(*projections).from_(contract.subquery(inner))
    if decision.row_filter is not None:
        if depth >= MAX_FILTER_DEPTH:
            raise PermissionDenied(
                f"the row filters on {address} nest more than {MAX_FILTER_DEPTH} levels deep; "
                "ask the governance group to simplify them"
            )
        row_filter = resolve_products(exp.paren(decision.row_filter.copy()), context=context)
        governed = governed.where(_govern(row_filter, context=context, depth=depth + 1))
    return governed


def _govern(expression: exp.Expression, *, context: PlanContext, depth: int) -> exp.Expression:
    def governed(node: exp.Expression) -> exp.Expression:
        address = product_address(node)
        if address is None:
            return node
        relation = governed_relation(address, context=context, depth=depth)
        return exp.Subquery(this=relation, alias=node.args["alias"].copy())

    return expression.transform(governed, copy=True)


def apply_governance(expression: exp.Expression, *, context: PlanContext) -> exp.Expression:
    """Replace each product reference resolve left with its governed relation."""
    return _govern(expression, context=context, depth=0)


def govern_references(state: PlanState) -> PlanState:
    """The step: the products the statement names, and the query over their governed relations."""
    named = {product_address(t) for t in state.tree.find_all(exp.Table)} - {None}
    return replace(
        state,
        products=tuple(sorted(named)),
        expression=apply_governance(state.tree, context=state.context),
    )

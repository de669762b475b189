"""push_down_predicates: filters move into the derived tables they touch (sqlglot's rule).

A predicate on a governed relation is rewritten through the relation's projections, so a filter
on a masked column compares the masked value at the store, never the clear one.

A governed relation with a row filter is a barrier: the query's own predicates stay outside it
and are never evaluated on a row the filter removes. Pushed below the filter, ``CAST(c_comment AS
INT) = 1`` failed on a hidden row and its error quoted that row's comment, and ``CASE WHEN
c_acctbal > 5000 THEN error('x') END`` told whether a hidden row matched. Only the predicates that
cannot fail on any value (``c_mktsegment = 'BUILDING'``, ``o_orderdate >= DATE '1995-01-01'``;
``safe_predicates.py`` says which and why) cross it, to run beside the row filter at the store.
"""

from __future__ import annotations

from dataclasses import replace

from sqlglot import exp
from sqlglot.optimizer.pushdown_predicates import pushdown_predicates

from gateway.planner.context import PlanContext
from gateway.planner.names import BARRIER, conjuncts
from gateway.planner.safe_predicates import cannot_fail, crossing_kinds, is_safe
from gateway.planner.sources import row_filtered_address
from gateway.planner.state import PlanState


def push_down_predicates(state: PlanState) -> PlanState:
    if not state.qualified:
        return state
    pushed = _push_down(state.tree.copy(), context=state.context)
    _drop_true_conjuncts(pushed)
    return replace(state, expression=pushed)


def _push_down(expression: exp.Expression, *, context: PlanContext) -> exp.Expression:
    """sqlglot's rule over ``expression`` with each row-filtered relation standing behind a table
    it cannot push into; then the safe predicates sqlglot brought to it cross into it, and inside
    each relation the rule runs on its own."""
    barriers: dict[str, tuple[exp.Subquery, str]] = {}
    for node in list(expression.find_all(exp.Subquery)):
        address = row_filtered_address(node)
        if node is expression or address is None or node.root() is not expression:
            continue  # the last: inside a barrier already taken out
        name = f"{BARRIER}{len(barriers) + 1}"
        node.replace(exp.Table(this=exp.to_identifier(name), alias=node.args["alias"].copy()))
        barriers[name] = (node, address)
    expression = pushdown_predicates(expression, dialect=context.dialect)
    for table in list(expression.find_all(exp.Table)):
        barrier = barriers.get(table.name) if not table.db else None
        if barrier is not None:
            relation, address = barrier
            inner = relation.this.pop()
            crossing = (
                []
                if relation.args.get("pivots")
                else _take_crossing(table, inner, address, context=context)
            )
            if crossing:
                inner.where(exp.and_(*crossing, copy=False), copy=False)
            relation.set("this", _push_down(inner, context=context))
            table.replace(relation)
    return expression


def _take_crossing(
    table: exp.Table, inner: exp.Select, address: str, *, context: PlanContext
) -> list[exp.Expression]:
    """Take the safe predicates on the barrier ``table`` out of the condition right over it
    (the WHERE of the SELECT it is the FROM of, or its own join's ON), rewritten into ``inner``,
    the governed relation's SELECT: sqlglot has brought every predicate it could push there."""
    condition = _condition_over(table)
    if condition is None or not isinstance(inner, exp.Select):
        return []
    if not cannot_fail(inner.args["where"].this):
        return []  # a predicate run first could spare it the rows it fails on
    product = context.mesh.products[address]
    store = context.connectors[product.store].capabilities.dialect
    projections = {p.alias_or_name: p.unalias() for p in inner.selects}
    kinds = crossing_kinds(product, projections, dialect=store)
    if not kinds:
        return []
    alias = table.alias_or_name
    taken = []
    for predicate in conjuncts(condition, parens=False):
        if exp.column_table_names(predicate) != {alias}:
            continue
        if not is_safe(predicate, alias=alias, kinds=kinds):
            continue
        crossing = predicate.copy()
        for column in list(crossing.find_all(exp.Column)):
            column.replace(projections[column.name].copy())
        predicate.replace(exp.true())
        taken.append(crossing)
    return taken


def _condition_over(table: exp.Table) -> exp.Expression | None:
    """The condition whose conjuncts may move into ``table`` unchanged in meaning: the WHERE when
    it is the FROM and no RIGHT or FULL join null-extends it, the ON of an inner or LEFT join of
    it (never a WHERE over the null-extended side of an outer join)."""
    parent = table.parent
    if isinstance(parent, exp.From) and isinstance(parent.parent, exp.Select):
        select = parent.parent
        joins = select.args.get("joins") or []
        if any(j.side in ("RIGHT", "FULL") or j.args.get("nearest") for j in joins):
            return None
        where = select.args.get("where")
        return where.this if where is not None else None
    if isinstance(parent, exp.Join) and parent.side in ("", "LEFT"):
        if parent.kind not in ("", "INNER", "OUTER") or parent.args.get("nearest"):
            return None
        return parent.args.get("on")
    return None


def _drop_true_conjuncts(expression: exp.Expression) -> None:
    """sqlglot leaves ``TRUE`` where it took a predicate away; stores need not read it."""
    for node in list(expression.find_all(exp.Where, exp.Join)):
        key = "this" if isinstance(node, exp.Where) else "on"
        condition = node.args.get(key)
        if condition is None:
            continue
        parts = conjuncts(condition, parens=False)
        kept = [c for c in parts if not (isinstance(c, exp.Boolean) and c.this)]
        if len(kept) == len(parts):
            continue
        if kept:
            node.set(key, exp.and_(*kept, copy=False))
        elif isinstance(node, exp.Where):
            node.pop()
        else:
            node.set(key, exp.true())

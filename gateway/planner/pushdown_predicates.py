"""push_down_predicates: filters move into the derived tables they touch (sqlglot's rule).

A predicate on a governed relation is rewritten through the relation's projections, so a filter
on a masked column compares the masked value at the store, never the clear one.

A governed relation with a row filter is a barrier: the query's own predicates stay outside it
and are never evaluated on a row the filter removes. Pushed below the filter, ``CAST(c_comment AS
INT) = 1`` failed on a hidden row and its error quoted that row's comment, and ``CASE WHEN
c_acctbal > 5000 THEN error('x') END`` told whether a hidden row matched.
"""

from __future__ import annotations

from dataclasses import replace

from sqlglot import exp
from sqlglot.optimizer.pushdown_predicates import pushdown_predicates

from gateway.planner.govern import is_row_filtered
from gateway.planner.names import BARRIER, conjuncts
from gateway.planner.state import PlanState


def push_down_predicates(state: PlanState) -> PlanState:
    if not state.qualified:
        return state
    pushed = _push_down(state.tree.copy(), dialect=state.context.dialect)
    _drop_true_conjuncts(pushed)
    return replace(state, expression=pushed)


def _push_down(expression: exp.Expression, *, dialect: str) -> exp.Expression:
    """sqlglot's rule over ``expression`` with each row-filtered relation standing behind a table
    it cannot push into; inside each relation, the rule runs on its own."""
    barriers: dict[str, exp.Subquery] = {}
    for node in list(expression.find_all(exp.Subquery)):
        if node is expression or not is_row_filtered(node) or node.root() is not expression:
            continue  # the last: inside a barrier already taken out
        name = f"{BARRIER}{len(barriers) + 1}"
        node.replace(exp.Table(this=exp.to_identifier(name), alias=node.args["alias"].copy()))
        barriers[name] = node
    expression = pushdown_predicates(expression, dialect=dialect)
    for table in list(expression.find_all(exp.Table)):
        relation = barriers.get(table.name) if not table.db else None
        if relation is not None:
            relation.set("this", _push_down(relation.this.pop(), dialect=dialect))
            table.replace(relation)
    return expression


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

"""push_down_projections: each derived table keeps only the columns read above it (sqlglot's rule).

Fragments then fetch only the columns the query needs from each store.
"""

from __future__ import annotations

from dataclasses import replace

from sqlglot import exp
from sqlglot.optimizer.pushdown_projections import pushdown_projections

from gateway.planner.state import PlanState

_SHAPING = ("group", "having", "order", "distinct", "qualify", "windows")
"""Clauses whose meaning depends on the projections, so an EXISTS subquery with one keeps them."""


def push_down_projections(state: PlanState) -> PlanState:
    if not state.qualified:
        return state
    return replace(state, expression=pushdown_projections(_select_one_in_exists(state.tree.copy())))


def _select_one_in_exists(expression: exp.Expression) -> exp.Expression:
    """``EXISTS (SELECT * ...)`` becomes ``EXISTS (SELECT 1 ...)``: only whether rows exist counts.

    sqlglot keeps every output of a subquery expression, so the expanded star of TPC-H's
    ``EXISTS (SELECT * FROM lineitem ...)`` fetched all 16 columns from the store. A subquery
    with an aggregate or a clause that reads its projections keeps them: ``SELECT count(*)``
    always returns a row where ``SELECT 1`` may return none.
    """
    for exists in expression.find_all(exp.Exists):
        select = exists.this
        if not isinstance(select, exp.Select) or any(select.args.get(k) for k in _SHAPING):
            continue
        if any(p.find(exp.AggFunc, exp.Window) for p in select.expressions):
            continue
        select.set("expressions", [exp.alias_(exp.Literal.number(1), "_col_0", quoted=True)])
    return expression

"""push_down_projections: each derived table keeps only the columns read above it (sqlglot's rule).

Fragments then fetch only the columns the query needs from each store.
"""

from __future__ import annotations

from sqlglot import exp
from sqlglot.optimizer.pushdown_projections import pushdown_projections

from gateway.planner.context import PlanContext
from gateway.planner.qualify import is_qualified

_SHAPING = ("group", "having", "order", "distinct", "qualify", "windows")
"""Clauses whose meaning depends on the projections, so an EXISTS subquery with one keeps them."""


def push_down_projections(expression: exp.Expression, *, context: PlanContext) -> exp.Expression:
    if not is_qualified(expression):
        return expression
    pushed = pushdown_projections(_select_one_in_exists(expression.copy()))
    pushed.meta.update(expression.meta)
    return pushed


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

"""push_down_projections: each derived table keeps only the columns read above it (sqlglot's rule).

Fragments then fetch only the columns the query needs from each store.
"""

from __future__ import annotations

from sqlglot import exp
from sqlglot.optimizer.pushdown_projections import pushdown_projections

from gateway.planner.context import PlanContext
from gateway.planner.qualify import is_qualified


def push_down_projections(expression: exp.Expression, *, context: PlanContext) -> exp.Expression:
    if not is_qualified(expression):
        return expression
    pushed = pushdown_projections(expression.copy())
    pushed.meta.update(expression.meta)
    return pushed

"""push_down_predicates: filters move into the derived tables they touch (sqlglot's rule).

A predicate on a governed relation is rewritten through the relation's projections, so a filter
on a masked column compares the masked value at the store, never the clear one.
"""

from __future__ import annotations

from sqlglot import exp
from sqlglot.optimizer.pushdown_predicates import pushdown_predicates

from gateway.planner.context import PlanContext
from gateway.planner.qualify import is_qualified


def push_down_predicates(expression: exp.Expression, *, context: PlanContext) -> exp.Expression:
    if not is_qualified(expression):
        return expression
    pushed = pushdown_predicates(expression.copy(), dialect=context.dialect)
    _drop_true_conjuncts(pushed)
    pushed.meta.update(expression.meta)
    return pushed


def _drop_true_conjuncts(expression: exp.Expression) -> None:
    """sqlglot leaves ``TRUE`` where it took a predicate away; stores need not read it."""
    for node in list(expression.find_all(exp.Where, exp.Join)):
        key = "this" if isinstance(node, exp.Where) else "on"
        condition = node.args.get(key)
        if condition is None:
            continue
        conjuncts = list(condition.flatten()) if isinstance(condition, exp.And) else [condition]
        kept = [c for c in conjuncts if not (isinstance(c, exp.Boolean) and c.this)]
        if len(kept) == len(conjuncts):
            continue
        if kept:
            node.set(key, exp.and_(*kept, copy=False))
        elif isinstance(node, exp.Where):
            node.pop()
        else:
            node.set(key, exp.true())

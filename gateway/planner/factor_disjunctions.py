"""factor_disjunctions: an OR of ANDs across relations also filters each relation on its own.

TPC-H Q19 filters ``lineitem, part`` with ``(p_brand = 'Brand#12' AND l_quantity <= 11 AND ...)
OR (p_brand = 'Brand#23' AND l_quantity >= 10 AND ...) OR ...``. No conjunct reads one relation
alone, so nothing reached a store and lineitem was streamed whole. Each branch implies the AND of
its conjuncts over one relation, so the whole OR implies the OR of those::

    WHERE (l.a AND p.b) OR (l.c AND p.d)
    WHERE ((l.a AND p.b) OR (l.c AND p.d)) AND (l.a OR l.c) AND (p.b OR p.d)

A conjunct every branch has is implied as it is (Q19's ``p_partkey = l_partkey``, which makes
the join an equi-join a dynamic filter can use). A row meets the new WHERE exactly when it meets
the old one, and push_down_predicates then moves the implied predicates into their relations.
A relation some branch says nothing about gets no implied predicate (that branch would let any
of its rows through).
"""

from __future__ import annotations

from dataclasses import replace

from sqlglot import exp

from gateway.planner.names import conjuncts, disjuncts
from gateway.planner.state import PlanState


def factor_disjunctions(state: PlanState) -> PlanState:
    if not state.qualified:
        return state
    factored = state.tree.copy()
    for select in list(factored.find_all(exp.Select)):
        _factor(select)
    return replace(state, expression=factored)


def _tables(node: exp.Expression) -> set[str]:
    return {column.table for column in node.find_all(exp.Column)}


_VOLATILE = (exp.Rand, exp.Randn, exp.Uuid, exp.Anonymous)
"""Functions whose value may differ per call (unknown ones included): a copy evaluated apart
from its original could keep a row the original drops."""


def _plain(node: exp.Expression) -> bool:
    """Reads columns of its own scope only, the same value each time: no subquery, aggregate,
    window or volatile function."""
    return node.find(exp.Subquery, exp.Select, exp.AggFunc, exp.Window, *_VOLATILE) is None


def _factor(select: exp.Select) -> None:
    where = select.args.get("where")
    if where is None:
        return
    parts = conjuncts(where.this)
    implied = []
    for condition in parts:
        branches = disjuncts(condition)
        tables = _tables(condition)
        if len(branches) < 2 or len(tables) < 2 or "" in tables or not _plain(condition):
            continue
        # a conjunct every branch has holds whenever the OR does (a join's equality, say)
        first, *others = (conjuncts(branch) for branch in branches)
        implied += [c.copy() for c in first if all(c in other for other in others)]
        for table in sorted(tables):
            parts = []
            for branch in branches:
                own = [c for c in conjuncts(branch) if _tables(c) == {table}]
                if not own:
                    break
                parts.append(exp.and_(*(c.copy() for c in own)))
            else:
                implied.append(exp.or_(*parts))
    if implied:
        where.set("this", exp.and_(where.this, *implied))

"""The names the planner gives relations it makes, registered in one place, and the tree helpers
every rule shares.

The planner marks what it generates by *name*, never by ``meta``: a name is part of the tree, so
every sqlglot rewrite (``copy``, ``transform``, ``qualify``, the pushdown rules) carries it along,
and a rule that builds a new node cannot silently drop it. Each prefix below is generated only by
the rule named beside it; resolve renames the client's CTEs to ``CTE`` names, so no name a client
writes can stand for one of them (a client's derived table aliased like ``ROW_FILTERED`` only
keeps its predicates outside it: less pushdown, never more rows).

The one note the planner keeps on nodes is a bound value's position (``parameters.TAG``): bind
writes it on the literals it makes and only the templates that write the SQL again read it; no
step in between needs to know of it, and sqlglot's copies keep it.

>>> fragment_name(3)
'__fragment_3'
>>> [c.sql() for c in conjuncts(exp.condition("a = 1 AND (b = 2 AND c = 3)"))]
['a = 1', 'b = 2', 'c = 3']
"""

from __future__ import annotations

from sqlglot import exp

SOURCE = "__source:"
"""``"__source:<address>"``: where a product's rows come from (govern; replaced by transpile)."""
ROW_FILTERED = "__filtered_"
"""The inner alias of a governed relation with a row filter (govern): predicate pushdown keeps
the query's own predicates outside it (a barrier)."""
BARRIER = "__barrier_"
"""A row-filtered relation set aside while sqlglot pushes predicates (push_down_predicates)."""
CTE = "__cte_"
"""Every client CTE, renamed by resolve: ``__cte_<n>_<its name>``."""
GROUP = "__group_"
"""Relations of one store joined into one derived table (group_same_store_joins)."""
FRAGMENT = "__fragment_"
"""A fragment's relation in the local engine's query (split_by_store, unshare_fragments)."""
EMPTY = "__empty_"
"""An empty table of a product's contract schema (infer_schema)."""
NEUTRAL_SOURCE = "source_"
"""The alias a source placeholder gets in a store's SQL (transpile)."""


def fragment_name(number: int) -> str:
    return f"{FRAGMENT}{number}"


def is_fragment(name: str) -> bool:
    return name.startswith(FRAGMENT)


def unwrap(node: exp.Expression) -> exp.Expression:
    """``node`` without the parentheses around it."""
    while isinstance(node, exp.Paren):
        node = node.this
    return node


def conjuncts(condition: exp.Expression | None, *, parens: bool = True) -> list[exp.Expression]:
    """The parts ANDed together in ``condition`` (none for None); with ``parens``, ANDs inside
    parentheses are opened too. The parts are the tree's own nodes, not copies."""
    if condition is None:
        return []
    if parens:
        condition = unwrap(condition)
    if not isinstance(condition, exp.And):
        return [condition]
    if not parens:
        return list(condition.flatten())
    return [part for node in condition.flatten() for part in conjuncts(node)]


def disjuncts(condition: exp.Expression) -> list[exp.Expression]:
    """The parts ORed together in ``condition``, through parentheses."""
    condition = unwrap(condition)
    if isinstance(condition, exp.Or):
        return [part for node in condition.flatten() for part in disjuncts(node)]
    return [condition]

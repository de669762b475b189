"""group_same_store_joins: relations of one store joined together become one derived table.

In ``FROM customer c, orders o, lineitem l WHERE c.k = o.k AND o.ok = l.ok`` with customer and
orders in PostgreSQL and lineitem in Parquet, customer and orders are joined by PostgreSQL rather
than fetched separately and joined in the gateway::

    FROM (SELECT c.k AS "c__k", ... FROM customer c, orders o WHERE c.k = o.k) AS "__group_1",
         lineitem l
    WHERE "__group_1"."o__ok" = l.ok

Only inner joins are regrouped (their ON conditions are WHERE conditions), and only conditions
that read nothing but the group's relations move into it, so the answer is unchanged.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import replace

from sqlglot import exp

from gateway.planner.context import PlanContext
from gateway.planner.names import GROUP, conjuncts
from gateway.planner.split import runs_entirely_at
from gateway.planner.state import PlanState


def _inner_only(select: exp.Select) -> bool:
    return all(
        not join.side and join.kind in ("", "INNER", "CROSS") and not join.args.get("using")
        for join in select.args.get("joins") or []
    )


def _relations(select: exp.Select) -> list[exp.Expression]:
    source = select.args.get("from_")
    return [source.this, *(join.this for join in select.args.get("joins") or [])] if source else []


def group_same_store_joins(state: PlanState) -> PlanState:
    if not state.qualified:
        return state
    grouped = state.tree.copy()
    counter = iter(range(1, 1_000_000))
    for select in list(grouped.find_all(exp.Select)):
        _group(select, state.context, counter)
    return replace(state, expression=grouped)


def _group(select: exp.Select, context: PlanContext, counter) -> None:
    relations = _relations(select)
    if len(relations) < 3 or not _inner_only(select):
        return
    stores = _joinable_by_store(relations, context)
    if stores is None:
        return
    conditions = _conditions(select)
    groups = [
        component
        for members in stores.values()
        for component in _joined_components(members, conditions)
        if len(component) >= 2
    ]
    if not groups or len(groups) == 1 and len(groups[0]) == len(relations):
        return
    if _names_shadowed(select, relations):
        return
    for join in select.args.get("joins") or []:
        join.set("on", None)
    select.set("where", None)
    for members in groups:
        conditions = _regroup(select, members, conditions, relations, f"{GROUP}{next(counter)}")
    if conditions:
        select.set("where", exp.Where(this=exp.and_(*conditions)))


def _joinable_by_store(
    relations: list[exp.Expression], context: PlanContext
) -> dict[str, list[exp.Subquery]] | None:
    """The relations each store can run and join well, by store; None when a relation is not
    an aliased derived table (nothing is regrouped then)."""
    stores: dict[str, list[exp.Subquery]] = defaultdict(list)
    for relation in relations:
        if not isinstance(relation, exp.Subquery) or not relation.alias:
            return None
        store = runs_entirely_at(relation.this, context=context)
        capabilities = context.connectors[store].capabilities if store is not None else None
        if capabilities is not None and capabilities.joins and capabilities.large_joins:
            stores[store].append(relation)
    return stores


def _conditions(select: exp.Select) -> list[exp.Expression]:
    """The conjuncts of the WHERE and of every join's ON (inner joins: one set of conditions)."""
    where = select.args.get("where")
    conditions = conjuncts(where.this if where else None, parens=False)
    for join in select.args.get("joins") or []:
        conditions += conjuncts(join.args.get("on"), parens=False)
    return conditions


def _names_shadowed(select: exp.Select, relations: list[exp.Expression]) -> bool:
    """Whether a nested scope names a relation like one of ours: the rewrite would be
    ambiguous."""
    own = {r.alias for r in relations}
    for inner in select.find_all(exp.Subquery, exp.Table):
        if any(inner is r for r in relations) or _inside(inner, relations):
            continue
        if inner.alias_or_name in own:
            return True
    return False


def _regroup(
    select: exp.Select,
    members: list[exp.Subquery],
    conditions: list[exp.Expression],
    relations: list[exp.Expression],
    name: str,
) -> list[exp.Expression]:
    """Join ``members`` in one derived table ``name`` in place of the first of them, with the
    conditions that read only them; returns the conditions left for ``select``."""
    aliases = {m.alias for m in members}
    inside = [c for c in conditions if _reads_only(c, aliases)]
    conditions = [c for c in conditions if not any(c is i for i in inside)]
    # derived tables cannot see their siblings: columns inside any relation are not ours
    outside = [c for c in select.find_all(exp.Column) if not _inside(c, relations)]
    outside += [c for condition in conditions for c in condition.find_all(exp.Column)]
    used = sorted({(c.table, c.name) for c in outside if c.table in aliases})
    projections = [
        exp.alias_(exp.column(n, table=t, quoted=True), f"{t}__{n}", quoted=True) for t, n in used
    ]
    body = exp.select(*(projections or [exp.Literal.number(1)])).from_(members[0].copy())
    for member in members[1:]:
        body = body.join(member.copy())
    if inside:
        body = body.where(exp.and_(*inside))
    for column in outside:
        if column.table in aliases:
            column.replace(exp.column(f"{column.table}__{column.name}", table=name, quoted=True))
    group = body.subquery(name)
    _replace_relations(select, members, group)
    relations.append(group)
    return conditions


def _joined_components(
    members: list[exp.Subquery], conditions: list[exp.Expression]
) -> list[list[exp.Subquery]]:
    """``members`` in groups that conditions among them alone join together.

    Two relations of one store joined only through a relation of another store have no
    condition of their own: grouped, the store would return their cross product (two 15,000-row
    orders relations joined through lineitem became a 225M-row fragment).
    """
    component = {m.alias: i for i, m in enumerate(members)}
    for condition in conditions:
        tables = {c.table for c in condition.find_all(exp.Column)}
        if len(tables) < 2 or not tables <= component.keys() or condition.find(exp.Subquery):
            continue
        merged = {component[t] for t in tables}
        target = min(merged)
        component = {a: target if c in merged else c for a, c in component.items()}
    groups: dict[int, list[exp.Subquery]] = defaultdict(list)
    for member in members:
        groups[component[member.alias]].append(member)
    return list(groups.values())


def _reads_only(condition: exp.Expression, aliases: set[str]) -> bool:
    """Whether ``condition`` reads columns of ``aliases`` and nothing else (no subqueries)."""
    tables = {column.table for column in condition.find_all(exp.Column)}
    return bool(tables) and tables <= aliases and condition.find(exp.Subquery) is None


def _inside(node: exp.Expression, roots: list[exp.Expression]) -> bool:
    parent = node.parent
    while parent is not None:
        if any(parent is root for root in roots):
            return True
        parent = parent.parent
    return False


def _replace_relations(
    select: exp.Select, members: list[exp.Subquery], group: exp.Subquery
) -> None:
    """The group takes the place of its first member; the other members leave the FROM list."""
    first, *rest = members
    first.replace(group)
    for join in list(select.args.get("joins") or []):
        if any(join.this is member for member in rest):
            join.pop()

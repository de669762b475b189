"""Dynamic filters: the join keys of a small fragment narrow its partner's query at its store.

When the local engine joins two fragments from different stores on ``a.x = b.y``, and ``a`` is the
side the query filtered, the executor reads ``a`` first; if it is small, ``b``'s query is sent
with ``y IN (<a's keys>)`` so its store returns only rows that can join (as Trino's dynamic
filtering does). :func:`find_dynamic_filters` finds the candidates at plan time; the executor
decides at run time whether the build side turned out small enough.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from sqlglot import exp

from gateway.planner.split import FRAGMENT_PREFIX, Fragment


@dataclass(frozen=True)
class DynamicFilter:
    build: str
    """The fragment read first, whose key values filter the probe."""
    build_column: str
    probe: str
    """The fragment whose query is narrowed to the build's keys."""
    probe_column: str

    def describe(self) -> str:
        return (
            f"{self.probe} is sent with {self.probe_column} IN (the {self.build_column} values of "
            f"{self.build}) when {self.build} is small"
        )


def _fragment_of(derived: exp.Expression) -> str | None:
    """The fragment a derived table reads as it is (``(SELECT * FROM __fragment_N) AS t``)."""
    if not isinstance(derived, exp.Subquery) or not isinstance(derived.this, exp.Select):
        return None
    select = derived.this
    if len(select.expressions) != 1 or not isinstance(select.expressions[0], exp.Star):
        return None
    if any(select.args.get(k) for k in ("where", "group", "having", "order", "limit", "joins")):
        return None
    source = select.args["from_"].this if select.args.get("from_") else None
    if isinstance(source, exp.Table) and source.name.startswith(FRAGMENT_PREFIX):
        return source.name
    return None


def _is_filtered(fragment: Fragment) -> bool:
    return " WHERE " in fragment.sql.upper()


def find_dynamic_filters(
    local: exp.Expression, fragments: tuple[Fragment, ...]
) -> tuple[DynamicFilter, ...]:
    """Equi-joins between fragments of two stores where only one side was filtered by the query.

    The probe must be read nowhere else (its rows matter only through this join), and the join
    must drop the probe's unmatched rows: inner joins, the right side of a LEFT JOIN, the left
    side of a RIGHT JOIN, and equalities in WHERE.
    """
    by_name = {f.name: f for f in fragments}
    reads = Counter(t.name for t in local.find_all(exp.Table) if t.name in by_name)
    found: dict[str, DynamicFilter] = {}
    for select in local.find_all(exp.Select):
        relations = _fragment_relations(select, reads)
        if len(relations) < 2:
            continue
        for condition, narrowable in _conditions(select, relations):
            for build, build_column, probe, probe_column in _equalities(condition, relations):
                if probe not in narrowable:
                    continue
                a, b = by_name[relations[build]], by_name[relations[probe]]
                if a.store != b.store and _is_filtered(a) and not _is_filtered(b):
                    found.setdefault(
                        b.name, DynamicFilter(a.name, build_column, b.name, probe_column)
                    )
    builds = {f.build for f in found.values()}
    # a fragment is either read first or narrowed, never both: no chains to wait on
    return tuple(f for f in found.values() if f.probe not in builds)


def _fragment_relations(select: exp.Select, reads: Counter) -> dict[str, str]:
    """alias -> fragment, for the derived tables of ``select`` that read a fragment as it is."""
    source = select.args.get("from_")
    derived = [source.this] if source else []
    derived += [join.this for join in select.args.get("joins") or []]
    relations = {}
    for table in derived:
        fragment = _fragment_of(table)
        if fragment is not None and reads[fragment] == 1:
            relations[table.alias_or_name] = fragment
    return relations


def _conditions(select: exp.Select, relations: dict[str, str]):
    """(condition, the aliases it may narrow) for each join's ON and for WHERE."""
    everyone = set(relations)
    for join in select.args.get("joins") or []:
        if join.args.get("on") is None or join.kind not in ("", "INNER"):
            continue
        joined = join.this.alias_or_name
        narrowable = {
            "": everyone,
            "LEFT": {joined},  # the preserved left side keeps its unmatched rows
            "RIGHT": everyone - {joined},
        }.get(join.side.upper(), set())
        yield join.args["on"], narrowable
    where = select.args.get("where")
    if where is not None:
        yield where.this, everyone


def _equalities(condition: exp.Expression, relations: dict[str, str]):
    """(build alias, build column, probe alias, probe column) for each column = column conjunct."""
    conjuncts = condition.flatten() if isinstance(condition, exp.And) else [condition]
    for eq in conjuncts:
        if not isinstance(eq, exp.EQ):
            continue
        left, right = eq.this, eq.expression
        if not (isinstance(left, exp.Column) and isinstance(right, exp.Column)):
            continue
        if left.table in relations and right.table in relations and left.table != right.table:
            yield left.table, left.name, right.table, right.name
            yield right.table, right.name, left.table, left.name


def narrowed_sql(sql: str, *, dialect: str, column: str, keys: list[object]) -> str:
    """``sql`` returning only the rows whose ``column`` is one of ``keys``."""
    query = exp.maybe_parse(sql, dialect=dialect)
    predicate = (
        exp.column(column, quoted=True).isin(*(exp.convert(k) for k in keys))
        if keys
        else exp.false()
    )
    return exp.select("*").from_(query.subquery("narrowed")).where(predicate).sql(dialect=dialect)

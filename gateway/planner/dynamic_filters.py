"""Dynamic filters: the join keys of a selective fragment narrow its partners at their stores.

When the local engine joins two fragments from different stores on ``a.x = b.y``, and ``a`` is
the side the query filtered, the executor reads ``a`` first and sends ``b``'s query with
``y IN (<a's keys>)`` (a semi-join with a table of the keys, where the store can read one), so
its store returns only rows that can join, as Trino's dynamic filtering does.
:func:`find_dynamic_filters` finds the candidates at plan time; the executor decides at run time
how to send the keys it read, or not to send them.

The probe side ``b`` must be read as it is (``(SELECT * FROM __fragment_N)``) and only there, so
its rows matter only through the join. The build side ``a`` may filter its fragment locally
(``(SELECT x FROM __fragment_N WHERE ...)``): the fragment's keys are then a superset of the
relation's, which narrows less but never drops a row that joins.

Filters chain: a probe narrowed by a selective build is selective in turn and may narrow another
fragment (``region -> supplier -> lineitem``). A correlated subquery's fragment is narrowed by
the outer relation its correlation compares with: the subquery only ever runs for outer rows. An
uncorrelated ``x IN (SELECT k FROM ...)`` narrows ``x``'s side by the subquery fragment's keys.

How the executor writes the keys into the probe's query is its own business (gateway.narrowing).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from sqlglot import exp

from gateway.planner.context import PlanContext
from gateway.planner.names import conjuncts, is_fragment
from gateway.planner.transpile import Fragment

if TYPE_CHECKING:
    from gateway.planner.state import PlanState


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
            f"{self.probe} waits for {self.build} and is sent with {self.probe_column} IN (its "
            f"{self.build_column} values: a list, a key table the store joins, or their range)"
        )


@dataclass(frozen=True)
class _Relation:
    """A derived table of the local query that reads one fragment."""

    fragment: str
    columns: dict[str, str] | None
    """The relation's column -> the fragment's column; None when it reads the fragment as it is."""

    @property
    def plain(self) -> bool:
        return self.columns is None

    def fragment_column(self, column: str) -> str | None:
        return column if self.columns is None else self.columns.get(column)


def find_dynamic_filters(state: PlanState) -> PlanState:
    """The step: the dynamic filters of a plan with a local query (see :func:`dynamic_filters`)."""
    if state.local is None:
        return state
    found = dynamic_filters(state.local, state.fragments, context=state.context)
    return replace(state, dynamic_filters=found)


def dynamic_filters(
    local: exp.Expression, fragments: tuple[Fragment, ...], *, context: PlanContext
) -> tuple[DynamicFilter, ...]:
    """The dynamic filters of a plan.

    Without statistics, how selective a fragment is gets guessed from its SQL (see
    :func:`_selectivity`): a build narrows a probe its store filters less, and the probe is as
    selective as its build from then on, so filters chain. A probe then also takes every other
    build at least as selective as itself. When both sides are filtered, the side whose store
    reads a table of keys is the probe (a large build still narrows it). No two fragments ever
    wait on each other.
    """
    by_name = {f.name: f for f in fragments}
    reads = Counter(t.name for t in local.find_all(exp.Table) if t.name in by_name)
    queries = {f.name: f.query for f in fragments}
    outputs = {
        name: [p.alias_or_name for p in query.expressions]
        for name, query in queries.items()
        if isinstance(query, exp.Select)
    }
    edges = [e for e in dict.fromkeys(_edges(local, outputs)) if reads[e.probe] == 1]
    key_tables = {f.name for f in fragments if context.connectors[f.store].capabilities.key_tables}
    chooser = _Chooser({name: _selectivity(query) for name, query in queries.items()}, key_tables)
    chooser.cross_to_key_tables(edges)
    chooser.chain(edges)
    chooser.widen(edges)
    return tuple(chooser.chosen)


class _Chooser:
    """The filters chosen so far, and how selective each fragment is with them."""

    def __init__(self, own: dict[str, int], key_tables: set[str]):
        self.own = own
        """How selective each fragment's own SQL is."""
        self.level = dict(own)
        """... and with the filters chosen so far narrowing it."""
        self.key_tables = key_tables
        self.chosen: list[DynamicFilter] = []
        self.probes: set[str] = set()

    def choose(self, edge: DynamicFilter) -> None:
        self.chosen.append(edge)
        self.probes.add(edge.probe)
        self.level[edge.probe] = max(self.level[edge.probe], self.level[edge.build])

    def waits_for(self, edge: DynamicFilter) -> bool:
        return edge in self.chosen or edge.build in _descendants(edge.probe, self.chosen)

    def cross_to_key_tables(self, edges: list[DynamicFilter]) -> None:
        """Both filtered: a store that reads tables of keys takes any number of them from one
        that cannot (a date range on orders narrows lineitem, whatever lineitem's own filter)."""
        for e in edges:
            crossing = e.probe in self.key_tables and e.build not in self.key_tables
            filtered = self.own[e.build] and self.own[e.probe]
            if crossing and filtered and not self.waits_for(e):
                self.choose(e)

    def chain(self, edges: list[DynamicFilter]) -> None:
        """A build narrows a probe less selective than itself, which is then as selective."""
        while True:
            found = [
                e
                for e in edges
                if e.probe not in self.probes
                and self.level[e.build] > self.level[e.probe]
                and not self.waits_for(e)
            ]
            if not found:
                return
            # the builds filtered most, and of those, the ones filtered by their own store first
            strongest = max((self.level[e.build], self.own[e.build]) for e in found)
            for e in found:
                if (self.level[e.build], self.own[e.build]) == strongest and not self.waits_for(e):
                    self.choose(e)

    def widen(self, edges: list[DynamicFilter]) -> None:
        """A probe also takes the other builds at least as selective as itself."""
        keyed = self.key_tables
        for e in sorted(edges, key=lambda e: (e.probe not in keyed, e.build in keyed)):
            selective = self.level[e.build] >= self.level[e.probe] > 0
            if e.probe in self.probes and selective and not self.waits_for(e):
                self.choose(e)


def _descendants(name: str, filters: list[DynamicFilter]) -> set[str]:
    """The fragments that wait, directly or through a chain, for ``name``."""
    out: set[str] = set()
    todo = [name]
    while todo:
        current = todo.pop()
        for f in filters:
            if f.build == current and f.probe not in out:
                out.add(f.probe)
                todo.append(f.probe)
    return out


STRONG, WEAK, NONE = 2, 1, 0


def _selectivity(query: exp.Expression | None) -> int:
    """How much the store filters a fragment, guessed from its SQL: STRONG for a LIMIT or a
    predicate that compares a column with values for equality, WEAK for any other predicate
    (ranges, comparisons of columns, HAVING), NONE for none but join equalities (a join of two
    whole tables is as large as its tables)."""
    if query is None:
        return NONE
    if query.find(exp.Limit) is not None:
        return STRONG
    level = WEAK if query.find(exp.Having) is not None else NONE
    for where in query.find_all(exp.Where):
        for condition in conjuncts(where.this, parens=False):
            if _is_join_equality(condition):
                continue
            level = max(level, STRONG if _is_point(condition) else WEAK)
    return level


def _is_point(condition: exp.Expression) -> bool:
    """``column = value``, ``column IN (values)``, ``column LIKE 'prefix%'``, and ORs and ANDs
    of them."""
    if isinstance(condition, exp.Paren):
        return _is_point(condition.this)
    if isinstance(condition, exp.Or):
        return _is_point(condition.this) and _is_point(condition.expression)
    if isinstance(condition, exp.And):
        return _is_point(condition.this) or _is_point(condition.expression)
    if isinstance(condition, exp.EQ):
        sides = (condition.this, condition.expression)
        return any(isinstance(s, exp.Column) for s in sides) and any(
            not s.find(exp.Column) for s in sides
        )
    if isinstance(condition, exp.In) and not condition.args.get("query"):
        return isinstance(condition.this, exp.Column) and not any(
            e.find(exp.Column) for e in condition.expressions
        )
    if isinstance(condition, exp.Like):  # a prefix: 'forest%' is a narrow range of names
        pattern = condition.expression
        return (
            isinstance(condition.this, exp.Column)
            and isinstance(pattern, exp.Literal)
            and pattern.is_string
            and not pattern.this.startswith(("%", "_"))
        )
    return False


def _is_join_equality(condition: exp.Expression) -> bool:
    return (
        isinstance(condition, exp.EQ)
        and isinstance(condition.this, exp.Column)
        and isinstance(condition.expression, exp.Column)
        and condition.this.table != condition.expression.table
    )


# --- the equi-joins between fragments ----------------------------------------------------------


def _edges(local: exp.Expression, outputs: dict[str, list[str]]) -> Iterator[DynamicFilter]:
    for select in local.find_all(exp.Select):
        relations = _fragment_relations(select)
        if not relations:
            continue
        for condition, narrowable in _conditions(select, relations):
            yield from _in_fragments(condition, relations, narrowable, outputs)
            for build, build_column, probe, probe_column in _equalities(condition, relations):
                if probe in narrowable and relations[probe].plain:
                    built = relations[build].fragment_column(build_column)
                    if built is not None:
                        yield DynamicFilter(
                            relations[build].fragment, built, relations[probe].fragment,
                            probe_column,
                        )  # fmt: skip
        yield from _correlated(select, relations)


def _relation_of(derived: exp.Expression) -> _Relation | None:
    """The fragment a derived table reads, and how its columns map onto the fragment's.

    ``(SELECT * FROM __fragment_N)`` reads it as it is; ``(SELECT c AS x FROM __fragment_N AS s
    WHERE ...)`` reads some of its rows, each output a plain column of the fragment; and so does
    such a query over such a derived table (a governed relation over a fragment, say).
    """
    if not isinstance(derived, exp.Subquery) or not isinstance(derived.this, exp.Select):
        return None
    select = derived.this
    if any(select.args.get(k) for k in ("group", "having", "joins", "laterals", "qualify")):
        return None
    source = select.args["from_"].this if select.args.get("from_") else None
    below = _read_below(source)
    if below is None:
        return None
    shaping = ("where", "order", "limit", "offset", "distinct")
    if (
        len(select.expressions) == 1
        and isinstance(select.expressions[0], exp.Star)
        and not any(select.args.get(k) for k in shaping)
    ):
        return below
    columns = {}
    for projection in select.expressions:
        inner = projection.this if isinstance(projection, exp.Alias) else projection
        if isinstance(inner, exp.Column) and inner.table in ("", source.alias_or_name):
            column = below.fragment_column(inner.name)
            if column is not None:
                columns[projection.alias_or_name] = column
    return _Relation(below.fragment, columns) if columns else None


def _read_below(source: exp.Expression | None) -> _Relation | None:
    """The fragment a FROM's one relation reads: a fragment's table, or a derived table
    that reads one (see :func:`_relation_of`)."""
    if isinstance(source, exp.Table) and is_fragment(source.name):
        if source.db or not isinstance(source.this, exp.Identifier):
            return None
        return _Relation(source.name, None)
    if isinstance(source, exp.Subquery) and source.alias:
        return _relation_of(source)
    return None


def _fragment_relations(select: exp.Select) -> dict[str, _Relation]:
    """alias -> the fragment it reads, for the derived tables of ``select``."""
    source = select.args.get("from_")
    derived = [source.this] if source else []
    derived += [join.this for join in select.args.get("joins") or []]
    relations = {}
    for table in derived:
        relation = _relation_of(table)
        if relation is not None and table.alias:
            relations[table.alias] = relation
    return relations


def _conditions(select: exp.Select, relations: dict[str, _Relation]):
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


def _equalities(condition: exp.Expression, relations: dict[str, _Relation]):
    """(build alias, build column, probe alias, probe column) for each column = column conjunct."""
    for eq in conjuncts(condition, parens=False):
        if not isinstance(eq, exp.EQ):
            continue
        left, right = eq.this, eq.expression
        if not (isinstance(left, exp.Column) and isinstance(right, exp.Column)):
            continue
        if left.table in relations and right.table in relations and left.table != right.table:
            yield left.table, left.name, right.table, right.name
            yield right.table, right.name, left.table, left.name


def _in_fragments(
    condition: exp.Expression,
    relations: dict[str, _Relation],
    narrowable: set[str],
    outputs: dict[str, list[str]],
) -> Iterator[DynamicFilter]:
    """``r.x IN (SELECT * FROM __fragment_N)`` (or a query selecting one column of a fragment
    over some of its rows), a conjunct: a row of ``r`` whose ``x`` is not one of the fragment's
    values fails it (an absent or NULL ``x`` is never IN)."""
    for conjunct in conjuncts(condition, parens=False):
        if not isinstance(conjunct, exp.In) or not isinstance(conjunct.this, exp.Column):
            continue
        probe = conjunct.this.table
        query = conjunct.args.get("query")
        if probe not in narrowable or probe not in relations or not relations[probe].plain:
            continue
        built = _relation_of(query) if isinstance(query, exp.Subquery) else None
        if built is None and isinstance(query, exp.Subquery):
            yield from _in_joined(conjunct, query.this, relations[probe].fragment)
            continue
        if built is None or len(query.this.expressions) != 1:
            continue
        if built.plain:
            column = (
                outputs[built.fragment][0] if len(outputs.get(built.fragment, ())) == 1 else None
            )
        else:  # (SELECT s.k FROM __fragment_N AS s WHERE ...): some of the fragment's keys
            column = built.fragment_column(query.this.expressions[0].alias_or_name)
        if column is not None:
            yield DynamicFilter(
                built.fragment, column, relations[probe].fragment, conjunct.this.name
            )


def _in_joined(conjunct: exp.In, query: exp.Expression, probe: str) -> Iterator[DynamicFilter]:
    """``r.x IN (SELECT s.k FROM (... __fragment_N ...) AS s JOIN ... WHERE ...)``: the keys it
    selects are some of one relation's, so of its fragment's (joins and filters only drop or
    repeat them, an outer join's NULLs never match), and that fragment narrows ``r``. A row
    filter reading other products has this shape (orders of the customers of one region)."""
    if not isinstance(query, exp.Select) or len(query.expressions) != 1:
        return
    if any(query.args.get(k) for k in ("group", "having", "laterals")):
        return
    selected = query.expressions[0]
    key = selected.this if isinstance(selected, exp.Alias) else selected
    if not isinstance(key, exp.Column):
        return
    relation = _fragment_relations(query).get(key.table)
    column = relation.fragment_column(key.name) if relation is not None else None
    if column is not None:
        yield DynamicFilter(relation.fragment, column, probe, conjunct.this.name)


def _correlated(select: exp.Select, outer: dict[str, _Relation]) -> Iterator[DynamicFilter]:
    """Filters into the fragments of ``select``'s correlated subqueries.

    A subquery ``(SELECT ... FROM (SELECT * FROM __fragment_N) AS i WHERE i.y = o.x AND ...)``
    runs for rows of ``select``, whose ``o.x`` is one of the outer fragment's values (or NULL,
    which matches nothing): rows of the inner fragment with any other ``y`` fail its WHERE
    whatever the outer row, before any aggregate or LIMIT of the subquery sees them.
    """
    for inner in select.find_all(exp.Select):
        if inner is select or not _directly_under(inner, select):
            continue
        relations = _fragment_relations(inner)
        source, where = inner.args.get("from_"), inner.args.get("where")
        if inner.args.get("joins") or source is None or len(relations) != 1 or where is None:
            continue
        ((alias, relation),) = relations.items()
        if not relation.plain:
            continue
        for mine, theirs in _correlations(where.this, alias, outer):
            built = outer[theirs.table].fragment_column(theirs.name)
            if built is not None:
                yield DynamicFilter(
                    outer[theirs.table].fragment, built, relation.fragment, mine.name
                )


def _correlations(
    condition: exp.Expression, alias: str, outer: dict[str, _Relation]
) -> Iterator[tuple[exp.Column, exp.Column]]:
    """(a column of ``alias``, a column of an outer relation) for each conjunct equating them."""
    for eq in conjuncts(condition, parens=False):
        if not isinstance(eq, exp.EQ):
            continue
        for mine, theirs in ((eq.this, eq.expression), (eq.expression, eq.this)):
            if not (isinstance(mine, exp.Column) and isinstance(theirs, exp.Column)):
                continue
            if mine.table == alias and theirs.table != alias and theirs.table in outer:
                yield mine, theirs


def _directly_under(inner: exp.Select, select: exp.Select) -> bool:
    """Whether ``inner`` is a subquery expression of ``select`` itself: not a derived table,
    not inside another subquery, not a branch of a set operation."""
    child, node = inner, inner.parent
    while node is not None and node is not select:
        if isinstance(node, (exp.From, exp.Select, exp.SetOperation, exp.Lateral)):
            return False
        if isinstance(node, exp.Join) and child is not node.args.get("on"):
            return False  # the joined relation itself, not its ON condition
        child, node = node, node.parent
    return node is select

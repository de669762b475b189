"""split_by_store: the largest pieces each store can run, and what is left for the local engine.

A query whose sources all live in one store, using only what that store can run, goes down whole.
Otherwise every derived table (and CTE body) whose sources share one store and whose operations
the store supports becomes a fragment, outermost first; the rest of the query runs in the local
DuckDB over the fragments' Arrow streams.
"""

from __future__ import annotations

from dataclasses import replace

from sqlglot import exp
from sqlglot.optimizer.annotate_types import annotate_types

from gateway.planner.context import PlanContext
from gateway.planner.names import conjuncts, fragment_name
from gateway.planner.sources import contract_schema, source_address, sources_of, store_of
from gateway.planner.state import PlanState
from gateway.planner.transpile import Fragment, transpile_fragment


def runs_entirely_at(expression: exp.Expression, *, context: PlanContext) -> str | None:
    """The one store that can run ``expression`` as it is, or None."""
    stores = {store_of(source, context) for source in sources_of(expression)}
    if len(stores) != 1:
        return None
    store = stores.pop()
    capabilities = context.connectors[store].capabilities
    unsupported = tuple(capabilities.unsupported_functions)
    if not capabilities.unknown_functions:
        unsupported += (exp.Anonymous,)
    if unsupported and any(True for _ in expression.find_all(*unsupported)):
        return None
    checks = (
        (capabilities.joins, exp.Join),
        (capabilities.aggregates, exp.AggFunc),
        (capabilities.window_functions, exp.Window),
        (capabilities.set_operations, exp.SetOperation),
        (capabilities.sorts, exp.Order),
        (capabilities.limits, exp.Limit),
        (capabilities.limits, exp.Offset),
        (capabilities.filters, exp.Where),
    )
    for allowed, node_type in checks:
        if not allowed and expression.find(node_type) is not None:
            return None
    if not capabilities.subqueries and _has_subquery_expression(expression):
        return None
    if not capabilities.distinct_ordered_limits and _has_distinct_ordered_limit(expression):
        return None
    if capabilities.case_insensitive_text and _orders_or_compares_text(expression, context):
        return None
    return store


_COMPARISONS = (
    exp.EQ, exp.NEQ, exp.GT, exp.GTE, exp.LT, exp.LTE, exp.NullSafeEQ, exp.NullSafeNEQ,
    exp.Like, exp.ILike, exp.In, exp.Between,
)  # fmt: skip


def _orders_or_compares_text(expression: exp.Expression, context: PlanContext) -> bool:
    """Whether the answer depends on how text compares: predicates, joins, grouping, DISTINCT,
    ordering, MIN/MAX or UNION over text (or over values whose type is unknown)."""
    typed = annotate_types(
        expression.copy(), schema=contract_schema(expression, context), dialect=context.dialect
    )

    def textual(node: exp.Expression) -> bool:
        kind = node.type
        return kind is None or kind.is_type(exp.DataType.Type.UNKNOWN, *exp.DataType.TEXT_TYPES)

    for node in typed.find_all(*_COMPARISONS):
        operands = [node.this, node.args.get("expression"), node.args.get("low"), *node.expressions]
        if any(
            textual(o)
            for o in operands
            if isinstance(o, exp.Expression) and not isinstance(o, exp.Subquery)
        ):
            return True
    for node in typed.find_all(exp.Group, exp.Order, exp.Distinct, exp.Window):
        keys = node.expressions or [*node.args.get("partition_by", [])]
        if isinstance(node, exp.Window):
            order = node.args.get("order")
            keys = [*node.args.get("partition_by", []), *(order.expressions if order else [])]
        if isinstance(node, exp.Distinct) and not keys:
            keys = node.parent.expressions if isinstance(node.parent, exp.Select) else []
        if any(textual(k.this if isinstance(k, exp.Ordered) else k) for k in keys):
            return True
    if any(textual(node.this) for node in typed.find_all(exp.Max, exp.Min)):
        return True
    return any(node.args.get("distinct") for node in typed.find_all(exp.Union))


_RELATION_PLACES = (exp.From, exp.Join, exp.SetOperation, exp.Subquery, exp.Lateral)


def _has_subquery_expression(expression: exp.Expression) -> bool:
    """Whether ``expression`` has a scalar, IN or EXISTS subquery (derived tables are not)."""
    return expression.find(exp.Exists) is not None or any(
        not isinstance(node.parent, _RELATION_PLACES) for node in expression.find_all(exp.Subquery)
    )


def _has_distinct_ordered_limit(expression: exp.Expression) -> bool:
    """Whether one query block has SELECT DISTINCT, ORDER BY and LIMIT together."""
    return any(
        select.args.get("distinct") and select.args.get("order") and select.args.get("limit")
        for select in expression.find_all(exp.Select)
    )


def _is_derived_table(node: exp.Expression) -> bool:
    return isinstance(node, exp.Subquery) and isinstance(node.parent, (exp.From, exp.Join))


def _is_uncorrelated_in(node: exp.Expression) -> bool:
    """``x IN (SELECT ...)`` whose query reads nothing of the query around it: one store may run
    it whole (TPC-H Q18's ``GROUP BY l_orderkey HAVING sum(l_quantity) > 300`` at the lake)."""
    if not (isinstance(node, exp.Subquery) and isinstance(node.parent, exp.In)):
        return False
    if node.arg_key != "query" or not isinstance(node.this, exp.Select):
        return False
    defined = {n.alias_or_name for n in node.this.find_all(exp.Table, exp.Subquery, exp.CTE)}
    return all(c.table in defined for c in node.this.find_all(exp.Column) if c.table)


def _attached(node: exp.Expression, root: exp.Expression) -> bool:
    while node.parent is not None:
        node = node.parent
    return node is root


def split_by_store(state: PlanState) -> PlanState:
    """The step: the fragments, and the local query over them (None: one fragment answers)."""
    fragments, local = _split(state.tree, context=state.context)
    return replace(state, fragments=fragments, local=local)


def _split(
    expression: exp.Expression, *, context: PlanContext
) -> tuple[tuple[Fragment, ...], exp.Expression | None]:
    store = runs_entirely_at(expression, context=context)
    if store is not None:
        answer = transpile_fragment(expression, context=context, store=store, name="result")
        return (answer,), None

    local = expression.copy()
    candidates = [
        node
        for node in local.bfs()
        if _is_derived_table(node) or isinstance(node, exp.CTE) or _is_uncorrelated_in(node)
    ]
    reused_ctes = _ctes_read_more_than_once(local)
    has_subquery_expressions = any(
        isinstance(node, exp.Subquery)
        and not _is_derived_table(node)
        and not isinstance(node, exp.CTE)
        for node in local.find_all(exp.Subquery)
    )
    fragments: list[Fragment] = []
    # (store, sql, parameters) -> index: identical pieces are fetched once
    seen: dict[tuple[str, str, frozenset[int]], int] = {}
    for node in candidates:
        if not _attached(node, local):
            continue  # inside a fragment already carved out
        body = node.this
        store = runs_entirely_at(body, context=context)
        if store is None:
            continue
        inside_reused_cte = any(
            isinstance(a, exp.CTE) and a.alias_or_name.lower() in reused_ctes
            for a in _ancestors(node, include_self=True)
        )
        fragment = transpile_fragment(
            body,
            context=context,
            store=store,
            name=fragment_name(len(fragments) + 1),
            materialize=inside_reused_cte or has_subquery_expressions,
        )
        # the same SQL with other parameters in it is another query once other values are bound
        key = (store, fragment.sql, fragment.slots)
        if key in seen:
            index = seen[key]
            fragments[index] = replace(fragments[index], materialize=True)
            name = fragments[index].name
        else:
            seen[key] = len(fragments)
            fragments.append(fragment)
            name = fragment.name
        node.set("this", exp.select("*").from_(exp.to_table(name)))
        body.parent = None  # detached: what was inside it is now the fragment's, not local
    for source in sources_of(local):
        # nothing around it can run at its store (say, text compared on a case-insensitive
        # store): fetch the columns it is read for, and do everything else locally
        scan = _scan(source, len(fragments) + 1, local, context)
        fragments.append(replace(scan, materialize=has_subquery_expressions))
        source.replace(exp.to_table(fragments[-1].name).as_(source.alias_or_name, quoted=True))
    return tuple(fragments), local


def _scan(source: exp.Table, number: int, local: exp.Expression, context: PlanContext) -> Fragment:
    alias = source.alias_or_name
    product = context.mesh.products[source_address(source)]
    read = {c.name for c in local.find_all(exp.Column) if c.table == alias}
    columns = [c.name for c in product.columns if c.name in read] or [
        c.name for c in product.columns
    ]
    query = exp.select(*(exp.column(c, quoted=True) for c in columns)).from_(source.copy())
    store = store_of(source, context)
    prefilters = _prefilters(source, context)
    if prefilters:
        query = query.where(exp.and_(*prefilters))
    return transpile_fragment(query, context=context, store=store, name=fragment_name(number))


_TEXT = {"varchar", "char", "text", "string", "bpchar"}
_VOLATILE = (exp.Rand, exp.Randn, exp.Uuid, exp.Anonymous)


def _prefilters(source: exp.Table, context: PlanContext) -> list[exp.Expression]:
    """The conjuncts of the WHERE right over ``source`` that its store can narrow the scan with.

    The local engine still applies the whole WHERE, so a store may return more rows than the
    conjunct keeps, never fewer: a predicate it runs exactly, or, on a store that compares text
    ignoring case and trailing spaces, text equal to string literals (rows equal to a literal
    byte for byte are equal under any collation). Only for a plain scan: a FROM without joins.
    """
    select = source.parent.parent if isinstance(source.parent, exp.From) else None
    if not isinstance(select, exp.Select) or select.args.get("joins"):
        return []
    where = select.args.get("where")
    if where is None:
        return []
    store = store_of(source, context)
    alias = source.alias_or_name
    product = context.mesh.products[source_address(source)]
    text = {c.name for c in product.columns if c.type.lower().split("(")[0] in _TEXT}
    ignores_case = context.connectors[store].capabilities.case_insensitive_text
    kept = []
    for condition in conjuncts(where.this, parens=False):
        columns = list(condition.find_all(exp.Column))
        if not columns or any(c.table != alias for c in columns):
            continue
        if condition.find(exp.Subquery, exp.Select, exp.AggFunc, exp.Window, *_VOLATILE):
            continue  # volatile: the store's draw and the local one would both have to pass
        if _narrows(condition, source, store, text, ignores_case, context):
            kept.append(condition.copy())
    return kept


def _narrows(
    condition: exp.Expression,
    source: exp.Table,
    store: str,
    text: set[str],
    ignores_case: bool,
    context: PlanContext,
) -> bool:
    """Whether the store's answer to ``condition`` keeps every row the exact answer keeps: it
    runs it exactly, or it is an AND or OR of such parts and text equalities (AND and OR keep
    a superset a superset; NOT would not)."""
    alone = exp.select(exp.Literal.number(1)).from_(source.copy()).where(condition.copy())
    if runs_entirely_at(alone, context=context) == store:
        return True
    if not ignores_case:
        return False
    if isinstance(condition, exp.Paren):
        return _narrows(condition.this, source, store, text, ignores_case, context)
    if isinstance(condition, (exp.And, exp.Or)):
        return all(
            _narrows(part, source, store, text, ignores_case, context)
            for part in (condition.this, condition.expression)
        )
    return _text_equals_literals(condition, text)


def _text_equals_literals(condition: exp.Expression, text: set[str]) -> bool:
    """``text_column = 'literal'``, ``text_column IN ('literal', ...)`` or ``text_column LIKE
    'pattern'`` with only ``%`` wildcards: MySQL's LIKE escapes with a backslash by default and
    its ``_`` is one character where a byte-wise ``_`` may be one byte, so patterns with either
    are left out."""
    if isinstance(condition, exp.Like) and not condition.args.get("escape"):
        pattern = condition.expression
        return (
            isinstance(condition.this, exp.Column)
            and condition.this.name in text
            and isinstance(pattern, exp.Literal)
            and pattern.is_string
            and not any(c in pattern.this for c in "\\_")
        )
    if isinstance(condition, exp.EQ):
        column, value = condition.this, condition.expression
        if isinstance(value, exp.Column):
            column, value = value, column
        values = [value]
    elif isinstance(condition, exp.In) and not condition.args.get("query"):
        column, values = condition.this, condition.expressions
    else:
        return False
    return (
        isinstance(column, exp.Column)
        and column.name in text
        and bool(values)
        and all(isinstance(v, exp.Literal) and v.is_string for v in values)
    )


def _ancestors(node: exp.Expression, *, include_self: bool = False):
    if include_self:
        yield node
    while node.parent is not None:
        node = node.parent
        yield node


def _ctes_read_more_than_once(expression: exp.Expression) -> set[str]:
    names = {cte.alias_or_name.lower() for cte in expression.find_all(exp.CTE)}
    counts: dict[str, int] = {}
    for table in expression.find_all(exp.Table):
        name = table.name.lower()
        if name in names and not table.db:
            counts[name] = counts.get(name, 0) + 1
    return {name for name, count in counts.items() if count > 1}

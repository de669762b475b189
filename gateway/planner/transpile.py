"""transpile_fragment: a single-store piece of the query, in that store's own SQL."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import pyarrow as pa
from sqlglot import exp

from gateway.errors import InvalidQuery
from gateway.planner.context import PlanContext
from gateway.planner.names import NEUTRAL_SOURCE, SOURCE
from gateway.planner.parameters import Template
from gateway.planner.sources import is_row_filtered, source_address


@dataclass(frozen=True)
class Fragment:
    """One query sent to one store; its result is a relation of the local query (or the answer)."""

    name: str
    store: str
    sql: str
    materialize: bool = False
    """The local engine may read this fragment more than once, so it is read into memory first."""
    template: Template | None = field(default=None, compare=False, repr=False)
    """The query when it holds bound parameters, to write it again with other values."""
    query: exp.Expression | None = field(default=None, compare=False, repr=False)
    """The tree ``sql`` was written from, with the values it was planned with (physical names,
    the store's dialect not applied yet): the rules that read a fragment's shape after it is
    written read this, and never parse ``sql`` again."""

    @property
    def slots(self) -> frozenset[int]:
        return self.template.slots if self.template is not None else frozenset()

    def bind(self, parameters: Sequence[object]) -> Fragment:
        """This fragment with ``parameters`` in place of the values it was planned with."""
        if self.template is None:
            return self
        return replace(self, sql=self.template.render(parameters))


def transpile_fragment(
    expression: exp.Expression,
    *,
    context: PlanContext,
    store: str,
    name: str,
    materialize: bool = False,
) -> Fragment:
    """``expression`` as ``store``'s SQL: placeholders become physical relations, then sqlglot
    transpiles."""
    capabilities = context.connectors[store].capabilities
    query = _physical(_fenced(expression, capabilities.fence), context=context, store=store)
    if store == context.route.engine:
        query = _explicit_cross_joins(query)
    if not capabilities.typed_columns:
        query = _typed_outputs(query, _output_types(expression, context=context))
    dialect = capabilities.dialect
    try:
        sql = query.sql(dialect=dialect)
    except Exception as exc:  # noqa: BLE001 - sqlglot's generators fail with TypeError and others
        raise InvalidQuery(
            f"store {store!r} speaks {dialect}, in which meshgate cannot write this query "
            f"({type(exc).__name__}: {exc}); rewrite the part that reads {store!r}"
        ) from None
    return Fragment(
        name=name,
        store=store,
        sql=sql,
        materialize=materialize,
        template=Template.of(query, dialect, sql),
        query=query,
    )


def _fenced(expression: exp.Expression, fence: exp.Expression | None) -> exp.Expression:
    """``expression`` with ``fence`` on each row-filtered relation, so that the store runs the
    row filter before any predicate of the query around it (``Capabilities.fence``). Govern
    writes the relation without a LIMIT or OFFSET, and no rule adds one inside it."""
    if fence is None:
        return expression
    fenced = expression.copy()
    for relation in list(fenced.find_all(exp.Subquery)):
        if is_row_filtered(relation):
            assert not relation.this.args.get(fence.key), relation.sql()
            relation.this.set(fence.key, fence.copy())
    return fenced


def _output_types(expression: exp.Expression, *, context: PlanContext) -> list[pa.DataType]:
    """The types the gateway gives ``expression``'s output columns (DuckDB's semantics); none
    when they cannot be worked out here (the store's own error then says why)."""
    from gateway.planner.schema import schema_of

    try:
        return schema_of(expression, context=context).types
    except InvalidQuery:
        return []


def _store_type(kind: pa.DataType) -> str | None:
    """The SQLite type a column of Arrow type ``kind`` is cast to, when its values could
    otherwise come in several storage classes."""
    if pa.types.is_floating(kind) or pa.types.is_decimal(kind):
        return "REAL"
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        return "TEXT"
    return None


def _typed_outputs(query: exp.Expression, types: list[pa.DataType]) -> exp.Expression:
    """``query`` with each real or text output cast to its type, in every branch of a set
    operation, keeping the output names; plain text columns stay as they are (a TEXT column
    holds text). Integer outputs are never cast: a real where DuckDB expects an integer is a
    difference of meaning to report, not to truncate away."""
    if isinstance(query, exp.SetOperation):
        for side in ("this", "expression"):
            branch = query.args.get(side)
            if branch is not None:
                query.set(side, _typed_outputs(branch, types))
        return query
    if isinstance(query, exp.Subquery):
        query.set("this", _typed_outputs(query.this, types))
        return query
    if not isinstance(query, exp.Select) or len(query.expressions) != len(types):
        return query  # SELECT * and the like: the names are the store's, leave them
    projections = []
    for projection, kind in zip(query.expressions, types, strict=True):
        target = _store_type(kind)
        inner = projection.this if isinstance(projection, exp.Alias) else projection
        name = projection.alias_or_name
        if target is None or (target == "TEXT" and isinstance(inner, exp.Column)):
            projections.append(projection)
            continue
        cast = exp.cast(inner.copy(), target)
        # an unnamed output is read by position (the whole query pushed down)
        projections.append(cast.as_(name, quoted=True) if name else cast)
    query.set("expressions", projections)
    return query


def _physical(expression: exp.Expression, *, context: PlanContext, store: str) -> exp.Expression:
    connector = context.connectors[store]

    def physical(node: exp.Expression) -> exp.Expression:
        address = source_address(node)
        if address is None:
            return node
        product = context.mesh.products[address]
        if context.route.placement.get(address) == store:  # read through the engine
            relation = context.engine.names[address].copy()
        else:
            relation = connector.relation(
                product.descriptor.table,
                product.descriptor.sql,
                columns={c.name: c.type for c in product.columns},
            )
        alias = node.args.get("alias")
        if alias is not None:  # qualified columns name the placeholder's alias
            relation.set("alias", alias.copy())
        return relation

    return _neutral_aliases(expression.transform(physical, copy=True))


def _neutral_aliases(expression: exp.Expression) -> exp.Expression:
    """Rename the placeholders' aliases (``"__source:sales.orders"``) to ``source_1`` and so on."""
    renamed: dict[str, str] = {}
    for alias in expression.find_all(exp.TableAlias):
        if alias.name.startswith(SOURCE):
            new = renamed.setdefault(alias.name, f"{NEUTRAL_SOURCE}{len(renamed) + 1}")
            alias.set("this", exp.to_identifier(new, quoted=True))
    if renamed:
        for column in expression.find_all(exp.Column):
            if column.table in renamed:
                column.set("table", exp.to_identifier(renamed[column.table], quoted=True))
    return expression


def _explicit_cross_joins(expression: exp.Expression) -> exp.Expression:
    """``FROM a, b JOIN c ON a.x = c.x`` as ``FROM a CROSS JOIN b JOIN c ...``: in Trino (and
    standard SQL) JOIN binds tighter than a comma, so ``a`` is out of the ON's scope there,
    while DuckDB, whose meaning the gateway keeps, reads the joins left to right (TPC-H Q2)."""
    for join in expression.find_all(exp.Join):
        if not (join.kind or join.side or join.args.get("on") or join.args.get("using")):
            join.set("kind", "CROSS")
    return expression

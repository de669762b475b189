"""The types of a statement's ``?`` parameters, known when it is prepared.

The Arrow Flight SQL JDBC driver binds parameters only into the ``parameter_schema`` the server
returns from CreatePreparedStatement: without one, ``PreparedStatement.setInt(1, ...)`` has no
parameter 1; with one, it converts each value to that field's Arrow type (an ``INTEGER`` column
takes ``setInt``, a ``DECIMAL(15,2)`` takes ``setBigDecimal`` with scale 2, a ``DATE`` takes
``setDate``). Each parameter takes the type of what it is compared with, as sqlglot's type
annotation over the products' contract types sees it; a parameter nothing types is text.

>>> from gateway.mesh import Column
>>> columns = {"sales.orders": [Column(name="o_orderkey", type="bigint")]}
>>> parameter_schema(
...     "SELECT * FROM sales.orders WHERE o_orderkey = ? LIMIT ?", columns, dialect="duckdb"
... ).types
[DataType(int64), DataType(int64)]
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import pyarrow as pa
from sqlglot import exp
from sqlglot.optimizer.annotate_types import annotate_types
from sqlglot.optimizer.qualify import qualify
from sqlglot.schema import MappingSchema

from gateway.mesh import Column
from gateway.planner.parameters import in_written_order
from gateway.planner.parse import parse_statement
from gateway.types import arrow_type

log = logging.getLogger(__name__)

FALLBACK = pa.string()
MARK = "meshgate_parameter_"
_COMPARISONS = (exp.EQ, exp.NEQ, exp.GT, exp.GTE, exp.LT, exp.LTE, exp.NullSafeEQ, exp.Binary)
_UNTYPED = {exp.DataType.Type.UNKNOWN, exp.DataType.Type.NULL}


def parameter_schema(
    statement: str, columns: Mapping[str, Sequence[Column]], *, dialect: str
) -> pa.Schema | None:
    """One nullable field per ``?`` of ``statement``, in the order values bind; None if it has
    none. ``columns`` holds the contract columns of the products it may read, by address."""
    expression = parse_statement(statement, dialect=dialect)
    count = len(in_written_order(expression))
    if not count:
        return None
    marked = _marked(expression)
    schema = _schema(columns, dialect)
    try:
        qualified = qualify(marked, schema=schema, dialect=dialect, validate_qualify_columns=False)
        annotated = annotate_types(qualified, schema=schema, dialect=dialect)
    except Exception:  # noqa: BLE001 - typing is a courtesy: untyped parameters bind as text
        log.debug("could not type the parameters of %r", statement, exc_info=True)
        annotated = marked
    types = {
        node.name: _arrow(_context_type(node), dialect)
        for node in annotated.find_all(exp.Placeholder)
        if node.name.startswith(MARK)
    }
    return pa.schema(
        [pa.field(f"parameter_{i + 1}", types.get(f"{MARK}{i}", FALLBACK)) for i in range(count)]
    )


def _marked(expression: exp.Expression) -> exp.Expression:
    """A copy with each ``?`` named by its position, so it can be found after rewriting."""
    marked = expression.copy()
    for index, placeholder in enumerate(in_written_order(marked)):
        placeholder.replace(exp.Placeholder(this=f"{MARK}{index}"))
    return marked


def _schema(columns: Mapping[str, Sequence[Column]], dialect: str) -> MappingSchema:
    mapping: dict[str, dict[str, dict[str, str]]] = {}
    for address, product_columns in columns.items():
        domain, _, name = address.partition(".")
        mapping.setdefault(domain, {})[name] = {c.name: c.type for c in product_columns}
    return MappingSchema(mapping, dialect=dialect)


def _typed(node: exp.Expression | None) -> exp.DataType | None:
    if node is None or isinstance(node, exp.Placeholder):
        return None
    kind = node.type
    return None if kind is None or kind.this in _UNTYPED else kind


def _context_type(node: exp.Expression) -> exp.DataType | None:
    """The type the parameter's position gives it: what it is compared with, the cast it is
    in, a count for LIMIT and OFFSET, text for LIKE patterns."""
    child, parent = node, node.parent
    while isinstance(parent, exp.Paren):
        child, parent = parent, parent.parent
    match parent:
        case exp.Limit() | exp.Offset():
            return exp.DataType.build("bigint")
        case exp.Cast() | exp.TryCast():
            return parent.to
        case exp.Like() | exp.ILike():
            return exp.DataType.build("varchar")
        case exp.Between():
            if child is parent.this:
                return _typed(parent.args.get("low")) or _typed(parent.args.get("high"))
            return _typed(parent.this)
        case exp.In():
            return _typed(parent.this) if child is not parent.this else None
        case _ if isinstance(parent, _COMPARISONS):
            other = parent.right if child is parent.left else parent.left
            return _typed(other)
    return None


def _arrow(kind: exp.DataType | None, dialect: str) -> pa.DataType:
    if kind is None:
        return FALLBACK
    try:
        return arrow_type(kind.sql(dialect="duckdb"))
    except ValueError:
        return FALLBACK

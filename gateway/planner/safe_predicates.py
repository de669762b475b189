"""Which of a query's predicates may cross a row filter's barrier and run on rows it hides.

A governed relation with a row filter is a barrier (``pushdown_predicates.py``): the query's own
predicates run above it, on the rows the principal may see, because a predicate that runs on a
hidden row can tell about it. It does so only through its side effects: an error (``1/(x-5) > 0``
fails iff a row with ``x = 5`` exists; ``CAST(c_comment AS INT)`` quotes the comment it failed on),
or through an error it prevents (a failing part of the query that no longer sees the row). Its
value cannot: a crossing predicate is ANDed with the row filter, so the rows that reach the
principal are exactly the same. A predicate that **cannot fail on any value** of the columns it
reads may therefore run at the store, beside the row filter, and narrow the scan there.

The safe set, kept small on purpose; anything else stays above the barrier:

- ``column <op> literal`` (``=``, ``<>``, ``<``, ``<=``, ``>``, ``>=``, ``IS [NOT] DISTINCT
  FROM``), either way round, ``column [NOT] BETWEEN literal AND literal`` and ``column [NOT] IN
  (literal, ...)``, when the literal's type is one the column's compares with by widening, never
  by casting the column to something narrower or to another kind (what each store and DuckDB do
  with ``varchar_column = 5`` is cast every value to a number, which fails per row):

  * integer column, integer literal in the 64-bit range (narrower columns are widened to it);
  * decimal(p, s) column, integer or decimal literal with at most ``p - s`` digits before the
    point and ``s`` after it: it is a value of the column's own type, so no store widens the
    column past 38 digits (DuckDB fails ``hugeint_column > 2.5`` per row doing exactly that);
  * floating-point column, a plain integer or decimal literal (no exponent);
  * text column (varchar, char, text; not uuid or json, whose stores parse the literal), a
    string literal; boolean column, TRUE or FALSE;
  * date column, ``DATE 'yyyy-mm-dd'``; timestamp column (without time zone), ``TIMESTAMP
    'yyyy-mm-dd hh:mm:ss[.ffffff]'``; the text is checked here, so no store parses a bad one;
  * NULL, against any column (the comparison is NULL, never an error).
- ``column IS [NOT] NULL``; a boolean column alone; ``TRUE``/``FALSE``.
- ``column [NOT] [I]LIKE 'pattern'`` on a text column, with a pattern written in the statement
  (not a parameter) holding no backslash and no ESCAPE clause: PostgreSQL and MySQL escape with
  a backslash by default and fail on a pattern that ends with one, and only when a row is matched.
- NOT, AND and OR of safe predicates, and parentheses: they never fail themselves.

Never: functions (even ``abs``), arithmetic, casts of a column, CASE, subqueries, columns of
another relation, a ``?`` not bound to a value, and any column the principal sees masked (the mask
is an expression, run on every row the predicate crosses to) or that the product's own SQL
computes (``CAST(extract(year ...))`` would run on hidden rows); only columns the store reads as
they are. Bound parameters are literals here, tagged with their position, and a plan is reused only
for values of the same class (``parameters.value_class``: 32- or 64-bit integer, a decimal's
digits, date or timestamp, tz or not), so a decision made for one value holds for every value the
plan is bound with later: the rules below read only what the class fixes (an integer parameter
counts as 10 digits if 32-bit, 19 if 64-bit; patterns must not be parameters at all).

Types come from the descriptor, which the contract check holds the store to (a product whose
store column changed kind is refused, ``monitor.refuse_drifted``).

The other way round: a crossing predicate may run *first* and spare the row filter the rows it
rejects, so a filter that fails on some row (``CAST(code AS INT) = 5``) would fail only when
such a row passes the consumer's predicate, which tells about hidden rows. Predicates therefore
cross only a row filter made of parts that cannot fail either (:func:`cannot_fail`: the same
comparisons, IN/EXISTS subqueries, joins, count/min/max; no casts but literal dates, no
arithmetic, no other function). A product's own SQL is taken as the domain's published
definition, which does not fail on its data (one that did would fail the contract's reads too).
"""

from __future__ import annotations

import datetime
import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass

from sqlglot import exp
from sqlglot.errors import ParseError

from gateway.mesh import Product
from gateway.planner.parameters import INT32, INT64, TAG

T = exp.DataType.Type


@dataclass(frozen=True)
class Kind:
    """What a column's values are, as far as the safe comparisons go."""

    family: str
    """``integer``, ``decimal``, ``floating``, ``text``, ``boolean``, ``date`` or ``timestamp``."""
    precision: int = 0
    scale: int = 0


_FAMILIES: dict[exp.DataType.Type, str] = {
    **dict.fromkeys(
        (T.TINYINT, T.SMALLINT, T.INT, T.BIGINT, T.UTINYINT, T.USMALLINT, T.UINT, T.UBIGINT),
        "integer",
    ),
    **dict.fromkeys((T.FLOAT, T.DOUBLE), "floating"),
    **dict.fromkeys((T.VARCHAR, T.CHAR, T.TEXT, T.NVARCHAR, T.NCHAR), "text"),
    T.BOOLEAN: "boolean",
    T.DATE: "date",
    **dict.fromkeys((T.TIMESTAMP, T.TIMESTAMPNTZ, T.DATETIME), "timestamp"),
}


@functools.lru_cache(maxsize=512)
def column_kind(sql_type: str) -> Kind | None:
    """The kind of a descriptor's column type, or None for kinds no predicate crosses with.

    >>> column_kind("decimal(15,2)")
    Kind(family='decimal', precision=15, scale=2)
    >>> column_kind("uuid") is None
    True
    """
    try:
        parsed = exp.DataType.build(sql_type, dialect="duckdb")
    except (ParseError, ValueError):
        return None
    if parsed.this in (T.DECIMAL, T.BIGDECIMAL):
        params = [int(p.this.this) for p in parsed.expressions]
        precision, scale = (params + [18, 3])[:2] if params else (18, 3)
        return Kind("decimal", precision, 0 if len(params) == 1 else scale)
    family = _FAMILIES.get(parsed.this)
    return Kind(family) if family else None


def crossing_kinds(product: Product, projections: Mapping[str, exp.Expression], *, dialect: str):
    """The kinds of the relation's output columns a predicate may read below its row filter:
    ``projections`` maps each output name to its expression in the governed relation, and only
    those that are the product's column as the store holds it (unmasked, not computed) count.
    ``dialect`` is the store's, to read a product defined by SQL."""
    plain = stored_as_is(product.descriptor.sql, dialect) if product.descriptor.sql else None
    types = {c.name: c.type for c in product.columns}
    kinds: dict[str, Kind] = {}
    for name, value in projections.items():
        if not isinstance(value, exp.Column) or value.name != name or name not in types:
            continue
        if plain is not None and name not in plain and "*" not in plain:
            continue
        kind = column_kind(types[name])
        if kind is not None:
            kinds[name] = kind
    return kinds


@functools.lru_cache(maxsize=256)
def stored_as_is(sql: str, dialect: str) -> frozenset[str]:
    """The output columns of a product's SQL that are a stored column, not computed: bare
    columns (or ``*``) of a single SELECT over tables, nothing when it is anything else."""
    try:
        query = exp.maybe_parse(sql, dialect=dialect)
    except ParseError:
        return frozenset()
    if not isinstance(query, exp.Select) or query.args.get("with_"):
        return frozenset()
    sources = [query.args.get("from_"), *(query.args.get("joins") or [])]
    if any(s is None or not isinstance(s.this, exp.Table) for s in sources):
        return frozenset()
    names = set()
    for projection in query.selects:
        value = projection.this if isinstance(projection, exp.Alias) else projection
        if isinstance(value, exp.Star) or (
            isinstance(value, exp.Column) and isinstance(value.this, exp.Star)
        ):
            names.add("*")
        elif isinstance(value, exp.Column):
            names.add(projection.alias_or_name)
    return frozenset(names)


_COMPARISONS = (
    exp.EQ, exp.NEQ, exp.GT, exp.GTE, exp.LT, exp.LTE, exp.NullSafeEQ, exp.NullSafeNEQ,
)  # fmt: skip


def is_safe(predicate: exp.Expression, *, alias: str, kinds: Mapping[str, Kind]) -> bool:
    """Whether ``predicate`` cannot fail on any row of the relation ``alias``, whose crossing
    columns are ``kinds`` (see the module's docstring for the set and why each is safe).

    >>> from sqlglot import parse_one
    >>> kinds = {"x": Kind("integer"), "s": Kind("text")}
    >>> is_safe(parse_one("t.x > 5 AND t.s IN ('a', 'b')"), alias="t", kinds=kinds)
    True
    >>> is_safe(parse_one("1 / (t.x - 5) > 0"), alias="t", kinds=kinds)
    False
    """
    node = predicate
    if isinstance(node, exp.Paren | exp.Not):
        return is_safe(node.this, alias=alias, kinds=kinds)
    if isinstance(node, exp.And | exp.Or):
        return all(is_safe(p, alias=alias, kinds=kinds) for p in (node.this, node.expression))
    if isinstance(node, exp.Boolean):
        return True
    column = _kind_of(node, alias, kinds)
    if column is not None:
        return column.family == "boolean"
    return _is_safe_test(node, alias=alias, kinds=kinds)


def _is_safe_test(node: exp.Expression, *, alias: str, kinds: Mapping[str, Kind]) -> bool:
    """``is_safe`` for one test of a column against literals (IS NULL, a comparison, BETWEEN,
    IN, LIKE)."""
    if isinstance(node, exp.Is):
        return _kind_of(node.this, alias, kinds) is not None and isinstance(
            node.expression, exp.Null
        )
    if isinstance(node, _COMPARISONS):
        left, right = node.this, node.expression
        kind = _kind_of(left, alias, kinds)
        if kind is None:
            left, right = right, left
            kind = _kind_of(left, alias, kinds)
        return kind is not None and fits(right, kind)
    if isinstance(node, exp.Between):
        kind = _kind_of(node.this, alias, kinds)
        return kind is not None and all(fits(node.args.get(k), kind) for k in ("low", "high"))
    if isinstance(node, exp.In):
        kind = _kind_of(node.this, alias, kinds)
        if kind is None or any(node.args.get(k) for k in ("query", "unnest", "field")):
            return False
        return bool(node.expressions) and all(fits(v, kind) for v in node.expressions)
    if isinstance(node, exp.Like | exp.ILike):
        kind = _kind_of(node.this, alias, kinds)
        pattern = node.expression
        return (
            kind is not None
            and kind.family == "text"
            and isinstance(pattern, exp.Literal)
            and pattern.is_string
            and not _is_parameter(pattern)
            and "\\" not in pattern.this
            and not node.args.get("escape")
        )
    return False


def _kind_of(node: exp.Expression | None, alias: str, kinds: Mapping[str, Kind]) -> Kind | None:
    if isinstance(node, exp.Column) and node.table == alias and not node.args.get("db"):
        return kinds.get(node.name)
    return None


_INTEGER = re.compile(r"\d+")
_DECIMAL = re.compile(r"(\d+)\.(\d+)")
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_TIMESTAMP = re.compile(r"\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}:\d{2}(\.\d{1,6})?")


def fits(value: exp.Expression | None, kind: Kind) -> bool:
    """Whether the literal ``value`` compares with a ``kind`` column without any cast that can
    fail on the column's values (or on the literal when a store parses it per row).

    >>> fits(exp.Literal.number("0.05"), Kind("decimal", 15, 2))
    True
    >>> fits(exp.Literal.number("0.125"), Kind("decimal", 15, 2))
    False
    """
    if isinstance(value, exp.Null):
        return True
    family = kind.family
    if family == "text":
        return isinstance(value, exp.Literal) and value.is_string
    if family == "boolean":
        return isinstance(value, exp.Boolean)
    if family == "date":
        return _typed_text(value, (T.DATE,), exp.DateStrToDate, _DATE, _valid_date)
    if family == "timestamp":
        return _typed_text(
            value, (T.TIMESTAMP, T.TIMESTAMPNTZ, T.DATETIME), exp.TimeStrToTime, _TIMESTAMP,
            _valid_timestamp,
        )  # fmt: skip
    number = _number(value)
    if number is None:
        return False
    integer, fraction = number
    if family == "integer":
        return fraction is None and _in_int64(value)
    if family == "floating":
        return (fraction is None and _in_int64(value)) or (
            fraction is not None and len(integer) + len(fraction) <= 38
        )
    if family == "decimal":
        # a parameter's class fixes its digits (a decimal's, 0 before the point included) or,
        # for an integer, only its width
        places = len(integer) if fraction is not None else _digits_bound(value, integer)
        return places <= kind.precision - kind.scale and len(fraction or "") <= kind.scale
    return False


def _number(value: exp.Expression | None) -> tuple[str, str | None] | None:
    """``(digits before the point, digits after it or None)`` of a plain number literal."""
    if isinstance(value, exp.Neg):
        value = value.this
    if not isinstance(value, exp.Literal) or value.is_string:
        return None
    if _INTEGER.fullmatch(value.this):
        return value.this, None
    match = _DECIMAL.fullmatch(value.this)
    return (match[1], match[2]) if match else None


def _signed(value: exp.Expression) -> int:
    if isinstance(value, exp.Neg):
        return -int(value.this.this)
    return int(value.this)


def _in_int64(value: exp.Expression) -> bool:
    return _signed(value) in INT64


def _digits_bound(value: exp.Expression, integer: str) -> int:
    """The digits an integer literal may have: its own, or for a parameter, those of any value of
    its class (a plan is rebound with others of the class)."""
    if not _is_parameter(value):
        return len(integer.lstrip("0"))
    signed = _signed(value)
    return 10 if signed in INT32 else 19 if signed in INT64 else len(integer)


def _is_parameter(value: exp.Expression) -> bool:
    """Whether ``value`` is a bound parameter (``-5`` is tagged on its minus)."""
    nodes = (value, value.this) if isinstance(value, exp.Neg) else (value,)
    return any(bool(n._meta) and TAG in n.meta for n in nodes)


def _typed_text(value, types, converted, pattern: re.Pattern, valid) -> bool:
    """``DATE 'text'`` (a cast of a string literal to one of ``types``) or the node a bound
    date/datetime parameter becomes (``converted``), its text a valid value."""
    if isinstance(value, exp.Cast) and value.to.this in types or isinstance(value, converted):
        text = value.this
    else:
        return False
    if not (isinstance(text, exp.Literal) and text.is_string and pattern.fullmatch(text.this)):
        return False
    return valid(text.this)


def _valid_date(text: str) -> bool:
    try:
        datetime.date.fromisoformat(text)
    except ValueError:
        return False
    return True


def _valid_timestamp(text: str) -> bool:
    try:
        parsed = datetime.datetime.fromisoformat(text)
    except ValueError:
        return False
    return parsed.tzinfo is None


_INERT = (
    exp.Paren, exp.And, exp.Or, exp.Not, exp.Boolean, exp.Null, exp.Literal, exp.Neg,
    exp.Column, exp.Identifier, exp.Star, exp.Is, exp.In, exp.Between, exp.Exists,
    exp.Subquery, exp.Select, exp.From, exp.Join, exp.Where, exp.Table, exp.TableAlias,
    exp.Alias, exp.Group, exp.Having, exp.Distinct, exp.Order, exp.Ordered, exp.Limit,
    exp.Count, exp.Max, exp.Min, exp.DataType, exp.DataTypeParam, *_COMPARISONS,
)  # fmt: skip
"""Nodes a row filter may be made of and still not fail on any row (literals are checked where
they are compared: a comparison of mismatched kinds fails when the statement is bound, at every
store, before any row is read)."""


def cannot_fail(row_filter: exp.Expression) -> bool:
    """Whether ``row_filter`` (with the governed relations it reads) is made only of parts that
    cannot fail on a row, so that a predicate beside it cannot change whether it fails.

    >>> from sqlglot import parse_one
    >>> cannot_fail(parse_one("k IN (SELECT n FROM t WHERE r = 'EU')"))
    True
    >>> cannot_fail(parse_one("CAST(code AS INT) = 5"))
    False
    """
    for node in row_filter.walk():
        if isinstance(node, exp.Like | exp.ILike):
            pattern = node.expression
            if not (isinstance(pattern, exp.Literal) and "\\" not in pattern.this):
                return False
        elif isinstance(node, exp.Cast):
            if not (fits(node, Kind("date")) or fits(node, Kind("timestamp"))):
                return False
        elif not isinstance(node, _INERT):
            return False
    return True

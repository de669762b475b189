"""Bound parameters: a statement is planned once per shape of its values, not once per value.

A client that prepares ``SELECT * FROM sales.orders WHERE o_orderkey = ?`` and runs it with a
new key each time must not pay for planning each time. ``bind_parameters`` puts the values in
the tree as literals tagged with their position (``meta["parameter"]``), so the rules plan with
real, typed values and the tags ride along wherever the rules move or copy them. A plan made
this way is a template: :func:`rebind` swaps the tagged literals of a fragment for other values.

The template is reused only for values of the same *class*, the part of a value that can change
a plan: its type, and for numbers the SQL type their literal gets (DuckDB and PostgreSQL type
``5`` as a 32-bit integer and ``5000000000`` as a 64-bit one, and ``1.25`` as DECIMAL(3,2)).
Values in LIMIT and OFFSET change the plan itself, so they are part of the key as they are.
"""

from __future__ import annotations

import datetime
import decimal
import functools
import re
import secrets
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

from sqlglot import exp

from gateway.errors import InvalidQuery
from gateway.planner.parse import parse_statement

if TYPE_CHECKING:
    from gateway.planner.state import PlanState

TAG = "parameter"
INT32 = range(-(2**31), 2**31)
INT64 = range(-(2**63), 2**63)


def bind(state: PlanState) -> PlanState:
    """The step: the statement's ``?`` placeholders replaced by its values (tagged literals)."""
    return replace(state, expression=bind_parameters(state.tree, state.parameters))


def bind_parameters(expression: exp.Expression, parameters: Sequence[object]) -> exp.Expression:
    """Replace ``?`` placeholders, in order, with SQL literals tagged with their position."""
    if not any(True for _ in expression.find_all(exp.Placeholder)) and not parameters:
        return expression
    expression = expression.copy()
    placeholders = in_written_order(expression)
    if len(placeholders) != len(parameters):
        raise InvalidQuery(
            f"the statement has {len(placeholders)} parameter(s) but {len(parameters)} value(s) "
            "were bound; bind one value per ?"
        )
    for index, (placeholder, value) in enumerate(zip(placeholders, parameters, strict=True)):
        placeholder.replace(literal(value, index))
    return expression


_MARK = re.compile(r"\$meshgate_parameter_(\d+)")


def in_written_order(expression: exp.Expression) -> list[exp.Placeholder]:
    """The ``?`` of ``expression`` in the order the statement has them, which values bind in.

    The tree's own walks do not follow the text (breadth-first visits a LIMIT before a
    subquery in WHERE), so each is marked and the order read from the SQL written back.
    """
    placeholders = list(expression.find_all(exp.Placeholder, bfs=False))
    if len(placeholders) < 2:
        return placeholders
    marked = expression.copy()
    for index, placeholder in enumerate(list(marked.find_all(exp.Placeholder, bfs=False))):
        placeholder.replace(exp.Placeholder(this=f"meshgate_parameter_{index}"))
    order = [int(index) for index in _MARK.findall(marked.sql(dialect="duckdb"))]
    if sorted(order) != list(range(len(placeholders))):
        return placeholders  # the statement quotes a mark itself; depth-first is the text's order
    return [placeholders[index] for index in order]


def literal(value: object, index: int) -> exp.Expression:
    """``value`` as SQL, tagged as parameter ``index``."""
    node = exp.convert(value)
    node.meta[TAG] = index
    return node


def slots_of(expression: exp.Expression) -> frozenset[int]:
    """The positions of the parameters whose values appear in ``expression``."""
    return frozenset(
        node.meta[TAG] for node in expression.find_all(exp.Expression) if _is_tagged(node)
    )


def rebind(expression: exp.Expression, parameters: Sequence[object]) -> exp.Expression:
    """``expression`` with each tagged literal holding the value bound at its position now."""

    def swap(node: exp.Expression) -> exp.Expression:
        if _is_tagged(node):
            return literal(parameters[node.meta[TAG]], node.meta[TAG])
        return node

    return expression.transform(swap, copy=True)


def _is_tagged(node: exp.Expression) -> bool:
    return bool(node._meta) and TAG in node.meta


PLAIN_PLACES = (
    exp.EQ, exp.NEQ, exp.GT, exp.GTE, exp.LT, exp.LTE, exp.In, exp.Between, exp.Alias, exp.Paren,
    exp.Add, exp.Sub, exp.Mul, exp.Div,
)  # fmt: skip
"""Where SQL generators write a value as it is, whatever it is: a value's text can be put in
place of another's there. Elsewhere (a function's argument, a LIKE pattern) a dialect may
rewrite the SQL around the value according to the value."""


class Template:
    """A query planned with some values, to write in ``dialect`` again with others.

    Writing the whole tree again costs about half a millisecond for a point query; when every
    value sits in a plain place, the SQL is kept as text with a gap per value instead, and only
    the values are written. The gaps are checked at plan time: the text with the planned values
    put back must be exactly the SQL sqlglot writes, or the tree is written every time.
    """

    def __init__(self, expression: exp.Expression, dialect: str, sql: str):
        self.expression = expression
        self.dialect = dialect
        self.slots = slots_of(expression)
        self._pieces: tuple[tuple[str, ...], tuple[int, ...]] | None = None
        tagged = [node for node in expression.find_all(exp.Expression) if _is_tagged(node)]
        if all(isinstance(node.parent, PLAIN_PLACES) for node in tagged):
            self._pieces = self._gaps(sql, [node.meta[TAG] for node in tagged])

    @classmethod
    def of(cls, expression: exp.Expression, dialect: str, sql: str) -> Template | None:
        """The template of ``expression`` (written as ``sql``), or None if it holds no value."""
        return cls(expression, dialect, sql) if slots_of(expression) else None

    def _gaps(self, sql: str, order: list[int]) -> tuple[tuple[str, ...], tuple[int, ...]] | None:
        mark = secrets.token_hex(8)
        marked = self.expression.copy()
        for node in [n for n in marked.find_all(exp.Expression) if _is_tagged(n)]:
            node.replace(exp.Literal.string(f"{mark}{node.meta[TAG]:05d}"))
        parts = re.split(f"'{mark}(\\d{{5}})'", marked.sql(dialect=self.dialect))
        pieces, slots = tuple(parts[0::2]), tuple(int(slot) for slot in parts[1::2])
        if len(slots) != len(order):
            return None
        gaps = (pieces, slots)
        planned = {
            node.meta[TAG]: node.sql(dialect=self.dialect)
            for node in self.expression.find_all(exp.Expression)
            if _is_tagged(node)
        }
        return gaps if self._fill(gaps, planned) == sql else None

    @staticmethod
    def _fill(gaps: tuple[tuple[str, ...], tuple[int, ...]], texts: Mapping[int, str]) -> str:
        pieces, slots = gaps
        written = [pieces[0]]
        for slot, piece in zip(slots, pieces[1:], strict=True):
            written += [texts[slot], piece]
        return "".join(written)

    @property
    def writes_text(self) -> bool:
        """Whether values are written into kept text (else the whole tree is written again)."""
        return self._pieces is not None

    def render(self, parameters: Sequence[object]) -> str:
        """The SQL with ``parameters`` bound (values of the classes it was planned with)."""
        if self._pieces is None:
            return rebind(self.expression, parameters).sql(dialect=self.dialect)
        texts = {
            slot: literal(parameters[slot], slot).sql(dialect=self.dialect) for slot in self.slots
        }
        return self._fill(self._pieces, texts)


@functools.lru_cache(maxsize=1024)
def in_limits(sql: str, dialect: str) -> tuple[bool, ...]:
    """For each ``?`` of the statement, whether it sits in a LIMIT, OFFSET or FETCH."""
    try:
        parsed = parse_statement(sql, dialect=dialect)
    except InvalidQuery:
        return ()
    return tuple(
        placeholder.find_ancestor(exp.Limit, exp.Offset, exp.Fetch) is not None
        for placeholder in in_written_order(parsed)
    )


def shape_key(sql: str, dialect: str, parameters: Sequence[object]) -> Hashable:
    """What of ``parameters`` a plan of ``sql`` depends on (see the module's docstring)."""
    limits = in_limits(sql, dialect)
    return tuple(
        exact_key([value]) if index < len(limits) and limits[index] else value_class(value)
        for index, value in enumerate(parameters)
    )


def exact_key(parameters: Sequence[object]) -> Hashable:
    """The values themselves, with their types (``1``, ``1.0`` and ``True`` differ)."""
    return tuple((type(value), repr(value)) for value in parameters)


_DIGIT = re.compile(r"\d")


def value_class(value: object) -> Hashable:
    """The type a value's literal gets at the stores, as far as it can differ between values."""
    if value is None or isinstance(value, bool | str | bytes):
        return type(value)
    if isinstance(value, int):
        return int, "int32" if value in INT32 else "int64" if value in INT64 else "huge"
    if isinstance(value, float | decimal.Decimal):
        # the literal's digits before and after the point decide its DECIMAL(p, s) or DOUBLE
        return type(value), _DIGIT.sub("9", exp.convert(value).sql())
    if isinstance(value, datetime.datetime):
        return type(value), value.tzinfo is not None
    if isinstance(value, datetime.date | datetime.time):
        return type(value)
    return type(value), repr(value)  # anything else is planned for its value alone

"""Row filters: SQL predicates over a product's columns, with principal attributes bound safely.

A filter is written in DuckDB's dialect and may use principal attributes as ``${name}``::

    c_nationkey IN (SELECT n_nationkey FROM reference.nation
                    JOIN reference.region ON n_regionkey = r_regionkey
                    WHERE r_name = ${region})

``${name}`` is parsed into a placeholder node once, at load; binding replaces the node with a
string literal node, so a value is never pasted into SQL text and sqlglot quotes it for each
store's dialect. Subqueries may read other products by address, never physical tables.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import sqlglot
from sqlglot import exp
from sqlglot.errors import ParseError, TokenError

ATTRIBUTE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
ATTRIBUTE_META = "attribute"
_FORBIDDEN = (exp.DML, exp.DDL, exp.Command, exp.Into)


@dataclass(frozen=True)
class RowFilter:
    """A parsed, checked filter predicate; ``${name}`` placeholders still unbound."""

    text: str
    predicate: exp.Expression
    attributes: tuple[str, ...]
    """Principal attributes the predicate uses, in order of first use."""
    reads: tuple[str, ...]
    """Product addresses its subqueries read."""

    @property
    def is_true(self) -> bool:
        return isinstance(self.predicate, exp.Boolean) and self.predicate.this is True

    def bind(self, attributes: Mapping[str, str]) -> exp.Expression | None:
        """The predicate with each ``${name}`` replaced by a string literal of the principal's
        value; None when the principal lacks one of the attributes (the grant gives no rows)."""
        if any(name not in attributes for name in self.attributes):
            return None

        def literal(node: exp.Expression) -> exp.Expression:
            if isinstance(node, exp.Placeholder) and ATTRIBUTE_META in node.meta:
                return exp.Literal.string(str(attributes[node.meta[ATTRIBUTE_META]]))
            return node

        return self.predicate.transform(literal, copy=True)


def parse_row_filter(text: str, *, addresses: Iterable[str]) -> RowFilter:
    """Parse and check a filter; ValueError with a message saying what to fix.

    ``addresses`` are the product addresses subqueries may read.
    """
    names = ATTRIBUTE.findall(text)
    try:
        statements = sqlglot.parse(ATTRIBUTE.sub(r":\1", text), read="duckdb")
    except (ParseError, TokenError) as error:
        raise ValueError(f"not valid SQL: {_first_line(error)}") from None
    statements = [s for s in statements if s is not None]
    if len(statements) != 1:
        raise ValueError(f"give one predicate, not {len(statements)} statements")
    (predicate,) = statements
    if isinstance(predicate, exp.Query):
        raise ValueError("give a predicate such as `c_nationkey = 7`, not a query")
    for node in predicate.walk():
        if isinstance(node, _FORBIDDEN):
            raise ValueError(f"a filter may only read; remove {node.key.upper()}")
    placeholders = list(predicate.find_all(exp.Placeholder))
    if sorted(p.name for p in placeholders) != sorted(names):
        raise ValueError(
            "write principal attributes as ${name} outside string literals (e.g. "
            "`r_name = ${region}`); other placeholders (?, :name, $1) are not allowed"
        )
    for placeholder in placeholders:
        placeholder.meta[ATTRIBUTE_META] = placeholder.name
    _check_outer_level(predicate)
    reads = _check_tables(predicate, set(addresses))
    return RowFilter(
        text=text,
        predicate=predicate,
        attributes=tuple(dict.fromkeys(names)),
        reads=tuple(reads),
    )


def unknown_columns(row_filter: RowFilter, columns: Iterable[str]) -> list[str]:
    """Column names the filter uses that are neither in ``columns`` (the filtered product's and
    the products it reads) nor aliases it defines itself."""
    known = set(columns)
    for node in row_filter.predicate.walk():
        if isinstance(node, exp.Alias | exp.CTE | exp.TableAlias):
            known.add(node.alias_or_name)
        if isinstance(node, exp.TableAlias):
            known.update(c.name for c in node.columns)
    return sorted({c.name for c in row_filter.predicate.find_all(exp.Column)} - known)


def _check_outer_level(predicate: exp.Expression) -> None:
    for node in predicate.walk():
        if node.find_ancestor(exp.Query) is not None:
            continue
        if isinstance(node, exp.AggFunc | exp.Window):
            raise ValueError(f"{node.sql('duckdb')} aggregates rows; a filter decides one row")
        if isinstance(node, exp.Column) and node.table:
            raise ValueError(
                f"write the product's own columns unqualified ({node.name}, not "
                f"{node.sql('duckdb')}); the filter runs over the product itself"
            )


def _check_tables(predicate: exp.Expression, addresses: set[str]) -> list[str]:
    cte_names = {cte.alias_or_name for cte in predicate.find_all(exp.CTE)}
    reads: list[str] = []
    for table in predicate.find_all(exp.Table):
        if not isinstance(table.this, exp.Identifier) or table.args.get("catalog") is not None:
            raise ValueError(
                f"{table.sql('duckdb')} is not a product address; read <domain>.<product>"
            )
        if not table.db and table.name in cte_names:
            continue
        address = f"{table.db}.{table.name}".lower()
        if not table.db or address not in addresses:
            raise ValueError(
                f"{table.sql('duckdb')} is not a product of this mesh; a filter reads products by "
                "address (<domain>.<product>), never physical tables"
            )
        if address not in reads:
            reads.append(address)
    return reads


def _first_line(error: Exception) -> str:
    return str(error).strip().splitlines()[0]

"""infer_schema: the Arrow schema of a query's answer, known before any store is asked.

The governed query runs in an in-memory DuckDB over empty tables that carry each product's
contract schema. That binds every name and type (unknown columns fail here with DuckDB's message
and its suggestions) and gives the schema a prepared statement reports; every stream is then
served in exactly this schema, whichever store computed it.
"""

from __future__ import annotations

import re
from dataclasses import replace

import duckdb
import pyarrow as pa
from sqlglot import exp

from gateway.errors import InvalidQuery
from gateway.local_engine import local_engine
from gateway.planner.context import PlanContext
from gateway.planner.names import EMPTY
from gateway.planner.sources import source_address, sources_of
from gateway.planner.state import PlanState
from gateway.types import serving_type


def infer_schema(state: PlanState) -> PlanState:
    """The step: the answer's schema (see :func:`schema_of`)."""
    return replace(state, schema=schema_of(state.tree, context=state.context))


def schema_of(expression: exp.Expression, *, context: PlanContext) -> pa.Schema:
    """The Arrow schema of a governed ``expression``'s answer; InvalidQuery when it does not
    bind (an unknown column, a type error), with DuckDB's message in the client's names."""
    con = local_engine()
    try:
        names: dict[str, str] = {}
        for source in sources_of(expression):
            address = source_address(source)
            if address not in names:
                names[address] = f"{EMPTY}{len(names) + 1}"
                con.register(
                    names[address], context.mesh.products[address].arrow_schema().empty_table()
                )

        def empty(node: exp.Expression) -> exp.Expression:
            address = source_address(node)
            if address is not None:
                table = exp.to_table(names[address])
                alias = node.args.get("alias")
                if alias is not None:  # a planned fragment's columns name the source's alias
                    table.set("alias", alias.copy())
                return table
            return node

        query = expression.transform(empty, copy=True)
        sql = exp.select("*").from_(query.subquery("q")).limit(0).sql(dialect="duckdb")
        try:
            schema = con.execute(sql).to_arrow_reader().schema
        except duckdb.Error as exc:
            message = _clean(str(exc), names)
            hint = _version_hint(message, list(names), context)
            raise InvalidQuery(f"{message}; {hint or 'fix the query'}") from None
    finally:
        con.close()
    return pa.schema([pa.field(f.name, serving_type(f.type)) for f in schema])


_UNKNOWN_COLUMN = re.compile(r'column (?:named )?"([^"]+)"')


def _clean(message: str, names: dict[str, str]) -> str:
    """DuckDB's message, with the gateway's internal relation names turned back into addresses."""
    for address, name in names.items():
        message = message.replace(name, address)
    # DuckDB quotes the rewritten SQL after "LINE n:"; it holds governed relations, never shown
    message = message.split("\nLINE ")[0].split("\n\n")[0].replace("Binder Error: ", "")
    message = message.replace("!\nCandidate bindings:", "; candidates:")
    # a governed relation is a derived table, which DuckDB calls a "values list"
    message = re.sub(
        r'^Values list ("[^"]+") does not have a column named',
        r"relation \1 has no column",
        message,
    )
    return message.strip()


def _version_hint(message: str, addresses: list[str], context: PlanContext) -> str:
    """Where an unknown column lives when another version of a product the query reads has it:
    ``sales.orders is v2, which does not have o_comment; sales.orders_v1 has it``."""
    match = _UNKNOWN_COLUMN.search(message)
    if match is None:
        return ""
    column = match.group(1).lower()
    products = context.mesh.products
    for address in addresses:
        product = products[address]
        if any(c.name == column for c in product.columns):
            continue
        having = sorted(
            other
            for other, version in products.items()
            if other == version.versioned_address
            and (version.domain, version.name) == (product.domain, product.name)
            and any(c.name == column for c in version.columns)
        )
        if having:
            shown = (
                address
                if address == product.versioned_address
                else (f"{address} is v{product.version}, which")
            )
            verb = "has" if len(having) == 1 else "have"
            return (
                f"{shown} does not have {column}; {' and '.join(having)} {verb} it: read that "
                "version or fix the query"
            )
    return ""

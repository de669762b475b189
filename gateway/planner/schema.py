"""infer_schema: the Arrow schema of a query's answer, known before any store is asked.

The governed query runs in an in-memory DuckDB over empty tables that carry each product's
contract schema. That binds every name and type (unknown columns fail here with DuckDB's message
and its suggestions) and gives the schema a prepared statement reports; every stream is then
served in exactly this schema, whichever store computed it.
"""

from __future__ import annotations

import os
import re
import threading

import duckdb
import pyarrow as pa
from sqlglot import exp

from gateway.errors import InvalidQuery
from gateway.planner.context import PlanContext
from gateway.planner.sources import source_address, sources_of
from gateway.types import serving_type

_engine: tuple[int, duckdb.DuckDBPyConnection] | None = None
_engine_lock = threading.Lock()

LOCAL_ENGINE_CONFIG = {
    "enable_external_access": False,
    "lock_configuration": True,
    # DuckDB 1.5.5 can push a join's runtime filter below LIMIT/TOP_N, and a derived table's
    # LIMIT then keeps rows it should have dropped (tests/test_embedded_engine.py shows it)
    "disabled_optimizers": "join_filter_pushdown",
}


_engine_limits: dict[str, str] = {}


def configure_local_engine(*, memory_limit: int | None, temp_directory: str | None) -> None:
    """Bound the local engine's memory, spilling to ``temp_directory`` past it (sorts, joins
    and aggregates that DuckDB can spill). Its settings are locked once it opens, so a change
    opens a new engine for the queries that start from now on."""
    global _engine
    limits = {}
    if memory_limit is not None:
        limits["memory_limit"] = f"{max(memory_limit // 2**20, 16)}MiB"
    if temp_directory is not None:
        limits["temp_directory"] = temp_directory
    with _engine_lock:
        if limits != _engine_limits:
            _engine_limits.clear()
            _engine_limits.update(limits)
            _engine = None


def local_engine() -> duckdb.DuckDBPyConnection:
    """A connection to the gateway's own DuckDB: in memory, no file system, no network, settings
    locked. One database per process (opening one costs ~10 ms, a connection ~10 µs, and one
    thread pool serves every query); what a connection registers only it sees."""
    global _engine
    engine = _engine  # read once: no lock on the path every query takes
    if engine is None or engine[0] != os.getpid():  # a forked child opens its own
        with _engine_lock:
            if _engine is None or _engine[0] != os.getpid():
                config = {**LOCAL_ENGINE_CONFIG, **_engine_limits}
                _engine = (os.getpid(), duckdb.connect(config=config))
            engine = _engine
    return engine[1].cursor()


def infer_schema(expression: exp.Expression, *, context: PlanContext) -> pa.Schema:
    con = local_engine()
    try:
        names: dict[str, str] = {}
        for source in sources_of(expression):
            address = source_address(source)
            if address not in names:
                names[address] = f"__empty_{len(names) + 1}"
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

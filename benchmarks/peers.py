"""The systems the TPC-H benchmarks compare meshgate with, over the same stores and files.

- :func:`memory_baseline`: DuckDB with every table in memory (the reference answer);
- :func:`attach_baseline`: DuckDB with the stores ATTACHed (what a DuckDB user would do);
- :class:`TrinoDirect`: the real Trino single node over its catalogs for the same PostgreSQL,
  MariaDB and Parquet (what most teams deploy for federation), queried with its own client.

Trino answers in its own types (``avg`` of a decimal is a decimal at the input's scale where
DuckDB's is a double), so :func:`peer_difference` compares values, not types: numbers within
the rounding of the coarser side, everything else exactly.
"""

from __future__ import annotations

import contextlib
import decimal
import math
import os
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import sqlglot
from sqlglot import exp

from tests.support.stores import MARIADB, POSTGRES
from tests.support.tpch_mesh import FLOAT_TOLERANCE, TABLE_DOMAIN

Runner = Callable[[], pa.Table]


def memory_baseline(parquet_dir: Path):
    """DuckDB with every TPC-H table in memory, without the join filter pushdown that answers a
    join over a limited derived table wrongly now and then (duckdb/duckdb#22924), as the tests'
    reference and the gateway's local engine run."""
    import duckdb

    from gateway.demo import load_tpch_reference

    con = duckdb.connect(config={"disabled_optimizers": "join_filter_pushdown"})
    load_tpch_reference(con, parquet_dir)
    return con


def attach_baseline(mesh: Path):
    """DuckDB with the stores of the federated TPC-H mesh ``mesh`` ATTACHed read-only; each
    TPC-H table is a view over its store, so the queries run unchanged and DuckDB pushes filters
    and projections into the scanners as it does for the tables themselves."""
    import duckdb
    import duckdb_extensions
    import yaml

    os.environ.setdefault("HOME", tempfile.gettempdir())  # the extension loader needs one
    config = yaml.safe_load((mesh / "mesh.yaml").read_text(encoding="utf-8"))
    namespace = config["stores"]["supply_mysql"]["database"]  # PostgreSQL's schema too
    con = duckdb.connect()
    for extension in ("postgres_scanner", "mysql_scanner", "sqlite_scanner"):
        duckdb_extensions.import_extension(extension, con=con)
    pg, my = POSTGRES, MARIADB
    con.execute(
        f"ATTACH 'host={pg.host} port={pg.port} user={pg.user} dbname={pg.database}' AS pg "
        "(TYPE postgres, READ_ONLY)"
    )
    con.execute(
        f"ATTACH 'host={my.host} port={my.port} user={my.user} database={namespace}' AS my "
        "(TYPE mysql, READ_ONLY)"
    )
    con.execute(f"ATTACH '{mesh / 'stores' / 'reference.sqlite'}' AS lite (TYPE sqlite, READ_ONLY)")
    sources = {
        "sales": lambda table: f"pg.{namespace}.{table}",
        "supply": lambda table: f"my.{namespace}.{table}",
        "reference": lambda table: f"lite.{table}",
        "fulfillment": lambda table: (
            f"read_parquet('{mesh / 'stores' / 'lake' / table}/*.parquet')"
        ),
    }
    for table, domain in TABLE_DOMAIN.items():
        con.execute(f"CREATE VIEW {table} AS SELECT * FROM {sources[domain](table)}")
    return con


def duckdb_runner(con, sql: str) -> Runner:
    return lambda: con.execute(sql).to_arrow_reader().read_all()


# --- Trino ------------------------------------------------------------------------------------


def trino_sql(sql: str, names: dict[str, exp.Table], *, output: Sequence[str] | None = None) -> str:
    """A TPC-H query over the plain table names in Trino's SQL over Trino's names for them,
    qualified first (Trino groups by no output alias: Q15's ``GROUP BY supplier_no``).

    ``output`` names the answer's columns as DuckDB does: Trino names an unaliased expression
    ``_col5`` where DuckDB names it after its text (Q18's ``sum(l_quantity)``).
    """
    from sqlglot.optimizer.qualify import qualify

    from gateway.demo import TABLES

    schema = {t.name: {n: kind for n, kind, _, _ in t.columns} for t in TABLES}
    tree = qualify(sqlglot.parse_one(sql, read="duckdb"), schema=schema, dialect="duckdb")
    for table in tree.find_all(exp.Table):
        address = f"{TABLE_DOMAIN.get(table.name)}.{table.name}"
        if not table.db and address in names:
            relation = names[address].copy()
            if table.args.get("alias") is not None:
                relation.set("alias", table.args["alias"].copy())
            else:
                relation.set("alias", exp.TableAlias(this=exp.to_identifier(table.name)))
            table.replace(relation)
    if output is not None and isinstance(tree, exp.Select) and len(output) == len(tree.selects):
        for projection, name in zip(list(tree.selects), output, strict=True):
            if projection.alias_or_name != name:
                inner = projection.this if isinstance(projection, exp.Alias) else projection
                projection.replace(exp.alias_(inner.copy(), name, quoted=True))
    return tree.sql(dialect="trino")


def trino_runner(cursor, sql: str) -> Runner:
    """Trino's own client: submit, fetch every row (pages of JSON), the rows as an Arrow table
    with Trino's column names and the types Python's values infer."""

    def run() -> pa.Table:
        cursor.execute(sql)
        rows = cursor.fetchall()
        names = [column[0] for column in cursor.description]
        return pa.table({name: pa.array([row[i] for row in rows]) for i, name in enumerate(names)})

    return run


@dataclass
class TrinoDirect:
    """The real Trino over the catalogs that reach a federated TPC-H mesh's stores."""

    names: dict[str, exp.Table]
    """Product address -> Trino's relation for it (``postgresql.meshgate_tpch_sf1.orders``)."""
    cursor: object

    def runner(self, sql: str, *, output: Sequence[str] | None = None) -> Runner:
        """A runner of the TPC-H query ``sql`` (over plain table names) on Trino, its answer's
        columns named ``output`` (see :func:`trino_sql`)."""
        return trino_runner(self.cursor, trino_sql(sql, self.names, output=output))


def output_names(con, sql: str) -> list[str]:
    """The names DuckDB gives the columns of ``sql``'s answer (bound, not run)."""
    return [row[0] for row in con.execute(f"DESCRIBE {sql}").fetchall()]


@contextlib.contextmanager
def trino_direct(base: Path, scratch: Path) -> Iterator[TrinoDirect]:
    """Trino reaching ``base``'s stores: its lineitem files as an external Hive table and nation
    and region copied into PostgreSQL (Trino has no SQLite catalog), all dropped on exit."""
    from gateway.service import Gateway
    from tests.support.stores import trino_admin
    from tests.support.trino_mesh import trino_tpch_mesh

    with trino_tpch_mesh(base, scratch / "trino-direct", mode="trino", reference="postgres") as m:
        planner = Gateway.open(m)
        try:
            names = dict(planner.engine.names)
        finally:
            planner.close()
        connection = trino_admin()
        try:
            yield TrinoDirect(names=names, cursor=connection.cursor())
        finally:
            connection.close()


# --- comparing a peer's answer ----------------------------------------------------------------


def peer_difference(actual: pa.Table, expected: pa.Table) -> str | None:
    """How a peer's ordered answer differs from the reference, or None when it is the same.

    Column names and row count must match; numbers (of any type: a peer may answer a decimal
    where DuckDB answers a double) agree within ``FLOAT_TOLERANCE`` relative plus half a unit of
    the last digit of a decimal side, so a peer that rounds ``avg`` to its input's scale agrees;
    text, dates and NULLs exactly.
    """
    if actual.schema.names != expected.schema.names:
        return f"columns differ: {actual.schema.names} vs {expected.schema.names}"
    got, want = actual.to_pylist(), expected.to_pylist()
    if len(got) != len(want):
        return f"{len(got)} rows where {len(want)} were expected"
    for index, (row, wanted) in enumerate(zip(got, want, strict=True)):
        if not all(same_peer_value(row[k], wanted[k]) for k in wanted):
            return f"row {index} differs:\n  got      {row}\n  expected {wanted}"
    return None


_NUMBER = (int, float, decimal.Decimal)


def same_peer_value(actual: object, expected: object) -> bool:
    """Whether two engines' values are the same answer (see :func:`peer_difference`).

    >>> same_peer_value(decimal.Decimal("25.52"), 25.522005853257337)
    True
    >>> same_peer_value(decimal.Decimal("25.53"), 25.522005853257337)
    False
    """
    numbers = isinstance(actual, _NUMBER) and isinstance(expected, _NUMBER)
    if not numbers or isinstance(actual, bool) or isinstance(expected, bool):
        return type(actual) is type(expected) and actual == expected
    if isinstance(actual, float) and math.isnan(actual):
        return isinstance(expected, float) and math.isnan(expected)
    if isinstance(actual, int) and isinstance(expected, int):
        return actual == expected
    if _exponent(actual) is not None and _exponent(actual) == _exponent(expected):
        return actual == expected  # two decimals at one scale: both exact
    a, b = float(actual), float(expected)
    tolerance = FLOAT_TOLERANCE * max(abs(a), abs(b), 1.0)
    tolerance += _half_unit(actual) + _half_unit(expected)
    return abs(a - b) <= tolerance


def _exponent(value: object) -> int | None:
    """A finite decimal's exponent (-2 for ``Decimal('1.23')``); None for anything else."""
    if not isinstance(value, decimal.Decimal):
        return None
    exponent = value.as_tuple().exponent
    return exponent if isinstance(exponent, int) else None


def _half_unit(value: object) -> float:
    """Half a unit of a decimal's last digit (0.005 for ``Decimal('1.23')``); 0 otherwise."""
    exponent = _exponent(value)
    return 0.0 if exponent is None else 0.5 * 10.0**exponent

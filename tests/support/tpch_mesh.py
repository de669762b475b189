"""TPC-H split across four store kinds, the way issue 4's federated tests and benchmark need it.

:func:`build_tpch_mesh` lays the 8 TPC-H tables out as four domains would keep them::

    sales        customer, orders             PostgreSQL, schema  meshgate_tpch_sf<SF>
    supply       part, supplier, partsupp     MariaDB,    database meshgate_tpch_sf<SF>
    fulfillment  lineitem                     Parquet files under stores/lake/lineitem/
    reference    nation, region               SQLite,     stores/reference.sqlite

and writes the mesh directory (mesh.yaml, descriptors with the demo's column definitions,
policies granting principal ``admin`` every product, principals.yaml; the password is ``admin``).
The generated Parquet stays in ``<mesh>/tpch`` for the one-database reference
(:func:`gateway.demo.load_tpch_reference`).

Loading is idempotent: each server store holds a marker table written in the same transaction
(PostgreSQL) or after the last row (MariaDB, under a named lock), and a store whose marker records
this scale factor and these row counts is reused. Tables get their TPC-H primary keys, as a
domain's database would have them, so the stores can run the joins pushed to them.

The queries: :func:`tpch_query_texts` (DuckDB's tpch extension), :func:`to_addresses` to read
them over the mesh, and :func:`answer_difference`, the comparison tests and benchmarks share.
"""

from __future__ import annotations

import json
import math
import sqlite3
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import sqlglot
import yaml
from sqlglot import exp

from gateway.demo import TABLES, exclusive, generate_tpch, tpch_file, tpch_row_counts
from tests.support.mesh import grant_everything
from tests.support.stores import MARIADB, POSTGRES, Service

FORMAT = 1
"""Bump when the layout of the stores or the mesh changes: everything is loaded again."""
MARKER_TABLE = "meshgate_tpch_loaded"
MESH_MARKER = ".meshgate-tpch.json"
LAKE_ROWS_PER_GROUP = 122_880
PRINCIPAL = "admin"
FLOAT_TOLERANCE = 1e-9

DOMAIN_STORES = {
    "sales": "sales_pg",
    "supply": "supply_mysql",
    "fulfillment": "fulfillment_lake",
    "reference": "reference_db",
}
PRIMARY_KEYS = {
    "customer": ("c_custkey",),
    "orders": ("o_orderkey",),
    "part": ("p_partkey",),
    "supplier": ("s_suppkey",),
    "partsupp": ("ps_partkey", "ps_suppkey"),
    "nation": ("n_nationkey",),
    "region": ("r_regionkey",),
}
TABLE_DOMAIN = {table.name: table.domain for table in TABLES}

Progress = Callable[[str], None]


def store_namespace(scale_factor: float) -> str:
    """The PostgreSQL schema and MariaDB database of one scale factor: ``meshgate_tpch_sf0_01``."""
    return f"meshgate_tpch_sf{scale_factor:g}".replace(".", "_").replace("-", "_")


def build_tpch_mesh(
    directory: Path,
    *,
    scale_factor: float = 0.01,
    postgres: Service = POSTGRES,
    mariadb: Service = MARIADB,
    progress: Progress = print,
    namespace: str | None = None,
) -> Path:
    """The federated TPC-H mesh in ``directory``, built or reused; returns its absolute path.

    ``namespace`` names the PostgreSQL schema and MariaDB database (default
    :func:`store_namespace`, shared and kept between runs, for benchmarks); tests pass a unique
    one and drop it afterwards with :func:`drop_tpch_stores`.
    """
    directory = Path(directory).absolute()
    directory.mkdir(parents=True, exist_ok=True)
    namespace = namespace or store_namespace(scale_factor)
    with exclusive(directory):
        parquet_dir = generate_tpch(
            directory / "tpch", scale_factor=scale_factor, progress=progress
        )
        rows = tpch_row_counts(parquet_dir)
        marker = {"format": FORMAT, "scale_factor": scale_factor, "rows": rows}
        with tempfile.TemporaryDirectory(prefix="meshgate-tpch-") as scratch:
            exports = _Exports(parquet_dir, Path(scratch))
            _load_postgres(postgres, namespace, marker, exports, progress)
            _load_mariadb(mariadb, namespace, marker, exports, progress)
        if _read_marker(directory) != marker:
            (directory / MESH_MARKER).unlink(missing_ok=True)
            _write_lake(directory / "stores" / "lake", parquet_dir, progress)
            _write_sqlite(directory / "stores" / "reference.sqlite", parquet_dir, progress)
            _write_mesh_files(directory, namespace, postgres, mariadb)
            (directory / MESH_MARKER).write_text(json.dumps(marker, indent=2) + "\n")
    return directory


def drop_tpch_stores(
    namespace: str, *, postgres: Service = POSTGRES, mariadb: Service = MARIADB
) -> None:
    """Drop the PostgreSQL schema and MariaDB database a test's TPC-H mesh was loaded into."""
    import psycopg
    import pymysql
    from psycopg import sql

    with psycopg.connect(
        host=postgres.host,
        port=postgres.port,
        user=postgres.user,
        dbname=postgres.database,
        autocommit=True,
    ) as con:
        con.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(namespace)))
    con = pymysql.connect(host=mariadb.host, port=mariadb.port, user=mariadb.user, autocommit=True)
    try:
        with con.cursor() as cursor:
            cursor.execute(f"DROP DATABASE IF EXISTS `{namespace}`")
    finally:
        con.close()


# --- queries and answers ----------------------------------------------------------------------


def tpch_query_texts() -> dict[int, str]:
    """The 22 TPC-H queries of DuckDB's tpch extension, over the plain table names."""
    import duckdb_extensions

    con = _duckdb()
    try:
        duckdb_extensions.import_extension("tpch", con=con)
        return dict(con.execute("SELECT query_nr, query FROM tpch_queries()").fetchall())
    finally:
        con.close()


def to_addresses(sql: str) -> str:
    """``sql`` with each TPC-H table name replaced by its product address (``sales.orders``)."""
    tree = sqlglot.parse_one(sql, read="duckdb")
    for table in tree.find_all(exp.Table):
        if not table.db and table.name in TABLE_DOMAIN:
            table.set("db", exp.to_identifier(TABLE_DOMAIN[table.name]))
    return tree.sql(dialect="duckdb")


def to_table_names(sql: str) -> str:
    """The reverse of :func:`to_addresses`: the query a one-database reference runs."""
    tree = sqlglot.parse_one(sql, read="duckdb")
    for table in tree.find_all(exp.Table):
        if table.db in TABLE_DOMAIN.values():
            table.set("db", None)
    return tree.sql(dialect="duckdb")


def answer_difference(actual: pa.Table, expected: pa.Table, *, ordered: bool) -> str | None:
    """How ``actual`` differs from ``expected``, or None when they are the same answer.

    Names and types must be equal; integers, strings, dates and decimals compare exactly,
    floats within a relative ``FLOAT_TOLERANCE`` (stores sum and average in their own order).
    Unordered answers are compared as multisets.
    """
    if actual.schema.names != expected.schema.names:
        return f"columns differ: {actual.schema.names} vs {expected.schema.names}"
    if actual.schema.types != expected.schema.types:
        return f"types differ:\n{actual.schema}\nvs\n{expected.schema}"
    got, want = actual.to_pylist(), expected.to_pylist()
    if not ordered:
        got.sort(key=_sort_key)
        want.sort(key=_sort_key)
    if len(got) != len(want):
        return f"{len(got)} rows where {len(want)} were expected"
    for index, (row, wanted) in enumerate(zip(got, want, strict=True)):
        if not all(_same_value(row[k], wanted[k]) for k in wanted):
            return f"row {index} differs:\n  got      {row}\n  expected {wanted}"
    return None


def _same_value(actual: object, expected: object) -> bool:
    if isinstance(actual, float) and isinstance(expected, float):
        if math.isnan(actual) or math.isnan(expected):
            return math.isnan(actual) and math.isnan(expected)
        return math.isclose(actual, expected, rel_tol=FLOAT_TOLERANCE, abs_tol=FLOAT_TOLERANCE)
    return type(actual) is type(expected) and actual == expected


def _sort_key(row: dict[str, object]) -> tuple:
    """Rows in a canonical order: NULLs first, floats rounded so near-equal ones sort together."""
    return tuple(
        (value is not None, round(value, 6) if isinstance(value, float) else value)
        for value in row.values()
    )


# --- the server stores ------------------------------------------------------------------------


class _Exports:
    """Tab-separated copies of the generated tables, written once, for COPY and LOAD DATA."""

    def __init__(self, parquet_dir: Path, scratch: Path):
        self.parquet_dir = parquet_dir
        self.scratch = scratch

    def path(self, table: str) -> Path:
        target = self.scratch / f"{table}.tsv"
        if not target.exists():
            names = ", ".join(_column_names(table))
            source = _sql_string(tpch_file(self.parquet_dir, table))
            _duckdb().execute(
                f"COPY (SELECT {names} FROM read_parquet({source})) TO {_sql_string(target)} "
                "(FORMAT csv, DELIMITER '\t', HEADER false, QUOTE '', ESCAPE '')"
            )
        return target


def _load_postgres(
    service: Service, schema: str, marker: dict[str, Any], exports: _Exports, progress: Progress
) -> None:
    """customer and orders into ``schema``, in one transaction that ends with the marker."""
    import psycopg
    from psycopg import sql

    tables = _tables_of("sales")
    with psycopg.connect(
        host=service.host, port=service.port, user=service.user, dbname=service.database
    ) as con:
        con.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (schema,))
        if _postgres_marker(con, schema) == marker:
            progress(f"reusing PostgreSQL schema {schema}")
            return
        progress(f"loading {', '.join(tables)} into PostgreSQL schema {schema}…")
        con.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))
        con.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
        for table in tables:
            started = time.perf_counter()
            con.execute(_create_table(f'"{schema}"."{table}"', table))
            copy = f'COPY "{schema}"."{table}" FROM STDIN (FORMAT text, DELIMITER E\'\\t\')'
            source = exports.path(table)
            with con.cursor().copy(copy) as sink, source.open("rb") as tsv:
                _copy_with_progress(tsv, sink, source.stat().st_size, table, progress)
            keys = ", ".join(PRIMARY_KEYS[table])
            con.execute(f'ALTER TABLE "{schema}"."{table}" ADD PRIMARY KEY ({keys})')
            progress(f"  {table}: {marker['rows'][table]:,} rows in {_since(started)}")
        con.execute(f'CREATE TABLE "{schema}".{MARKER_TABLE} (content text NOT NULL)')
        con.execute(f'INSERT INTO "{schema}".{MARKER_TABLE} VALUES (%s)', (json.dumps(marker),))
        con.commit()
        con.autocommit = True
        for table in tables:
            con.execute(f'ANALYZE "{schema}"."{table}"')


PROGRESS_BYTES = 256 << 20
"""How often a long COPY says how far it got."""


def _copy_with_progress(source: Any, sink: Any, size: int, table: str, progress: Progress) -> None:
    copied, reported = 0, 0
    while chunk := source.read(1 << 20):
        sink.write(chunk)
        copied += len(chunk)
        if copied - reported >= PROGRESS_BYTES:
            reported = copied
            progress(f"  {table}: {copied / 1e6:,.0f} of {size / 1e6:,.0f} MB copied")


def _since(started: float) -> str:
    return f"{time.perf_counter() - started:.1f} s"


def _postgres_marker(con: Any, schema: str) -> dict[str, Any] | None:
    found = con.execute(
        "SELECT 1 FROM information_schema.tables WHERE table_schema = %s AND table_name = %s",
        (schema, MARKER_TABLE),
    ).fetchone()
    if found is None:
        return None
    row = con.execute(f'SELECT content FROM "{schema}".{MARKER_TABLE}').fetchone()
    return json.loads(row[0]) if row else None


def _load_mariadb(
    service: Service, database: str, marker: dict[str, Any], exports: _Exports, progress: Progress
) -> None:
    """part, supplier and partsupp into ``database``; the marker is written after the last row.

    MariaDB's DDL is not transactional, so builders take a named lock and a half-loaded
    database (no marker) is dropped and loaded again.
    """
    import pymysql

    tables = _tables_of("supply")
    con = pymysql.connect(
        host=service.host,
        port=service.port,
        user=service.user,
        autocommit=True,
        local_infile=True,
    )
    try:
        with con.cursor() as cursor:
            cursor.execute("SELECT GET_LOCK(%s, 600)", (database,))
            try:
                if _mariadb_marker(cursor, database) == marker:
                    progress(f"reusing MariaDB database {database}")
                    return
                progress(f"loading {', '.join(tables)} into MariaDB database {database}…")
                cursor.execute(f"DROP DATABASE IF EXISTS `{database}`")
                cursor.execute(f"CREATE DATABASE `{database}`")
                for table in tables:
                    started = time.perf_counter()
                    # InnoDB loads fastest into its clustered key; 255 holds every TPC-H text
                    ddl = _create_table(
                        f"`{database}`.`{table}`", table, text_type="varchar(255)", primary_key=True
                    )
                    cursor.execute(ddl)
                    cursor.execute(
                        f"LOAD DATA LOCAL INFILE %s INTO TABLE `{database}`.`{table}` "
                        "FIELDS TERMINATED BY '\t' ESCAPED BY ''",
                        (str(exports.path(table)),),
                    )
                    cursor.execute(f"ANALYZE TABLE `{database}`.`{table}`")
                    cursor.fetchall()
                    progress(f"  {table}: {marker['rows'][table]:,} rows in {_since(started)}")
                cursor.execute(f"CREATE TABLE `{database}`.{MARKER_TABLE} (content TEXT NOT NULL)")
                cursor.execute(
                    f"INSERT INTO `{database}`.{MARKER_TABLE} VALUES (%s)", (json.dumps(marker),)
                )
            finally:
                cursor.execute("SELECT RELEASE_LOCK(%s)", (database,))
    finally:
        con.close()


def _mariadb_marker(cursor: Any, database: str) -> dict[str, Any] | None:
    cursor.execute(
        "SELECT 1 FROM information_schema.tables WHERE table_schema = %s AND table_name = %s",
        (database, MARKER_TABLE),
    )
    if cursor.fetchone() is None:
        return None
    cursor.execute(f"SELECT content FROM `{database}`.{MARKER_TABLE}")
    row = cursor.fetchone()
    return json.loads(row[0]) if row else None


# --- the files in the mesh directory ----------------------------------------------------------


def _write_lake(root: Path, parquet_dir: Path, progress: Progress) -> None:
    """lineitem as Parquet with plain strings (tpchgen-cli writes string_view), in key order."""
    for table in _tables_of("fulfillment"):
        progress(f"writing {table} as Parquet under {root}…")
        folder = root / table
        folder.mkdir(parents=True, exist_ok=True)
        for old in folder.glob("*.parquet"):
            old.unlink()
        names = ", ".join(_column_names(table))
        source = _sql_string(tpch_file(parquet_dir, table))
        _duckdb().execute(
            f"COPY (SELECT {names} FROM read_parquet({source})) "
            f"TO {_sql_string(folder / f'{table}-0.parquet')} "
            f"(FORMAT parquet, ROW_GROUP_SIZE {LAKE_ROWS_PER_GROUP})"
        )


def _write_sqlite(path: Path, parquet_dir: Path, progress: Progress) -> None:
    """nation and region into a fresh SQLite file, declared with the contract types."""
    progress(f"writing {', '.join(_tables_of('reference'))} into SQLite {path}…")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    lite = sqlite3.connect(path)
    try:
        with lite:
            for table in _tables_of("reference"):
                lite.execute(_create_table(table, table, primary_key=True))
                names = _column_names(table)
                rows = (
                    _duckdb()
                    .execute(
                        f"SELECT {', '.join(names)} FROM read_parquet("
                        f"{_sql_string(tpch_file(parquet_dir, table))})"
                    )
                    .fetchall()
                )  # 30 rows at most: nation and region do not grow with the scale
                marks = ", ".join("?" for _ in names)
                lite.executemany(f"INSERT INTO {table} VALUES ({marks})", rows)
    finally:
        lite.close()


def _write_mesh_files(directory: Path, namespace: str, postgres: Service, mariadb: Service) -> None:
    stores = {
        "sales_pg": {
            "kind": "postgres",
            "dsn": f"postgresql://{postgres.user}@{postgres.host}:{postgres.port}/"
            f"{postgres.database}",
        },
        "supply_mysql": {
            "kind": "mysql",
            "host": mariadb.host,
            "port": mariadb.port,
            "user": mariadb.user,
            "database": namespace,
        },
        "fulfillment_lake": {"kind": "files", "root": "stores/lake"},
        "reference_db": {"kind": "sqlite", "path": "stores/reference.sqlite"},
    }
    _write_yaml(directory / "mesh.yaml", {"name": "tpch", "stores": stores})
    physical = {
        "sales": lambda table: f"{namespace}.{table}",
        "supply": lambda table: table,
        "fulfillment": lambda table: f"{table}/*.parquet",
        "reference": lambda table: table,
    }
    for table in TABLES:
        descriptor = {
            "product": table.name,
            "version": 1,
            "owner": f"{table.domain}-data@tpch.example",
            "description": table.description,
            "store": DOMAIN_STORES[table.domain],
            "table": physical[table.domain](table.name),
            "columns": [
                {"name": name, "type": ctype, "classification": classification}
                for name, ctype, classification, _ in table.columns
            ],
        }
        _write_yaml(directory / table.domain / f"{table.name}.yaml", descriptor)
    grant_everything(directory, principal=PRINCIPAL, role="admin")


# --- helpers ----------------------------------------------------------------------------------


def _tables_of(domain: str) -> list[str]:
    return [table.name for table in TABLES if table.domain == domain]


def _column_names(table: str) -> list[str]:
    (found,) = (t for t in TABLES if t.name == table)
    return [name for name, *_ in found.columns]


def _create_table(
    qualified_name: str, table: str, *, text_type: str = "varchar", primary_key: bool = False
) -> str:
    """DDL with the contract types; ``text_type`` for varchar (MariaDB needs a length)."""
    (found,) = (t for t in TABLES if t.name == table)
    columns = [
        f"{name} {text_type if ctype == 'varchar' else ctype} NOT NULL"
        for name, ctype, _, _ in found.columns
    ]
    if primary_key:
        columns.append(f"PRIMARY KEY ({', '.join(PRIMARY_KEYS[table])})")
    return f"CREATE TABLE {qualified_name} ({', '.join(columns)})"


def _duckdb() -> duckdb.DuckDBPyConnection:
    """A private in-memory DuckDB (the module-level default connection is shared)."""
    return duckdb.connect()


def _read_marker(directory: Path) -> dict[str, Any] | None:
    try:
        return json.loads((directory / MESH_MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _write_yaml(path: Path, content: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    header = "# Generated by tests/support/tpch_mesh.py.\n"
    path.write_text(header + yaml.safe_dump(content, sort_keys=False, width=100), encoding="utf-8")


def _sql_string(value: Path | str) -> str:
    return "'" + str(value).replace("'", "''") + "'"

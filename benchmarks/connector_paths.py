"""Which Arrow path should the PostgreSQL and MySQL/MariaDB connectors use? Measure them.

Loads a TPC-H-like ``lineitem`` (1.5M rows by default: bigint, integer, decimal(15,2), double,
date, varchar, timestamptz) and a 200k-row ``part`` into PostgreSQL (schema ``meshgate_bench``)
and MariaDB (database ``meshgate_bench``), once: a second run reuses them. Then, in one run, it
reads the table to Arrow through every candidate path several times and prints medians, MB/s
(of the table's Arrow size in contract types) and the ratio to the best path. A connector runs
whole queries written in the store's dialect, so it also times a pushed-down join + aggregate
through each passthrough path and prints the Arrow type each path gives ``sum(decimal)``.

    .venv/bin/python benchmarks/connector_paths.py [--rows 1500000] [--repeat 3]

Stores: PostgreSQL at ``MESHGATE_PG_DSN`` (default postgresql://postgres@127.0.0.1:5432/test),
MariaDB at ``MESHGATE_MYSQL_HOST``/``_PORT``/``_USER`` (default root@127.0.0.1:3306).
connectorx and arrow-odbc (with the MariaDB ODBC driver) are measured when installed.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import duckdb
import pyarrow as pa

SCHEMA = "meshgate_bench"
PG_DSN = os.environ.get("MESHGATE_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test")
MY_HOST = os.environ.get("MESHGATE_MYSQL_HOST", "127.0.0.1")
MY_PORT = int(os.environ.get("MESHGATE_MYSQL_PORT", "3306"))
MY_USER = os.environ.get("MESHGATE_MYSQL_USER", "root")

COLUMNS = """
    i AS l_orderkey,
    (i * 7919) % 200000 AS l_partkey,
    (i % 50 + 1)::INTEGER AS l_quantity,
    ((i % 100000) * 1.37 + 900)::DECIMAL(15, 2) AS l_extendedprice,
    ((i % 11) / 100.0)::DOUBLE AS l_discount,
    DATE '1992-01-01' + (i % 2500)::INTEGER AS l_shipdate,
    'ships ' || md5(i::VARCHAR)[:(i % 30)::INTEGER + 4] AS l_comment,
    TIMESTAMPTZ '1992-01-01 00:00:00+00' + to_seconds(i * 37) AS l_commit_ts
"""
PG_DDL = """CREATE TABLE {schema}.lineitem (l_orderkey bigint, l_partkey bigint, l_quantity integer,
  l_extendedprice numeric(15,2), l_discount double precision, l_shipdate date,
  l_comment varchar(44), l_commit_ts timestamptz)"""
MY_DDL = """CREATE TABLE {schema}.lineitem (l_orderkey bigint, l_partkey bigint, l_quantity int,
  l_extendedprice decimal(15,2), l_discount double, l_shipdate date, l_comment varchar(44),
  l_commit_ts timestamp(6) NULL)"""
PART_DDL = "CREATE TABLE {schema}.part (p_partkey bigint PRIMARY KEY, p_brand varchar(10))"

SCAN = f"SELECT * FROM {SCHEMA}.lineitem"
PUSHED = f"""SELECT p.p_brand, count(*) AS n, sum(l.l_extendedprice) AS revenue
FROM {SCHEMA}.lineitem l JOIN {SCHEMA}.part p ON l.l_partkey = p.p_partkey
WHERE l.l_shipdate >= DATE '1995-01-01' GROUP BY p.p_brand ORDER BY p.p_brand"""


def duckdb_with(*extensions: str) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection with scanner extensions installed from their PyPI packages (offline)."""
    import duckdb_extensions

    os.environ.setdefault("HOME", tempfile.gettempdir())
    con = duckdb.connect()
    for name in extensions:
        duckdb_extensions.import_extension(name, con=con)
        con.execute(f"LOAD {name}")
    return con


def pg_libpq() -> str:
    return PG_DSN


def my_libpq() -> str:
    return f"host={MY_HOST} port={MY_PORT} user={MY_USER} database={SCHEMA}"


def generate(rows: int) -> tuple[duckdb.DuckDBPyConnection, int]:
    """The tables in an in-memory DuckDB, and the Arrow size of lineitem in contract types."""
    con = duckdb_with("postgres_scanner", "mysql_scanner")
    con.execute("SET TimeZone = 'UTC'")
    con.execute(f"CREATE TABLE lineitem AS SELECT {COLUMNS} FROM range({rows}) t(i)")
    con.execute(
        "CREATE TABLE part AS SELECT i AS p_partkey, 'Brand#' || (i % 25 + 1) AS p_brand "
        "FROM range(200000) t(i)"
    )
    size = con.sql("SELECT * FROM lineitem").to_arrow_table().nbytes
    return con, size


def load_postgres(con: duckdb.DuckDBPyConnection, rows: int) -> None:
    import psycopg

    with psycopg.connect(PG_DSN, autocommit=True) as pg:
        found = pg.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = %s", (SCHEMA,)
        ).fetchone()[0]
        if (
            found == 2
            and pg.execute(f"SELECT count(*) FROM {SCHEMA}.lineitem").fetchone()[0] == rows
        ):
            return
        pg.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")
        pg.execute(f"CREATE SCHEMA {SCHEMA}")
        pg.execute(PG_DDL.format(schema=SCHEMA))
        pg.execute(PART_DDL.format(schema=SCHEMA))
    print(f"loading {rows:,} rows into PostgreSQL {SCHEMA}.lineitem ...", flush=True)
    con.execute(f"ATTACH '{pg_libpq()}' AS pg_load (TYPE postgres)")
    con.execute(f"INSERT INTO pg_load.{SCHEMA}.lineitem SELECT * FROM lineitem")
    con.execute(f"INSERT INTO pg_load.{SCHEMA}.part SELECT * FROM part")
    con.execute("DETACH pg_load")
    with psycopg.connect(PG_DSN, autocommit=True) as pg:
        pg.execute(f"ANALYZE {SCHEMA}.lineitem")


def load_mysql(con: duckdb.DuckDBPyConnection, rows: int) -> None:
    """MariaDB loads fastest from CSV with LOAD DATA LOCAL INFILE, in UTC."""
    import pymysql

    my = pymysql.connect(host=MY_HOST, port=MY_PORT, user=MY_USER, local_infile=True)
    try:
        with my.cursor() as cur:
            cur.execute("SET time_zone = '+00:00'")
            cur.execute(
                "SELECT count(*) FROM information_schema.tables WHERE table_schema = %s", (SCHEMA,)
            )
            if cur.fetchone()[0] == 2:
                cur.execute(f"SELECT count(*) FROM {SCHEMA}.lineitem")
                if cur.fetchone()[0] == rows:
                    return
            print(f"loading {rows:,} rows into MariaDB {SCHEMA}.lineitem ...", flush=True)
            cur.execute(f"DROP DATABASE IF EXISTS {SCHEMA}")
            cur.execute(f"CREATE DATABASE {SCHEMA}")
            cur.execute(MY_DDL.format(schema=SCHEMA))
            cur.execute(PART_DDL.format(schema=SCHEMA))
            with tempfile.TemporaryDirectory() as tmp:
                for table in ("lineitem", "part"):
                    path = Path(tmp) / f"{table}.csv"
                    con.execute(
                        f"COPY (SELECT * FROM {table}) TO '{path}' "
                        "(HEADER false, TIMESTAMPFORMAT '%Y-%m-%d %H:%M:%S')"
                    )
                    cur.execute(
                        f"LOAD DATA LOCAL INFILE '{path}' INTO TABLE {SCHEMA}.{table} "
                        "FIELDS TERMINATED BY ',' OPTIONALLY ENCLOSED BY '\"'"
                    )
        my.commit()
    finally:
        my.close()


def load_tables(stores: list[str], rows: int) -> int:
    """Load the tables into those of ``stores`` that lack them; lineitem's Arrow size in bytes."""
    con, size = generate(rows)
    try:
        if "postgres" in stores:
            load_postgres(con, rows)
        if "mysql" in stores:
            load_mysql(con, rows)
    finally:
        con.close()
    return size


# Candidate paths: each takes SQL in the store's dialect and returns an Arrow table read as a
# stream. The DuckDB scanners run passthrough SQL with postgres_query()/mysql_query().


def pg_adbc() -> Callable[[str], pa.Table]:
    import adbc_driver_postgresql.dbapi

    conn = adbc_driver_postgresql.dbapi.connect(PG_DSN, autocommit=True)

    def run(sql: str) -> pa.Table:
        with conn.cursor() as cur:
            cur.execute(sql)
            return cur.fetch_record_batch().read_all()

    return run


def pg_duckdb_query() -> Callable[[str], pa.Table]:
    con = duckdb_with("postgres_scanner")
    con.execute(f"ATTACH '{pg_libpq()}' AS pg (TYPE postgres, READ_ONLY)")

    def run(sql: str) -> pa.Table:
        literal = sql.replace("'", "''")
        return (
            con.sql(f"SELECT * FROM postgres_query('pg', '{literal}')")
            .to_arrow_reader(65536)
            .read_all()
        )

    return run


def pg_duckdb_attach() -> Callable[[str], pa.Table]:
    con = duckdb_with("postgres_scanner")
    con.execute(f"ATTACH '{pg_libpq()}' AS pg (TYPE postgres, READ_ONLY)")
    con.execute("USE pg")

    def run(sql: str) -> pa.Table:
        return con.sql(sql).to_arrow_reader(65536).read_all()

    return run


def connectorx_path(uri: str) -> Callable[[], Callable[[str], pa.Table]]:
    def make() -> Callable[[str], pa.Table]:
        import connectorx

        def run(sql: str) -> pa.Table:
            return connectorx.read_sql(uri, sql, return_type="arrow")

        return run

    return make


def my_duckdb_query() -> Callable[[str], pa.Table]:
    con = duckdb_with("mysql_scanner")
    con.execute(f"ATTACH '{my_libpq()}' AS my (TYPE mysql, READ_ONLY)")

    def run(sql: str) -> pa.Table:
        literal = sql.replace("'", "''")
        return (
            con.sql(f"SELECT * FROM mysql_query('my', '{literal}')")
            .to_arrow_reader(65536)
            .read_all()
        )

    return run


def my_duckdb_attach() -> Callable[[str], pa.Table]:
    con = duckdb_with("mysql_scanner")
    con.execute(f"ATTACH '{my_libpq()}' AS my (TYPE mysql, READ_ONLY)")
    con.execute("USE my")

    def run(sql: str) -> pa.Table:
        return con.sql(sql.replace(f"{SCHEMA}.", "")).to_arrow_reader(65536).read_all()

    return run


def my_arrow_odbc() -> Callable[[str], pa.Table]:
    import arrow_odbc

    connection_string = (
        f"Driver={{MariaDB Unicode}};Server={MY_HOST};Port={MY_PORT};User={MY_USER};"
        f"Database={SCHEMA};"
    )

    def run(sql: str) -> pa.Table:
        reader = arrow_odbc.read_arrow_batches_from_odbc(
            sql, connection_string=connection_string, batch_size=65536
        )
        return pa.Table.from_batches(list(reader), schema=reader.schema)

    return run


PATHS: dict[str, list[tuple[str, Callable[[], Callable[[str], pa.Table]]]]] = {
    "postgres": [
        ("adbc-driver-postgresql", pg_adbc),
        ("duckdb postgres_query()", pg_duckdb_query),
        ("duckdb ATTACH scan", pg_duckdb_attach),
        ("connectorx", connectorx_path(PG_DSN)),
    ],
    "mysql": [
        ("duckdb mysql_query()", my_duckdb_query),
        ("duckdb ATTACH scan", my_duckdb_attach),
        ("connectorx", connectorx_path(f"mysql://{MY_USER}@{MY_HOST}:{MY_PORT}/{SCHEMA}")),
        ("arrow-odbc (MariaDB ODBC)", my_arrow_odbc),
    ],
}


def timed(run: Callable[[str], pa.Table], sql: str, repeat: int) -> tuple[float, pa.Table]:
    times, table = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        table = run(sql)
        times.append(time.perf_counter() - start)
    return statistics.median(times), table


def measure(store: str, size: int, rows: int, repeat: int) -> None:
    results = []
    for label, make in PATHS[store]:
        try:
            run = make()
            scan_s, table = timed(run, SCAN, repeat)
            assert table.num_rows == rows, (label, table.num_rows)
            pushed_s, pushed = timed(run, PUSHED, repeat)
        except Exception as exc:  # noqa: BLE001 - a candidate that fails is reported, not fatal
            print(f"  {store} {label}: unavailable ({type(exc).__name__}: {str(exc)[:120]})")
            continue
        types = {f.name: str(f.type) for f in table.schema}
        results.append((label, scan_s, pushed_s, types, str(pushed.schema.field("revenue").type)))
    if not results:
        return
    best = min(r[1] for r in results)
    best_pushed = min(r[2] for r in results)
    print(f"\n{store}: scan of {rows:,} rows ({size / 1e6:.0f} MB as Arrow), median of {repeat}")
    print(
        f"  {'path':28} {'scan s':>7} {'MB/s':>6} {'vs best':>7}   "
        f"{'join+agg s':>10} {'vs best':>7}   sum(decimal) as"
    )
    for label, scan_s, pushed_s, _, revenue in results:
        print(
            f"  {label:28} {scan_s:7.2f} {size / 1e6 / scan_s:6.0f} {best / scan_s:6.2f}x"
            f"   {pushed_s:10.3f} {best_pushed / pushed_s:6.2f}x   {revenue}"
        )
    print("  column types per path:")
    for label, _, _, types, _ in results:
        interesting = {k: v for k, v in types.items() if k in ("l_extendedprice", "l_commit_ts")}
        print(f"    {label:28} {interesting}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_500_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--stores", default="postgres,mysql")
    args = parser.parse_args()
    stores = args.stores.split(",")
    size = load_tables(stores, args.rows)
    for store in stores:
        measure(store, size, args.rows, args.repeat)


if __name__ == "__main__":
    main()

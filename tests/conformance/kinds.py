"""One small config per store kind: how to put the suite's tables in that store, and its gaps.

The test bodies in this package never name a store kind. Each :class:`StoreKind` says how to
create a fresh physical table with given Arrow data in its store, how to point a connector at a
store that is down, SQL in its dialect that generates rows or takes long, how to see its running
queries, and which tests it is known to fail (``gaps``), with the error they raise.

Adding a kind is adding one subclass here and its name to :data:`KINDS`.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import sqlite3
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from gateway.errors import InvalidQuery, QueryTimeout, SourceUnavailable
from tests.support.stores import (
    MARIADB,
    POSTGRES,
    TRINO,
    TcpProxy,
    free_port,
    mysql_admin,
    postgres_admin,
    require,
    trino_admin,
    trino_settings,
)

# The contract type of each column of the suite's type table, by column name.
CONTRACT_TYPES = {
    "id": "bigint",
    "c_bigint": "bigint",
    "c_integer": "integer",
    "c_smallint": "smallint",
    "c_boolean": "boolean",
    "c_double": "double",
    "c_decimal": "decimal(15,2)",
    "c_varchar": "varchar",
    "c_date": "date",
    "c_timestamp": "timestamp",
    "c_timestamptz": "timestamptz",
    "c_blob": "blob",
}


@dataclass(frozen=True)
class Gap:
    """A known difference from the contract: marked xfail(strict) so a fix shows as XPASS."""

    raises: type[BaseException] | tuple[type[BaseException], ...]
    reason: str
    kind: str = "notimpl"  # notimpl: meshgate could fix it; notyet: the driver; never: the store
    run: bool = True  # False only where running the test would hang instead of failing

    def mark(self) -> pytest.MarkDecorator:
        return pytest.mark.xfail(
            strict=True, raises=self.raises, run=self.run, reason=f"{self.kind}: {self.reason}"
        )


# What pytest.raises() / a failed assert raise when a gap shows up as a wrong answer.
WRONG = (AssertionError, pytest.fail.Exception)


class StoreKind:
    """How one store kind takes part in the suite."""

    name: ClassVar[str]
    dialect: ClassVar[str]
    gaps: ClassVar[dict[str, Gap]] = {}
    """Known gaps by test name, or ``test_name:column`` for one column of the type tests."""

    def available(self) -> None:
        """Skip (or fail under MESHGATE_REQUIRE_STORES=1) when the store's service is not there."""

    @contextlib.contextmanager
    def store(
        self, tmp_path: Path, tables: dict[str, pa.Table]
    ) -> Iterator[tuple[dict, dict[str, str] | str]]:
        """A fresh store holding ``tables``: (mesh.yaml settings, table name → ``table:`` value).

        A store that cannot take tables (a read-only catalog) gives, instead of the names, the
        reason why: the cases that need the tables skip with it, the others still run.
        """
        raise NotImplementedError

    def down(self, tmp_path: Path) -> dict[str, Any]:
        """Settings of a store of this kind that cannot be reached."""
        raise NotImplementedError

    @contextlib.contextmanager
    def outage(self, tmp_path: Path) -> Iterator[tuple[dict[str, Any], Any, Any]]:
        """(settings, bring_up, take_down): a store that starts down and can come and go."""
        raise NotImplementedError

    def rows_sql(self, rows: int, marker: str) -> str:
        """A query producing ``rows`` rows of (bigint ``i``, ~200-byte text ``s``, ``marker``)."""
        raise NotImplementedError

    def slow_sql(self, marker: str) -> str:
        """A query that takes far longer than a second before its first row."""
        raise NotImplementedError

    def running(self, marker: str) -> int | None:
        """How many queries containing ``marker`` run at the store now; None: not observable."""
        return None

    missing_table: ClassVar[str] = "no_such_table"
    """A ``table:`` value naming nothing in the store."""

    def probe_table(self) -> str | None:
        """A table the outage() store holds once up (None: ``SELECT 1`` reaches the store)."""
        return None


class DuckDBKind(StoreKind):
    name = "duckdb"
    dialect = "duckdb"

    @contextlib.contextmanager
    def store(self, tmp_path, tables):
        path = _duckdb_file(tmp_path / f"{uuid.uuid4().hex}.duckdb", tables)
        yield {"kind": "duckdb", "path": str(path)}, {name: name for name in tables}

    def down(self, tmp_path):
        return {"kind": "duckdb", "path": str(tmp_path / "missing" / "store.duckdb")}

    @contextlib.contextmanager
    def outage(self, tmp_path):
        import duckdb

        path = tmp_path / "late.duckdb"

        def bring_up():
            duckdb.connect(str(path)).close()

        yield {"kind": "duckdb", "path": str(path)}, bring_up, None

    def rows_sql(self, rows, marker):
        return f"SELECT i, repeat('x', 200) AS s, '{marker}' AS m FROM range({rows}) t(i)"

    def slow_sql(self, marker):
        return f"SELECT '{marker}' AS m, sum(hash(i)) AS h FROM range(100000000000) t(i)"


def _duckdb_file(path: Path, tables: dict[str, pa.Table]) -> Path:
    """A DuckDB database file at ``path`` holding ``tables`` under their names."""
    import duckdb

    with duckdb.connect(str(path)) as con:
        for name, table in tables.items():
            con.register("incoming", table)
            con.execute(f"CREATE TABLE {name} AS SELECT * FROM incoming")
            con.unregister("incoming")
    return path


class FilesKind(DuckDBKind):
    name = "files"
    missing_table = "no_such_table.parquet"
    gaps = {
        "test_missing_table": Gap(
            SourceUnavailable,
            "a product file that is missing looks like an unmounted store root",
            kind="never",
        ),
    }

    @contextlib.contextmanager
    def store(self, tmp_path, tables):
        root = tmp_path / f"files-{uuid.uuid4().hex}"
        root.mkdir()
        for name, table in tables.items():
            pq.write_table(table, root / f"{name}.parquet")
        yield {"kind": "files", "root": str(root)}, {name: f"{name}.parquet" for name in tables}

    def down(self, tmp_path):
        return {"kind": "files", "root": str(tmp_path / "missing-root")}

    @contextlib.contextmanager
    def outage(self, tmp_path):
        root = tmp_path / "late-root"

        def bring_up():
            root.mkdir()
            pq.write_table(pa.table({"one": [1]}), root / "one.parquet")

        yield {"kind": "files", "root": str(root)}, bring_up, None

    def probe_table(self):
        return "one.parquet"


_SQLITE_STORAGE = "SQLite stores {} as text, integers or reals and the connector returns those"


class SQLiteKind(StoreKind):
    name = "sqlite"
    dialect = "sqlite"
    gaps = {
        **{
            f"test_type_roundtrip:{column}": Gap(WRONG, _SQLITE_STORAGE.format(column), "never")
            for column in ("c_boolean", "c_decimal", "c_date", "c_timestamp", "c_timestamptz")
        },
        **{
            f"test_type_roundtrip:{column}": Gap(
                WRONG, "SQLite integers are all 64-bit; the connector returns int64", "never"
            )
            for column in ("c_integer", "c_smallint")
        },
        "test_unconstrained_numeric_is_exact": Gap(
            WRONG, "SQLite sums decimals as doubles", "never"
        ),
        "test_aggregates_match_local": Gap(
            WRONG, "SQLite sums decimals as doubles and returns dates as text", "never"
        ),
        "test_filters_match_local": Gap(WRONG, "dates come back as text", "never"),
        "test_projection_limit_match_local": Gap(WRONG, "dates come back as text", "never"),
    }

    @contextlib.contextmanager
    def store(self, tmp_path, tables):
        path = tmp_path / f"{uuid.uuid4().hex}.sqlite"
        with contextlib.closing(sqlite3.connect(path)) as con:
            for name, table in tables.items():
                columns = ", ".join(f"{f.name} {_sqlite_type(f.type)}" for f in table.schema)
                con.execute(f"CREATE TABLE {name} ({columns})")
                marks = ", ".join("?" * table.num_columns)
                con.executemany(
                    f"INSERT INTO {name} VALUES ({marks})",
                    [tuple(map(_sqlite_value, row.values())) for row in table.to_pylist()],
                )
            con.commit()
        yield {"kind": "sqlite", "path": str(path)}, {name: name for name in tables}

    def down(self, tmp_path):
        return {"kind": "sqlite", "path": str(tmp_path / "missing.sqlite")}

    @contextlib.contextmanager
    def outage(self, tmp_path):
        path = tmp_path / "late.sqlite"

        def bring_up():
            sqlite3.connect(path).close()

        yield {"kind": "sqlite", "path": str(path)}, bring_up, None

    def rows_sql(self, rows, marker):
        return (
            f"WITH RECURSIVE r(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM r WHERE i < {rows}) "
            f"SELECT i, printf('%.200c', 'x') AS s, '{marker}' AS m FROM r"
        )

    def slow_sql(self, marker):
        return (
            "WITH RECURSIVE r(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM r) "
            f"SELECT '{marker}' AS m, sum(i) FROM (SELECT i FROM r LIMIT 100000000000)"
        )


def _sqlite_type(arrow: pa.DataType) -> str:
    """SQLite keeps the declared type name; write the contract's."""
    return _contract_name(arrow).upper()


def _sqlite_value(value: Any) -> Any:
    if isinstance(value, dt.date | dt.datetime):
        return value.isoformat()
    if hasattr(value, "as_tuple"):  # Decimal
        return str(value)
    return value


class PostgresKind(StoreKind):
    name = "postgres"
    dialect = "postgres"
    _types: ClassVar[dict[str, str]] = {
        "bigint": "bigint",
        "integer": "integer",
        "smallint": "smallint",
        "boolean": "boolean",
        "double": "double precision",
        "decimal(15,2)": "numeric(15,2)",
        "varchar": "varchar",
        "date": "date",
        "timestamp": "timestamp",
        "timestamptz": "timestamptz",
        "blob": "bytea",
    }
    gaps = {
        "test_unconstrained_numeric_is_exact": Gap(
            WRONG,
            "DuckDB's postgres scanner reads NUMERIC without precision (e.g. sum(numeric)) as "
            "double; the planner must cast pushed decimal aggregates to numeric(38,s)",
            "notyet",
        ),
    }

    def available(self):
        require(POSTGRES)

    def settings(self, port: int | None = None) -> dict[str, Any]:
        return {
            "kind": "postgres",
            "host": POSTGRES.host,
            "port": port or POSTGRES.port,
            "user": POSTGRES.user,
            "database": POSTGRES.database,
            "connect_timeout_seconds": 3,
        }

    @contextlib.contextmanager
    def store(self, tmp_path, tables):
        schema = f"mg_conformance_{uuid.uuid4().hex[:12]}"
        with contextlib.closing(postgres_admin()) as admin:
            admin.execute(f"CREATE SCHEMA {schema}")
            try:
                for name, table in tables.items():
                    columns = ", ".join(
                        f"{f.name} {self._types[_contract_name(f.type)]}" for f in table.schema
                    )
                    admin.execute(f"CREATE TABLE {schema}.{name} ({columns})")
                    marks = ", ".join(["%s"] * table.num_columns)
                    with admin.cursor() as cursor:
                        cursor.executemany(
                            f"INSERT INTO {schema}.{name} VALUES ({marks})",
                            [tuple(row.values()) for row in table.to_pylist()],
                        )
                yield self.settings(), {name: f"{schema}.{name}" for name in tables}
            finally:
                admin.execute(f"DROP SCHEMA {schema} CASCADE")

    def down(self, tmp_path):
        return self.settings(port=free_port())

    @contextlib.contextmanager
    def outage(self, tmp_path):
        proxy = TcpProxy(POSTGRES.host, POSTGRES.port)
        try:
            yield self.settings(port=proxy.port), proxy.start, proxy.stop
        finally:
            proxy.stop()

    def rows_sql(self, rows, marker):
        # generate_series in the select list streams; in FROM it is materialised first
        return (
            f"SELECT i::bigint AS i, repeat('x', 200) AS s, '{marker}' AS m "
            f"FROM (SELECT generate_series(1, {rows}) AS i) AS g"
        )

    def slow_sql(self, marker):
        return f"SELECT '{marker}' AS m, pg_sleep(60) AS slept"

    def running(self, marker):
        with contextlib.closing(postgres_admin()) as admin:
            return admin.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' "
                "AND query LIKE %s AND pid <> pg_backend_pid()",
                (f"%{marker}%",),
            ).fetchone()[0]


class MySQLKind(StoreKind):
    name = "mysql"
    dialect = "mysql"
    _types: ClassVar[dict[str, str]] = {
        "bigint": "bigint",
        "integer": "int",
        "smallint": "smallint",
        "boolean": "boolean",
        "double": "double",
        "decimal(15,2)": "decimal(15,2)",
        "varchar": "varchar(300) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin",
        "date": "date",
        "timestamp": "datetime(6)",
        "timestamptz": "timestamp(6) NULL",
        "blob": "blob",
    }

    gaps = {
        "test_recovers_when_store_returns": Gap(
            SourceUnavailable,
            "connectorx's connection pool times out (30 s) connecting through the suite's TCP "
            "proxy while PyMySQL connects; unexplained yet, so not run",
            "notyet",
            run=False,
        ),
    }

    def available(self):
        require(MARIADB)

    def settings(self, database: str, port: int | None = None) -> dict[str, Any]:
        return {
            "kind": "mysql",
            "host": MARIADB.host,
            "port": port or MARIADB.port,
            "user": MARIADB.user,
            "database": database,
            "connect_timeout_seconds": 3,
        }

    @contextlib.contextmanager
    def store(self, tmp_path, tables):
        database = f"mg_conformance_{uuid.uuid4().hex[:12]}"
        with contextlib.closing(mysql_admin()) as admin, admin.cursor() as cursor:
            cursor.execute(f"CREATE DATABASE {database}")
            try:
                for name, table in tables.items():
                    columns = ", ".join(
                        f"{f.name} {self._types[_contract_name(f.type)]}" for f in table.schema
                    )
                    cursor.execute(f"CREATE TABLE {database}.{name} ({columns})")
                    marks = ", ".join(["%s"] * table.num_columns)
                    cursor.executemany(
                        f"INSERT INTO {database}.{name} VALUES ({marks})",
                        [tuple(map(_mysql_value, row.values())) for row in table.to_pylist()],
                    )
                yield self.settings(database), dict(zip(tables, tables, strict=True))
            finally:
                cursor.execute(f"DROP DATABASE {database}")

    def down(self, tmp_path):
        return self.settings(MARIADB.database, port=free_port())

    @contextlib.contextmanager
    def outage(self, tmp_path):
        proxy = TcpProxy(MARIADB.host, MARIADB.port)
        try:
            yield self.settings(MARIADB.database, port=proxy.port), proxy.start, proxy.stop
        finally:
            proxy.stop()

    def rows_sql(self, rows, marker):
        # MariaDB's Sequence engine provides seq_1_to_N tables.
        return f"SELECT seq AS i, repeat('x', 200) AS s, '{marker}' AS m FROM seq_1_to_{rows}"

    def slow_sql(self, marker):
        return f"SELECT '{marker}' AS m, sleep(60) AS slept FROM seq_1_to_1"

    def running(self, marker):
        with contextlib.closing(mysql_admin()) as admin, admin.cursor() as cursor:
            cursor.execute(
                "SELECT count(*) FROM information_schema.processlist WHERE command <> 'Sleep' "
                "AND info LIKE %s AND id <> CONNECTION_ID()",
                (f"%{marker}%",),
            )
            return cursor.fetchone()[0]


def _mysql_value(value: Any) -> Any:
    """MySQL has no zone in its values: tz-aware instants are written as UTC (session is UTC)."""
    if isinstance(value, dt.datetime) and value.tzinfo is not None:
        return value.astimezone(dt.UTC).replace(tzinfo=None)
    return value


_TRINO_TYPES = {
    "bigint": "bigint",
    "integer": "integer",
    "smallint": "smallint",
    "boolean": "boolean",
    "double": "double",
    "decimal(15,2)": "decimal(15,2)",
    "varchar": "varchar",
    "date": "date",
    "timestamp": "timestamp(6)",
    "timestamptz": "timestamp(6) with time zone",
    "blob": "varbinary",
}
"""The Trino type each contract type of the suite is created as."""


def _trino_rows(rows: int, columns: str) -> str:
    """Trino SQL selecting ``columns`` over ``rows`` rows numbered ``i`` from 0.

    Trino has no range table and caps ``sequence()`` at 10,000 elements: the rows are a cross
    join of sequences of 1,000, which streams.
    """
    factors = 1
    while 1000**factors < rows:
        factors += 1
    number = " + ".join(f"d{k} * {1000**k}" for k in range(factors))
    sources = " CROSS JOIN ".join(f"UNNEST(sequence(0, 999)) AS t{k}(d{k})" for k in range(factors))
    limit = "" if 1000**factors == rows else f" LIMIT {rows}"
    return f"SELECT {columns} FROM (SELECT {number} AS i FROM {sources}) AS g{limit}"


class TrinoKind(StoreKind):
    """A real Trino coordinator (``TRINO_URL`` in tests.support.stores; scripts/test-services
    starts Trino 476 with a writable PostgreSQL catalog). The suite's tables are created through
    Trino in the URL's catalog and schema; the store goes down and returns through a TCP proxy;
    running queries are read from ``system.runtime.queries``."""

    name = "trino"
    dialect = "trino"

    def available(self):
        require(TRINO)

    def settings(self, port: int | None = None) -> dict[str, Any]:
        """Settings for the coordinator, or for a port on this machine (a proxy or nothing)."""
        if port is None:
            return trino_settings()
        return trino_settings(host="127.0.0.1", port=port)

    def rows_sql(self, rows, marker):
        return _trino_rows(rows, f"i, rpad('', 200, 'x') AS s, '{marker}' AS m")

    def slow_sql(self, marker):
        # 10^12 rows to sum before the first (only) row
        return (
            f"SELECT '{marker}' AS m, sum(a.x + b.x + c.x) AS h FROM UNNEST(sequence(1, 10000)) "
            "AS a(x) CROSS JOIN UNNEST(sequence(1, 10000)) AS b(x) "
            "CROSS JOIN UNNEST(sequence(1, 10000)) AS c(x)"
        )

    @contextlib.contextmanager
    def store(self, tmp_path, tables):
        prefix = f"mg_conformance_{uuid.uuid4().hex[:12]}"
        created: list[str] = []
        with contextlib.closing(trino_admin()) as admin:
            cursor = admin.cursor()
            try:
                refused = self._create(cursor, prefix, tables, created)
                yield self.settings(), refused or {name: f"{prefix}_{name}" for name in tables}
            finally:
                for name in created:
                    self._run(cursor, f"DROP TABLE {name}")

    def _create(
        self, cursor: Any, prefix: str, tables: dict[str, pa.Table], created: list[str]
    ) -> str | None:
        """Create and fill ``tables`` (names go to ``created``); why not, if Trino refuses."""
        import trino.exceptions

        for name, table in tables.items():
            columns = ", ".join(
                f"{f.name} {_TRINO_TYPES[_contract_name(f.type)]}" for f in table.schema
            )
            try:
                self._run(cursor, f"CREATE TABLE {prefix}_{name} ({columns})")
            except trino.exceptions.TrinoUserError as error:
                return (
                    f"{TRINO.database} of MESHGATE_TRINO_URL refuses CREATE TABLE "
                    f"({error.error_name}: {error.message}); point the URL at a writable "
                    "catalog (e.g. memory) to run the cases that need the suite's tables"
                )
            created.append(f"{prefix}_{name}")
            for start in range(0, table.num_rows, 500):
                rows = table.slice(start, 500).to_pylist()
                values = ", ".join(_trino_row(row, table.schema) for row in rows)
                self._run(cursor, f"INSERT INTO {prefix}_{name} VALUES {values}")
        return None

    @staticmethod
    def _run(cursor: Any, sql: str) -> None:
        cursor.execute(sql)
        cursor.fetchall()  # a statement is done when its last page is read

    def down(self, tmp_path):
        return self.settings(free_port())

    @contextlib.contextmanager
    def outage(self, tmp_path):
        if self.settings()["http_scheme"] == "https":
            pytest.skip("a TLS coordinator cannot be proxied under another host name")
        proxy = TcpProxy(TRINO.host, TRINO.port)
        try:
            yield self.settings(proxy.port), proxy.start, proxy.stop
        finally:
            proxy.stop()

    def running(self, marker):
        with contextlib.closing(trino_admin()) as admin:
            cursor = admin.cursor()
            cursor.execute(
                "SELECT count(*) FROM system.runtime.queries "
                "WHERE state NOT IN ('FINISHED', 'FAILED') "
                f"AND strpos(query, '{marker}') > 0 AND strpos(query, 'system.runtime') = 0"
            )
            return cursor.fetchall()[0][0]


def _trino_row(row: dict[str, Any], schema: pa.Schema) -> str:
    """One row of the suite's data as a Trino VALUES tuple, each value cast to its column type."""
    values = []
    for field in schema:
        value, trino = row[field.name], _TRINO_TYPES[_contract_name(field.type)]
        if value is None:
            literal = "NULL"
        elif isinstance(value, bool):
            literal = str(value).upper()
        elif isinstance(value, bytes):
            literal = f"X'{value.hex()}'"
        elif isinstance(value, dt.datetime):
            zone = "" if value.tzinfo is None else " UTC"
            utc = value if value.tzinfo is None else value.astimezone(dt.UTC)
            literal = f"'{utc.replace(tzinfo=None).isoformat(' ', 'microseconds')}{zone}'"
        elif isinstance(value, dt.date):
            literal = f"'{value.isoformat()}'"
        elif isinstance(value, str):
            literal = "'" + value.replace("'", "''") + "'"
        else:  # int, float, Decimal
            literal = str(value)
        values.append(f"CAST({literal} AS {trino})")
    return "(" + ", ".join(values) + ")"


def _contract_name(arrow: pa.DataType) -> str:
    """The contract type name of one of the suite's Arrow column types."""
    if pa.types.is_decimal(arrow):
        return f"decimal({arrow.precision},{arrow.scale})"
    if pa.types.is_timestamp(arrow):
        return "timestamptz" if arrow.tz else "timestamp"
    names = {pa.int64(): "bigint", pa.int32(): "integer", pa.int16(): "smallint"}
    names |= {pa.bool_(): "boolean", pa.float64(): "double", pa.string(): "varchar"}
    names |= {pa.date32(): "date", pa.binary(): "blob"}
    return names[arrow]


KINDS: dict[str, StoreKind] = {
    kind.name: kind
    for kind in (
        DuckDBKind(),
        SQLiteKind(),
        FilesKind(),
        PostgresKind(),
        MySQLKind(),
        TrinoKind(),
    )
}
"""Every kind the suite runs over."""

__all__ = ["CONTRACT_TYPES", "KINDS", "Gap", "InvalidQuery", "QueryTimeout", "StoreKind"]

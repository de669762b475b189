"""MySQL and MariaDB, read through connectorx's Arrow stream; PyMySQL for metadata and KILL QUERY.

Measured on a 1.5M-row table (benchmarks/connector_paths.py): connectorx read it 4-5x faster
than DuckDB's mysql scanner (whose ``mysql_query()`` goes row by row) and ran pushed-down joins
and aggregates as fast as any path. connectorx widens every DECIMAL to decimal128(38,10) and
cannot tell TIMESTAMP (UTC instants) from DATETIME, so before each query the result's column
metadata is read over a pooled PyMySQL connection (``LIMIT 0``: nothing is computed) and the
stream is cast to the declared types. Sessions run in UTC. connectorx cannot cancel a query, so
a deadline or an early close finds the query by its tag comment and runs ``KILL QUERY``.
"""

from __future__ import annotations

import uuid
from typing import Any
from urllib.parse import quote

import pyarrow as pa
from pydantic import Field
from sqlglot import exp

from connectors.base import (
    Capabilities,
    Connector,
    ConnectorSettings,
    limit_fence,
    secret_from_env,
)
from connectors.pool import ConnectionPool
from connectors.remote import bind_parameters, conformed_schema, declared_type, stream
from connectors.store_errors import ErrorSigns, kind_of, store_error
from gateway.errors import GatewayError, InvalidQuery, NotFound, SourceUnavailable
from gateway.types import arrow_type

# MySQL protocol column types (include/mysql_com.h) whose Arrow type connectorx gets wrong.
_TINY, _TIMESTAMP, _NEWDECIMAL = 1, 7, 246
_UNSIGNED_FLAG = 32
# Client errors meaning the server is unreachable or the connection died (CR_* codes, 2000+),
# and server errors for an interrupted statement.
_CLIENT_ERRORS = range(2000, 3000)
_TIMEOUT_ERRORS = (1969, 3024)  # MariaDB max_statement_time, MySQL max_execution_time
_DUPLICATE_COLUMN = "1060"
# connectorx's producer runs ahead of the reader by a few batches; smaller batches bound the
# memory that takes (and read as fast: 1.5 s for 1.5M rows at 10k rows vs 1.7 s at 64k)
_ROWS_PER_BATCH = 16_384


ERROR_SIGNS = ErrorSigns(
    # first: MariaDB's own timeout also reads "Query execution was interrupted"
    timeout=("max_statement_time",),
    unavailable=(
        "can't connect",
        "connection refused",
        "lost connection",
        "gone away",
        "timed out waiting for connection",
        "server disconnected",
        "broken pipe",
        # KILL QUERY / KILL by an operator, or the server shutting down
        "query execution was interrupted",
        "connection was killed",
        "server shutdown in progress",
    ),
)
"""How MySQL/MariaDB failures read through PyMySQL and connectorx (beside their error codes)."""


class MySQLSettings(ConnectorSettings):
    host: str = "127.0.0.1"
    port: int = Field(default=3306, ge=1, le=65535)
    user: str = "root"
    database: str
    password_env: str | None = None
    """The environment variable holding the password."""


class MySQLConnector(Connector):
    kind = "mysql"
    capabilities = Capabilities(
        dialect="mysql",
        # a derived table with a LIMIT is neither merged into the outer query nor given its
        # conditions (MariaDB's documented limits of derived_merge and condition pushdown)
        fence=limit_fence(18446744073709551615),
        # Default collations compare text ignoring case and trailing spaces; the planner keeps
        # text predicates, joins, grouping and DISTINCT on text local.
        case_insensitive_text=True,
        # MariaDB 10.11's default join_cache_level has no hash joins: TPC-H SF1 Q9's partsupp x
        # supplier join ran past 300 s at the store, while fetching both and joining in the
        # gateway took seconds
        large_joins=False,
        # MariaDB 10.11 answers SELECT DISTINCT over a merged derived table with ORDER BY <a
        # column>, <an expression> LIMIT n wrongly, and sqlglot's emulation of NULLS LAST
        # (CASE WHEN x IS NULL ...) makes every such ORDER BY that shape
        # (tests/test_tpch_federated.py): a known wrong answer is never pushed down
        distinct_ordered_limits=False,
        unsupported_functions=frozenset(
            {
                exp.RegexpLike,  # MySQL REGEXP is case-insensitive under default collations
                exp.ArrayAgg,  # no arrays
                exp.Median,  # no MEDIAN
                exp.PercentileCont,  # no ordered-set aggregates
                exp.PercentileDisc,
                exp.ApproxDistinct,
                # `/` and AVG compute in DECIMAL with div_precision_increment (4) more digits, and
                # x / 0 is NULL: DuckDB's are double, with x / 0 = inf
                exp.Div,
                exp.Avg,
            }
        ),
    )
    Settings = MySQLSettings

    def __init__(self, name: str, settings: dict[str, Any], **kwargs: Any):
        super().__init__(name, settings, **kwargs)
        self.settings: MySQLSettings
        self._password = secret_from_env(
            self.settings.password_env, store=name, field_name="password_env"
        )
        self._pool = ConnectionPool(
            self._connect,
            size=self.settings.pool_size,
            store=name,
            wait_seconds=self.settings.connect_timeout_seconds,
        )

    def _where(self) -> str:
        s = self.settings
        return f"mysql at {s.host}:{s.port}/{s.database}"

    def _connect(self):
        import pymysql

        s = self.settings
        try:
            return pymysql.connect(
                host=s.host,
                port=s.port,
                user=s.user,
                password=self._password or "",
                database=s.database,
                connect_timeout=s.connect_timeout_seconds,
                autocommit=True,
                init_command="SET time_zone = '+00:00'",
            )
        except pymysql.err.OperationalError as exc:
            raise self._error(exc) from exc

    def _uri(self) -> str:
        s = self.settings
        login = quote(s.user, safe="")
        if self._password:
            login += ":" + quote(self._password, safe="")
        return f"mysql://{login}@{s.host}:{s.port}/{quote(s.database, safe='')}"

    def _error(self, exc: BaseException, timed_out: bool = False) -> GatewayError:
        """The gateway error for a PyMySQL or connectorx failure."""
        import pymysql

        code = exc.args[0] if exc.args and isinstance(exc.args[0], int) else None
        message = str(exc)
        if self._password:
            message = message.replace(quote(self._password, safe=""), "***")
            message = message.replace(self._password, "***")
        if code in _TIMEOUT_ERRORS:
            kind = "timeout"
        elif code in _CLIENT_ERRORS or isinstance(exc, OSError | pymysql.err.InterfaceError):
            kind = "unavailable"
        else:
            kind = kind_of(message, ERROR_SIGNS)
        return store_error(  # no public reason: MariaDB quotes the SQL
            kind,
            store=self.name,
            message=message,
            where=self._where(),
            timeout_seconds=self.settings.query_timeout_seconds,
        )

    def _control(self, sql: str, args: tuple = ()) -> tuple[tuple, tuple]:
        """Run a small statement on a pooled PyMySQL connection: (rows, column metadata).

        A pooled connection the server dropped (restart, network) is replaced once, so a store
        that is back answers at once and one that is down fails fast with SourceUnavailable.
        """
        try:
            return self._control_once(sql, args)
        except SourceUnavailable:
            return self._control_once(sql, args)

    def _control_once(self, sql: str, args: tuple) -> tuple[tuple, tuple]:
        import pymysql

        connection = self._pool.acquire()
        broken = False
        try:
            with connection.cursor() as cursor:
                # PyMySQL %-formats the SQL whenever args is not None: without arguments, a %
                # in the query (modulo, a LIKE pattern) must reach the server as it is
                cursor.execute(sql, args or None)
                return cursor.fetchall(), cursor._result.fields or ()
        except (pymysql.err.MySQLError, OSError) as exc:
            error = self._error(exc)
            broken = isinstance(error, SourceUnavailable)
            raise error from exc
        finally:
            self._pool.release(connection, broken=broken)

    def execute(
        self, sql: str, *, parameters: pa.RecordBatch | None = None
    ) -> pa.RecordBatchReader:
        import connectorx

        bound = bind_parameters(sql, parameters, dialect="mysql")
        overrides = self._declared_result_types(bound)
        # connectorx re-renders the SQL and drops comments: the tag travels as a derived-table
        # alias, which MariaDB merges away for plain scans
        tag = "meshgate_" + uuid.uuid4().hex
        tagged = f"SELECT * FROM ({bound}) AS {tag}" if overrides is not None else bound
        timeout = self.settings.query_timeout_seconds
        try:
            reader = connectorx.read_sql(
                self._uri(),
                tagged,
                return_type="arrow_stream",
                batch_size=_ROWS_PER_BATCH,
                pre_execution_query=[
                    "SET time_zone = '+00:00'",
                    f"SET max_statement_time = {timeout:g}",
                ],
            )
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as exc:  # noqa: BLE001 - connectorx raises RuntimeError or a panic
            raise self._error(exc) from exc
        return stream(
            reader,
            schema=conformed_schema(reader.schema, overrides),
            timeout_seconds=timeout,
            cancel=lambda: self._kill(tag),
            close=reader.close,
            map_error=self._error,
        )

    def _declared_result_types(self, sql: str) -> dict[int, pa.DataType] | None:
        """Arrow types for the result columns connectorx maps loosely, from the server's metadata.

        ``SELECT * FROM (...) LIMIT 0`` makes the server describe the result without computing
        it; it also reports unknown tables and syntax errors with the server's own message.
        """
        try:
            _, fields = self._control(f"SELECT * FROM ({sql}) AS described LIMIT 0")
        except InvalidQuery as exc:
            if _DUPLICATE_COLUMN not in str(exc):
                raise
            return None  # duplicate output names cannot be wrapped: keep connectorx's types
        overrides: dict[int, pa.DataType] = {}
        for index, field in enumerate(fields):
            if field.type_code == _NEWDECIMAL:
                signed = not field.flags & _UNSIGNED_FLAG
                precision = field.length - (1 if field.scale else 0) - (1 if signed else 0)
                if 0 < precision <= 38:
                    overrides[index] = pa.decimal128(precision, field.scale)
            elif field.type_code == _TIMESTAMP:
                overrides[index] = pa.timestamp("us", tz="UTC")
            elif field.type_code == _TINY and field.length == 1:
                overrides[index] = pa.bool_()
        return overrides

    def _kill(self, tag: str) -> None:
        """Stop the tagged query at the store (connectorx has no cancel of its own)."""
        rows, _ = self._control(
            "SELECT id FROM information_schema.processlist WHERE info LIKE %s "
            "AND id <> CONNECTION_ID()",
            (f"%{tag}%",),
        )
        for (thread_id,) in rows:
            self._control(f"KILL QUERY {int(thread_id)}")

    def trino_name(
        self, table: str | None, sql: str | None, *, catalog: str, schema: str | None
    ) -> exp.Table | None:
        """Trino's MySQL catalog has one schema per database: ``catalog.database.table``, the
        database from the product's table name, else the reach's schema, else the store's."""
        if table is None:
            return None
        relation = exp.to_table(table, dialect="mysql")
        database = relation.db or schema or self.settings.database
        return self._trino_table(catalog, database, relation.name)

    def describe(self, relation: exp.Expression) -> pa.Schema:
        """Declared column types from ``information_schema.columns`` (tinyint(1) is boolean)."""
        if not isinstance(relation, exp.Table):
            return super().describe(relation)
        database = relation.db or self.settings.database
        rows, _ = self._control(
            "SELECT column_name, data_type, column_type, numeric_precision, numeric_scale "
            "FROM information_schema.columns WHERE table_schema = %s AND table_name = %s "
            "ORDER BY ordinal_position",
            (database, relation.name),
        )
        if not rows:
            raise NotFound(
                f"store {self.name!r} has no table or view {database}.{relation.name}; check "
                "`table` in the product's descriptor"
            )
        fields = []
        fallback = None
        for index, (name, data_type, column_type, precision, scale) in enumerate(rows):
            if column_type.lower().startswith("tinyint(1)"):
                declared = "boolean"
            elif data_type.lower() == "timestamp":
                declared = "timestamptz"  # stored as UTC instants
            elif column_type.lower().endswith("unsigned") and data_type.lower() != "decimal":
                declared = {"tinyint": "utinyint", "smallint": "usmallint", "int": "uinteger"}.get(
                    data_type.lower(), "ubigint"
                )
            else:
                declared = declared_type(data_type, precision, scale)
            if declared is None:
                fallback = fallback or super().describe(relation)
                fields.append(fallback.field(index))
            else:
                fields.append(pa.field(name, arrow_type(declared)))
        return pa.schema(fields)

    def close(self) -> None:
        self._pool.close()

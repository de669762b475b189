"""PostgreSQL through DuckDB's postgres scanner: ``postgres_query()`` runs the SQL at the store.

Measured on a 1.5M-row table (benchmarks/connector_paths.py): the scanner's binary COPY was the
fastest Arrow path for scans and as fast as any for pushed-down joins and aggregates, and it keeps
``numeric(p,s)`` as decimal128(p,s). The whole query runs in PostgreSQL; DuckDB only turns the
COPY stream into Arrow batches. Connections are pooled by the scanner; a query is tagged with a
comment so a deadline or an early close cancels it with ``pg_cancel_backend``.
"""

from __future__ import annotations

import os
import tempfile
import threading
from typing import Any
from urllib.parse import unquote, urlsplit

import pyarrow as pa
from pydantic import Field, model_validator
from sqlglot import exp

from connectors.base import (
    Capabilities,
    Connector,
    ConnectorSettings,
    secret_from_env,
    sql_string,
)
from connectors.embedded import ROWS_PER_BATCH
from connectors.remote import (
    bind_parameters,
    conformed_schema,
    declared_type,
    probe,
    stream,
    tag_query,
)
from connectors.store_errors import ErrorSigns, kind_of, store_error
from gateway.errors import (
    GatewayError,
    NotFound,
    values_hidden,
)
from gateway.types import arrow_type

ALIAS = "store"


ERROR_SIGNS = ErrorSigns(
    timeout=("statement timeout",),
    unavailable=(
        "unable to connect",
        "could not connect",
        "connection refused",
        "server closed the connection",
        "connection to server",
        "terminating connection",
        "no connection to the server",
        "ssl syscall",
        # the backend went away in the middle of a COPY (pg_terminate_backend, restart)
        "unable to read binary copy data",
        "unexpected eof",
        # another query found the server gone and dropped the shared ATTACH under this one (a
        # deadline is told apart before this mapping, by the stream)
        "interrupt error: interrupted",
    ),
)
"""How PostgreSQL's failures read through DuckDB's postgres scanner."""


class PostgresSettings(ConnectorSettings):
    dsn: str | None = None
    """``postgresql://user@host:port/database`` without a password (use ``password_env``)."""
    host: str = "127.0.0.1"
    port: int = Field(default=5432, ge=1, le=65535)
    user: str = "postgres"
    database: str = "postgres"
    password_env: str | None = None
    """The environment variable holding the password."""
    options: dict[str, str] = Field(default_factory=dict)
    """Extra libpq connection parameters (``sslmode``, ``application_name``, ...)."""

    @model_validator(mode="after")
    def _split_dsn(self) -> PostgresSettings:
        if self.dsn is None:
            return self
        parts = urlsplit(self.dsn)
        if parts.scheme not in ("postgres", "postgresql"):
            raise ValueError("`dsn` must start with postgresql://")
        if parts.password:
            raise ValueError(
                "`dsn` must not contain a password; put it in an environment variable and name "
                "it in `password_env`"
            )
        self.host = parts.hostname or self.host
        self.port = parts.port or self.port
        self.user = unquote(parts.username) if parts.username else self.user
        self.database = parts.path.lstrip("/") or self.database
        for pair in filter(None, parts.query.split("&")):
            key, _, value = pair.partition("=")
            self.options.setdefault(unquote(key), unquote(value))
        return self


class PostgresConnector(Connector):
    kind = "postgres"
    # OFFSET 0 is PostgreSQL's documented way to keep a subquery from being pulled up
    capabilities = Capabilities(
        dialect="postgres", fence=exp.Offset(expression=exp.Literal.number(0))
    )
    Settings = PostgresSettings

    def __init__(self, name: str, settings: dict[str, Any], **kwargs: Any):
        super().__init__(name, settings, **kwargs)
        self.settings: PostgresSettings
        self._password = secret_from_env(
            self.settings.password_env, store=name, field_name="password_env"
        )
        self._duckdb = None
        self._lock = threading.Lock()

    # -- connection -------------------------------------------------------------------------

    def trino_name(
        self, table: str | None, sql: str | None, *, catalog: str, schema: str | None
    ) -> exp.Table | None:
        """Trino's PostgreSQL catalog names a table ``catalog.schema.table``, the schema from the
        product's table name, else the reach's, else ``public``."""
        if table is None:
            return None
        relation = exp.to_table(table, dialect="postgres")
        return self._trino_table(catalog, relation.db or schema or "public", relation.name)

    def _where(self) -> str:
        return f"postgres at {self.settings.host}:{self.settings.port}/{self.settings.database}"

    def _attached(self):
        """The DuckDB connection with the store ATTACHed; retried on every query until it works."""
        import duckdb
        import duckdb_extensions

        with self._lock:
            if self._duckdb is not None:
                return self._duckdb
            s = self.settings
            probe(
                s.host, s.port, timeout=s.connect_timeout_seconds, store=self.name, kind="postgres"
            )
            os.environ.setdefault("HOME", tempfile.gettempdir())  # the extension loader needs it
            con = duckdb.connect()
            try:
                duckdb_extensions.import_extension("postgres_scanner", con=con)
                con.execute("SET TimeZone = 'UTC'")
                con.execute(f"SET pg_pool_max_connections = {s.pool_size}")
                secret = {"HOST": s.host, "PORT": s.port, "USER": s.user, "DATABASE": s.database}
                if self._password is not None:
                    secret["PASSWORD"] = self._password
                con.execute(
                    "CREATE TEMPORARY SECRET store_login (TYPE postgres, "
                    + ", ".join(f"{key} {sql_string(value)}" for key, value in secret.items())
                    + ")"
                )
                timeout_ms = int(s.query_timeout_seconds * 1000)
                params = {
                    "connect_timeout": str(max(1, round(s.connect_timeout_seconds))),
                    "application_name": "meshgate",
                    **s.options,
                    "options": f"-c statement_timeout={timeout_ms}",
                }
                libpq = " ".join(f"{key}={_libpq_value(value)}" for key, value in params.items())
                con.execute(
                    f"ATTACH {sql_string(libpq)} AS {ALIAS} "
                    "(TYPE postgres, SECRET store_login, READ_ONLY)"
                )
            except duckdb.Error as exc:
                con.close()
                raise self._error(exc) from exc
            self._duckdb = con
            return con

    def _error(self, exc: BaseException, timed_out: bool = False) -> GatewayError:
        """The gateway error for a failure reported through DuckDB's postgres scanner."""
        message = str(exc)
        if self._password:
            message = message.replace(self._password, "***")
        kind = kind_of(message, ERROR_SIGNS)
        if kind == "unavailable":
            self._forget_connection()
        # the scanner quotes the whole SQL it sent; PostgreSQL's own words follow "ERROR:"
        reason = message.rpartition("ERROR:")[2].strip() if "ERROR:" in message else None
        return store_error(
            kind,
            store=self.name,
            message=message,
            where=self._where(),
            timeout_seconds=self.settings.query_timeout_seconds,
            public_reason=values_hidden(reason.splitlines()[0]) if reason else None,
        )

    def _forget_connection(self) -> None:
        """Drop the ATTACH so the next query reconnects (the server went away or restarted).

        The broken connection is not closed here: other threads may still run cursors on it (a
        stream, the monitor's contract check), and closing a DuckDB connection under a live
        cursor crashed the process. Each cursor holds the database it came from, so the old
        one is freed, its PostgreSQL sessions with it, once its last cursor is closed."""
        with self._lock:
            self._duckdb = None

    # -- queries ----------------------------------------------------------------------------

    def execute(
        self, sql: str, *, parameters: pa.RecordBatch | None = None
    ) -> pa.RecordBatchReader:
        import duckdb

        tag, tagged = tag_query(bind_parameters(sql, parameters, dialect="postgres"))
        con = self._attached()
        cursor = con.cursor()
        try:
            # a relation streams; cursor.execute() would materialise the whole result first
            relation = cursor.sql(f"SELECT * FROM postgres_query('{ALIAS}', {sql_string(tagged)})")
            reader = relation.to_arrow_reader(ROWS_PER_BATCH)
        except duckdb.Error as exc:
            cursor.close()
            raise self._error(exc) from exc
        return stream(
            reader,
            schema=conformed_schema(reader.schema),
            timeout_seconds=self.settings.query_timeout_seconds,
            cancel=lambda: self._cancel(tag, cursor),
            close=cursor.close,
            map_error=self._error,
        )

    def _cancel(self, tag: str, cursor) -> None:
        """Cancel the tagged query at the store, then stop DuckDB waiting for it."""
        con = self._duckdb
        if con is not None:
            pattern = f"%{tag}%"
            control = con.cursor()
            try:
                control.execute(
                    f"SELECT * FROM postgres_query('{ALIAS}', "
                    + sql_string(
                        "SELECT pg_cancel_backend(pid) FROM pg_stat_activity "
                        f"WHERE query LIKE {sql_string(pattern)} AND pid <> pg_backend_pid()"
                    )
                    + ")"
                ).fetchall()
            finally:
                control.close()
        cursor.interrupt()

    def describe(self, relation: exp.Expression) -> pa.Schema:
        """Declared column types from ``information_schema.columns`` (e.g. numeric(15,2))."""
        if not isinstance(relation, exp.Table):
            return super().describe(relation)
        schema = relation.db or "public"
        query = (
            "SELECT column_name, data_type, numeric_precision, numeric_scale "
            "FROM information_schema.columns WHERE table_schema = "
            f"{sql_string(schema)} AND table_name = {sql_string(relation.name)} "
            "ORDER BY ordinal_position"
        )
        columns = self.execute(query).read_all().to_pylist()
        if not columns:
            raise NotFound(
                f"store {self.name!r} has no table or view {schema}.{relation.name}; check "
                "`table` in the product's descriptor"
            )
        fallback = None
        fields = []
        for index, column in enumerate(columns):
            declared = declared_type(
                column["data_type"], column["numeric_precision"], column["numeric_scale"]
            )
            if declared is None:  # a type without a contract name: report what arrives
                fallback = fallback or super().describe(relation)
                fields.append(fallback.field(index))
            else:
                fields.append(pa.field(column["column_name"], arrow_type(declared)))
        return pa.schema(fields)

    def close(self) -> None:
        self._forget_connection()


def _libpq_value(value: str) -> str:
    """A libpq keyword value, quoted when it has spaces or quotes."""
    if value and not any(c in value for c in " '\\"):
        return value
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"

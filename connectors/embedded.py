"""An embedded DuckDB database shared by the connectors whose queries DuckDB runs in-process."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Mapping
from pathlib import Path

import pyarrow as pa

from connectors.base import Capabilities, Connector, sql_string
from connectors.store_errors import missing_database_file, store_error, timed_out
from connectors.watchdog import watchdog
from gateway.errors import (
    GatewayError,
    QueryCancelled,
    SourceUnavailable,
    engine_error,
    values_hidden,
)
from gateway.streaming import OwnedStream

ROWS_PER_BATCH = 16_384
"""Rows per batch a store's DuckDB stream hands over. A stream holds a few batches at a time,
so this bounds its memory: eight clients streaming lineitem at once took the gateway 440 MB
above idle with 65,536-row batches (about 11 MB each) and 250 MB with 16,384, at the same
throughput (python -m benchmarks serving)."""
STORE_ENGINE_CONFIG = {
    # DuckDB 1.5.5 can push a join's runtime filter below a LIMIT (see the local engine's
    # configuration in gateway/local_engine.py); queries pushed down whole run here too
    "disabled_optimizers": "join_filter_pushdown",
}


def _sql_value(value: bool | int | str) -> str:
    if isinstance(value, bool | int):
        return str(value).lower()
    return sql_string(value)


def _interrupt(cursor) -> None:
    """Interrupt ``cursor``'s query; a cursor closed meanwhile has nothing left to stop."""
    import duckdb

    with contextlib.suppress(duckdb.Error):
        cursor.interrupt()


class EmbeddedDuckDB:
    """One DuckDB database (a file opened read-only, or in memory) and a cursor per query.

    DuckDB releases the GIL while it works, so queries on separate cursors run in parallel.
    A query still running after ``query_timeout_seconds`` is interrupted.
    """

    def __init__(
        self,
        *,
        store: str,
        database: str = ":memory:",
        must_exist: bool = False,
        query_timeout_seconds: float = 300,
        settings: Mapping[str, bool | int | str] | None = None,
    ):
        self.store = store
        self.database = database
        self.must_exist = must_exist
        self.query_timeout_seconds = query_timeout_seconds
        self.settings = {"TimeZone": "UTC", **(settings or {})}
        self._connection = None
        self._lock = threading.Lock()

    def _connect(self):
        import duckdb

        connection = self._connection  # no lock on the path every query takes
        if connection is not None:
            return connection
        with self._lock:
            if self._connection is None:
                if self.must_exist and not Path(self.database).is_file():
                    raise missing_database_file(self.store, self.database)
                read_only = self.database != ":memory:"
                try:
                    connection = duckdb.connect(
                        self.database, read_only=read_only, config=STORE_ENGINE_CONFIG
                    )
                    # GLOBAL, so every cursor starts with them; the time zone: timestamptz
                    # leaves as timestamp[us, tz=UTC], the contract type, whatever the machine's
                    for name, value in self.settings.items():
                        connection.execute(f"SET GLOBAL {name} = {_sql_value(value)}")
                    self._connection = connection  # seen by others only once it is set up
                except duckdb.Error as exc:
                    raise SourceUnavailable(
                        f"store {self.store!r} cannot be opened: {exc}",
                        public=f"store {self.store!r} cannot be opened",
                    ) from exc
            return self._connection

    def execute(
        self,
        sql: str,
        *,
        parameters: pa.RecordBatch | None = None,
        tables: Mapping[str, pa.Table] | None = None,
    ) -> pa.RecordBatchReader:
        """``sql`` on a cursor of its own; ``tables`` are registered on that cursor only, so
        no other query sees them.

        The cursor lives exactly as long as the stream and is closed after it (OwnedStream):
        DuckDB's native result stream never leaves this module, so no other thread or engine
        can release it while it is read.
        """
        import duckdb

        cursor = self._connect().cursor()
        for name, table in (tables or {}).items():
            cursor.register(name, table)
        values = list(parameters.to_pylist()[0].values()) if parameters is not None else None
        guard = threading.Lock()  # an interrupt and the close never overlap
        closed = False

        def interrupt() -> None:
            with guard:
                if not closed:
                    _interrupt(cursor)

        def finish() -> None:
            nonlocal closed
            cancel_deadline()
            with guard:
                closed = True
                cursor.close()

        deadline_passed = threading.Event()

        def on_deadline() -> None:
            deadline_passed.set()
            interrupt()

        def classify(exc: Exception) -> GatewayError | None:
            """DuckDB's errors classified one way before and while the answer streams."""
            mapped = engine_error(exc, engine=f"store {self.store!r}")
            if deadline_passed.is_set() and (mapped is None or isinstance(mapped, QueryCancelled)):
                return timed_out(self.store, self.query_timeout_seconds)
            return mapped

        cancel_deadline = watchdog.schedule(self.query_timeout_seconds, on_deadline)
        try:
            result = cursor.execute(sql, values)
            native = result.to_arrow_reader(ROWS_PER_BATCH)
        except duckdb.Error as exc:
            finish()
            first_line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise classify(exc) or store_error(
                "rejected",
                store=self.store,
                message=str(exc),
                public_reason=values_hidden(first_line),
            ) from exc
        except BaseException:
            finish()
            raise
        # the deadline covers the stream too: a query that starts fast can stream for ever
        stream = OwnedStream(native, owner=finish, interrupt=interrupt, map_error=classify)
        return stream.reader()

    def close(self) -> None:
        with self._lock:
            if self._connection is not None:
                self._connection.close()
                self._connection = None


class EmbeddedConnector(Connector):
    """A store whose queries run in an in-process DuckDB (DuckDB files, Parquet and CSV files)."""

    capabilities = Capabilities(dialect="duckdb", key_tables=True)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._engine = self.open_engine()

    def open_engine(self) -> EmbeddedDuckDB:
        return EmbeddedDuckDB(
            store=self.name, query_timeout_seconds=self.settings.query_timeout_seconds
        )

    @property
    def connection_slots(self) -> None:
        return None  # a cursor per query, no pool

    def execute(
        self, sql: str, *, parameters: pa.RecordBatch | None = None
    ) -> pa.RecordBatchReader:
        return self._engine.execute(sql, parameters=parameters)

    def execute_with_tables(
        self, sql: str, *, tables: Mapping[str, pa.Table]
    ) -> pa.RecordBatchReader:
        return self._engine.execute(sql, tables=tables)

    def close(self) -> None:
        self._engine.close()

"""SQLite database files, queried through the ADBC SQLite driver (Arrow-native, read-only)."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable

import pyarrow as pa
from sqlglot import exp

from connectors.base import (
    Capabilities,
    Connector,
    ConnectorSettings,
    limit_fence,
    query_cancelled,
)
from connectors.pool import ConnectionPool
from connectors.store_errors import missing_database_file, store_error, timed_out
from connectors.watchdog import watchdog
from gateway.errors import (
    InvalidQuery,
    QueryCancelled,
    QueryTimeout,
    Unsupported,
    values_hidden,
)
from gateway.streaming import close_stream, stream_reader
from gateway.types import arrow_type


class SQLiteSettings(ConnectorSettings):
    path: str
    """The database file, relative to the mesh directory."""


class SQLiteConnector(Connector):
    kind = "sqlite"
    capabilities = Capabilities(
        dialect="sqlite",
        # the query flattener and WHERE push-down both leave a subquery with a LIMIT alone
        fence=limit_fence(9223372036854775807),
        # SQLite has no md5, right() or date_trunc: hash, partial and date masks run locally.
        # The rest failed at SQLite when the fuzzer (tests/fuzz) had them pushed there: SQLite
        # lacks the function, or sqlglot writes it in a form SQLite refuses.
        unsupported_functions=frozenset(
            {
                exp.MD5,
                exp.Right,
                exp.DateTrunc,
                exp.TimestampTrunc,
                exp.ApproxDistinct,
                exp.ArgMax,
                exp.Array,
                exp.ArrayAgg,
                exp.ArraySize,
                exp.Ascii,
                exp.BitLength,
                exp.BitwiseAndAgg,
                exp.BitwiseOrAgg,
                exp.BitwiseXor,
                exp.Cbrt,
                exp.ConcatWs,
                exp.Contains,
                exp.Corr,
                exp.CovarPop,
                exp.DateFromParts,
                exp.Day,
                exp.DayOfWeek,
                exp.DayOfWeekIso,
                exp.Dayname,
                exp.EndsWith,
                exp.Explode,
                exp.Extract,
                exp.Factorial,
                exp.First,
                exp.Initcap,
                exp.IsNan,
                exp.Kurtosis,
                exp.LastDay,
                exp.Left,
                exp.Levenshtein,
                exp.Median,
                exp.Mode,
                exp.Month,
                exp.Monthname,
                exp.Pad,
                exp.PercentileCont,
                exp.PropertyEQ,
                exp.Quarter,
                exp.RegexpExtract,
                exp.RegexpFullMatch,
                exp.RegexpILike,
                exp.RegexpLike,
                exp.RegexpReplace,
                exp.RegrSlope,
                exp.Repeat,
                exp.Reverse,
                exp.SHA2,
                exp.SimilarTo,
                exp.Skewness,
                exp.Split,
                exp.SplitPart,
                exp.StartsWith,
                exp.Stddev,
                exp.Struct,
                exp.TimeToUnix,
                exp.Translate,
                exp.UnixToTime,
                exp.Uuid,
                exp.Variance,
                exp.Week,
                exp.Year,
                exp.IgnoreNulls,
                exp.Interval,
            }
        ),  # fmt: skip
        unknown_functions=False,
        typed_columns=False,
    )
    Settings = SQLiteSettings

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.path = (self.base_dir / self.settings.path).resolve()
        self._pool = ConnectionPool(
            self._connect,
            size=self.settings.pool_size,
            store=self.name,
            wait_seconds=self.settings.connect_timeout_seconds,
        )

    def _connect(self):
        import adbc_driver_sqlite.dbapi

        from connectors import sqlite_interrupt

        if not self.path.is_file():
            raise missing_database_file(self.name, self.path)
        connection = adbc_driver_sqlite.dbapi.connect(f"file:{self.path}?mode=ro", autocommit=True)
        # SQLite's LIKE ignores ASCII case by default; the gateway's (DuckDB's) does not
        with connection.cursor() as cursor:
            cursor.execute("PRAGMA case_sensitive_like = ON")
        connection.meshgate_handle = sqlite_interrupt.load_into(connection)
        return connection

    def execute(
        self, sql: str, *, parameters: pa.RecordBatch | None = None
    ) -> pa.RecordBatchReader:
        import adbc_driver_manager

        running = _Interruptible(
            query_cancelled.get(), timeout_seconds=self.settings.query_timeout_seconds
        )

        def run(connection):
            cursor = connection.cursor()
            running.start(getattr(connection, "meshgate_handle", None))
            try:
                cursor.execute(sql, parameters)
            except adbc_driver_manager.Error as exc:
                running.end()
                cursor.close()
                if running.interrupted:
                    raise running.reason(self.name) from exc
                # the driver quotes the SQL it was given: physical names stay inside the gateway
                reason = str(exc).split("\nquery:")[0]
                raise store_error(
                    "rejected", store=self.name, message=reason, public_reason=values_hidden(reason)
                ) from exc
            except BaseException:
                running.end()
                cursor.close()
                raise
            reader = _untyped_when_empty(cursor.fetch_record_batch())
            return _typed_or_refused(reader, store=self.name, running=running), _Owner(
                cursor, running
            )

        reader = self._pool.stream(
            run, is_broken=lambda exc: not isinstance(exc, InvalidQuery | QueryCancelled)
        )

        def close() -> None:
            running.interrupt()  # a read blocked in another thread returns now
            close_stream(reader)

        return stream_reader(reader.schema, iter(reader), on_close=close)

    def describe(self, relation: exp.Expression) -> pa.Schema:
        """Declared column types from ``PRAGMA table_info``; SQLite values carry no fixed type."""
        if not isinstance(relation, exp.Table):
            raise Unsupported(
                f"store {self.name!r}: SQLite declares the types of tables and views, not of a "
                "query's columns; publish the product's `sql:` as a view to have it checked"
            )
        name = exp.Literal.string(relation.name).sql("sqlite")
        reader = self.execute(f"SELECT name, type FROM pragma_table_info({name}) ORDER BY cid")
        table = reader.read_all()
        fields = []
        for column, declared in zip(
            table["name"].to_pylist(), table["type"].to_pylist(), strict=True
        ):
            try:
                fields.append(pa.field(column, arrow_type(declared or "blob")))
            except ValueError:
                fields.append(pa.field(column, pa.binary()))
        return pa.schema(fields)

    def close(self) -> None:
        self._pool.close()


def _untyped_when_empty(reader: pa.RecordBatchReader) -> pa.RecordBatchReader:
    """``reader``, or for a result without rows the same columns in Arrow's null type.

    SQLite types values, not columns: the driver infers each column's type from the rows it
    reads and calls every column of an empty result int64, whatever it holds. The local engine
    then bound ``upper(n_name)`` over an empty fragment to ``upper(BIGINT)`` and failed; null
    columns bind to whatever the query needs, and the answer is cast to its schema anyway.
    """
    for batch in reader:
        if batch.num_rows:
            return pa.RecordBatchReader.from_batches(
                reader.schema, itertools.chain([batch], reader)
            )
    untyped = pa.schema([pa.field(field.name, pa.null()) for field in reader.schema])
    return pa.RecordBatchReader.from_batches(untyped, [])


TYPE_MISMATCH = "Type mismatch in column "


def _typed_or_refused(
    reader: pa.RecordBatchReader, *, store: str, running: _Interruptible
) -> pa.RecordBatchReader:
    """``reader``, failing as the statement's error when a column's values change type.

    The driver types each column from its first batch; the planner casts real and text outputs
    so that their values keep one type (Capabilities.typed_columns), but an expression DuckDB
    types as an integer can still give SQLite text or reals in later rows (``CASE ... THEN k
    ELSE 'many'``, which DuckDB itself would refuse converting 'many'): that is the statement's
    to change, not the gateway's failure. A read that fails because the query was
    interrupted is the cancellation.
    """

    def batches():
        try:
            yield from reader
        except OSError as exc:
            if running.interrupted:
                raise running.reason(store) from exc
            if TYPE_MISMATCH not in str(exc):
                raise
            reason = str(exc).removeprefix("[SQLite] ")
            raise InvalidQuery(
                f"store {store!r} answered values of more than one type in one column ({reason}); "
                "cast the expression in the query to the type it should have"
            ) from exc

    return pa.RecordBatchReader.from_batches(reader.schema, batches())


WATCH_SECONDS = 0.2
"""How often a running SQLite query looks whether its client cancelled or went away."""


class _Interruptible:
    """One query's hold on its connection's interrupt (connectors.sqlite_interrupt).

    While the query runs, the process's watchdog asks ``cancelled`` every WATCH_SECONDS and
    interrupts it when the client cancelled or left, and interrupts it after
    ``timeout_seconds``; closing the stream interrupts it too. The connection goes back to the
    pool only after :meth:`end`, so an interrupt never reaches the next query on it.
    """

    def __init__(self, cancelled: Callable[[], bool] | None, *, timeout_seconds: float) -> None:
        self.interrupted = False
        self.timed_out = False
        self._cancelled = cancelled
        self._timeout_seconds = timeout_seconds
        self._handle: int | None = None
        self._lock = threading.Lock()
        self._stop_watch: Callable[[], None] = lambda: None
        self._stop_deadline: Callable[[], None] = lambda: None

    def start(self, handle: int | None) -> None:
        with self._lock:
            self._handle = handle
            if handle is None:
                return
            self._stop_deadline = watchdog.schedule(self._timeout_seconds, self._time_up)
            if self._cancelled is not None:
                self._stop_watch = watchdog.schedule(WATCH_SECONDS, self._poll)

    def _time_up(self) -> None:
        self.timed_out = True
        self.interrupt()

    def _poll(self) -> None:
        if self._cancelled is not None and self._cancelled():
            self.interrupt()
            return
        with self._lock:
            if self._handle is not None:
                self._stop_watch = watchdog.schedule(WATCH_SECONDS, self._poll)

    def interrupt(self) -> None:
        from connectors import sqlite_interrupt

        with self._lock:
            if self._handle is not None:
                self.interrupted = True
                sqlite_interrupt.interrupt(self._handle)

    def reason(self, store: str) -> QueryTimeout | QueryCancelled:
        """Why the query was interrupted, once it was."""
        if self.timed_out:
            return timed_out(store, self._timeout_seconds)
        return QueryCancelled("the client cancelled the query")

    def end(self) -> None:
        """No interrupt after this returns; call it before the connection goes back."""
        with self._lock:
            self._handle = None
            stops = (self._stop_watch, self._stop_deadline)
        for stop in stops:
            stop()


class _Owner:
    """What the pool closes after the stream: the interrupt first, then the cursor."""

    def __init__(self, cursor, running: _Interruptible) -> None:
        self._cursor = cursor
        self._running = running

    def close(self) -> None:
        self._running.end()
        self._cursor.close()

"""A small Trino coordinator for tests: Trino's client REST protocol, executed on DuckDB.

No Trino server can run on the test machines, so this module speaks the subset of the
protocol that the ``trino`` Python client uses, and runs the SQL on DuckDB after sqlglot
translates it from Trino's dialect:

* ``POST /v1/statement`` with the SQL as body; ``X-Trino-User`` is required (HTTP 400
  otherwise), ``X-Trino-Catalog``/``X-Trino-Schema`` choose the default schema (``USE``),
  ``X-Trino-Time-Zone`` sets the session zone (DuckDB ``TimeZone``, and the zone
  ``timestamp with time zone`` values are rendered in). Other headers are recorded, not used.
* Answers are ``QueryResults`` documents: ``id``, ``infoUri``, ``nextUri``, ``columns``
  (``name``, ``type``, ``typeSignature``), ``data``, ``stats`` (``state`` QUEUED, RUNNING,
  FINISHED or FAILED) and ``error`` (``message``, ``errorCode``, ``errorName``, ``errorType``,
  ``errorLocation``, ``failureInfo``) with Trino's standard error codes.
* ``GET nextUri`` first moves the query from ``/queued/`` to ``/executing/``, then long-polls
  (up to ``max_wait_seconds``) for the next page of at most ``rows_per_page`` rows; a page that
  is not ready yet is answered RUNNING without ``data``, like Trino. Re-reading the current
  token repeats the last answer; other tokens get 404.
* ``DELETE nextUri`` cancels: it answers 204, records the query id in ``cancelled_queries``,
  interrupts DuckDB and stops producing pages; later GETs report ``USER_CANCELED``.
* ``EXECUTE IMMEDIATE '<sql>' USING <values>`` (how the client binds parameters) is expanded
  before translation. ``GET /v1/info`` answers like a coordinator.

Execution really streams: a producer thread per query reads DuckDB's Arrow stream and keeps at
most ``buffered_pages`` encoded pages ahead of the client, so a client that stops reading pauses
the scan and a DELETE ends it. Result types are reported with Trino's names: BOOLEAN, TINYINT,
SMALLINT, INTEGER, BIGINT, FLOAT → real, DOUBLE, DECIMAL(p,s) → decimal(p,s), HUGEINT →
decimal(38,0), UTINYINT/USMALLINT/UINTEGER → the next wider integer, UBIGINT → decimal(20,0),
VARCHAR → varchar, JSON → json, UUID → uuid, BLOB → varbinary, DATE → date, TIME → time(6),
TIMESTAMP_S/_MS/(none)/_NS → timestamp(0/3/6/9), TIMESTAMPTZ → timestamp(6) with time zone,
LIST/STRUCT/MAP → array/row/map, anything else → varchar. Values use Trino's JSON encoding:
decimals, dates, times and timestamps as strings (zoned ones in the session zone, e.g.
``2024-02-29 07:34:56.123456 America/New_York``), varbinary as base64, NaN and infinities as
strings, arrays as JSON arrays, rows as positional JSON arrays, maps as JSON objects.

Not implemented: authentication, TLS, the spooling protocol (the client's
``X-Trino-Query-Data-Encoding`` request is ignored and answered with inline ``data``, as a
coordinator without spooling does), transactions, session property changes, prepared
statements other than EXECUTE IMMEDIATE, and ``char(n)`` (DuckDB has no fixed-width text).

Use::

    from tests.support.trino_server import TrinoTestServer

    with TrinoTestServer(path_to_duckdb_file) as server:
        connector = TrinoConnector("store", server.store_settings(), base_dir=tmp_path)
        ...
        assert query_id in server.cancelled_queries
"""

from __future__ import annotations

import base64
import collections
import contextlib
import datetime
import itertools
import json
import math
import re
import secrets
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import sqlglot
from sqlglot import exp

_VARCHAR_LENGTH = 2_147_483_647
_EXECUTE_IMMEDIATE = re.compile(
    r"^\s*EXECUTE\s+IMMEDIATE\s+'((?:[^']|'')*)'\s*(?:USING\s+(.+?))?\s*;?\s*$",
    re.IGNORECASE | re.DOTALL,
)
_PATH = re.compile(r"^/v1/statement/(queued|executing)/([^/]+)/([^/]+)/(\d+)$")

# Trino's standard error codes (io.trino.spi.StandardErrorCode) used here: name → (code, type).
_ERRORS = {
    "GENERIC_USER_ERROR": (0, "USER_ERROR"),
    "SYNTAX_ERROR": (1, "USER_ERROR"),
    "USER_CANCELED": (3, "USER_ERROR"),
    "NOT_SUPPORTED": (13, "USER_ERROR"),
    "INVALID_CAST_ARGUMENT": (9, "USER_ERROR"),
    "NUMERIC_VALUE_OUT_OF_RANGE": (19, "USER_ERROR"),
    "CATALOG_NOT_FOUND": (44, "USER_ERROR"),
    "SCHEMA_NOT_FOUND": (45, "USER_ERROR"),
    "TABLE_NOT_FOUND": (46, "USER_ERROR"),
    "COLUMN_NOT_FOUND": (47, "USER_ERROR"),
    "TYPE_MISMATCH": (58, "USER_ERROR"),
    "GENERIC_INTERNAL_ERROR": (65536, "INTERNAL_ERROR"),
}


class TrinoError(Exception):
    """A query failure reported to the client as a Trino ``error`` object."""

    def __init__(
        self, name: str, message: str, *, line: int | None = None, column: int | None = None
    ):
        super().__init__(message)
        self.name, self.message, self.line, self.column = name, message, line, column

    def to_json(self) -> dict[str, Any]:
        code, kind = _ERRORS[self.name]
        error: dict[str, Any] = {
            "message": self.message,
            "errorCode": code,
            "errorName": self.name,
            "errorType": kind,
            "failureInfo": {
                "type": "meshgate.tests.TrinoTestServer",
                "message": self.message,
                "suppressed": [],
                "stack": [],
            },
        }
        if self.line is not None:
            error["errorLocation"] = {"lineNumber": self.line, "columnNumber": self.column}
        return error


@dataclass
class ServedQuery:
    """One statement the server received; tests read its fields to see what happened."""

    query_id: str
    sql: str
    headers: dict[str, str]
    """The request headers of the POST (names as sent)."""
    state: str = "QUEUED"
    """QUEUED, RUNNING, FINISHED or FAILED (cancelled queries fail with USER_CANCELED)."""
    error_name: str | None = None
    rows_produced: int = 0
    """Rows read from DuckDB and encoded so far: stops growing when the query is cancelled."""
    pages_served: int = 0
    finished: threading.Event = field(default_factory=threading.Event)
    """Set when the producer thread has stopped (finished, failed or cancelled)."""

    slug: str = field(default_factory=lambda: secrets.token_hex(8), repr=False)
    columns: list[dict[str, Any]] | None = field(default=None, repr=False)
    cancelled: bool = field(default=False, repr=False)
    started: float = field(default_factory=time.monotonic, repr=False)
    _pages: collections.deque = field(default_factory=collections.deque, repr=False)
    _end: dict[str, Any] | None = field(default=None, repr=False)
    _cond: threading.Condition = field(default_factory=threading.Condition, repr=False)
    _token: int = field(default=-1, repr=False)
    _last_answer: bytes | None = field(default=None, repr=False)
    _cursor: Any = field(default=None, repr=False)


class TrinoTestServer:
    """A Trino-protocol HTTP server on 127.0.0.1 over one DuckDB database file.

    The file is attached read-only as catalog ``catalog`` (default schema ``schema``); it must
    not be open for writing elsewhere. ``url``, ``host`` and ``port`` say where to connect and
    ``store_settings()`` gives the mesh.yaml store entry; ``queries`` lists every statement
    received (``query(text)`` finds one) and ``cancelled_queries`` the ids that received a
    DELETE. ``port=0`` picks a free port; pass a former server's port to bring a "store that
    was down" back at the same address. Pages hold at most ``rows_per_page`` rows and at most
    ``buffered_pages`` wait for the client; DuckDB runs with ``threads`` threads.
    """

    def __init__(
        self,
        duckdb_path: str | Path,
        *,
        catalog: str = "duck",
        schema: str = "main",
        rows_per_page: int = 1000,
        buffered_pages: int = 2,
        max_wait_seconds: float = 1.0,
        threads: int = 1,
        port: int = 0,
    ):
        self.catalog = catalog
        self.schema = schema
        self.rows_per_page = rows_per_page
        self.buffered_pages = buffered_pages
        self.max_wait_seconds = max_wait_seconds
        self.queries: list[ServedQuery] = []
        self.cancelled_queries: list[str] = []
        self._by_id: dict[str, ServedQuery] = {}
        self._counter = itertools.count(1)
        self._coordinator = secrets.token_hex(3)[:5]
        self._lock = threading.Lock()
        self._database = duckdb.connect(config={"threads": threads})
        path = str(Path(duckdb_path).resolve()).replace("'", "''")
        self._database.execute(f"ATTACH '{path}' AS {_quote(catalog)} (READ_ONLY)")
        self._connections: set[socket.socket] | None = set()
        """Client sockets the handler threads serve; None once stop() has closed them."""
        self._http = ThreadingHTTPServer(("127.0.0.1", port), _handler(self))
        self._http.daemon_threads = True
        self.host, self.port = self._http.server_address[:2]
        self.url = f"http://{self.host}:{self.port}"
        self._thread: threading.Thread | None = None

    def start(self) -> TrinoTestServer:
        self._thread = threading.Thread(
            target=self._http.serve_forever, name="trino-test-server", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, drop every client connection, cancel what still runs and close the
        database. Kept-alive connections would otherwise still be answered by their handler
        threads, over a closed database, after the server is "down"."""
        if self._thread is not None:
            self._http.shutdown()
            self._thread = None
        self._http.server_close()
        with self._lock:
            connections, self._connections = self._connections or set(), None
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
        for query in list(self.queries):
            self._cancel(query, record=False)
            query.finished.wait(5)
        self._database.close()

    def __enter__(self) -> TrinoTestServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def store_settings(self, *, user: str = "meshgate") -> dict[str, Any]:
        """The mesh.yaml store entry that points a ``trino`` connector at this server."""
        return {
            "kind": "trino",
            "host": self.host,
            "port": self.port,
            "user": user,
            "catalog": self.catalog,
            "schema": self.schema,
        }

    def query(self, sql_contains: str) -> ServedQuery:
        """The latest query whose SQL contains ``sql_contains`` (KeyError when none does)."""
        for query in reversed(self.queries):
            if sql_contains in query.sql:
                return query
        raise KeyError(f"no query containing {sql_contains!r} reached the server")

    # --- protocol --------------------------------------------------------------------------

    def _submit(self, sql: str, headers: dict[str, str]) -> dict[str, Any]:
        now = time.strftime("%Y%m%d_%H%M%S", time.gmtime())
        query = ServedQuery(f"{now}_{next(self._counter):05d}_{self._coordinator}", sql, headers)
        with self._lock:
            self.queries.append(query)
            self._by_id[query.query_id] = query
        threading.Thread(target=self._produce, args=(query,), daemon=True).start()
        return self._answer(query, next_uri=self._uri(query, "queued", 1))

    def _next(self, query: ServedQuery, phase: str, token: int) -> bytes | None:
        """The answer to GET nextUri, or None for a token that is neither current nor next."""
        if phase == "queued":
            return _dump(self._answer(query, next_uri=self._uri(query, "executing", 0)))
        with query._cond:
            if token == query._token and query._last_answer is not None:
                return query._last_answer
            if token != query._token + 1:
                return None
            query._cond.wait_for(
                lambda: query._pages or query._end is not None, timeout=self.max_wait_seconds
            )
            if query._pages:
                rows = query._pages.popleft()
                query.pages_served += 1
                query._cond.notify_all()
                answer = self._answer(
                    query, data=rows, next_uri=self._uri(query, "executing", token + 1)
                )
            elif query._end is not None:
                answer = self._answer(query, **query._end)
            else:
                answer = self._answer(query, next_uri=self._uri(query, "executing", token + 1))
            query._token, query._last_answer = token, _dump(answer)
            return query._last_answer

    def _cancel(self, query: ServedQuery, *, record: bool = True) -> None:
        if record:
            with self._lock:
                self.cancelled_queries.append(query.query_id)
        with query._cond:
            if query._end is None:
                query.cancelled = True
                query._pages.clear()
                error = TrinoError("USER_CANCELED", "Query was canceled")
                query._end = {"error": error.to_json()}
                query.state, query.error_name = "FAILED", error.name
            query._cond.notify_all()
        cursor = query._cursor
        if cursor is not None and not query.finished.is_set():
            with contextlib.suppress(duckdb.Error):
                cursor.interrupt()

    def _answer(
        self,
        query: ServedQuery,
        *,
        next_uri: str | None = None,
        data: list[list[Any]] | None = None,
        error: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        answer: dict[str, Any] = {
            "id": query.query_id,
            "infoUri": f"{self.url}/ui/query.html?{query.query_id}",
        }
        if next_uri is not None:
            answer["nextUri"] = next_uri
        if query.columns is not None and error is None:
            answer["columns"] = query.columns
        if data:
            answer["data"] = data
        if error is not None:
            answer["error"] = error
        state = query.state
        if next_uri is None and error is None:
            state = "FINISHED"
        elif next_uri is not None and state == "FINISHED":
            state = "RUNNING"  # pages are still buffered for the client
        answer["stats"] = {
            "state": state,
            "queued": state == "QUEUED",
            "scheduled": state != "QUEUED",
            "nodes": 1,
            "totalSplits": 1,
            "queuedSplits": 0,
            "runningSplits": int(state == "RUNNING"),
            "completedSplits": int(state == "FINISHED"),
            "cpuTimeMillis": 0,
            "wallTimeMillis": 0,
            "queuedTimeMillis": 0,
            "elapsedTimeMillis": int((time.monotonic() - query.started) * 1000),
            "processedRows": query.rows_produced,
            "processedBytes": 0,
            "peakMemoryBytes": 0,
            "spilledBytes": 0,
        }
        answer["warnings"] = []
        return answer

    def _uri(self, query: ServedQuery, phase: str, token: int) -> str:
        return f"{self.url}/v1/statement/{phase}/{query.query_id}/{query.slug}/{token}"

    # --- execution -------------------------------------------------------------------------

    def _produce(self, query: ServedQuery) -> None:
        """Run the statement on DuckDB and queue encoded pages, waiting while the buffer is full."""
        reader = cursor = None
        try:
            cursor = query._cursor = self._database.cursor()
            if query.cancelled:
                return
            query.state = "RUNNING"
            zone = self._session(cursor, query.headers)
            cursor.execute(to_duckdb(query.sql))
            types = [column[1] for column in cursor.description or []]
            names = [column[0] for column in cursor.description or []]
            types = [trino_type(t) for t in types]
            query.columns = [
                {"name": n, "type": t.name, "typeSignature": t.signature}
                for n, t in zip(names, types, strict=True)
            ]
            reader = cursor.to_arrow_reader(self.rows_per_page)
            for batch in reader:
                for offset in range(0, batch.num_rows, self.rows_per_page):
                    page = batch.slice(offset, self.rows_per_page)
                    columns = [t.column(page.column(i), zone) for i, t in enumerate(types)]
                    if not self._offer(query, [list(row) for row in zip(*columns, strict=True)]):
                        return
            self._finish(query, {})
        except TrinoError as error:
            self._finish(query, {"error": error.to_json()}, error.name)
        except duckdb.InterruptException:
            pass  # cancelled: the DELETE already recorded the outcome
        except duckdb.Error as problem:
            error = _duckdb_error(problem)
            self._finish(query, {"error": error.to_json()}, error.name)
        except Exception as problem:  # noqa: BLE001 - a bug here must fail the query, not hang it
            error = TrinoError("GENERIC_INTERNAL_ERROR", f"{type(problem).__name__}: {problem}")
            self._finish(query, {"error": error.to_json()}, error.name)
        finally:
            if reader is not None:
                reader.close()
            if cursor is not None:
                cursor.close()
            query.finished.set()

    def _session(self, cursor: duckdb.DuckDBPyConnection, headers: dict[str, str]) -> str:
        """Apply the catalog, schema and time zone headers; return the session zone."""
        lower = {k.lower(): v for k, v in headers.items()}
        catalog, schema = lower.get("x-trino-catalog"), lower.get("x-trino-schema")
        if catalog is not None and catalog != self.catalog:
            raise TrinoError("CATALOG_NOT_FOUND", f"Catalog '{catalog}' not found")
        if catalog is not None and schema is not None:
            try:
                cursor.execute(f"USE {_quote(catalog)}.{_quote(schema)}")
            except duckdb.Error:
                raise TrinoError("SCHEMA_NOT_FOUND", f"Schema '{schema}' does not exist") from None
        zone = lower.get("x-trino-time-zone") or "UTC"
        try:
            ZoneInfo(zone)
        except (ZoneInfoNotFoundError, ValueError):
            raise TrinoError("GENERIC_USER_ERROR", f"Time zone not supported: {zone}") from None
        cursor.execute(f"SET TimeZone = '{zone}'")
        return zone

    def _offer(self, query: ServedQuery, rows: list[list[Any]]) -> bool:
        """Queue one page; False once the query was cancelled."""
        with query._cond:
            query._cond.wait_for(lambda: query.cancelled or len(query._pages) < self.buffered_pages)
            if query.cancelled:
                return False
            query._pages.append(rows)
            query.rows_produced += len(rows)
            query._cond.notify_all()
            return True

    def _finish(
        self, query: ServedQuery, end: dict[str, Any], error_name: str | None = None
    ) -> None:
        with query._cond:
            if query._end is None:
                query._end = end
                query.state = "FAILED" if error_name else "FINISHED"
                query.error_name = error_name
            query._cond.notify_all()


def to_duckdb(sql: str) -> str:
    """Trino SQL as DuckDB SQL; ``EXECUTE IMMEDIATE … USING …`` gets its values bound."""
    immediate = _EXECUTE_IMMEDIATE.match(sql)
    try:
        if immediate:
            statement = sqlglot.parse_one(immediate[1].replace("''", "'"), read="trino")
            values = []
            if immediate[2]:
                values = sqlglot.parse_one(f"SELECT {immediate[2]}", read="trino").expressions
            placeholders = list(statement.find_all(exp.Placeholder, bfs=False))
            if len(placeholders) != len(values):
                raise TrinoError(
                    "GENERIC_USER_ERROR",
                    f"Incorrect number of parameters: expected {len(placeholders)} but found "
                    f"{len(values)}",
                )
            for placeholder, value in zip(placeholders, values, strict=True):
                placeholder.replace(value)
            return statement.sql(dialect="duckdb")
        statements = sqlglot.transpile(sql, read="trino", write="duckdb")
    except sqlglot.ParseError as error:
        first = error.errors[0] if error.errors else {}
        raise TrinoError(
            "SYNTAX_ERROR",
            f"line {first.get('line', 1)}:{first.get('col', 1)}: {first.get('description', error)}",
            line=first.get("line"),
            column=first.get("col"),
        ) from None
    if len(statements) != 1:
        raise TrinoError("SYNTAX_ERROR", "mismatched input ';': expected one statement")
    return statements[0]


def _duckdb_error(problem: duckdb.Error) -> TrinoError:
    message = str(problem)
    if isinstance(problem, duckdb.ParserException):
        return TrinoError("SYNTAX_ERROR", message)
    if isinstance(problem, duckdb.CatalogException):
        return TrinoError("TABLE_NOT_FOUND", message)
    if isinstance(problem, duckdb.BinderException):
        name = "COLUMN_NOT_FOUND" if "column" in message.lower() else "TYPE_MISMATCH"
        return TrinoError(name, message)
    if isinstance(problem, duckdb.ConversionException | duckdb.InvalidInputException):
        return TrinoError("INVALID_CAST_ARGUMENT", message)
    if isinstance(problem, duckdb.OutOfRangeException):
        return TrinoError("NUMERIC_VALUE_OUT_OF_RANGE", message)
    if isinstance(problem, duckdb.NotImplementedException):
        return TrinoError("NOT_SUPPORTED", message)
    return TrinoError("GENERIC_INTERNAL_ERROR", message)


# --- types and values ------------------------------------------------------------------------

_SIMPLE = {
    "boolean": "boolean",
    "tinyint": "tinyint",
    "smallint": "smallint",
    "integer": "integer",
    "bigint": "bigint",
    "utinyint": "smallint",
    "usmallint": "integer",
    "uinteger": "bigint",
    "float": "real",
    "double": "double",
    "date": "date",
    "blob": "varbinary",
    "uuid": "uuid",
}
_TIMESTAMP_PRECISION = {"timestamp_s": 0, "timestamp_ms": 3, "timestamp": 6, "timestamp_ns": 9}
# DuckDB types whose Arrow cast to string is exactly Trino's text for the mapped type.
_ARROW_TEXT = {"decimal", "hugeint", "ubigint", "date", "time", *_TIMESTAMP_PRECISION}


@dataclass(frozen=True)
class _TrinoType:
    """How one DuckDB type looks to a Trino client."""

    name: str
    signature: dict[str, Any]
    value: Callable[[Any, str], Any]
    """Encodes one Python value (from ``to_pylist``) given the session zone."""
    column: Callable[[pa.Array, str], list[Any]]
    """Encodes a whole Arrow column; vectorised where Arrow's text matches Trino's."""


def trino_type(duck: duckdb.typing.DuckDBPyType) -> _TrinoType:
    """Trino's type name, type signature and value encoding for a DuckDB result type.

    Types Trino has no counterpart for here (intervals, enums, bit strings, ``time with time
    zone``) are reported as varchar holding the text of the value's Python form.
    """
    kind = duck.id
    name, signature, value = _VARCHAR, _signature("varchar", _long(_VARCHAR_LENGTH)), _text
    if kind in _SIMPLE:
        name, signature = _SIMPLE[kind], _signature(_SIMPLE[kind])
        value = {"float": _number, "double": _number, "blob": _base64, "date": _date}.get(
            kind, _same
        )
    elif kind == "varchar":
        if str(duck) == "JSON":
            name, signature = "json", _signature("json")
        value = _same
    elif kind in ("decimal", "hugeint", "ubigint"):
        precision, scale = _decimal_shape(duck)
        name = f"decimal({precision},{scale})"
        signature, value = _signature("decimal", _long(precision), _long(scale)), _text
    elif kind in _TIMESTAMP_PRECISION:
        p = _TIMESTAMP_PRECISION[kind]
        name, signature, value = f"timestamp({p})", _signature("timestamp", _long(p)), _timestamp
    elif kind == "timestamp with time zone":
        name = "timestamp(6) with time zone"
        signature, value = _signature("timestamp with time zone", _long(6)), _timestamp
    elif kind == "time":
        name, signature, value = "time(6)", _signature("time", _long(6)), _time
    elif kind in ("list", "struct", "map"):
        return _nested(kind, [(n, trino_type(t)) for n, t in duck.children])
    if kind == "timestamp with time zone":
        column = _zoned
    elif kind in _ARROW_TEXT:
        column = _arrow_text
    elif value is _same:
        column = _pylist
    else:
        column = _each(value)
    return _TrinoType(name, signature, value, column)


def _nested(kind: str, children: list[tuple[str, _TrinoType]]) -> _TrinoType:
    """array, row and map types: values go through their children's encoders one by one."""
    if kind == "list":
        ((_, child),) = children
        name = f"array({child.name})"
        signature = _signature("array", {"kind": "TYPE", "value": child.signature})

        def value(v: Any, zone: str) -> Any:
            return None if v is None else [child.value(x, zone) for x in v]
    elif kind == "struct":
        name = "row(" + ", ".join(f"{n} {t.name}" for n, t in children) + ")"
        signature = _signature(
            "row",
            *[
                {
                    "kind": "NAMED_TYPE",
                    "value": {"fieldName": {"name": n}, "typeSignature": t.signature},
                }
                for n, t in children
            ],
        )

        def value(v: Any, zone: str) -> Any:  # rows travel as positional arrays
            return None if v is None else [t.value(v[n], zone) for n, t in children]
    else:
        (_, key), (_, item) = children
        name = f"map({key.name}, {item.name})"
        signature = _signature(
            "map",
            {"kind": "TYPE", "value": key.signature},
            {"kind": "TYPE", "value": item.signature},
        )

        def value(v: Any, zone: str) -> Any:  # Arrow gives (key, value) pairs
            return (
                None if v is None else {str(key.value(k, zone)): item.value(x, zone) for k, x in v}
            )

    return _TrinoType(name, signature, value, _each(value))


_VARCHAR = "varchar"


def _signature(raw: str, *arguments: dict[str, Any]) -> dict[str, Any]:
    return {"rawType": raw, "arguments": list(arguments)}


def _long(value: int) -> dict[str, Any]:
    return {"kind": "LONG", "value": value}


def _decimal_shape(duck: duckdb.typing.DuckDBPyType) -> tuple[int, int]:
    if duck.id == "hugeint":
        return 38, 0
    if duck.id == "ubigint":
        return 20, 0
    precision, scale = re.findall(r"\d+", str(duck))
    return int(precision), int(scale)


def _same(value: Any, zone: str) -> Any:
    return value


def _text(value: Any, zone: str) -> str | None:
    return None if value is None else str(value)


def _number(value: float | None, zone: str) -> float | str | None:
    """Finite numbers as JSON numbers; NaN and infinities as the strings Trino sends."""
    if value is None or math.isfinite(value):
        return value
    if math.isnan(value):
        return "NaN"
    return "Infinity" if value > 0 else "-Infinity"


def _base64(value: bytes | None, zone: str) -> str | None:
    return None if value is None else base64.b64encode(value).decode("ascii")


def _time(value: datetime.time | None, zone: str) -> str | None:
    return None if value is None else value.isoformat("microseconds")


def _date(value: datetime.date | None, zone: str) -> str | None:
    return None if value is None else value.isoformat()


def _timestamp(value: datetime.datetime | None, zone: str) -> str | None:
    if value is None:
        return None
    if value.tzinfo is None:
        return value.isoformat(" ", "microseconds")
    local = value.astimezone(ZoneInfo(zone)).replace(tzinfo=None)
    return f"{local.isoformat(' ', 'microseconds')} {zone}"


def _pylist(array: pa.Array, zone: str) -> list[Any]:
    return array.to_pylist()


def _arrow_text(array: pa.Array, zone: str) -> list[Any]:
    return array.cast(pa.string()).to_pylist()


def _zoned(array: pa.Array, zone: str) -> list[Any]:
    """Instants rendered in the session zone: ``2024-02-29 07:34:56.123456 America/New_York``."""
    local = pc.local_timestamp(array.cast(pa.timestamp(array.type.unit, tz=zone)))
    return pc.binary_join_element_wise(local.cast(pa.string()), f" {zone}", "").to_pylist()


def _each(value: Callable[[Any, str], Any]) -> Callable[[pa.Array, str], list[Any]]:
    return lambda array, zone: [value(v, zone) for v in array.to_pylist()]


def _quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


def _dump(answer: dict[str, Any]) -> bytes:
    return json.dumps(answer, allow_nan=False).encode()


def _handler(server: TrinoTestServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # headers and body go out as two writes

        def setup(self) -> None:
            super().setup()
            with server._lock:
                if server._connections is not None:
                    server._connections.add(self.connection)
                    return
            with contextlib.suppress(OSError):  # accepted as the server stopped
                self.connection.shutdown(socket.SHUT_RDWR)

        def finish(self) -> None:
            with server._lock:
                if server._connections is not None:
                    server._connections.discard(self.connection)
            super().finish()

        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if self.path != "/v1/statement":
                return self._send(HTTPStatus.NOT_FOUND, b"Not Found", "text/plain")
            if not self.headers.get("X-Trino-User"):
                return self._send(HTTPStatus.BAD_REQUEST, b"User must be set", "text/plain")
            answer = server._submit(body.decode("utf-8"), dict(self.headers.items()))
            self._send(HTTPStatus.OK, _dump(answer))

        def do_GET(self) -> None:  # noqa: N802
            if self.path == "/v1/info":
                info = {
                    "nodeVersion": {"version": "meshgate-test"},
                    "environment": "test",
                    "coordinator": True,
                    "starting": False,
                    "uptime": "1.00s",
                }
                return self._send(HTTPStatus.OK, _dump(info))
            query, phase, token = self._query()
            answer = server._next(query, phase, token) if query is not None else None
            if answer is None:
                return self._send(HTTPStatus.NOT_FOUND, b"Query not found", "text/plain")
            self._send(HTTPStatus.OK, answer)

        def do_DELETE(self) -> None:  # noqa: N802
            query, _, _ = self._query()
            if query is None:
                return self._send(HTTPStatus.NOT_FOUND, b"Query not found", "text/plain")
            server._cancel(query)
            self._send(HTTPStatus.NO_CONTENT, b"")

        def _query(self) -> tuple[ServedQuery | None, str, int]:
            match = _PATH.match(self.path)
            if match is None:
                return None, "", 0
            query = server._by_id.get(match[2])
            if query is None or not secrets.compare_digest(query.slug, match[3]):
                return None, "", 0
            return query, match[1], int(match[4])

        def _send(self, status: HTTPStatus, body: bytes, kind: str = "application/json") -> None:
            self.send_response(status)
            if status != HTTPStatus.NO_CONTENT:
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if status != HTTPStatus.NO_CONTENT:
                try:
                    self.wfile.write(body)
                except ConnectionError:  # the client gave up on this request (read timeout)
                    self.close_connection = True

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            pass  # keep test output quiet

    return Handler

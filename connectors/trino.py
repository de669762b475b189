"""Trino coordinators, queried through the ``trino`` client over Trino's client REST protocol.

The protocol is row-based by nature: Trino answers a query as pages of JSON rows (``data``)
described by ``columns`` with Trino type names, and offers no Arrow path. That is the limit
this connector works within. It reads one batch worth of rows at a time (``fetchmany``) and
turns it into one Arrow record batch column by column with ``pa.array(values, type=...)`` and
Arrow's vectorised parsers (decimals, dates, times and timestamps arrive as strings), so memory
stays bounded by one batch whatever the result size, and no list of all rows is ever built.
"""

from __future__ import annotations

import base64
import json
import logging
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field, field_validator, model_validator
from sqlglot import exp

from connectors.base import (
    Capabilities,
    Connector,
    ConnectorSettings,
    limit_fence,
    secret_from_env,
)
from connectors.pool import ConnectionPool
from connectors.store_errors import timed_out
from connectors.watchdog import watchdog
from gateway.errors import (
    GatewayError,
    InvalidQuery,
    QueryCancelled,
    QueryTimeout,
    SourceUnavailable,
)
from gateway.streaming import stream_reader

log = logging.getLogger(__name__)

Converter = Callable[[Sequence[Any]], pa.Array]


class TrinoSettings(ConnectorSettings):
    host: str
    """The coordinator's host name or address."""

    port: int = Field(default=8080, ge=1, le=65535)

    user: str
    """Sent as ``X-Trino-User``; with ``password_env`` also the basic-auth user."""

    catalog: str
    """Default catalog (``X-Trino-Catalog``) that unqualified table names resolve in."""

    schema_name: str = Field(alias="schema")
    """Default schema (``X-Trino-Schema``)."""

    http_scheme: Literal["http", "https"] = "http"

    password_env: str | None = None
    """Environment variable holding the basic-auth password; requires ``http_scheme: https``."""

    source: str = "meshgate"
    """Sent as ``X-Trino-Source`` so Trino's query list shows where queries come from."""

    timezone: str = "UTC"
    """Session time zone (``X-Trino-Time-Zone``); it decides how Trino casts timestamps to
    ``timestamp with time zone``. Values are served as UTC instants whatever it is."""

    batch_rows: int = Field(default=10_000, ge=1, le=1_000_000)
    """Rows per Arrow record batch."""

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"unknown time zone {value!r}; use an IANA name such as 'UTC' or 'Europe/Berlin'"
            ) from None
        return value

    @model_validator(mode="after")
    def _password_needs_tls(self) -> TrinoSettings:
        if self.password_env is not None and self.http_scheme != "https":
            raise ValueError(
                "password_env: basic auth would send the password in clear text over http; "
                "set `http_scheme: https` (Trino accepts passwords only over TLS) or remove "
                "`password_env`"
            )
        return self


class TrinoConnector(Connector):
    """One Trino coordinator; every query is one HTTP statement through the ``trino`` client."""

    kind = "trino"
    capabilities = Capabilities(
        dialect="trino",
        # predicate pushdown stops at a LIMIT
        fence=limit_fence(9223372036854775807),
        unsupported_functions=frozenset(
            {
                # Trino has no exact percentiles or mode; sqlglot would emit PERCENTILE_CONT,
                # which Trino lacks, so these stay local.
                exp.Median,
                exp.PercentileCont,
                exp.PercentileDisc,
                exp.Mode,
                # Approximations whose answers differ from the gateway's engine.
                exp.ApproxDistinct,
                exp.ApproxQuantile,
                # DuckDB's first() follows input order; Trino's arbitrary() does not.
                exp.First,
                # Trino's md5() takes varbinary and returns varbinary.
                exp.MD5,
            }
        ),
    )
    Settings = TrinoSettings

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        settings: TrinoSettings = self.settings
        self.url = f"{settings.http_scheme}://{settings.host}:{settings.port}"
        self._password = secret_from_env(
            settings.password_env, store=self.name, field_name="password_env"
        )
        self._pool = ConnectionPool(
            self._connect,
            size=settings.pool_size,
            store=self.name,
            wait_seconds=settings.connect_timeout_seconds,
        )

    def _connect(self):
        """A client connection: an HTTP session and the query context headers (no I/O yet)."""
        import trino.auth
        import trino.dbapi

        settings: TrinoSettings = self.settings
        auth = None
        if self._password is not None:
            auth = trino.auth.BasicAuthentication(settings.user, self._password)
        return trino.dbapi.connect(
            host=settings.host,
            port=settings.port,
            user=settings.user,
            catalog=settings.catalog,
            schema=settings.schema_name,
            http_scheme=settings.http_scheme,
            auth=auth,
            source=settings.source,
            timezone=settings.timezone,
            # Raw JSON values: Arrow parses them column-wise, faster than per-value mapping.
            legacy_primitive_types=True,
            # Parameters go through EXECUTE IMMEDIATE (Trino >= 418), without a probe query.
            legacy_prepared_statements=False,
            # One attempt per request. The query deadline is the watchdog's (it cancels); the
            # read timeout only bounds how long a coordinator that stopped answering is waited
            # for, and must outlast Trino's long polls (about 1 s).
            max_attempts=1,
            request_timeout=(
                settings.connect_timeout_seconds,
                settings.query_timeout_seconds + settings.connect_timeout_seconds,
            ),
        )

    def execute(
        self, sql: str, *, parameters: pa.RecordBatch | None = None
    ) -> pa.RecordBatchReader:
        values = list(parameters.to_pylist()[0].values()) if parameters is not None else None

        def run(connection) -> tuple[pa.RecordBatchReader, _TrinoStream]:
            stream = _TrinoStream(self, connection.cursor(), sql, values)
            return stream.reader(), stream

        return self._pool.stream(run, is_broken=lambda exc: isinstance(exc, SourceUnavailable))

    def close(self) -> None:
        self._pool.close()


class _TrinoStream:
    """One running statement: submits it, pages through it, and cancels it when closed early.

    The time spent waiting on Trino (submission and every page) counts against
    ``query_timeout_seconds``; time the consumer spends on a batch does not. When the budget
    runs out, the shared watchdog (connectors.watchdog) cancels the query (DELETE on ``nextUri``)
    and QueryTimeout is raised.
    """

    def __init__(self, connector: TrinoConnector, cursor, sql: str, parameters: list | None):
        self._connector = connector
        self._cursor = cursor
        self._remaining = connector.settings.query_timeout_seconds
        self._timed_out = False
        self._done = False
        self._wait(lambda: cursor.execute(sql, parameters))
        description = self._wait(lambda: cursor.description) or []
        fields, self._converters = [], []
        for column in description:
            arrow, converter = arrow_column(column.type_code)
            fields.append(pa.field(column.name, arrow))
            self._converters.append(converter)
        self.schema = pa.schema(fields)

    def reader(self) -> pa.RecordBatchReader:
        return stream_reader(self.schema, self._batches())

    def _batches(self) -> Iterator[pa.RecordBatch]:
        size = self._connector.settings.batch_rows
        while True:
            rows = self._wait(lambda: self._cursor.fetchmany(size))
            if not rows:
                self._done = True
                return
            yield self._to_batch(rows)

    def _to_batch(self, rows: list[list[Any]]) -> pa.RecordBatch:
        """One page of rows as a record batch, converted column by column."""
        arrays = []
        columns = zip(*rows, strict=True)
        for field, column, convert in zip(self.schema, columns, self._converters, strict=True):
            try:
                arrays.append(convert(column))
            except (pa.ArrowInvalid, pa.ArrowTypeError, ValueError) as exc:
                raise InvalidQuery(
                    f"store {self._connector.name!r}: column {field.name!r} holds a value that "
                    f"does not read as {field.type} ({exc}); cast it to varchar in the product's "
                    "SQL"
                ) from exc
        return pa.RecordBatch.from_arrays(arrays, schema=self.schema)

    def _wait(self, call: Callable[[], Any]) -> Any:
        """Run one blocking client call under the watchdog and translate what it raises."""
        if self._remaining <= 0:
            self._expire()
            raise self._timeout()
        returned = threading.Event()
        cancelling: list[threading.Thread] = []

        def on_deadline() -> None:
            # cancelling talks to Trino: off the shared watchdog thread, so others keep time
            self._timed_out = True
            thread = threading.Thread(
                target=self._expire, args=(returned,), name="meshgate-cancel", daemon=True
            )
            cancelling.append(thread)
            thread.start()

        started = time.monotonic()
        cancel_deadline = watchdog.schedule(self._remaining, on_deadline)
        try:
            result = call()
        except GatewayError:
            raise
        except Exception as exc:
            self._done = True
            error = self._translate(exc)
            if error is exc:
                raise
            raise error from exc
        finally:
            returned.set()
            cancel_deadline()
            for thread in cancelling:  # report the timeout only once the cancel went out
                thread.join(self._connector.settings.connect_timeout_seconds)
            self._remaining -= time.monotonic() - started
        if self._timed_out:
            self._done = True
            raise self._timeout()
        return result

    def _expire(self, returned: threading.Event | None = None) -> None:
        """Cancel the query; repeat while the call still waits, in case the first DELETE came
        before Trino had named the query (a cancel without ``nextUri`` does nothing)."""
        self._timed_out = True
        self._cancel()
        while returned is not None and not returned.wait(0.25):
            self._cancel()

    def _cancel(self) -> None:
        try:
            self._cursor.cancel()
        except Exception as exc:  # noqa: BLE001 - a store that went away cannot be told to stop
            log.debug("store %r: cancelling a Trino query failed: %s", self._connector.name, exc)

    def close(self) -> None:
        """Stop the query at Trino unless it already finished or failed."""
        if not self._done:
            self._done = True
            self._cancel()

    def _timeout(self) -> QueryTimeout:
        return timed_out(self._connector.name, self._connector.settings.query_timeout_seconds)

    def _translate(self, exc: Exception) -> GatewayError | Exception:
        """The GatewayError for what the trino client raised (``exc`` itself if unknown)."""
        import requests
        import trino.exceptions as errors

        name, url = self._connector.name, self._connector.url
        role = self._connector.role
        if self._timed_out:
            return self._timeout()
        if isinstance(exc, errors.TrinoQueryError):
            detail = f"{exc.error_name}: {exc.message}"
            if exc.error_name == "EXCEEDED_TIME_LIMIT":
                return QueryTimeout(f"{role} {name!r} (Trino) stopped the query: {detail}")
            if exc.error_name in ("USER_CANCELED", "ADMINISTRATIVELY_KILLED"):
                return QueryCancelled(f"{role} {name!r} (Trino) cancelled the query: {detail}")
            if exc.error_type == "USER_ERROR":
                return InvalidQuery(
                    f"{role} {name!r} (Trino) rejected the query: {detail}",
                    public=f"{role} {name!r} rejected the query: {exc.error_name}",
                )
            return SourceUnavailable(
                f"{role} {name!r} (Trino) failed while answering: {detail}",
                store=name,
                public=f"{role} {name!r} failed while answering: {exc.error_name}",
            )
        if isinstance(exc, errors.HttpError | errors.OperationalError) and "error 401" in str(exc):
            return SourceUnavailable(
                f"{role} {name!r}: Trino at {url} refused the credentials; check `user` and the "
                "password in the variable named by `password_env`",
                store=name,
            )
        if isinstance(exc, errors.HttpError | errors.OperationalError | requests.RequestException):
            return SourceUnavailable(
                f"{role} {name!r}: Trino at {url} cannot be reached ({exc}); check `host` and "
                "`port` in mesh.yaml and that the coordinator is running",
                store=name,
                public=f"{role} {name!r} cannot be reached; retry once it is back",
            )
        if isinstance(exc, ValueError):
            return SourceUnavailable(
                f"{role} {name!r}: {url} does not answer like a Trino coordinator ({exc})",
                store=name,
            )
        return exc


# Trino type names → Arrow types and converters of one column of raw JSON values.

_FIXED: dict[str, pa.DataType] = {
    "boolean": pa.bool_(),
    "tinyint": pa.int8(),
    "smallint": pa.int16(),
    "integer": pa.int32(),
    "bigint": pa.int64(),
    "real": pa.float32(),
    "double": pa.float64(),
    "date": pa.date32(),
    "varchar": pa.string(),
    "char": pa.string(),
    "varbinary": pa.binary(),
    "uuid": pa.string(),
    "json": pa.string(),
}
_TYPE = re.compile(r"^(?P<name>[a-z]+)(?:\((?P<args>[0-9, ]*)\))?(?P<zone> with time zone)?$")
_NON_FINITE = {"NaN": float("nan"), "Infinity": float("inf"), "-Infinity": float("-inf")}


def arrow_column(trino_type: str) -> tuple[pa.DataType, Converter]:
    """The Arrow type for a Trino type name and the function converting a column of its values.

    Types without an Arrow counterpart here (``time with time zone``, intervals, ``array``,
    ``map``, ``row``, ``ipaddress``, …) are served as utf8 holding their JSON text.

    >>> arrow_column("decimal(12,2)")[0]
    Decimal128Type(decimal128(12, 2))
    >>> arrow_column("timestamp(3) with time zone")[0]
    TimestampType(timestamp[us, tz=UTC])
    >>> arrow_column("array(bigint)")[0]
    DataType(string)
    """
    match = _TYPE.match(trino_type.lower())
    name, args, zone = (match["name"], match["args"], match["zone"]) if match else ("", None, None)
    params = [int(a) for a in args.split(",")] if args else []
    if name in _FIXED and not zone:
        arrow = _FIXED[name]
        if name in ("real", "double"):
            return arrow, _floats(arrow)
        if name == "date":
            return arrow, _parsed(arrow)
        if name == "varbinary":
            return arrow, _base64
        return arrow, _plain(arrow)
    if name == "decimal" and len(params) == 2:
        arrow = pa.decimal128(*params)
        return arrow, _parsed(arrow)
    if name == "timestamp":
        unit, prepare = _unit(params, width=19)
        if zone:
            return pa.timestamp(unit, tz="UTC"), _zoned(unit, params)
        return pa.timestamp(unit), _parsed(pa.timestamp(unit), prepare)
    if name == "time" and not zone:
        unit, prepare = _unit(params, width=8)
        return pa.time64(unit), _time_of_day(unit, prepare)
    return pa.string(), _text


def _unit(params: list[int], *, width: int) -> tuple[str, Callable[[pa.Array], pa.Array] | None]:
    """Microseconds up to precision 6 (the contract's unit), else nanoseconds; digits past
    nanoseconds (Trino allows 12) are cut off, since Arrow cannot hold them."""
    precision = params[0] if params else 3
    if precision <= 6:
        return "us", None
    if precision <= 9:
        return "ns", None
    return "ns", lambda text: pc.utf8_slice_codeunits(text, 0, width + 10)


def _plain(arrow: pa.DataType) -> Converter:
    return lambda values: pa.array(values, type=arrow)


def _floats(arrow: pa.DataType) -> Converter:
    """Numbers, with NaN and infinities sent as the strings ``NaN``/``Infinity``/``-Infinity``."""

    def convert(values: Sequence[Any]) -> pa.Array:
        try:
            return pa.array(values, type=arrow)
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            return pa.array(
                [_NON_FINITE.get(v, v) if isinstance(v, str) else v for v in values], arrow
            )

    return convert


def _parsed(arrow: pa.DataType, prepare: Callable[[pa.Array], pa.Array] | None = None) -> Converter:
    """Values Trino sends as text in a format Arrow's cast parses (decimals, dates, timestamps)."""

    def convert(values: Sequence[Any]) -> pa.Array:
        text = pa.array(values, type=pa.string())
        return (prepare(text) if prepare else text).cast(arrow)

    return convert


def _time_of_day(unit: str, prepare: Callable[[pa.Array], pa.Array] | None) -> Converter:
    """``HH:MM:SS.fff`` parsed as a timestamp on 1970-01-01, then cast to a time of day."""

    def convert(values: Sequence[Any]) -> pa.Array:
        text = pa.array(values, type=pa.string())
        stamped = pc.binary_join_element_wise("1970-01-01 ", prepare(text) if prepare else text, "")
        return stamped.cast(pa.timestamp(unit)).cast(pa.time64(unit))

    return convert


def _zoned(unit: str, params: list[int]) -> Converter:
    """``YYYY-MM-DD HH:MM:SS.fff <zone>`` as UTC instants.

    The local part has a fixed width for a precision; each distinct zone (``UTC``, an IANA name
    or an offset like ``+05:30``) is applied with Arrow's ``assume_timezone``. Local times that
    fall in a daylight-saving overlap read as the earlier instant: Trino's text does not say.
    """
    precision = params[0] if params else 3
    width = 19 + (precision + 1 if precision else 0)
    local_width = min(width, 29)

    def convert(values: Sequence[Any]) -> pa.Array:
        text = pa.array(values, type=pa.string())
        local = pc.utf8_slice_codeunits(text, 0, local_width).cast(pa.timestamp(unit))
        zones = pc.utf8_slice_codeunits(text, width + 1, width + 64)
        result = None
        for zone in pc.unique(zones.drop_null()).to_pylist():
            if zone in ("UTC", "Z"):
                instants = local.cast(pa.timestamp(unit, tz="UTC"))
            else:
                instants = pc.assume_timezone(
                    local, timezone=zone, ambiguous="earliest", nonexistent="earliest"
                ).cast(pa.timestamp(unit, tz="UTC"))
            result = (
                instants if result is None else pc.if_else(pc.equal(zones, zone), instants, result)
            )
        if result is None:  # every value is NULL
            return pa.nulls(len(text), pa.timestamp(unit, tz="UTC"))
        return result

    return convert


def _base64(values: Sequence[Any]) -> pa.Array:
    """varbinary arrives base64-encoded."""
    return pa.array([None if v is None else base64.b64decode(v) for v in values], pa.binary())


def _text(values: Sequence[Any]) -> pa.Array:
    """Strings as they are; arrays, maps and rows as their JSON text."""
    return pa.array(
        [v if v is None or isinstance(v, str) else json.dumps(v) for v in values], pa.string()
    )

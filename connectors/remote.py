"""What the connectors for networked SQL stores (PostgreSQL, MySQL/MariaDB) share.

They bind parameters into the SQL as literals (their fast Arrow paths take no parameters), tag
each query with a comment so it can be found and cancelled at the store, put a deadline on it,
conform the Arrow types they get to the contract types, and read declared column types from
``information_schema``.
"""

from __future__ import annotations

import datetime as dt
import decimal
import logging
import socket
import threading
import uuid
from collections.abc import Callable, Iterator

import pyarrow as pa
from sqlglot import exp

from connectors.watchdog import watchdog
from gateway.errors import GatewayError, InvalidQuery, QueryTimeout, SourceUnavailable
from gateway.streaming import stream_reader
from gateway.types import serving_type

log = logging.getLogger(__name__)

TAG_PREFIX = "meshgate:"


def bind_parameters(sql: str, parameters: pa.RecordBatch | None, *, dialect: str) -> str:
    """``sql`` with its placeholders (``?``, ``%s``, ``$1``) replaced by one row of parameters.

    The values become SQL literals rendered by sqlglot, so quoting is the dialect's own.

    >>> batch = pa.record_batch({"a": [7], "b": ["it's"]})
    >>> bind_parameters("SELECT * FROM t WHERE x = %s AND y = %s", batch, dialect="postgres")
    "SELECT * FROM t WHERE x = 7 AND y = 'it''s'"
    """
    if parameters is None or parameters.num_columns == 0:
        return sql
    if parameters.num_rows != 1:
        raise InvalidQuery(
            f"expected one row of parameters, got {parameters.num_rows}; execute once per row"
        )
    values = [_literal(parameters.column(i)) for i in range(parameters.num_columns)]
    tree = exp.maybe_parse(sql, dialect=dialect)
    positional = iter(values)

    def substitute(node: exp.Expression) -> exp.Expression:
        if isinstance(node, exp.Placeholder) and node.this is None:
            try:
                return next(positional).copy()
            except StopIteration:
                raise InvalidQuery(
                    f"the query has more placeholders than the {len(values)} parameter(s) given"
                ) from None
        if isinstance(node, exp.Parameter) and node.name.isdigit():
            index = int(node.name) - 1
            if not 0 <= index < len(values):
                raise InvalidQuery(f"parameter ${node.name} was not given")
            return values[index].copy()
        return node

    return tree.transform(substitute).sql(dialect=dialect)


def _literal(column: pa.Array) -> exp.Expression:
    """One parameter value as a typed SQL literal."""
    value = column[0].as_py()
    kind = column.type
    if value is None:
        return exp.Null()
    if isinstance(value, bool):
        return exp.Boolean(this=value)
    if isinstance(value, int | float | decimal.Decimal):
        literal = exp.Literal.number(str(value))
        if pa.types.is_decimal(kind):
            return exp.cast(literal, f"DECIMAL({kind.precision}, {kind.scale})")
        return literal
    if isinstance(value, str):
        return exp.Literal.string(value)
    if isinstance(value, dt.datetime):
        target = "TIMESTAMPTZ" if value.tzinfo is not None else "TIMESTAMP"
        return exp.cast(exp.Literal.string(value.isoformat(sep=" ")), target)
    if isinstance(value, dt.date):
        return exp.cast(exp.Literal.string(value.isoformat()), "DATE")
    raise InvalidQuery(f"parameters of type {kind} are not supported; pass a number, text or date")


def tag_query(sql: str) -> tuple[str, str]:
    """A fresh tag and ``sql`` prefixed with it as a comment the store shows in its process list."""
    tag = TAG_PREFIX + uuid.uuid4().hex
    return tag, f"/* {tag} */ {sql}"


def probe(host: str, port: int, *, timeout: float, store: str, kind: str) -> None:
    """Fail fast with SourceUnavailable when nothing accepts connections at ``host:port``."""
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as exc:
        raise SourceUnavailable(
            f"store {store!r} ({kind} at {host}:{port}) cannot be reached: {exc.strerror or exc}; "
            "check that the server is running and `host`/`port` in mesh.yaml",
            public=f"store {store!r} cannot be reached; retry once it is back",
        ) from None


def conformed_schema(
    schema: pa.Schema, overrides: dict[int, pa.DataType] | None = None
) -> pa.Schema:
    """The contract types for a driver's schema: UTC as ``UTC``, plain strings, known overrides."""
    fields = []
    for index, field in enumerate(schema):
        target = (overrides or {}).get(index) or serving_type(field.type)
        if pa.types.is_timestamp(target) and target.tz is not None:
            target = pa.timestamp(target.unit, tz="UTC")
        fields.append(pa.field(field.name, target))
    return pa.schema(fields)


def stream(
    reader: pa.RecordBatchReader,
    *,
    schema: pa.Schema,
    timeout_seconds: float,
    cancel: Callable[[], None],
    close: Callable[[], None],
    map_error: Callable[[BaseException, bool], GatewayError],
) -> pa.RecordBatchReader:
    """``reader`` cast to ``schema``, with a deadline, cancelled at the store when closed early.

    After ``timeout_seconds`` (or when the consumer closes the reader before its end) ``cancel``
    stops the query at the store; ``close`` then releases the driver's resources. Driver errors
    go through ``map_error(error, timed_out)``.
    """
    timed_out = threading.Event()

    def on_deadline() -> None:
        timed_out.set()
        # cancelling talks to the store: off the shared watchdog thread, so others keep time
        threading.Thread(
            target=_quietly, args=(cancel,), name="meshgate-cancel", daemon=True
        ).start()

    cancel_deadline = watchdog.schedule(timeout_seconds, on_deadline)
    needs_cast = not reader.schema.equals(schema)

    def batches() -> Iterator[pa.RecordBatch]:
        finished = False
        try:
            for batch in reader:
                yield batch.cast(schema) if needs_cast else batch
            finished = True
        except (GeneratorExit, KeyboardInterrupt, SystemExit):
            raise
        except BaseException as exc:  # noqa: BLE001 - Rust drivers raise PanicException(BaseException)
            finished = True  # the query is over at the store
            if timed_out.is_set():
                raise QueryTimeout(
                    f"the query did not finish within {timeout_seconds:g} s and was cancelled "
                    "at the store; narrow it or raise `query_timeout_seconds` in mesh.yaml"
                ) from exc
            raise map_error(exc, False) from exc
        finally:
            cancel_deadline()
            if not finished:
                _quietly(cancel)
            _quietly(close)

    return stream_reader(schema, batches())


def _quietly(action: Callable[[], None]) -> None:
    try:
        action()
    except Exception:  # noqa: BLE001 - cleanup must not hide the error being reported
        log.warning("cleanup step failed", exc_info=True)


# information_schema ``data_type`` names → contract type names (gateway.types).
_DECLARED = {
    "bigint": "bigint",
    "int8": "bigint",
    "integer": "integer",
    "int": "integer",
    "mediumint": "integer",
    "smallint": "smallint",
    "tinyint": "tinyint",
    "boolean": "boolean",
    "bool": "boolean",
    "double precision": "double",
    "double": "double",
    "real": "real",
    "float": "real",
    "character varying": "varchar",
    "varchar": "varchar",
    "character": "varchar",
    "char": "varchar",
    "text": "varchar",
    "tinytext": "varchar",
    "mediumtext": "varchar",
    "longtext": "varchar",
    "enum": "varchar",
    "set": "varchar",
    "uuid": "varchar",
    "json": "varchar",
    "jsonb": "varchar",
    "date": "date",
    "time without time zone": "time",
    "time": "time",
    "timestamp without time zone": "timestamp",
    "datetime": "timestamp",
    "timestamp with time zone": "timestamptz",
    "bytea": "blob",
    "blob": "blob",
    "tinyblob": "blob",
    "mediumblob": "blob",
    "longblob": "blob",
    "binary": "blob",
    "varbinary": "blob",
}


def declared_type(data_type: str, precision: int | None, scale: int | None) -> str | None:
    """The contract type of a column as ``information_schema.columns`` declares it, if any."""
    name = data_type.lower()
    if name in ("numeric", "decimal"):
        if precision is None or precision > 38:
            return None  # unconstrained or too wide for decimal128: no exact contract type
        return f"decimal({precision},{scale or 0})"
    return _DECLARED.get(name)

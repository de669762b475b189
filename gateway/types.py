"""Contract types: the column types a descriptor may declare, and their Arrow types.

Descriptors write SQL type names (``bigint``, ``decimal(15,2)``, ``varchar``, ``timestamptz``);
sqlglot parses them so every spelling a SQL user expects is accepted, and this module maps each to
exactly one Arrow type. The gateway serves every product with these Arrow types, whatever the store
returns.

>>> arrow_type("decimal(15, 2)")
Decimal128Type(decimal128(15, 2))
>>> arrow_type("TEXT")
DataType(string)
"""

from __future__ import annotations

from functools import lru_cache

import pyarrow as pa
from sqlglot import exp
from sqlglot.errors import ParseError

T = exp.DataType.Type

_SIMPLE: dict[exp.DataType.Type, pa.DataType] = {
    T.BOOLEAN: pa.bool_(),
    T.TINYINT: pa.int8(),
    T.SMALLINT: pa.int16(),
    T.INT: pa.int32(),
    T.BIGINT: pa.int64(),
    T.UTINYINT: pa.uint8(),
    T.USMALLINT: pa.uint16(),
    T.UINT: pa.uint32(),
    T.UBIGINT: pa.uint64(),
    T.FLOAT: pa.float32(),
    T.DOUBLE: pa.float64(),
    T.VARCHAR: pa.string(),
    T.CHAR: pa.string(),
    T.TEXT: pa.string(),
    T.NVARCHAR: pa.string(),
    T.NCHAR: pa.string(),
    T.UUID: pa.string(),
    T.JSON: pa.string(),
    T.DATE: pa.date32(),
    T.TIME: pa.time64("us"),
    T.TIMESTAMP: pa.timestamp("us"),
    T.TIMESTAMPNTZ: pa.timestamp("us"),
    T.DATETIME: pa.timestamp("us"),
    T.TIMESTAMPTZ: pa.timestamp("us", tz="UTC"),
    T.BLOB: pa.binary(),
    T.VARBINARY: pa.binary(),
    T.BINARY: pa.binary(),
}

SPELLINGS: dict[str, tuple[str, ...]] = {
    "boolean": ("bool",),
    "tinyint": ("int1",),
    "smallint": ("int2",),
    "integer": ("int", "int4"),
    "bigint": ("int8",),
    "utinyint": (),
    "usmallint": (),
    "uinteger": (),
    "ubigint": (),
    "real": ("float", "float4"),
    "double": ("float8", "double precision"),
    "decimal(p,s)": ("numeric(p,s)",),
    "varchar": ("text", "string", "char", "character", "character varying", "nvarchar", "nchar"),
    "uuid": (),
    "json": (),
    "date": (),
    "time": (),
    "timestamp": ("datetime", "timestamp without time zone"),
    "timestamptz": ("timestamp with time zone",),
    "blob": ("bytea", "varbinary", "binary"),
}
"""Every type name a descriptor may write: the canonical names and their aliases. sqlglot would
read more (``str``, ``long``, ``number``), but a typo should be refused, not guessed at."""

SUPPORTED = (
    ", ".join(SPELLINGS)
    + "; aliases: "
    + ", ".join(f"{alias} = {name}" for name, aliases in SPELLINGS.items() for alias in aliases)
)
_ACCEPTED = frozenset(
    spelling.removesuffix("(p,s)")
    for name, aliases in SPELLINGS.items()
    for spelling in (name, *aliases)
)


def _base_name(sql_type: str) -> str:
    """``" Decimal (15, 2)"`` -> ``"decimal"``: the name without parameters, lowercased."""
    return " ".join(sql_type.partition("(")[0].lower().split())


def contract_type(sql_type: str) -> pa.DataType:
    """The Arrow type of a type name a descriptor may write (:data:`SPELLINGS`); ValueError
    listing them otherwise.

    >>> contract_type("string")
    DataType(string)
    """
    if _base_name(sql_type) not in _ACCEPTED:
        raise ValueError(f"unknown type {sql_type!r}; use one of {SUPPORTED}")
    return arrow_type(sql_type)


@lru_cache(maxsize=512)
def arrow_type(sql_type: str) -> pa.DataType:
    """The Arrow type of a SQL type name (a contract's, or one a store declares); ValueError
    naming the supported types otherwise. Descriptors are held to :data:`SPELLINGS` first."""
    try:
        parsed = exp.DataType.build(sql_type, dialect="duckdb")
    except (ParseError, ValueError):
        raise ValueError(f"unknown type {sql_type!r}; use one of {SUPPORTED}") from None
    if parsed.this in (T.DECIMAL, T.BIGDECIMAL):
        params = [int(p.this.this) for p in parsed.expressions]
        precision, scale = (params + [18, 3])[:2] if params else (18, 3)
        if len(params) == 1:
            scale = 0
        if not 1 <= precision <= 38 or not 0 <= scale <= precision:
            raise ValueError(
                f"decimal({precision},{scale}) needs 1 <= precision <= 38, scale <= precision"
            )
        return pa.decimal128(precision, scale)
    try:
        return _SIMPLE[parsed.this]
    except KeyError:
        raise ValueError(f"unsupported type {sql_type!r}; use one of {SUPPORTED}") from None


def serving_type(arrow: pa.DataType) -> pa.DataType:
    """The type a column is served as: views and large variants become their plain forms.

    Many clients (the Flight SQL JDBC driver, BI tools) do not read ``string_view`` or
    ``large_string``; every stream leaves the gateway with plain ``utf8``/``binary``, and every
    instant in UTC.
    """
    if pa.types.is_string_view(arrow) or pa.types.is_large_string(arrow):
        return pa.string()
    if pa.types.is_binary_view(arrow) or pa.types.is_large_binary(arrow):
        return pa.binary()
    if pa.types.is_timestamp(arrow) and arrow.tz is not None:
        # instants are labelled UTC, the contract's zone, whatever zone an engine's session had
        return pa.timestamp(arrow.unit, tz="UTC")
    return arrow

"""The result tables of Flight SQL's metadata commands, in the schemas the specification fixes."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable

import pyarrow as pa

import gateway
from gateway.flightsql import flight_session_pb2 as session_pb2
from gateway.mesh import CATALOG_NAME, Product

TABLE_TYPE = "TABLE"

# --- SqlInfo ---------------------------------------------------------------------------------

_STRING, _BOOL, _BIGINT, _BITMASK, _STRING_LIST, _INT_MAP = range(6)

SQL_INFO_VALUE = pa.union(
    [
        pa.field("string_value", pa.string()),
        pa.field("bool_value", pa.bool_()),
        pa.field("bigint_value", pa.int64()),
        pa.field("int32_bitmask", pa.int32()),
        pa.field("string_list", pa.list_(pa.string())),
        pa.field("int32_to_int32_list_map", pa.map_(pa.int32(), pa.list_(pa.int32()))),
    ],
    mode="dense",
)
SQL_INFO_SCHEMA = pa.schema(
    [
        pa.field("info_name", pa.uint32(), nullable=False),
        pa.field("value", SQL_INFO_VALUE, nullable=False),
    ]
)

KEYWORDS = ["SELECT", "FROM", "WHERE", "GROUP", "BY", "HAVING", "ORDER", "LIMIT", "OFFSET",
            "JOIN", "UNION", "INTERSECT", "EXCEPT", "WITH", "QUALIFY", "WINDOW", "OVER",
            "EXPLAIN"]  # fmt: skip
NUMERIC_FUNCTIONS = ["ABS", "CEIL", "FLOOR", "ROUND", "SQRT", "POWER", "MOD", "LN", "LOG10", "EXP"]
STRING_FUNCTIONS = ["LOWER", "UPPER", "TRIM", "SUBSTRING", "LENGTH", "REPLACE", "CONCAT", "LIKE"]
SYSTEM_FUNCTIONS = ["COALESCE", "NULLIF", "CAST"]
DATETIME_FUNCTIONS = ["CURRENT_DATE", "CURRENT_TIMESTAMP", "DATE_TRUNC", "EXTRACT", "DATE_PART"]

# SqlSupportsConvert codes (FlightSql.proto): which CASTs the gateway's dialect accepts and
# transpiles to every store. The JDBC driver answers supportsConvert(from, to) from this map.
C_BIGINT, C_BINARY, C_BIT, C_CHAR, C_DATE, C_DECIMAL, C_FLOAT, C_INTEGER = range(8)
C_LONGVARBINARY, C_LONGVARCHAR, C_NUMERIC, C_REAL, C_SMALLINT, C_TIME, C_TIMESTAMP = range(10, 17)
C_TINYINT, C_VARBINARY, C_VARCHAR = range(17, 20)
C_NUMBERS = [
    C_BIGINT,
    C_BIT,
    C_DECIMAL,
    C_FLOAT,
    C_INTEGER,
    C_NUMERIC,
    C_REAL,
    C_SMALLINT,
    C_TINYINT,
]
C_TEXTS = [C_CHAR, C_LONGVARCHAR, C_VARCHAR]
SUPPORTED_CONVERSIONS: dict[int, list[int]] = {
    **{number: C_NUMBERS + C_TEXTS for number in C_NUMBERS},
    **{text: C_NUMBERS + C_TEXTS + [C_DATE, C_TIME, C_TIMESTAMP] for text in C_TEXTS},
    C_DATE: [C_DATE, C_TIMESTAMP, *C_TEXTS],
    C_TIME: [C_TIME, *C_TEXTS],
    C_TIMESTAMP: [C_DATE, C_TIME, C_TIMESTAMP, *C_TEXTS],
    **{binary: [C_BINARY, C_LONGVARBINARY, C_VARBINARY] for binary in (C_BINARY, C_LONGVARBINARY)},
    C_VARBINARY: [C_BINARY, C_LONGVARBINARY, C_VARBINARY],
}


def _sql_info_values() -> dict[int, tuple[int, object]]:
    """SqlInfo id → (union type code, value), per FlightSql.proto's SqlInfo enum.

    Every id the Arrow Flight SQL JDBC driver knows is answered, in the union member the driver
    casts it to (it reads them all once and, before 19.0.0, fails on a missing one): the
    SQL_MAX_* limits and the default isolation level are int64, enums and bitmasks int32.
    Substrait's min/max versions (6, 7) are left out: the specification asks for null when
    Substrait is not supported, and the union has no null member.
    """
    forward_only, read_only_concurrency = 1 << 1, 1 << 1
    values: dict[int, tuple[int, object]] = {
        0: (_STRING, "meshgate"),
        1: (_STRING, gateway.__version__),
        2: (_STRING, pa.__version__),
        3: (_BOOL, True),  # read only
        4: (_BOOL, True),  # SQL
        5: (_BOOL, False),  # Substrait
        8: (_BITMASK, 0),  # transactions: none (a read-only gateway; connect with autocommit=True)
        9: (_BOOL, False),  # CancelQuery: clients cancel by closing the stream
        10: (_BOOL, False),  # bulk ingestion
        11: (_BOOL, False),  # ingestion in transactions
        100: (_BITMASK, 0),  # prepared statements never time out (their handles are signed)
        101: (_BITMASK, 0),
        500: (_BOOL, False),  # no DDL of catalogs, schemas or tables
        501: (_BOOL, False),
        502: (_BOOL, False),
        503: (_BITMASK, 3),  # identifier case: SQL_CASE_LOWERCASE (addresses are lowercase)
        504: (_STRING, '"'),
        505: (_BITMASK, 1),  # quoted identifiers: SQL_CASE_INSENSITIVE (as in DuckDB)
        506: (_BOOL, True),  # every listed table is selectable: listings are governed
        507: (_BITMASK, 3),  # SQL_NULLS_SORTED_AT_END (DuckDB's default)
        508: (_STRING_LIST, KEYWORDS),
        509: (_STRING_LIST, NUMERIC_FUNCTIONS),
        510: (_STRING_LIST, STRING_FUNCTIONS),
        511: (_STRING_LIST, SYSTEM_FUNCTIONS),
        512: (_STRING_LIST, DATETIME_FUNCTIONS),
        513: (_STRING, "\\"),
        514: (_STRING, ""),
        515: (_BOOL, True),
        516: (_BOOL, True),
        517: (_INT_MAP, sorted(SUPPORTED_CONVERSIONS.items())),
        518: (_BOOL, True),
        519: (_BOOL, False),
        520: (_BOOL, True),
        521: (_BOOL, True),
        522: (_BITMASK, 0b11),  # GROUP BY unrelated and beyond select
        523: (_BOOL, True),
        524: (_BOOL, True),
        525: (_BITMASK, 0b11),  # minimum and core grammar
        526: (_BITMASK, 0b11),  # ANSI-92 entry and intermediate
        527: (_BOOL, False),
        # SqlOuterJoinsSupportLevel ordinal 2, SQL_FULL_OUTER_JOINS. The JDBC driver reads this
        # ordinal as a bitmask, so it reports limited outer joins and no full ones.
        528: (_BITMASK, 2),
        529: (_STRING, "domain"),
        530: (_STRING, "procedure"),
        531: (_STRING, "catalog"),
        532: (_BOOL, True),
        533: (_BITMASK, 0),
        534: (_BITMASK, 0),
        535: (_BITMASK, 0),
        536: (_BOOL, False),
        537: (_BOOL, False),
        538: (_BITMASK, 0b1111),  # subqueries in comparisons, EXISTS, IN and quantifieds
        539: (_BOOL, True),
        540: (_BITMASK, 0b11),  # UNION and UNION ALL
        562: (_BIGINT, 0),  # default isolation: SQL_TRANSACTION_NONE
        563: (_BOOL, False),
        564: (_BITMASK, 1),  # isolation levels: only SQL_TRANSACTION_NONE
        565: (_BOOL, False),
        566: (_BOOL, False),
        567: (_BITMASK, forward_only),
        568: (_BITMASK, read_only_concurrency),
        569: (_BITMASK, read_only_concurrency),
        570: (_BITMASK, 0),
        571: (_BITMASK, 0),
        572: (_BOOL, False),
        573: (_BOOL, False),
        574: (_BOOL, False),
        575: (_BOOL, False),
        576: (_BOOL, False),
    }
    for limit in range(541, 562):
        if limit != 556:
            values[limit] = (_BIGINT, 0)  # SQL_MAX_*: 0 means no limit or unknown
    values[556] = (_BOOL, False)  # SQL_MAX_ROW_SIZE_INCLUDES_BLOBS
    return values


SQL_INFO = _sql_info_values()


def sql_info_table(requested: Iterable[int]) -> pa.Table:
    ids = sorted(set(requested) & SQL_INFO.keys()) if requested else sorted(SQL_INFO)
    children: list[list] = [[] for _ in range(6)]
    type_ids, offsets = [], []
    for info in ids:
        code, value = SQL_INFO[info]
        type_ids.append(code)
        offsets.append(len(children[code]))
        children[code].append(value)
    arrays = [
        pa.array(values, type=SQL_INFO_VALUE.field(i).type) for i, values in enumerate(children)
    ]
    union = pa.UnionArray.from_dense(
        pa.array(type_ids, pa.int8()),
        pa.array(offsets, pa.int32()),
        arrays,
        [SQL_INFO_VALUE.field(i).name for i in range(6)],
    )
    return pa.Table.from_arrays([pa.array(ids, pa.uint32()), union], schema=SQL_INFO_SCHEMA)


# --- catalogs, schemas, tables ---------------------------------------------------------------

CATALOGS_SCHEMA = pa.schema([pa.field("catalog_name", pa.string(), nullable=False)])
DB_SCHEMAS_SCHEMA = pa.schema(
    [pa.field("catalog_name", pa.string()), pa.field("db_schema_name", pa.string(), nullable=False)]
)
TABLES_SCHEMA = pa.schema(
    [
        pa.field("catalog_name", pa.string()),
        pa.field("db_schema_name", pa.string()),
        pa.field("table_name", pa.string(), nullable=False),
        pa.field("table_type", pa.string(), nullable=False),
    ]
)
TABLES_WITH_SCHEMA_SCHEMA = TABLES_SCHEMA.append(
    pa.field("table_schema", pa.binary(), nullable=False)
)
TABLE_TYPES_SCHEMA = pa.schema([pa.field("table_type", pa.string(), nullable=False)])
PRIMARY_KEYS_SCHEMA = pa.schema(
    [
        pa.field("catalog_name", pa.string()),
        pa.field("db_schema_name", pa.string()),
        pa.field("table_name", pa.string(), nullable=False),
        pa.field("column_name", pa.string(), nullable=False),
        pa.field("key_name", pa.string()),
        pa.field("key_sequence", pa.int32(), nullable=False),
    ]
)
FOREIGN_KEYS_SCHEMA = pa.schema(
    [
        pa.field("pk_catalog_name", pa.string()),
        pa.field("pk_db_schema_name", pa.string()),
        pa.field("pk_table_name", pa.string(), nullable=False),
        pa.field("pk_column_name", pa.string(), nullable=False),
        pa.field("fk_catalog_name", pa.string()),
        pa.field("fk_db_schema_name", pa.string()),
        pa.field("fk_table_name", pa.string(), nullable=False),
        pa.field("fk_column_name", pa.string(), nullable=False),
        pa.field("key_sequence", pa.int32(), nullable=False),
        pa.field("fk_key_name", pa.string()),
        pa.field("pk_key_name", pa.string()),
        pa.field("update_rule", pa.uint8(), nullable=False),
        pa.field("delete_rule", pa.uint8(), nullable=False),
    ]
)
XDBC_TYPE_INFO_SCHEMA = pa.schema(
    [
        pa.field("type_name", pa.string(), nullable=False),
        pa.field("data_type", pa.int32(), nullable=False),
        pa.field("column_size", pa.int32()),
        pa.field("literal_prefix", pa.string()),
        pa.field("literal_suffix", pa.string()),
        pa.field("create_params", pa.list_(pa.field("item", pa.string(), nullable=False))),
        pa.field("nullable", pa.int32(), nullable=False),
        pa.field("case_sensitive", pa.bool_(), nullable=False),
        pa.field("searchable", pa.int32(), nullable=False),
        pa.field("unsigned_attribute", pa.bool_()),
        pa.field("fixed_prec_scale", pa.bool_(), nullable=False),
        pa.field("auto_increment", pa.bool_()),
        pa.field("local_type_name", pa.string()),
        pa.field("minimum_scale", pa.int32()),
        pa.field("maximum_scale", pa.int32()),
        pa.field("sql_data_type", pa.int32(), nullable=False),
        pa.field("datetime_subcode", pa.int32()),
        pa.field("num_prec_radix", pa.int32()),
        pa.field("interval_precision", pa.int32()),
    ]
)


def like_pattern(pattern: str | None) -> re.Pattern[str] | None:
    """A regex for a SQL LIKE pattern (``%`` any run, ``_`` one character, ``\\`` escapes)."""
    if pattern is None:
        return None
    parts, escaped = [], False
    for char in pattern:
        if escaped:
            parts.append(re.escape(char))
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == "%":
            parts.append(".*")
        elif char == "_":
            parts.append(".")
        else:
            parts.append(re.escape(char))
    return re.compile("".join(parts), re.DOTALL)


def _matches(pattern: re.Pattern[str] | None, value: str) -> bool:
    return pattern is None or pattern.fullmatch(value) is not None


def catalog_matches(catalog: str | None) -> bool:
    """Whether a request's ``catalog`` filter admits the mesh catalog (None: no filter)."""
    return catalog is None or catalog == CATALOG_NAME


def db_schemas_table(
    domains: Iterable[str], *, catalog: str | None, pattern: str | None
) -> pa.Table:
    regex = like_pattern(pattern)
    names = sorted(d for d in domains if catalog_matches(catalog) and _matches(regex, d))
    return pa.table(
        {"catalog_name": [CATALOG_NAME] * len(names), "db_schema_name": names},
        schema=DB_SCHEMAS_SCHEMA,
    )


def tables_table(
    products: dict[str, Product],
    *,
    catalog: str | None,
    schema_pattern: str | None,
    table_pattern: str | None,
    table_types: list[str],
    include_schema: bool,
    extra_metadata: Callable[[Product], dict[str, str]] | None = None,
) -> pa.Table:
    """The GetTables answer; ``extra_metadata`` adds table-level schema metadata per product
    (its SLO, contract and deprecation status)."""
    schema_regex, table_regex = like_pattern(schema_pattern), like_pattern(table_pattern)
    rows = []
    if catalog_matches(catalog) and (not table_types or TABLE_TYPE in table_types):
        for address, product in sorted(products.items()):
            domain, _, name = address.partition(".")
            if _matches(schema_regex, domain) and _matches(table_regex, name):
                rows.append((domain, name, product))
    columns = {
        "catalog_name": [CATALOG_NAME] * len(rows),
        "db_schema_name": [r[0] for r in rows],
        "table_name": [r[1] for r in rows],
        "table_type": [TABLE_TYPE] * len(rows),
    }
    if not include_schema:
        return pa.table(columns, schema=TABLES_SCHEMA)
    columns["table_schema"] = [
        flight_sql_schema(_table_schema(product, extra_metadata)).serialize().to_pybytes()
        for _, _, product in rows
    ]
    return pa.table(columns, schema=TABLES_WITH_SCHEMA_SCHEMA)


def _table_schema(
    product: Product, extra_metadata: Callable[[Product], dict[str, str]] | None
) -> pa.Schema:
    schema = product.arrow_schema()
    if extra_metadata is None:
        return schema
    return schema.with_metadata({**(schema.metadata or {}), **extra_metadata(product)})


# --- columns as JDBC and ODBC describe them ---------------------------------------------------


def sql_type_name(arrow: pa.DataType) -> str:
    """The SQL name of a contract type without its parameters: ``DECIMAL``, not
    ``decimal(15,2)`` (precision and scale travel as their own keys). The names are those
    ``GetXdbcTypeInfo`` lists."""
    if pa.types.is_decimal(arrow):
        return "DECIMAL"
    if pa.types.is_timestamp(arrow):
        return "TIMESTAMP WITH TIME ZONE" if arrow.tz is not None else "TIMESTAMP"
    for kind in XDBC_TYPES:
        if kind.arrow == arrow:
            return kind.name
    return str(arrow).upper()


def flight_sql_field(field: pa.Field) -> pa.Field:
    """``field`` with the Flight SQL column metadata clients read: the JDBC driver's
    ``getColumns`` takes ``REMARKS`` from the description, ``COLUMN_SIZE`` and
    ``DECIMAL_DIGITS`` from ``PRECISION`` and ``SCALE``, and ``TYPE_NAME`` as given."""
    extra = {"ARROW:FLIGHT:SQL:TYPE_NAME": sql_type_name(field.type)}
    description = (field.metadata or {}).get(b"description", b"").decode()
    if description:
        extra["ARROW:FLIGHT:SQL:REMARKS"] = description
    if pa.types.is_decimal(field.type):
        extra["ARROW:FLIGHT:SQL:PRECISION"] = str(field.type.precision)
        extra["ARROW:FLIGHT:SQL:SCALE"] = str(field.type.scale)
    metadata = {k.decode(): v.decode() for k, v in (field.metadata or {}).items()}
    return field.with_metadata({**metadata, **extra})


def flight_sql_schema(schema: pa.Schema) -> pa.Schema:
    return pa.schema([flight_sql_field(f) for f in schema], metadata=schema.metadata)


def result_schema(schema: pa.Schema) -> pa.Schema:
    """A query's schema as FlightInfo and prepare describe it: decimals carry ``PRECISION`` and
    ``SCALE``, which the JDBC driver's ResultSetMetaData reports (it reads nothing from the
    type itself). No ``REMARKS``: the driver would show them as the column labels."""
    if not any(pa.types.is_decimal(f.type) for f in schema):
        return schema
    fields = []
    for field in schema:
        if pa.types.is_decimal(field.type):
            precision, scale = str(field.type.precision), str(field.type.scale)
            field = field.with_metadata(
                {
                    **{k.decode(): v.decode() for k, v in (field.metadata or {}).items()},
                    "ARROW:FLIGHT:SQL:PRECISION": precision,
                    "ARROW:FLIGHT:SQL:SCALE": scale,
                }
            )
        fields.append(field)
    return pa.schema(fields, metadata=schema.metadata)


class XdbcType:
    """One row of ``GetXdbcTypeInfo``: a contract type as ODBC/JDBC type catalogues list it."""

    def __init__(self, name: str, arrow: pa.DataType, data_type: int, **options: object):
        self.name, self.arrow, self.data_type = name, arrow, data_type
        self.options = options


# XdbcDataType codes (FlightSql.proto; the java.sql.Types values); datetime types also carry
# ODBC's SQL_DATETIME (9) and their subcode, as SQLGetTypeInfo does.
XDBC_TYPES = (
    XdbcType("BOOLEAN", pa.bool_(), -7, column_size=1),
    XdbcType("TINYINT", pa.int8(), -6, column_size=3, radix=10),
    XdbcType("SMALLINT", pa.int16(), 5, column_size=5, radix=10),
    XdbcType("INTEGER", pa.int32(), 4, column_size=10, radix=10),
    XdbcType("BIGINT", pa.int64(), -5, column_size=19, radix=10),
    XdbcType("REAL", pa.float32(), 7, column_size=24, radix=2),
    XdbcType("DOUBLE", pa.float64(), 8, column_size=53, radix=2),
    XdbcType(
        "DECIMAL", pa.decimal128(38, 0), 3, column_size=38, radix=10, fixed=True,
        create_params=["precision", "scale"], minimum_scale=0, maximum_scale=38,
    ),
    XdbcType(
        "VARCHAR", pa.string(), 12, column_size=65536, prefix="'", suffix="'",
        case_sensitive=True, searchable=3,
    ),
    XdbcType("DATE", pa.date32(), 91, column_size=10, prefix="DATE '", suffix="'", subcode=1),
    XdbcType("TIME", pa.time64("us"), 92, column_size=15, prefix="TIME '", suffix="'",
             subcode=2, maximum_scale=6),
    XdbcType("TIMESTAMP", pa.timestamp("us"), 93, column_size=26, prefix="TIMESTAMP '",
             suffix="'", subcode=3, maximum_scale=6),
    XdbcType("TIMESTAMP WITH TIME ZONE", pa.timestamp("us", tz="UTC"), 93, column_size=32,
             prefix="TIMESTAMPTZ '", suffix="'", subcode=5, maximum_scale=6),
    XdbcType("BLOB", pa.binary(), -3, column_size=65536, prefix="'", suffix="'::BLOB"),
)  # fmt: skip
SQL_DATETIME = 9
SEARCHABLE_EXCEPT_LIKE = 2


def xdbc_type_info_table(data_type: int | None) -> pa.Table:
    """``GetXdbcTypeInfo``: every contract type, or those of one XDBC data type."""
    kinds = [k for k in XDBC_TYPES if data_type is None or k.data_type == data_type]
    rows = []
    for kind in kinds:
        o = kind.options
        subcode = o.get("subcode")
        rows.append(
            {
                "type_name": kind.name,
                "data_type": kind.data_type,
                "column_size": o.get("column_size"),
                "literal_prefix": o.get("prefix"),
                "literal_suffix": o.get("suffix"),
                "create_params": o.get("create_params"),
                "nullable": 1,  # every contract column may hold NULL
                "case_sensitive": bool(o.get("case_sensitive", False)),
                "searchable": o.get("searchable", SEARCHABLE_EXCEPT_LIKE),
                "unsigned_attribute": False if "radix" in o else None,
                "fixed_prec_scale": bool(o.get("fixed", False)),
                "auto_increment": False if "radix" in o else None,
                "local_type_name": kind.name,
                "minimum_scale": o.get("minimum_scale", 0 if "maximum_scale" in o else None),
                "maximum_scale": o.get("maximum_scale"),
                "sql_data_type": SQL_DATETIME if subcode else kind.data_type,
                "datetime_subcode": subcode,
                "num_prec_radix": o.get("radix"),
                "interval_precision": None,
            }
        )
    return pa.Table.from_pylist(rows, schema=XDBC_TYPE_INFO_SCHEMA)


# --- session options --------------------------------------------------------------------------


def set_session_options(
    request: session_pb2.SetSessionOptionsRequest,
) -> session_pb2.SetSessionOptionsResult:
    """Accept ``catalog = mesh`` (the JDBC driver's ``catalog`` property sends it); refuse
    other values and other options one by one, as the specification asks, since the gateway
    keeps no per-session state they could change."""
    result = session_pb2.SetSessionOptionsResult()
    errors = session_pb2.SetSessionOptionsResult
    for name, value in request.session_options.items():
        if name != "catalog":
            result.errors[name].value = errors.INVALID_NAME
        elif value.WhichOneof("option_value") != "string_value" or value.string_value != (
            CATALOG_NAME
        ):
            result.errors[name].value = errors.INVALID_VALUE
    return result


def session_options() -> session_pb2.GetSessionOptionsResult:
    result = session_pb2.GetSessionOptionsResult()
    result.session_options["catalog"].string_value = CATALOG_NAME
    return result

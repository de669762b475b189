"""The result tables of Flight SQL's metadata commands, in the schemas the specification fixes."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable

import pyarrow as pa

import gateway
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
DATETIME_FUNCTIONS = ["CURRENT_DATE", "CURRENT_TIMESTAMP", "DATE_TRUNC", "EXTRACT", "DATE_PART"]


def _sql_info_values() -> dict[int, tuple[int, object]]:
    """SqlInfo id → (union type code, value), per FlightSql.proto's SqlInfo enum."""
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
        100: (_BITMASK, 0),
        101: (_BITMASK, 0),
        500: (_BOOL, False),
        501: (_BOOL, False),
        502: (_BOOL, False),
        503: (_BITMASK, 3),  # identifiers: case-insensitive, stored lowercase
        504: (_STRING, '"'),
        505: (_BITMASK, 1),  # quoted identifiers: case-insensitive
        506: (_BOOL, True),
        507: (_BITMASK, 3),  # nulls sorted at end
        508: (_STRING_LIST, KEYWORDS),
        509: (_STRING_LIST, NUMERIC_FUNCTIONS),
        510: (_STRING_LIST, STRING_FUNCTIONS),
        511: (_STRING_LIST, []),
        512: (_STRING_LIST, DATETIME_FUNCTIONS),
        513: (_STRING, "\\"),
        514: (_STRING, ""),
        515: (_BOOL, True),
        516: (_BOOL, True),
        517: (_INT_MAP, []),
        518: (_BOOL, True),
        519: (_BOOL, False),
        520: (_BOOL, True),
        521: (_BOOL, True),
        522: (_BITMASK, 0b11),
        523: (_BOOL, True),
        524: (_BOOL, True),
        525: (_BITMASK, 0b11),
        526: (_BITMASK, 0b11),
        527: (_BOOL, False),
        528: (_BITMASK, 2),  # full outer joins
        529: (_STRING, "domain"),
        530: (_STRING, "procedure"),
        531: (_STRING, "catalog"),
        532: (_BOOL, True),
        533: (_BITMASK, 0),
        534: (_BITMASK, 0),
        535: (_BITMASK, 0),
        536: (_BOOL, False),
        537: (_BOOL, False),
        538: (_BITMASK, 0b1111),
        539: (_BOOL, True),
        540: (_BITMASK, 0b11),
        562: (_BITMASK, 0),
        563: (_BOOL, False),
        564: (_BITMASK, 0),
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
        values[limit] = (_BIGINT, 0)  # SQL_MAX_*: 0 means no limit or unknown
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
        _table_schema(product, extra_metadata).serialize().to_pybytes() for _, _, product in rows
    ]
    return pa.table(columns, schema=TABLES_WITH_SCHEMA_SCHEMA)


def _table_schema(
    product: Product, extra_metadata: Callable[[Product], dict[str, str]] | None
) -> pa.Schema:
    schema = product.arrow_schema()
    if extra_metadata is None:
        return schema
    return schema.with_metadata({**(schema.metadata or {}), **extra_metadata(product)})

"""The Flight SQL metadata commands meshgate answers, each with its schema and its data.

GetFlightInfo and GetSchema announce a command's schema; DoGet sends its table. Both read the one
entry of :data:`METADATA_COMMANDS`, so a command added here is answered by all three RPCs and the
schema announced is the schema sent.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from gateway.flightsql import flight_sql_pb2 as sql_pb2
from gateway.flightsql import metadata

if TYPE_CHECKING:
    from gateway.principals import Principal
    from gateway.service import Gateway


def _optional(command, name: str) -> str | None:
    """An optional protobuf string field: None when the client left it unset."""
    return getattr(command, name) if command.HasField(name) else None


def _db_schemas(gateway: Gateway, command, principal: Principal) -> pa.Table:
    domains = {a.partition(".")[0] for a in gateway.listed_products(principal)}
    return metadata.db_schemas_table(
        domains,
        catalog=_optional(command, "catalog"),
        pattern=_optional(command, "db_schema_filter_pattern"),
    )


def _tables(gateway: Gateway, command, principal: Principal) -> pa.Table:
    listed = gateway.listed_products(principal)
    return metadata.tables_table(
        {address: entry.product for address, entry in listed.items()},
        catalog=_optional(command, "catalog"),
        schema_pattern=_optional(command, "db_schema_filter_pattern"),
        table_pattern=_optional(command, "table_name_filter_pattern"),
        table_types=list(command.table_types),
        include_schema=command.include_schema,
        extra_metadata=gateway.product_metadata,
    )


def _tables_schema(command) -> pa.Schema:
    if command.include_schema:
        return metadata.TABLES_WITH_SCHEMA_SCHEMA
    return metadata.TABLES_SCHEMA


@dataclass(frozen=True)
class MetadataCommand:
    """A Flight SQL metadata command: the schema GetFlightInfo/GetSchema announce for it and the
    table DoGet sends, side by side so the two cannot drift apart."""

    schema: Callable[[Any], pa.Schema]
    table: Callable[[Gateway, Any, Principal], pa.Table]


def _fixed(schema: pa.Schema, table: Callable[[Gateway, Any, Principal], pa.Table]):
    return MetadataCommand(lambda _command: schema, table)


_NO_FOREIGN_KEYS = _fixed(
    metadata.FOREIGN_KEYS_SCHEMA, lambda *_: metadata.FOREIGN_KEYS_SCHEMA.empty_table()
)

METADATA_COMMANDS: dict[type, MetadataCommand] = {
    sql_pb2.CommandGetSqlInfo: _fixed(
        metadata.SQL_INFO_SCHEMA, lambda _g, command, _p: metadata.sql_info_table(command.info)
    ),
    sql_pb2.CommandGetCatalogs: _fixed(
        metadata.CATALOGS_SCHEMA,
        lambda *_: pa.table(
            {"catalog_name": [metadata.CATALOG_NAME]}, schema=metadata.CATALOGS_SCHEMA
        ),
    ),
    sql_pb2.CommandGetDbSchemas: _fixed(metadata.DB_SCHEMAS_SCHEMA, _db_schemas),
    sql_pb2.CommandGetTables: MetadataCommand(_tables_schema, _tables),
    sql_pb2.CommandGetTableTypes: _fixed(
        metadata.TABLE_TYPES_SCHEMA,
        lambda *_: pa.table(
            {"table_type": [metadata.TABLE_TYPE]}, schema=metadata.TABLE_TYPES_SCHEMA
        ),
    ),
    sql_pb2.CommandGetPrimaryKeys: _fixed(  # descriptors declare no keys
        metadata.PRIMARY_KEYS_SCHEMA, lambda *_: metadata.PRIMARY_KEYS_SCHEMA.empty_table()
    ),
    sql_pb2.CommandGetExportedKeys: _NO_FOREIGN_KEYS,
    sql_pb2.CommandGetImportedKeys: _NO_FOREIGN_KEYS,
    sql_pb2.CommandGetCrossReference: _NO_FOREIGN_KEYS,
    sql_pb2.CommandGetXdbcTypeInfo: _fixed(
        metadata.XDBC_TYPE_INFO_SCHEMA,
        lambda _g, command, _p: metadata.xdbc_type_info_table(
            command.data_type if command.HasField("data_type") else None
        ),
    ),
}
"""Every metadata command meshgate answers; any other command is refused as UNIMPLEMENTED."""

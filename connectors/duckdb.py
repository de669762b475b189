"""DuckDB database files: queries run inside the store's own DuckDB, read-only."""

from __future__ import annotations

import pyarrow as pa

from connectors.base import Capabilities, Connector, ConnectorSettings
from connectors.embedded import EmbeddedDuckDB


class DuckDBSettings(ConnectorSettings):
    path: str
    """The database file, relative to the mesh directory."""


class DuckDBConnector(Connector):
    kind = "duckdb"
    capabilities = Capabilities(dialect="duckdb")
    Settings = DuckDBSettings

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._engine = EmbeddedDuckDB(
            store=self.name,
            database=str((self.base_dir / self.settings.path).resolve()),
            must_exist=True,
            query_timeout_seconds=self.settings.query_timeout_seconds,
        )

    def execute(
        self, sql: str, *, parameters: pa.RecordBatch | None = None
    ) -> pa.RecordBatchReader:
        return self._engine.execute(sql, parameters=parameters)

    def close(self) -> None:
        self._engine.close()

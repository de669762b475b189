"""DuckDB database files: queries run inside the store's own DuckDB, read-only."""

from __future__ import annotations

from connectors.base import ConnectorSettings
from connectors.embedded import EmbeddedConnector, EmbeddedDuckDB


class DuckDBSettings(ConnectorSettings):
    path: str
    """The database file, relative to the mesh directory."""


class DuckDBConnector(EmbeddedConnector):
    kind = "duckdb"
    Settings = DuckDBSettings

    def open_engine(self) -> EmbeddedDuckDB:
        return EmbeddedDuckDB(
            store=self.name,
            database=str((self.base_dir / self.settings.path).resolve()),
            must_exist=True,
            query_timeout_seconds=self.settings.query_timeout_seconds,
        )

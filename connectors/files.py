"""Parquet and CSV files under a directory, read by an in-process DuckDB.

A product's ``table:`` is a path or glob relative to the store's ``root``
(``lineitem/*.parquet``, ``rates.csv``); the format follows the file extension.
"""

from __future__ import annotations

from pathlib import Path

from sqlglot import exp

from connectors.base import ConnectorSettings
from connectors.embedded import EmbeddedConnector
from gateway.errors import MeshConfigError

_READERS = {".parquet": "read_parquet", ".csv": "read_csv", ".tsv": "read_csv"}


class FilesSettings(ConnectorSettings):
    root: str
    """The directory holding the files, relative to the mesh directory."""


class FilesConnector(EmbeddedConnector):
    kind = "files"
    Settings = FilesSettings

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.root = (self.base_dir / self.settings.root).resolve()

    def relation(self, table: str | None, sql: str | None) -> exp.Expression:
        if sql is not None:
            return super().relation(table, sql)
        path = (self.root / table).resolve()
        if not path.is_relative_to(self.root):
            raise MeshConfigError(
                [f"store {self.name!r}: table {table!r} points outside the store root {self.root}"]
            )
        reader = _READERS.get(Path(table).suffix.lower())
        if reader is None:
            raise MeshConfigError(
                [
                    f"store {self.name!r}: table {table!r} has no known file extension; "
                    f"use one of {', '.join(sorted(_READERS))}"
                ]
            )
        return exp.Table(
            this=exp.Anonymous(this=reader, expressions=[exp.Literal.string(str(path))])
        )

"""Parquet, CSV and JSON-lines files under a directory, read by an in-process DuckDB.

A product's ``table:`` is a path or glob relative to the store's ``root``
(``lineitem/*.parquet``, ``rates.csv``); the format follows the file extension.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from sqlglot import exp

from connectors.base import ConnectorSettings
from connectors.embedded import EmbeddedConnector
from gateway.errors import MeshConfigError

_READERS = {
    ".parquet": "read_parquet",
    ".csv": "read_csv",
    ".tsv": "read_csv",
    ".jsonl": "read_json",
    ".ndjson": "read_json",
}


class FilesSettings(ConnectorSettings):
    root: str
    """The directory holding the files, relative to the mesh directory."""


class FilesConnector(EmbeddedConnector):
    kind = "files"
    Settings = FilesSettings

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.root = (self.base_dir / self.settings.root).resolve()

    def relation(
        self, table: str | None, sql: str | None, *, columns: Mapping[str, str] | None = None
    ) -> exp.Expression:
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
        arguments: list[exp.Expression] = [exp.Literal.string(str(path))]
        if reader == "read_json":
            # JSON lines carry no schema: read the contract's columns (an empty file is no rows)
            arguments.append(
                exp.EQ(this=exp.var("format"), expression=exp.Literal.string("newline_delimited"))
            )
            if columns:
                types = exp.Struct(
                    expressions=[
                        exp.PropertyEQ(
                            this=exp.Literal.string(name),
                            expression=exp.Literal.string(
                                exp.DataType.build(kind, dialect="duckdb").sql("duckdb")
                            ),
                        )
                        for name, kind in columns.items()
                    ]
                )
                arguments.append(exp.EQ(this=exp.var("columns"), expression=types))
        return exp.Table(this=exp.Anonymous(this=reader, expressions=arguments))

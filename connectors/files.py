"""Parquet, CSV and JSON-lines files under a directory, read by an in-process DuckDB.

A product's ``table:`` is a path or glob relative to the store's ``root``
(``lineitem/*.parquet``, ``rates.csv``); the format follows the file extension.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from sqlglot import exp

from connectors.base import ConnectorSettings
from connectors.embedded import EmbeddedConnector, EmbeddedDuckDB
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
    cache_metadata: bool = True
    """Keep Parquet footers (schema, row-group statistics) in memory between queries: a
    selective query over many files then reads only the row groups it needs, not every footer
    again (about 40% of a 4,000-row lookup in lineitem SF1). DuckDB checks each file's
    modification time before using what it kept; turn this off for files rewritten in place
    more than once a second."""


class FilesConnector(EmbeddedConnector):
    kind = "files"
    Settings = FilesSettings

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.root = (self.base_dir / self.settings.root).resolve()

    def open_engine(self) -> EmbeddedDuckDB:
        return EmbeddedDuckDB(
            store=self.name,
            query_timeout_seconds=self.settings.query_timeout_seconds,
            settings={"parquet_metadata_cache": self.settings.cache_metadata},
        )

    def trino_name(
        self, table: str | None, sql: str | None, *, catalog: str, schema: str | None
    ) -> exp.Table | None:
        """A Hive catalog over the same files: ``lineitem/*.parquet`` is the table ``lineitem``
        of ``catalog.schema``, registered there once with ``external_location`` pointing at the
        directory. Only Parquet directories: a single file or CSV is not named there."""
        if table is None or schema is None:
            return None
        directory, _, pattern = table.rpartition("/")
        if not directory or pattern != "*.parquet":
            return None
        return self._trino_table(catalog, schema, Path(directory).name)

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

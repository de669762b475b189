"""``meshgate demo``'s self-contained mesh, and the TPC-H data the tests and benchmarks share.

Kept out of the serving packages (gateway, connectors, policies): only the CLI's ``demo``
command, the tests and the benchmarks import it, so serving a mesh never loads it.

- :mod:`demo.tpch`: TPC-H Parquet generated with tpchgen-cli, and loaded into DuckDB to compare;
- :mod:`demo.mesh`: the demo mesh laid out over four domains and three store kinds.
"""

from __future__ import annotations

from demo.mesh import DOMAINS, MARKER, TABLES, build_demo_mesh, tpch_dir
from demo.tpch import (
    TPCH_TABLES,
    DemoBuildError,
    exclusive,
    generate_tpch,
    load_tpch_reference,
    tpch_file,
    tpch_row_counts,
)

__all__ = [
    "DOMAINS",
    "MARKER",
    "TABLES",
    "TPCH_TABLES",
    "DemoBuildError",
    "build_demo_mesh",
    "exclusive",
    "generate_tpch",
    "load_tpch_reference",
    "tpch_dir",
    "tpch_file",
    "tpch_row_counts",
]

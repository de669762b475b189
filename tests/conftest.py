"""Fixtures shared by the whole test suite."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def demo_mesh(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo mesh (TPC-H SF 0.01 over DuckDB, Parquet and SQLite), built once per session.

    Treat it as read-only; copy it (``shutil.copytree``) to change it.
    """
    from demo import build_demo_mesh

    directory = tmp_path_factory.mktemp("demo") / "mesh"
    return build_demo_mesh(directory, scale_factor=0.01, progress=lambda message: None)


@pytest.fixture(scope="session")
def demo_reference(demo_mesh: Path):
    """The demo's TPC-H data in one in-memory DuckDB: the answers the gateway must give."""
    import duckdb

    from demo import load_tpch_reference, tpch_dir

    con = duckdb.connect()
    load_tpch_reference(con, tpch_dir(demo_mesh))
    yield con
    con.close()

"""Fixtures shared by the whole test suite."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def demo_mesh(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo mesh (TPC-H SF 0.01 over DuckDB, Parquet and SQLite), built once per session.

    Treat it as read-only; copy it (``shutil.copytree``) to change it.
    """
    from gateway.demo import build_demo_mesh

    directory = tmp_path_factory.mktemp("demo") / "mesh"
    return build_demo_mesh(directory, scale_factor=0.01, progress=lambda message: None)

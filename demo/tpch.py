"""TPC-H data for the demo, the tests and the benchmarks: generated once with tpchgen-cli.

:func:`generate_tpch` writes the 8 tables as Parquet and a marker that makes a complete folder
reusable; :func:`load_tpch_reference` loads them into DuckDB so answers can be compared.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from connectors.base import sql_string
from gateway.errors import GatewayError

if TYPE_CHECKING:
    import duckdb

TPCH_TABLES = ("customer", "orders", "lineitem", "part", "supplier", "partsupp", "nation", "region")
TPCH_MARKER = ".tpchgen.json"

Progress = Callable[[str], None]


class DemoBuildError(GatewayError):
    """The demo mesh cannot be built; the message says why and what to do."""


def tpchgen_executable() -> str:
    """The tpchgen-cli installed with meshgate: beside this Python, else on PATH."""
    beside = Path(sys.executable).parent / "tpchgen-cli"
    if beside.is_file():
        return str(beside)
    found = shutil.which("tpchgen-cli")
    if found is None:
        raise DemoBuildError(
            "tpchgen-cli is not installed; install meshgate with its dependencies "
            "(`pip install meshgate`, which brings the tpchgen-cli package)"
        )
    return found


def generate_tpch(target: Path, *, scale_factor: float, progress: Progress = print) -> Path:
    """Generate the 8 TPC-H tables as ``target/<table>.parquet`` with tpchgen-cli.

    A marker written after the last file makes a complete folder of the same scale factor
    reusable; anything else is generated again. Returns ``target``.
    """
    target = Path(target)
    scale_factor = check_scale_factor(scale_factor)
    marker = target / TPCH_MARKER
    if read_json(marker).get("scale_factor") == scale_factor and all(
        tpch_file(target, t).is_file() for t in TPCH_TABLES
    ):
        progress(f"reusing TPC-H SF {scale_factor:g} in {target}")
        return target
    target.mkdir(parents=True, exist_ok=True)
    marker.unlink(missing_ok=True)
    progress(f"generating TPC-H SF {scale_factor:g} with tpchgen-cli…")
    started = time.perf_counter()
    command = [
        tpchgen_executable(),
        "parquet",
        f"--scale-factor={scale_factor!r}",
        f"--output-dir={target}",
        "--overwrite",
        "--quiet",
    ]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    missing = [t for t in TPCH_TABLES if not tpch_file(target, t).is_file()]
    if result.returncode != 0 or missing:
        raise DemoBuildError(
            f"tpchgen-cli failed (exit code {result.returncode}, tables not written: "
            f"{', '.join(missing) or 'none'}): {result.stderr.strip()[-2000:]}; "
            f"check free disk space in {target}"
        )
    rows = tpch_row_counts(target)
    write_json(marker, {"scale_factor": scale_factor, "rows": rows})
    progress(
        f"generated {len(rows)} tables, {sum(rows.values()):,} rows "
        f"in {time.perf_counter() - started:.1f} s"
    )
    return target


def tpch_file(parquet_dir: Path, table: str) -> Path:
    return Path(parquet_dir) / f"{table}.parquet"


def tpch_row_counts(parquet_dir: Path) -> dict[str, int]:
    """Rows per generated table, from the Parquet footers."""
    import pyarrow.parquet as pq

    return {t: pq.read_metadata(tpch_file(parquet_dir, t)).num_rows for t in TPCH_TABLES}


def load_tpch_reference(con: duckdb.DuckDBPyConnection, parquet_dir: Path) -> dict[str, int]:
    """Load the 8 TPC-H tables into DuckDB connection ``con`` as plain tables; rows per table.

    Tests and benchmarks compare the gateway's answers with DuckDB's over the same data.
    """
    rows = {}
    for table in TPCH_TABLES:
        source = sql_string(tpch_file(parquet_dir, table))
        con.execute(f"CREATE OR REPLACE TABLE {table} AS SELECT * FROM read_parquet({source})")
        rows[table] = con.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
    return rows


@contextmanager
def exclusive(folder: Path) -> Iterator[None]:
    """Serialise builders in one folder (two builds started at once); no lock file is left."""
    import fcntl

    descriptor = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield
    finally:
        os.close(descriptor)


def check_scale_factor(scale_factor: float) -> float:
    """``scale_factor`` as a float; DemoBuildError unless it is a positive number."""
    scale_factor = float(scale_factor)
    if not (math.isfinite(scale_factor) and scale_factor > 0):
        raise DemoBuildError(f"scale factor {scale_factor} must be a positive number, e.g. 0.01")
    return scale_factor


def read_json(path: Path) -> dict[str, Any]:
    """The JSON object at ``path``; empty when it is missing or not an object (a marker not yet
    written reads as no marker)."""
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return content if isinstance(content, dict) else {}


def write_json(path: Path, content: dict[str, Any]) -> None:
    path.write_text(json.dumps(content, indent=2) + "\n", encoding="utf-8")

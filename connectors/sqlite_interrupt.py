"""Interrupting a query the ADBC SQLite driver runs (sqlite_interrupt.c, built on first use).

The driver has no cancel, so a query a client cancelled or left kept running at SQLite. The
extension is compiled once per machine into the user's cache directory with the system's C
compiler; without one, SQLite queries run to their end as before (a warning says so).
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import logging
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

log = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("sqlite_interrupt.c")
ENTRYPOINT = "meshgate_interrupt_init"


@functools.cache
def extension() -> tuple[Path, ctypes.CDLL] | None:
    """The built extension's path and the library to call it through; None when it cannot be
    built here (no C compiler or no SQLite headers)."""
    source = SOURCE.read_bytes()
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "meshgate"
    built = cache / f"sqlite_interrupt-{hashlib.sha256(source).hexdigest()[:16]}.so"
    if not built.is_file():
        compiler = shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc")
        if compiler is None:
            log.warning("no C compiler: queries at SQLite stores cannot be interrupted")
            return None
        cache.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=cache) as scratch:
            target = Path(scratch) / built.name
            done = subprocess.run(
                [compiler, "-O2", "-shared", "-fPIC", "-o", str(target), str(SOURCE)],
                capture_output=True,
                text=True,
                check=False,
            )
            if done.returncode != 0:
                log.warning(
                    "queries at SQLite stores cannot be interrupted: building %s failed: %s",
                    SOURCE.name,
                    done.stderr.strip()[:500],
                )
                return None
            target.replace(built)  # atomic: another process may build it at the same time
    library = ctypes.CDLL(str(built))
    library.meshgate_interrupt.argtypes = [ctypes.c_int64]
    library.meshgate_interrupt.restype = None
    return built, library


def load_into(connection) -> int | None:
    """Load the extension into an ADBC SQLite ``connection``; the handle that
    :func:`interrupt` takes, or None when the extension is not available."""
    built = extension()
    if built is None:
        return None
    path, _ = built
    options = connection.adbc_connection.set_options
    options(**{"adbc.sqlite.load_extension.enabled": "true"})
    try:
        options(**{"adbc.sqlite.load_extension.path": str(path)})
        options(**{"adbc.sqlite.load_extension.entrypoint": ENTRYPOINT})
    finally:
        options(**{"adbc.sqlite.load_extension.enabled": "false"})
    with connection.cursor() as cursor:
        cursor.execute("SELECT meshgate_connection()")
        return cursor.fetchone()[0]


def interrupt(handle: int) -> None:
    """Interrupt what the connection behind ``handle`` runs; it must still be open."""
    built = extension()
    if built is not None:
        built[1].meshgate_interrupt(handle)

"""The gateway's own DuckDB: the local engine that runs what no single store can.

The executor runs each plan's local query on it; the planner binds a query's names and types on
it (planner.schema) before any store is asked. One database per process, settings locked.
"""

from __future__ import annotations

import os
import threading

import duckdb

_engine: tuple[int, duckdb.DuckDBPyConnection] | None = None
_engine_lock = threading.Lock()

LOCAL_ENGINE_CONFIG = {
    "enable_external_access": False,
    "lock_configuration": True,
    # DuckDB 1.5.5 can push a join's runtime filter below LIMIT/TOP_N, and a derived table's
    # LIMIT then keeps rows it should have dropped (tests/test_embedded_engine.py shows it)
    "disabled_optimizers": "join_filter_pushdown",
}


_engine_limits: dict[str, str] = {}


def configure_local_engine(*, memory_limit: int | None, temp_directory: str | None) -> None:
    """Bound the local engine's memory, spilling to ``temp_directory`` past it (sorts, joins
    and aggregates that DuckDB can spill). Its settings are locked once it opens, so a change
    opens a new engine for the queries that start from now on."""
    global _engine
    limits = {}
    if memory_limit is not None:
        limits["memory_limit"] = f"{max(memory_limit // 2**20, 16)}MiB"
    if temp_directory is not None:
        limits["temp_directory"] = temp_directory
    with _engine_lock:
        if limits != _engine_limits:
            _engine_limits.clear()
            _engine_limits.update(limits)
            _engine = None


def local_engine() -> duckdb.DuckDBPyConnection:
    """A connection to the gateway's own DuckDB: in memory, no file system, no network, settings
    locked. One database per process (opening one costs ~10 ms, a connection ~10 µs, and one
    thread pool serves every query); what a connection registers only it sees."""
    global _engine
    engine = _engine  # read once: no lock on the path every query takes
    if engine is None or engine[0] != os.getpid():  # a forked child opens its own
        with _engine_lock:
            if _engine is None or _engine[0] != os.getpid():
                config = {**LOCAL_ENGINE_CONFIG, **_engine_limits}
                _engine = (os.getpid(), duckdb.connect(config=config))
            engine = _engine
    return engine[1].cursor()

"""The in-process DuckDB that runs queries for duckdb and files stores answers exactly."""

from __future__ import annotations

import duckdb

from connectors import open_connector

LIMITED_JOIN = (
    "SELECT d.k FROM (SELECT k FROM a ORDER BY k LIMIT 50) d "
    "JOIN (SELECT * FROM b WHERE v = 45) b2 ON d.k = b2.k"
)


def test_a_limit_below_a_join_keeps_exactly_its_rows(tmp_path):
    """DuckDB 1.5.5's join filter pushdown can reach below a LIMIT; the store engine disables it.

    Plain DuckDB returned keys above 50 for this query in most runs on this machine.
    """
    path = tmp_path / "store.duckdb"
    con = duckdb.connect(str(path))
    con.execute("CREATE TABLE a AS SELECT range AS k FROM range(1, 101)")
    con.execute(
        "CREATE TABLE b AS SELECT CASE WHEN range = 90 THEN 91 WHEN range = 91 THEN 43 "
        "ELSE range % 100 + 1 END AS k, CAST(range // 2 AS INTEGER) AS v FROM range(8000)"
    )
    con.close()
    store = open_connector("s", {"kind": "duckdb", "path": str(path)}, base_dir=tmp_path)
    try:
        for _ in range(30):
            keys = store.execute(LIMITED_JOIN).read_all().column("k").to_pylist()
            assert keys and all(k <= 50 for k in keys), keys
    finally:
        store.close()

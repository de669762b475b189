"""Errors a statement meets while its answer streams are reported as the statement's (issue 11).

The 10,000-statement campaign found a DuckDB conversion error raised after the first batch
reported as INTERNAL, where the same error before the first batch was INVALID_ARGUMENT; and the
ADBC SQLite driver failing a stream whose computed column changed type between rows. Each test
runs through the real server over a small mesh of real stores (a DuckDB file, a SQLite file).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from tests.support.mesh import grant_everything
from tests.support.server import connect, running_server

ROWS = 1_000_000
BAD_FROM = 950_000
"""Rows of ``lake.big`` from here on hold a ``v`` that is no integer: far past the first
batches, which reach the client before the engine gets there."""
MIXED_ROWS, MIXED_FROM = 5000, 3000
"""``ref.mixed`` changes storage class past the ADBC SQLite driver's first batch (1,024 rows)."""


def _descriptor(product: str, store: str, table: str, columns: dict[str, str]) -> str:
    lines = "".join(f"  - {{name: {name}, type: {kind}}}\n" for name, kind in columns.items())
    return (
        f"product: {product}\nversion: 1\nowner: o@example.com\ndescription: {product}\n"
        f"store: {store}\ntable: {table}\ncolumns:\n{lines}"
    )


@pytest.fixture(scope="module")
def stream_mesh(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``lake.big`` (DuckDB: k, g = 1, v text of k, 'x' from BAD_FROM on) and ``ref.small``
    (SQLite: g = 1, an empty suffix) and ``ref.mixed`` (SQLite: k, and a decimal w that SQLite
    keeps as an integer for k < MIXED_FROM, a real past it)."""
    import duckdb

    root = tmp_path_factory.mktemp("stream-mesh")
    with duckdb.connect(str(root / "lake.duckdb")) as con:
        con.execute(
            "CREATE TABLE big AS SELECT range AS k, 1 AS g, "
            f"CASE WHEN range < {BAD_FROM} THEN range::VARCHAR ELSE 'x' END AS v "
            f"FROM range({ROWS})"
        )
    with sqlite3.connect(root / "ref.sqlite") as con:
        con.execute("CREATE TABLE small (g INTEGER, suffix TEXT)")
        con.execute("INSERT INTO small VALUES (1, '')")
        con.execute("CREATE TABLE mixed (k INTEGER, w DECIMAL(10, 2))")  # NUMERIC affinity
        con.executemany(
            "INSERT INTO mixed VALUES (?, ?)",
            [(k, k if k < MIXED_FROM else k + 0.5) for k in range(MIXED_ROWS)],
        )
    (root / "mesh.yaml").write_text(
        "name: streams\nstores:\n"
        "  lake_db: {kind: duckdb, path: lake.duckdb}\n"
        "  ref_db: {kind: sqlite, path: ref.sqlite}\n"
        "gateway: {audit_log: null}\n"
    )
    for domain, product, store, columns in (
        ("lake", "big", "lake_db", {"k": "bigint", "g": "integer", "v": "varchar"}),
        ("ref", "small", "ref_db", {"g": "integer", "suffix": "varchar"}),
        ("ref", "mixed", "ref_db", {"k": "integer", "w": '"decimal(10,2)"'}),
    ):
        (root / domain).mkdir(exist_ok=True)
        (root / domain / f"{product}.yaml").write_text(
            _descriptor(product, store, product, columns)
        )
    grant_everything(root)
    return root


@pytest.fixture(scope="module")
def stream_server(stream_mesh):
    with running_server(stream_mesh) as (uri, gateway):
        yield uri, gateway


def _rows_before_the_error(gateway, sql: str) -> tuple[int, Exception]:
    """Rows the gateway streamed for ``sql`` before it failed, and the error."""
    reader = gateway.run(sql, gateway.current_principals().get("tester"))
    rows = 0
    with pytest.raises(Exception) as failed:  # noqa: PT011 - the caller checks it
        for batch in reader:
            rows += batch.num_rows
    return rows, failed.value


def _client_error(uri: str, sql: str) -> str:
    with connect(uri, "tester") as conn, conn.cursor() as cur:
        with pytest.raises(Exception) as failed:  # noqa: PT011 - the status is checked
            cur.execute(sql)
            cur.fetch_arrow_table()
        return str(failed.value)


@pytest.mark.parametrize(
    ("sql", "where"),
    [
        # joined with a SQLite product: the cast runs in the local engine (a cross join: no
        # dynamic filter has the probe read whole before the engine starts)
        (
            "SELECT CAST(b.v || s.suffix AS INTEGER) AS n FROM lake.big b CROSS JOIN ref.small s",
            "the local engine could not run the query",
        ),
        # one store: the DuckDB store itself casts while its answer streams
        ("SELECT CAST(v AS INTEGER) AS n FROM lake.big", "store 'lake_db' could not run"),
    ],
    ids=["local-engine", "duckdb-store"],
)
def test_a_conversion_error_while_streaming_is_an_invalid_argument(stream_server, sql, where):
    """After batches have reached the client, DuckDB fails converting 'x': INVALID_ARGUMENT
    that says what failed and what to change, without the value; it was INTERNAL."""
    uri, gateway = stream_server
    rows, error = _rows_before_the_error(gateway, sql)
    assert rows >= 65_536, rows  # batches were out before the engine met the bad value
    assert type(error).__name__ == "InvalidQuery", repr(error)
    message = _client_error(uri, sql)
    assert message.startswith("INVALID_ARGUMENT"), message[:500]
    assert where in message and "Conversion Error" in message, message[:500]
    assert "TRY_CAST" in message and "'x'" not in message, message[:500]
    assert "internal error" not in message


@pytest.mark.parametrize(
    ("sql", "kind"),
    [
        ("SELECT CAST(v AS INTEGER) AS n FROM lake.big WHERE k >= 960000", "Conversion"),
        ("SELECT CAST(k AS TINYINT) AS n FROM lake.big WHERE k > 300", "Conversion"),
        ("SELECT error('from the statement ' || v) AS n FROM lake.big", "Invalid Input"),
        (
            "SELECT b.k, error('x' || s.suffix) AS e FROM lake.big b JOIN ref.small s ON b.g = s.g",
            "Invalid Input",
        ),
        ("SELECT [1, 2][k + 10] AS n FROM lake.big b JOIN ref.small s ON b.g = s.g", None),
    ],
    ids=["cast-early", "out-of-range", "error-store", "error-local", "list-index"],
)
def test_duckdb_user_errors_map_the_same_before_the_first_batch(stream_server, sql, kind):
    """The same classification before any batch: every DuckDB error about the statement's
    values is INVALID_ARGUMENT with DuckDB's class named (or an answer where DuckDB has one)."""
    uri, _ = stream_server
    with connect(uri, "tester") as conn, conn.cursor() as cur:
        try:
            cur.execute(sql)
            cur.fetch_arrow_table()
        except Exception as exc:  # noqa: BLE001 - the status is the assertion
            message = str(exc)
            assert message.startswith("INVALID_ARGUMENT"), message[:500]
            assert kind is None or f"{kind} Error" in message, message[:500]
            assert "internal error" not in message, message[:500]
        else:
            assert kind is None, "DuckDB answered a statement expected to fail"


def _mixed(k: int) -> float:
    return k if k < MIXED_FROM else k + 0.5


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ("SELECT w FROM ref.mixed ORDER BY k", [_mixed(k) for k in range(MIXED_ROWS)]),
        (
            "SELECT sum(w) AS s FROM ref.mixed GROUP BY k ORDER BY k",
            [_mixed(k) for k in range(MIXED_ROWS)],
        ),
        (
            "SELECT k FROM ref.mixed WHERE k < 2000 UNION ALL SELECT w FROM ref.mixed "
            "WHERE k >= 2000",
            [float(k) for k in range(2000)] + [_mixed(k) for k in range(2000, MIXED_ROWS)],
        ),
        (
            "SELECT CASE WHEN k < 1500 THEN k ELSE w END AS c FROM ref.mixed",
            [k if k < 1500 else _mixed(k) for k in range(MIXED_ROWS)],
        ),
        (
            "SELECT m.w FROM ref.mixed m JOIN lake.big b ON m.k = b.k ORDER BY m.k",
            [_mixed(k) for k in range(MIXED_ROWS)],
        ),
    ],
    ids=["column", "sum", "union", "case", "fragment"],
)
def test_sqlite_values_that_change_type_between_rows_are_read(stream_server, sql, expected):
    """SQLite keeps a decimal's whole values as integers: the ADBC driver typed the column
    from its first 1,024 rows and failed later ones ("Type mismatch in column 1: expected INT64
    but got DOUBLE", INTERNAL in the campaign). The gateway casts such outputs at SQLite."""
    uri, _ = stream_server
    with connect(uri, "tester") as conn, conn.cursor() as cur:
        cur.execute(sql)
        table = cur.fetch_arrow_table()
    values = [float(v) if not isinstance(v, str) else v for v in table.column(0).to_pylist()]
    assert (
        sorted(values, key=str) == sorted(expected, key=str)
        if "UNION" in sql
        else values == expected
    )


def test_sqlite_values_of_another_type_than_the_first_rows_are_an_invalid_argument(stream_mesh):
    """Where the planner's casts do not reach (an integer output, which is never truncated),
    SQLite answering text past the driver's first batch is the statement's error."""
    from connectors import open_connector
    from gateway.errors import InvalidQuery

    store = open_connector("ref_db", {"kind": "sqlite", "path": "ref.sqlite"}, base_dir=stream_mesh)
    try:
        reader = store.execute(
            f"SELECT CASE WHEN k < {MIXED_FROM} THEN k ELSE 'many' END AS c FROM mixed"
        )
        with pytest.raises(InvalidQuery, match="more than one type in one column.*cast the"):
            reader.read_all()
    finally:
        store.close()


ENDLESS_AT_SQLITE = "SELECT count(*) AS n FROM ref.mixed a, ref.mixed b, ref.mixed c"
"""125 billion rows counted at SQLite: it runs there whole, for hours."""


def test_a_cancelled_query_at_sqlite_stops_and_the_gateway_goes_idle(stream_mesh, tmp_path):
    """The client gives up after 3 s (its deadline cancels the call); the ADBC SQLite driver
    has no cancel, so the query kept a core busy. The gateway now interrupts it at SQLite."""
    from tests.fuzz.runner import _connect
    from tests.support.server_process import busy_cores, served

    with served(stream_mesh, log_dir=tmp_path) as server:
        with running_server(stream_mesh) as (_, gateway):  # the plan, as the server makes it
            plan = gateway.plan(ENDLESS_AT_SQLITE, gateway.current_principals().get("tester"))
            assert plan.local_sql is None and plan.fragments[0].store == "ref_db"
        conn = _connect(server.uri, "tester", 3)
        try:
            with pytest.raises(Exception, match="DeadlineExceeded|deadline"), conn.cursor() as cur:
                cur.execute(ENDLESS_AT_SQLITE)
                cur.fetchall()
        finally:
            conn.close()
        windows = [busy_cores(server.process.pid) for _ in range(10)]
        idle = [i for i, cores in enumerate(windows) if cores < 0.05]
        assert idle and all(cores < 0.05 for cores in windows[idle[0] :]), windows
        assert server.alive() and not server.fatal_errors()
        with connect(server.uri, "tester") as again, again.cursor() as cur:
            cur.execute("SELECT count(*) AS n FROM ref.mixed")
            assert cur.fetchone() == (MIXED_ROWS,)

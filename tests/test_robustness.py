"""No statement can crash, hang or overwhelm the gateway (issue 11).

One bad statement from one principal must cost the others nothing: the statements here once
killed the server process, kept both cores busy after they were cancelled, or took seconds to
plan. Each runs through the real server (a process of its own where a crash is the risk).
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from tests.support.server import connect
from tests.support.server_process import served

CRASHING_QUERY = (
    "SELECT t2.l_commitdate, sum(DISTINCT coalesce(t3.o_orderkey, 10)), count(*) "
    "FROM sales.orders_v2 AS t1 JOIN fulfillment.lineitem_v1 AS t2 "
    "ON t1.o_orderkey = t2.l_orderkey "
    "JOIN sales.orders AS t3 ON t2.l_orderkey = t3.o_orderkey AND contains(t2.l_shipmode, ?) "
    "GROUP BY CUBE (t2.l_commitdate)"
)
SIBLINGS = [
    # the same shape with a match: every fragment streams to its end
    (CRASHING_QUERY, ("AIR",)),
    # a join the local engine finishes before it has read a streamed DuckDB fragment
    (
        "SELECT count(*) FROM sales.orders o JOIN fulfillment.lineitem l "
        "ON o.o_orderkey = l.l_orderkey AND contains(l.l_shipmode, ?)",
        ("2-HIGH",),
    ),
    # two products of one DuckDB store joined only through another store
    (
        "SELECT count(*) FROM sales.orders a JOIN fulfillment.lineitem l ON a.o_orderkey = "
        "l.l_orderkey JOIN sales.orders_v2 b ON l.l_orderkey = b.o_orderkey WHERE l.l_tax < ?",
        (0.0,),
    ),
]
KNOWN_QUERY = "SELECT count(*) AS n FROM sales.orders"


def test_a_native_duckdb_stream_closed_unread_by_the_local_engine_does_not_crash(tmp_path):
    """The root cause, without the server: a DuckDB store's stream registered in the local
    engine, whose query ends before reading it, then closed. Before streams were owned by the
    gateway (gateway.streaming.OwnedStream) this process died within five rounds."""
    import duckdb

    store = tmp_path / "store.duckdb"
    with duckdb.connect(str(store)) as con:
        con.execute("CREATE TABLE orders AS SELECT range AS k FROM range(15000)")
    script = textwrap.dedent(
        f"""
        import pyarrow as pa
        from pathlib import Path
        from connectors import open_connector
        from gateway.executor import execute_plan
        from gateway.planner import Plan
        from gateway.planner.transpile import Fragment

        base = Path({str(tmp_path)!r})
        settings = {{"kind": "duckdb", "path": "store.duckdb"}}
        stores = {{n: open_connector(n, settings, base_dir=base) for n in ("big", "small")}}
        plan = Plan(
            statement="",
            products=(),
            fragments=(
                Fragment("f1", "big", "SELECT a.k AS x FROM orders a, orders b"),
                Fragment("f2", "small", "SELECT k FROM orders WHERE k < 0"),
            ),
            local_sql="SELECT count(*) AS n FROM f1 JOIN f2 ON f1.x = f2.k",
            schema=pa.schema([pa.field("n", pa.int64())]),
        )
        for _ in range(25):
            answer = execute_plan(plan, stores, max_batch_bytes=1 << 22).read_all()
            assert answer["n"][0].as_py() == 0
        print("survived")
        """
    )
    result = subprocess.run(
        [sys.executable, "-X", "faulthandler", "-c", script],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=str(Path(__file__).resolve().parents[1]),
    )
    assert result.returncode == 0 and "survived" in result.stdout, result.stderr[-3000:]


def _count(uri: str, user: str = "analyst") -> int:
    with connect(uri, user) as conn, conn.cursor() as cur:
        cur.execute(KNOWN_QUERY)
        return cur.fetch_arrow_table()["n"][0].as_py()


def test_the_query_that_killed_the_server_is_answered_and_others_keep_reading(
    demo_mesh, demo_reference, tmp_path
):
    expected = demo_reference.execute("SELECT count(*) FROM orders").fetchone()[0]
    with served(demo_mesh, log_dir=tmp_path) as server:
        stop = threading.Event()
        other_answers: list[int] = []
        other_errors: list[BaseException] = []

        def another_client() -> None:
            try:
                with connect(server.uri, "admin") as conn:
                    while not stop.is_set():
                        with conn.cursor() as cur:
                            cur.execute(KNOWN_QUERY)
                            other_answers.append(cur.fetch_arrow_table()["n"][0].as_py())
            except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
                other_errors.append(exc)

        bystander = threading.Thread(target=another_client, daemon=True)
        bystander.start()
        try:
            with connect(server.uri, "analyst") as conn:
                for round_ in range(6):
                    for sql, parameters in [(CRASHING_QUERY, ("2-HIGH",)), *SIBLINGS]:
                        with conn.cursor() as cur:
                            cur.execute(sql, parameters=parameters)
                            table = cur.fetch_arrow_table()
                        assert table.num_rows >= 1, (round_, sql)
                        assert server.alive(), server.output()[-3000:]
        finally:
            stop.set()
            bystander.join(timeout=60)
        assert server.alive() and not server.fatal_errors(), server.output()[-3000:]
        assert not other_errors, other_errors
        assert other_answers and set(other_answers) == {expected}
        assert _count(server.uri) == expected


@pytest.mark.parametrize("shipmode", ["AIR", "2-HIGH"])
def test_the_crashing_query_gives_the_reference_answer(demo_mesh, demo_reference, shipmode):
    from tests.support.server import running_server

    sql = CRASHING_QUERY.replace("sales.orders_v2", "sales.orders")
    reference = demo_reference.execute(
        sql.replace("sales.", "").replace("fulfillment.", "").replace("_v1", "")
        + " ORDER BY 1 NULLS LAST",
        [shipmode],
    ).fetchall()
    with running_server(demo_mesh) as (uri, _), connect(uri, "admin") as conn, conn.cursor() as cur:
        cur.execute(sql + " ORDER BY 1 NULLS LAST", parameters=(shipmode,))
        got = [tuple(r.values()) for r in cur.fetch_arrow_table().to_pylist()]
    assert [(a, int(b) if b is not None else None, c) for a, b, c in got] == [
        (a, int(b) if b is not None else None, c) for a, b, c in reference
    ]


def test_relations_of_one_store_joined_only_through_another_are_not_grouped(demo_mesh):
    """Grouped, sales would have sent the cross product of orders and orders_v2 (225M rows)."""
    from gateway.service import Gateway

    gateway = Gateway.open(demo_mesh)
    try:
        analyst = gateway.current_principals().get("analyst")
        plan = gateway.plan(SIBLINGS[2][0], analyst, list(SIBLINGS[2][1]))
        sales = [f.sql for f in plan.fragments if f.store == "sales_db"]
        assert len(sales) == 2 and all(sql.count("main.orders") == 1 for sql in sales), sales
        joined = gateway.plan(
            "SELECT count(*) FROM sales.orders a JOIN sales.customer c ON a.o_custkey = "
            "c.c_custkey JOIN fulfillment.lineitem l ON l.l_orderkey = a.o_orderkey",
            analyst,
        )
        together = [f.sql for f in joined.fragments if f.store == "sales_db"]
        assert len(together) == 1 and "main.customer" in together[0], joined.explain()
        assert "main.orders" in together[0], joined.explain()
    finally:
        gateway.close()

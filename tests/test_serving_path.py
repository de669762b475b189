"""The serving path's shortcuts save time and never change an answer."""

from __future__ import annotations

import threading
import uuid

import duckdb
import pyarrow as pa
import pytest

from gateway.demo import load_tpch_reference, tpch_dir
from gateway.planner.schema import local_engine
from gateway.principals import Principal
from gateway.service import Gateway

ADMIN = Principal("admin", roles=("admin",))
ORDERS_BY_NATION = """
    SELECT n.n_name AS nation, count(*) AS orders
    FROM sales.orders o
    JOIN sales.customer c ON c.c_custkey = o.o_custkey
    JOIN reference.nation n ON n.n_nationkey = c.c_nationkey
    WHERE o.o_orderkey <= ?
    GROUP BY n.n_name ORDER BY n.n_name
"""


@pytest.fixture(scope="module")
def gateway(demo_mesh):
    gateway = Gateway.open(demo_mesh)
    yield gateway
    gateway.close()


@pytest.fixture(scope="module")
def reference(demo_mesh):
    con = duckdb.connect()
    load_tpch_reference(con, tpch_dir(demo_mesh))
    yield con
    con.close()


def _rows(gateway: Gateway, sql: str, principal: Principal, parameters: list) -> list[dict]:
    return gateway.run(sql, principal, parameters).read_all().to_pylist()


# --- the local engine -------------------------------------------------------------------------


def test_local_engine_connections_share_one_database_but_not_what_they_register():
    first, second = local_engine(), local_engine()
    probe = f"probe_{uuid.uuid4().hex}"
    try:
        first.register("__fragment_1", pa.table({"x": [1]}))
        second.register("__fragment_1", pa.table({"x": [2]}))
        assert first.execute("SELECT x FROM __fragment_1").fetchall() == [(1,)]
        assert second.execute("SELECT x FROM __fragment_1").fetchall() == [(2,)]
        first.execute(f"CREATE TABLE {probe} AS SELECT 1 AS y")  # queries never create tables
        assert second.execute(f"SELECT y FROM {probe}").fetchall() == [(1,)]
        with pytest.raises(duckdb.Error, match="enable_external_access"):
            second.execute("SET enable_external_access = true")
    finally:
        first.execute(f"DROP TABLE IF EXISTS {probe}")
        first.close()
        second.close()


def test_concurrent_cross_store_queries_keep_their_own_fragments(gateway, reference):
    """Threads join fragments registered under the same names in the one local database."""
    limits = [100 * (i + 1) for i in range(8)]
    expected = {
        limit: reference.execute(
            ORDERS_BY_NATION.replace("sales.", "").replace("reference.", ""), [limit]
        )
        .to_arrow_table()
        .to_pylist()
        for limit in limits
    }
    answers: dict[int, list[dict]] = {}
    failures: list[BaseException] = []

    def query(limit: int) -> None:
        try:
            for _ in range(3):
                answers[limit] = _rows(gateway, ORDERS_BY_NATION, ADMIN, [limit])
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            failures.append(exc)

    threads = [threading.Thread(target=query, args=(limit,)) for limit in limits]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failures
    assert all(expected[limit] for limit in limits)
    assert answers == expected

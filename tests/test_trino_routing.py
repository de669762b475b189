"""Routing to the Trino engine by size, Trino going down, and cancellation across the hop.

Runs against the real Trino 476 of ``scripts/test-services`` over the federated TPC-H mesh at
SF 0.01 (tests/support/trino_mesh.py). "Trino down" is a TcpProxy in front of it being stopped;
Trino itself is never touched.
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import pyarrow.flight as flight
import pytest

from gateway.errors import SourceUnavailable
from gateway.service import Gateway
from tests import test_tpch_federated as federated
from tests.support.server import connect, running_server
from tests.support.stores import MARIADB, POSTGRES, TRINO, TcpProxy, require, trino_admin
from tests.support.tpch_mesh import PRINCIPAL, answer_difference, to_addresses
from tests.support.trino_mesh import ENGINE, trino_tpch_mesh

pytestmark = pytest.mark.stores

mesh = federated.mesh
reference = federated.reference
tpch_queries = federated.tpch_queries


@pytest.fixture
def routed(mesh: Path, tmp_path: Path):
    """``routed(mode=..., min_rows=..., engine_overrides=...)``: a gateway over the mesh."""
    require(TRINO)
    require(POSTGRES)
    require(MARIADB)
    opened = []

    def open_gateway(**options) -> Gateway:
        context = trino_tpch_mesh(mesh, tmp_path / f"mesh{len(opened)}", **options)
        gateway = Gateway.open(context.__enter__())
        opened.append((context, gateway))
        return gateway

    yield open_gateway
    for context, gateway in reversed(opened):
        gateway.close()
        context.__exit__(None, None, None)


def _principal(gateway: Gateway):
    return gateway.principals.get(PRINCIPAL)


# --- auto ----------------------------------------------------------------------------------------


def test_auto_sends_large_cross_store_queries_to_trino_and_keeps_small_ones_local(
    routed, tpch_queries, reference
):
    # SF 0.01: customer 1,500 + orders 15,000 + lineitem 60,175 rows; supplier 100, nation 25
    gateway = routed(mode="auto", min_rows=50_000)
    assert gateway.engine.counts.ready.wait(60), "the row counts were never taken"
    principal = _principal(gateway)
    large = gateway.plan(to_addresses(tpch_queries[3]), principal)
    assert large.engine == ENGINE
    assert "auto: about 76,675 rows read, at least min_rows 50,000" in gateway.explain(large)
    small_sql = (
        "SELECT s.s_name, n.n_name FROM supply.supplier s "
        "JOIN reference.nation n ON n.n_nationkey = s.s_nationkey ORDER BY 1, 2"
    )
    small = gateway.plan(small_sql, principal)
    assert small.engine == "local", small.explain()
    assert "Trino" not in small.explain() and ENGINE not in {f.store for f in small.fragments}
    pushed = gateway.plan(
        "SELECT count(*) AS n FROM supply.partsupp p JOIN sales.orders o ON o.o_orderkey = "
        "p.ps_partkey",
        principal,
    )
    assert pushed.engine == "local" and "below min_rows 50,000" in pushed.explain()
    answer = gateway.run(to_addresses(tpch_queries[3]), principal).read_all()
    expected = reference.execute(tpch_queries[3]).to_arrow_table()
    assert answer_difference(answer, expected, ordered=True) is None


def test_explain_and_the_audit_event_say_which_engine_ran_what(routed, tpch_queries):
    gateway = routed(mode="trino", audit=True)
    sql = to_addresses(tpch_queries[3])
    with (
        running_server(gateway.mesh.root) as (uri, _),
        connect(uri, PRINCIPAL) as conn,
        conn.cursor() as cursor,
    ):
        cursor.execute(f"EXPLAIN {sql}")
        lines = [row[0] for row in cursor.fetchall()]
        cursor.execute(sql)
        assert len(cursor.fetchall()) == 10
    assert lines[0] == "engine: trino (routing mode trino)"
    assert lines[1] == "fragment the answer runs on engine 'trino':"
    schema = gateway.mesh.products["sales.orders"].descriptor.table.split(".")[0]
    assert f'"postgresql"."{schema}"."orders"' in lines[2]  # the session's own schema
    events = [
        json.loads(line)
        for line in (gateway.mesh.root / "audit" / "events.jsonl").read_text().splitlines()
    ]
    (event,) = [e for e in events if e["statement"] == sql]
    assert event["engine"] == ENGINE and event["outcome"] == "ok" and event["rows"] == 10
    assert [f["store"] for f in event["fragments"]] == [ENGINE]


def test_a_prepared_statement_binds_new_values_into_the_trino_sql(routed, reference):
    """One plan per shape of values: each execution writes its values into Trino's SQL."""
    gateway = routed(mode="trino")
    sql = (
        "SELECT count(*) AS n FROM sales.orders o JOIN fulfillment.lineitem l "
        "ON l.l_orderkey = o.o_orderkey WHERE o.o_custkey = ? AND l.l_quantity > ?"
    )
    expected = {
        key: reference.execute(
            "SELECT count(*) FROM orders JOIN lineitem ON l_orderkey = o_orderkey "
            "WHERE o_custkey = ? AND l_quantity > ?",
            [key, 10],
        ).fetchone()[0]
        for key in (1, 4, 7)
    }
    assert len(set(expected.values())) > 1, "values that give the same count prove nothing"
    with (
        running_server(gateway.mesh.root) as (uri, served),
        connect(uri, PRINCIPAL) as conn,
        conn.cursor() as cursor,
    ):
        for key, count in expected.items():
            cursor.execute(sql, parameters=(key, 10))
            assert cursor.fetchall() == [(count,)]
        plan = served.plan(sql, served.principals.get(PRINCIPAL), [7, 10])
    assert plan.engine == ENGINE and "= 7" in plan.fragments[0].sql
    # planned at prepare (values not bound yet) and at the first execution; reused after
    assert served.plans.misses == 2 and served.plans.hits >= 2


def test_trinos_answer_streams_in_the_contract_types_under_the_byte_cap(routed, reference):
    cap = 64 * 1024
    gateway = routed(mode="trino", gateway={"max_batch_bytes": cap})
    sql = (
        "SELECT l.l_orderkey, l.l_extendedprice, l.l_shipdate, l.l_comment, o.o_comment "
        "FROM fulfillment.lineitem l JOIN sales.orders o ON o.o_orderkey = l.l_orderkey"
    )
    principal = _principal(gateway)
    plan = gateway.plan(sql, principal)
    assert plan.engine == ENGINE and plan.local_sql is None
    reader = gateway.run(sql, principal)
    batches = list(reader)
    assert reader.schema.types == plan.schema.types
    assert all(b.nbytes <= cap for b in batches) and len(batches) > 10
    (expected,) = reference.execute("SELECT count(*) FROM lineitem").fetchone()
    assert sum(b.num_rows for b in batches) == expected


# --- Trino down ----------------------------------------------------------------------------------


def test_trino_down_is_unavailable_naming_the_engine_and_served_again_once_back(
    routed, tpch_queries
):
    proxy = TcpProxy(TRINO.host, TRINO.port).start()
    try:
        gateway = routed(mode="trino", engine_overrides={"port": proxy.port})
        sql = to_addresses(tpch_queries[3])
        principal = _principal(gateway)
        assert gateway.run(sql, principal).read_all().num_rows == 10
        proxy.stop()
        with pytest.raises(SourceUnavailable, match=r"engine 'trino'.*cannot be reached"):
            gateway.run(sql, principal).read_all()
        with (
            running_server(gateway.mesh.root) as (uri, _),
            connect(uri, PRINCIPAL) as conn,
            conn.cursor() as cursor,
        ):
            with pytest.raises(Exception, match=r"(?s)engine 'trino'.*Unavailable") as caught:
                cursor.execute(sql)
                cursor.fetch_arrow_table()
            assert "Traceback" not in str(caught.value)
            cursor.execute("SELECT count(*) AS n FROM reference.nation")  # still serving
            assert cursor.fetchall() == [(25,)]
        proxy.start()
        assert gateway.run(sql, principal).read_all().num_rows == 10
    finally:
        proxy.stop()


def test_auto_falls_back_to_the_local_engine_while_trino_is_down(routed, tpch_queries, reference):
    proxy = TcpProxy(TRINO.host, TRINO.port).start()
    try:
        gateway = routed(mode="auto", min_rows=50_000, engine_overrides={"port": proxy.port})
        assert gateway.engine.counts.ready.wait(60)
        sql = to_addresses(tpch_queries[3])
        principal = _principal(gateway)
        assert gateway.plan(sql, principal).engine == ENGINE
        proxy.stop()
        answer = gateway.run(sql, principal).read_all()  # tried Trino, ran locally
        expected = reference.execute(tpch_queries[3]).to_arrow_table()
        assert answer_difference(answer, expected, ordered=True) is None
        later = gateway.plan(sql, principal)
        assert later.engine == "local" and "engine 'trino' is down" in later.explain()
    finally:
        proxy.stop()


# --- cancellation --------------------------------------------------------------------------------


def _trino_query_states(marker: str) -> list[tuple[str, str | None]]:
    cursor = trino_admin().cursor()
    cursor.execute(
        "SELECT state, error_code FROM system.runtime.queries "
        f"WHERE query LIKE '%{marker}%' AND query NOT LIKE '%system.runtime.queries%'"
    )
    return cursor.fetchall()


def _wait_for_state(marker: str, wanted: set[str], timeout: float = 60) -> list:
    deadline = time.monotonic() + timeout
    states = []
    while time.monotonic() < deadline:
        states = _trino_query_states(marker)
        if states and all(state in wanted for state, _ in states):
            return states
        time.sleep(0.5)
    raise AssertionError(f"Trino's queries for {marker}: {states}, expected {wanted}")


def _endless(marker: str) -> str:
    """A cross-store query that streams 900 million rows: only a cancel ends it early."""
    return (
        f"SELECT l.l_orderkey AS {marker}, o.o_orderkey FROM fulfillment.lineitem l "
        "CROSS JOIN sales.orders o"
    )


def test_dropping_the_stream_cancels_the_trino_query(routed):
    """What the Flight server does with the stream of a client that went away: it drops it.
    (``RecordBatchReader.close()`` on a reader made ``from_batches`` does not close the Python
    generator behind it; releasing the reader does.)"""
    gateway = routed(mode="trino")
    marker = f"m_{uuid.uuid4().hex[:12]}"
    reader = gateway.run(_endless(marker), _principal(gateway))
    assert reader.read_next_batch().num_rows > 0
    assert _wait_for_state(marker, {"RUNNING", "FINISHING", "QUEUED", "PLANNING", "STARTING"})
    del reader
    states = _wait_for_state(marker, {"FAILED"})
    assert {code for _, code in states} == {"USER_CANCELED"}


def test_a_flight_client_that_cancels_cancels_the_trino_query(routed):
    gateway = routed(mode="trino")
    marker = f"m_{uuid.uuid4().hex[:12]}"
    with running_server(gateway.mesh.root) as (uri, _):
        client = flight.FlightClient(uri)
        options = flight.FlightCallOptions(
            headers=[client.authenticate_basic_token(PRINCIPAL, PRINCIPAL)]
        )
        info = client.get_flight_info(
            flight.FlightDescriptor.for_command(_statement(_endless(marker))), options
        )
        reader = client.do_get(info.endpoints[0].ticket, options)
        assert reader.read_chunk().data.num_rows > 0
        reader.cancel()
        client.close()
        states = _wait_for_state(marker, {"FAILED"}, timeout=90)
        assert {code for _, code in states} == {"USER_CANCELED"}


def _statement(sql: str) -> bytes:
    from gateway.flightsql import flight_sql_pb2 as sql_pb2
    from gateway.flightsql.server import _pack

    return _pack(sql_pb2.CommandStatementQuery(query=sql))

"""Limits from mesh.yaml through the real server and ADBC: concurrency per principal and in total
(queued, then refused), query timeouts per role, result rows and bytes per role, and the local
engine's memory limit with spilling. A principal at its limit does not hold up the others.
"""

from __future__ import annotations

import threading
import time
import uuid

import adbc_driver_manager
import pytest

from tests.support.server import connect, running_server
from tests.support.slow_mesh import SLOW_SECONDS
from tests.support.slow_mesh import slow_mesh as _mesh


def _run(uri: str, user: str, sql: str):
    with connect(uri, user) as conn, conn.cursor() as cur:
        cur.execute(sql)
        return cur.fetch_arrow_table()


def _error(uri: str, user: str, sql: str) -> str:
    with pytest.raises(adbc_driver_manager.Error) as caught:
        _run(uri, user, sql)
    return str(caught.value)


def _in_background(uri: str, user: str, sql: str) -> threading.Thread:
    thread = threading.Thread(target=_run, args=(uri, user, sql), daemon=True)
    thread.start()
    return thread


def _wait_running(gateway, count: int) -> None:
    deadline = time.monotonic() + 30
    while gateway.admission.running() < count:
        assert time.monotonic() < deadline, "the background query never started"
        time.sleep(0.05)


def test_a_principal_at_its_limit_waits_then_is_refused_while_others_are_served(tmp_path):
    root = _mesh(
        tmp_path / "m",
        """
        max_concurrent_queries_per_principal: 1
        queue_timeout_seconds: 0.5
        """,
    )
    with running_server(root) as (uri, gateway):
        busy = _in_background(uri, "alice", "SELECT * FROM crm.slow")
        _wait_running(gateway, 1)
        started = time.monotonic()
        assert _run(uri, "bob", "SELECT count(*) FROM lake.events").column(0)[0].as_py() == 100
        others = time.monotonic() - started
        text = _error(uri, "alice", "SELECT count(*) FROM lake.events")
        assert "(Unavailable;" in text, text
        assert "'alice' already runs 1 queries" in text
        assert "gateway.limits.max_concurrent_queries_per_principal" in text
        assert busy.is_alive(), "bob was served while alice's first query still ran"
        assert others < SLOW_SECONDS, "bob did not wait for alice's slot"
        busy.join(timeout=30)
        assert _run(uri, "alice", "SELECT count(*) FROM lake.events").num_rows == 1


def test_the_gateway_total_is_queued_up_to_a_bound_then_refused(tmp_path):
    root = _mesh(
        tmp_path / "m",
        """
        max_concurrent_queries: 1
        max_queued_queries: 0
        """,
    )
    with running_server(root) as (uri, gateway):
        busy = _in_background(uri, "alice", "SELECT * FROM crm.slow")
        _wait_running(gateway, 1)
        text = _error(uri, "bob", "SELECT count(*) FROM lake.events")
        assert "(Unavailable;" in text
        assert "gateway.limits.max_concurrent_queries" in text and "queued already" in text
        busy.join(timeout=30)
        assert _run(uri, "bob", "SELECT count(*) FROM lake.events").num_rows == 1


def test_a_queued_query_runs_once_a_slot_frees(tmp_path):
    root = _mesh(
        tmp_path / "m",
        f"""
        max_concurrent_queries: 1
        queue_timeout_seconds: {SLOW_SECONDS * 10}
        """,
    )
    with running_server(root) as (uri, gateway):
        busy = _in_background(uri, "alice", "SELECT * FROM crm.slow")
        _wait_running(gateway, 1)
        started = time.monotonic()
        assert _run(uri, "bob", "SELECT count(*) FROM lake.events").column(0)[0].as_py() == 100
        # Bob's 100-row count waited in the queue for most of alice's SLOW_SECONDS; alice's
        # client thread may still be reading her last batch, so it is joined, not polled.
        assert time.monotonic() - started > SLOW_SECONDS / 2, "bob's query did not wait"
        busy.join(timeout=30)
        assert not busy.is_alive()


def test_a_role_query_timeout_cancels_the_query(tmp_path):
    root = _mesh(
        tmp_path / "m",
        """
        roles: {slowpoke: {query_timeout_seconds: 1}}
        """,
    )
    sql = "SELECT s.k, e.label FROM crm.slow s JOIN lake.events e ON s.k = e.e"
    with running_server(root) as (uri, gateway):
        started = time.monotonic()
        text = _error(uri, "slowpoke", sql)
        elapsed = time.monotonic() - started
        assert "(DeadlineExceeded;" in text, text
        assert "gateway.limits.roles.slowpoke.query_timeout_seconds" in text
        assert elapsed < SLOW_SECONDS * 3
        assert _run(uri, "alice", sql).num_rows == 1, "other roles keep the gateway's timeout"
        assert gateway.admission.running() == 0


def test_result_rows_and_bytes_per_role(tmp_path):
    root = _mesh(
        tmp_path / "m",
        """
        roles: {limited: {max_result_rows: 10}}
        principals: {bob: {max_result_bytes: 1KB}}
        """,
    )
    with running_server(root) as (uri, gateway):
        text = _error(uri, "limited", "SELECT * FROM lake.events")
        assert "(Unavailable;" in text and "exceeds 10 rows" in text
        assert "gateway.limits.roles.limited.max_result_rows" in text
        assert _run(uri, "limited", "SELECT * FROM lake.events LIMIT 10").num_rows == 10
        text = _error(uri, "bob", "SELECT * FROM lake.events")
        assert "exceeds 1,000 bytes" in text and "gateway.limits.principals.bob" in text
        assert _run(uri, "alice", "SELECT * FROM lake.events").num_rows == 100
        assert gateway.admission.running() == 0


def test_the_local_engine_spills_past_its_memory_limit(tmp_path):
    spill = tmp_path / f"spill-{uuid.uuid4().hex[:6]}"
    root = _mesh(
        tmp_path / "m",
        f"""
        memory_limit: 64MiB
        temp_directory: {spill}
        """,
    )
    from gateway.local_engine import configure_local_engine, local_engine

    try:
        with running_server(root):
            con = local_engine()
            limit, directory = con.execute(
                "SELECT current_setting('memory_limit'), current_setting('temp_directory')"
            ).fetchone()
            assert limit == "64.0 MiB" and directory == str(spill)
            # ~200 MB of strings sorted in 64 MiB: only possible by spilling
            (count,) = con.execute(
                "SELECT count(*) FROM (SELECT i, repeat('x', 60) || i AS s FROM range(3000000) "
                "t(i) ORDER BY s DESC)"
            ).fetchone()
            con.close()
            assert count == 3_000_000
    finally:
        configure_local_engine(memory_limit=None, temp_directory=None)


def test_an_error_raised_while_streaming_keeps_its_status_and_no_traceback(tmp_path):
    """pyarrow's own client shows the whole status, detail included (ADBC shows less)."""
    import pyarrow.flight as flight
    from google.protobuf import any_pb2

    from gateway.flightsql import flight_sql_pb2

    root = _mesh(tmp_path / "m", "roles: {limited: {max_result_rows: 10}}")
    with running_server(root) as (uri, _):
        client = flight.connect(uri)
        options = flight.FlightCallOptions(
            headers=[client.authenticate_basic_token("limited", "limited")]
        )
        command = any_pb2.Any()
        command.Pack(flight_sql_pb2.CommandStatementQuery(query="SELECT * FROM lake.events"))
        info = client.get_flight_info(
            flight.FlightDescriptor.for_command(command.SerializeToString()), options
        )
        with pytest.raises(flight.FlightUnavailableError) as caught:
            client.do_get(info.endpoints[0].ticket, options).read_all()
        text = str(caught.value)
        assert "exceeds 10 rows" in text
        assert "Traceback" not in text and ".py" not in text, text

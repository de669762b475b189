"""The serving path's shortcuts: a shared local engine and a plan cache save time, never answers."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest
from sqlglot import exp

from connectors.embedded import EmbeddedDuckDB
from connectors.watchdog import Watchdog
from gateway import service
from gateway.errors import PermissionDenied, QueryTimeout, SourceUnavailable
from gateway.flightsql.server import _placeholder_count
from gateway.local_engine import local_engine
from gateway.principals import Principal
from gateway.service import Gateway
from gateway.streaming import READ_AHEAD_BATCHES, read_ahead, serve_stream, split_by_bytes
from tests.support.server import connect, running_server

ANALYST = Principal("analyst", roles=("analyst",))
EU_ANALYST = Principal("analyst", roles=("analyst",), attributes={"region": "EUROPE"})
ADMIN = Principal("admin", roles=("admin",))
CUSTOMER_NAMES = "SELECT c_custkey, c_name FROM sales.customer WHERE c_custkey <= ? ORDER BY 1"
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
def reference(demo_reference):
    return demo_reference


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


def test_cross_store_queries_never_wait_on_each_other_for_connections(demo_mesh, tmp_path):
    """Each query needs a connection of both one-connection pools; none may hold one while
    another query holds the other (before, such pairs waited until the pool timeout)."""
    mesh = tmp_path / "mesh"
    shutil.copytree(demo_mesh, mesh)
    config = (mesh / "mesh.yaml").read_text()
    for store in ("supply_db", "reference_db"):
        config = config.replace(
            f"  {store}:\n", f"  {store}:\n    pool_size: 1\n    connect_timeout_seconds: 2\n"
        )
    (mesh / "mesh.yaml").write_text(config)
    sql = (  # masked names: no dynamic filter, so both fragments start together
        "SELECT s.s_suppkey, s.s_name, n.n_name FROM supply.supplier s "
        "JOIN reference.nation n ON n.n_nationkey = s.s_nationkey "
        "WHERE s.s_suppkey BETWEEN 1 AND ?"
    )
    gateway = Gateway.open(mesh)
    failures: list[BaseException] = []

    def query(seed: int) -> None:
        try:
            for limit in range(seed, seed + 15):
                assert len(_rows(gateway, sql, ANALYST, [limit])) == limit
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            failures.append(exc)

    try:
        threads = [threading.Thread(target=query, args=(1 + i,)) for i in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        gateway.close()
    assert not failures, failures[0]


def _mesh_with_small_pools(demo_mesh: Path, tmp_path: Path, size: int) -> Path:
    mesh = tmp_path / "mesh"
    shutil.copytree(demo_mesh, mesh)
    config = (mesh / "mesh.yaml").read_text()
    for store in ("supply_db", "reference_db"):
        config = config.replace(
            f"  {store}:\n",
            f"  {store}:\n    pool_size: {size}\n    connect_timeout_seconds: 1\n",
        )
    (mesh / "mesh.yaml").write_text(config)
    return mesh


STREAMED_JOIN = (  # no filter, so no dynamic filter: both fragments stream into the join
    "SELECT s.s_suppkey, n.n_name FROM supply.supplier s "
    "JOIN reference.nation n ON n.n_nationkey = s.s_nationkey ORDER BY 1 LIMIT ?"
)


def test_open_streams_keep_their_connections_and_others_use_the_rest(demo_mesh, tmp_path):
    """A query reading several pooled fragments reserves their connections until it has read
    them; queries over the same stores run beside it while the pools have room, and one past
    that waits, then says which store to give a bigger pool."""
    gateway = Gateway.open(_mesh_with_small_pools(demo_mesh, tmp_path, size=2))
    try:
        assert not gateway.plan(STREAMED_JOIN, ANALYST, [3]).dynamic_filters
        first = gateway.run(STREAMED_JOIN, ANALYST, [3])
        second = gateway.run(STREAMED_JOIN, ANALYST, [4])
        with pytest.raises(SourceUnavailable, match="'reference_db'.*raise `pool_size`"):
            gateway.run(STREAMED_JOIN, ANALYST, [5])
        assert first.read_all().num_rows == 3
        assert gateway.run(STREAMED_JOIN, ANALYST, [6]).read_all().num_rows == 6
        assert second.read_all().num_rows == 4
        second.close()
    finally:
        gateway.close()


def test_a_query_whose_fragments_are_read_gives_their_connections_back_before_its_client_reads(
    demo_mesh, tmp_path
):
    """A filtered supplier is read whole first to narrow nation, nation then read whole too:
    the open stream holds no connection, so queries over the same stores need not wait."""
    gateway = Gateway.open(_mesh_with_small_pools(demo_mesh, tmp_path, size=1))
    sql = (
        "SELECT s.s_suppkey, n.n_name FROM supply.supplier s "
        "JOIN reference.nation n ON n.n_nationkey = s.s_nationkey WHERE s.s_suppkey = ?"
    )
    try:
        assert gateway.plan(sql, ADMIN, [1]).dynamic_filters
        open_streams = [gateway.run(sql, ADMIN, [key]) for key in (1, 2, 3)]
        assert [s.read_all().num_rows for s in open_streams] == [1, 1, 1]
    finally:
        gateway.close()


# --- the plan cache ---------------------------------------------------------------------------


def test_a_plan_is_reused_only_for_the_same_statement_values_and_principal(gateway):
    plan = gateway.plan(CUSTOMER_NAMES, ANALYST, [10])
    assert gateway.plan(CUSTOMER_NAMES, ANALYST, [10]) is plan
    assert gateway.plan(CUSTOMER_NAMES, ANALYST, [11]) is not plan
    assert gateway.plan(CUSTOMER_NAMES, ADMIN, [10]) is not plan
    assert gateway.plan(CUSTOMER_NAMES, EU_ANALYST, [10]) is not plan  # same name, a region

    masked = _rows(gateway, CUSTOMER_NAMES, ANALYST, [10])
    clear = _rows(gateway, CUSTOMER_NAMES, ADMIN, [10])
    regional = _rows(gateway, CUSTOMER_NAMES, EU_ANALYST, [10])
    assert len(masked) == len(clear) == 10
    assert all(row["c_name"].startswith("****") for row in masked)
    assert all(row["c_name"].startswith("Customer#") for row in clear)
    assert len(regional) < 10
    assert len(_rows(gateway, CUSTOMER_NAMES, ANALYST, [3])) == 3


def test_values_equal_in_python_but_of_other_types_plan_separately(gateway):
    sql = "SELECT ? AS v FROM reference.region LIMIT 1"
    integer = gateway.plan(sql, ANALYST, [1])
    real = gateway.plan(sql, ANALYST, [1.0])
    boolean = gateway.plan(sql, ANALYST, [True])
    assert len({integer.schema.field("v").type, real.schema.field("v").type}) == 2
    assert pa.types.is_boolean(boolean.schema.field("v").type)


def test_a_changed_policy_retires_cached_plans(demo_mesh, tmp_path, monkeypatch):
    monkeypatch.setattr(service, "POLICY_RELOAD_SECONDS", 0)
    mesh = tmp_path / "mesh"
    shutil.copytree(demo_mesh, mesh)
    guest = Principal("guest", roles=("guest",))
    sql = "SELECT count(*) AS n FROM supply.part WHERE p_partkey > ?"
    gateway = Gateway.open(mesh)
    try:
        with pytest.raises(PermissionDenied):
            gateway.plan(sql, guest, [0])
        assert _rows(gateway, "SELECT count(*) AS n FROM reference.region", guest, []) == [{"n": 5}]
        policy = mesh / "policies" / "global.yaml"
        text = policy.read_text()
        policy.write_text(text.replace('products: "reference.*"', 'products: "*"'))
        later = policy.stat().st_mtime_ns + 2_000_000_000
        os.utime(policy, ns=(later, later))
        assert gateway.plan(sql, guest, [0]).products == ("supply.part",)
        assert _rows(gateway, sql, guest, [0])[0]["n"] > 0

        policy.write_text(text)
        later += 2_000_000_000
        os.utime(policy, ns=(later, later))
        with pytest.raises(PermissionDenied):
            gateway.plan(sql, guest, [0])  # the plan made under the wider policy is not reused
    finally:
        gateway.close()


def test_an_adbc_query_is_planned_once_per_shape_of_values(demo_mesh):
    """Prepare, bind, GetFlightInfo and DoGet each need the plan; new values of the same shape
    are bound into the plan made for the first ones, and only another shape makes a new plan."""
    sql = "SELECT o_orderkey, o_totalprice FROM sales.orders WHERE o_orderkey = ?"
    parsed = _placeholder_count.cache_info()
    with running_server(demo_mesh) as (uri, gateway), connect(uri, "analyst") as conn:
        with conn.cursor() as cursor:
            cursor.execute(sql, parameters=(1,))
            assert cursor.fetch_arrow_table().column("o_orderkey").to_pylist() == [1]
        assert gateway.plans.misses == 2  # the statement unbound (prepare), then with 1
        for key in (2, 3, 4):
            with conn.cursor() as cursor:
                cursor.execute(sql, parameters=(key,))
                assert cursor.fetch_arrow_table().column("o_orderkey").to_pylist() == [key]
        assert gateway.plans.misses == 2
        assert gateway.plans.hits >= 12
        with conn.cursor() as cursor:
            cursor.execute(sql, parameters=(5_000_000_000,))  # a BIGINT literal: another shape
            assert cursor.fetch_arrow_table().num_rows == 0
        assert gateway.plans.misses == 3
    assert _placeholder_count.cache_info().misses - parsed.misses == 1  # prepared twice


# --- the planner's speed ----------------------------------------------------------------------


def test_sqlglot_runs_compiled():
    """Planning is the gateway's main CPU cost per query; sqlglotc makes it 0.7x."""
    from sqlglot import tokens

    assert tokens.SQLGLOTC_INSTALLED, "install meshgate's dependencies: sqlglotc is missing"


# --- embedded stores: deadlines and time zone -------------------------------------------------


def test_the_watchdog_runs_due_callbacks_in_order_and_never_cancelled_ones():
    watchdog = Watchdog()
    fired: list[str] = []
    done = threading.Event()
    watchdog.schedule(0.2, lambda: (fired.append("late"), done.set()))
    watchdog.schedule(0.05, lambda: fired.append("early"))
    cancel = watchdog.schedule(0.1, lambda: fired.append("cancelled"))
    cancel()
    assert done.wait(10)
    assert fired == ["early", "late"]
    assert watchdog.pending() == 0


def test_the_watchdog_forgets_cancelled_deadlines():
    watchdog = Watchdog()
    for _ in range(5000):
        watchdog.schedule(300, lambda: None)()
    assert watchdog.pending() == 0
    assert len(watchdog._heap) < 1024  # not 5000 entries kept for five minutes


def test_cached_parquet_footers_follow_a_file_rewritten_in_place(tmp_path):
    """The files store keeps Parquet footers between queries; a rewritten file is read anew."""
    import pyarrow.parquet as pq

    import connectors

    path = tmp_path / "t.parquet"
    pq.write_table(pa.table({"k": list(range(10))}), path)
    store = connectors.open_connector("lake", {"kind": "files", "root": "."}, base_dir=tmp_path)
    try:
        setting = "SELECT current_setting('parquet_metadata_cache') AS on"
        assert store.execute(setting).read_all().to_pylist() == [{"on": True}]
        sql = exp.select("sum(k) AS s").from_(store.relation("t.parquet", None)).sql("duckdb")
        assert store.execute(sql).read_all().to_pylist() == [{"s": 45}]
        pq.write_table(pa.table({"k": list(range(100, 120))}), path)
        later = path.stat().st_mtime_ns + 2_000_000_000
        os.utime(path, ns=(later, later))
        assert store.execute(sql).read_all().to_pylist() == [{"s": sum(range(100, 120))}]
    finally:
        store.close()


def test_an_embedded_query_past_its_deadline_is_interrupted():
    engine = EmbeddedDuckDB(store="slow", query_timeout_seconds=0.3)
    try:
        with pytest.raises(QueryTimeout, match="'slow' did not answer within 0.3 s"):
            engine.execute("SELECT sum(i) FROM range(10000000000000) AS t(i)").read_all()
        assert engine.execute("SELECT 42 AS x").read_all().to_pylist() == [{"x": 42}]
    finally:
        engine.close()


def test_every_embedded_cursor_reads_timestamptz_in_utc_whatever_the_machine_zone():
    code = (
        "from connectors.embedded import EmbeddedDuckDB\n"
        "engine = EmbeddedDuckDB(store='zone')\n"
        "for _ in range(2):\n"
        "    sql = \"SELECT current_setting('TimeZone') AS tz\"\n"
        "    print(engine.execute(sql).read_all().column('tz')[0])\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "TZ": "America/New_York"},
        cwd=Path(__file__).resolve().parent.parent,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["UTC", "UTC"]


# --- read-ahead -------------------------------------------------------------------------------


def _source(count: int, log: dict, *, fail_at: int | None = None):
    """``count`` one-row batches; ``log`` records how many were made and whether it closed."""
    log.update(made=0, closed=False)
    try:
        for i in range(count):
            if i == fail_at:
                raise ValueError(f"the store failed at batch {i}")
            log["made"] += 1
            yield pa.record_batch({"i": [i]})
    finally:
        log["closed"] = True


def _read_ahead_threads() -> int:
    return sum(1 for t in threading.enumerate() if t.name == "meshgate-read-ahead")


def _served(source) -> pa.RecordBatchReader:
    schema = pa.schema([("i", pa.int64())])
    reader = pa.RecordBatchReader.from_batches(schema, source)
    return serve_stream(reader, schema, max_batch_bytes=64 * 1024)


def _wait_for(condition, seconds: float = 10) -> bool:
    deadline = threading.Event()
    for _ in range(int(seconds * 100)):
        if condition():
            return True
        deadline.wait(0.01)
    return condition()


def test_served_streams_read_ahead_in_order_within_their_depth():
    log: dict = {}
    stream = _served(_source(50, log))
    assert [stream.read_next_batch().column("i")[0].as_py() for _ in range(5)] == [0, 1, 2, 3, 4]
    assert _wait_for(lambda: log["made"] > 5)  # the next batches are read before they are asked
    threading.Event().wait(0.2)
    assert log["made"] <= 5 + READ_AHEAD_BATCHES + 1  # queued, and one in the producer's hand
    assert [b.column("i")[0].as_py() for b in stream] == list(range(5, 50))
    assert log["closed"]


def test_batches_are_cut_below_the_cap_even_when_long_values_bunch_together():
    values = ["x" * 1000] * 1000 + ["y"] * 9000  # the first tenth of the rows holds the bytes
    batch = pa.record_batch({"s": values})
    slices = list(split_by_bytes(batch, 64 * 1024))
    assert pa.Table.from_batches(slices).column("s").to_pylist() == values
    assert max(s.nbytes for s in slices) <= 64 * 1024
    assert len(slices) < 50  # not a slice per row: the thin rows travel together


def test_a_one_batch_answer_starts_no_thread():
    before = _read_ahead_threads()
    stream = read_ahead(_source(1, {}), READ_AHEAD_BATCHES)
    next(stream)
    assert _read_ahead_threads() == before
    assert list(stream) == []


def test_read_ahead_raises_the_sources_error_and_closing_early_closes_the_source():
    log: dict = {}
    with pytest.raises(ValueError, match="failed at batch 7"):
        _served(_source(20, log, fail_at=7)).read_all()
    assert log["closed"]

    before = _read_ahead_threads()
    stream = _served(_source(1000, log))
    for _ in range(4):
        stream.read_next_batch()
    del stream  # the client hung up: Flight drops the reader
    assert log["closed"] and log["made"] < 1000
    assert _read_ahead_threads() == before

"""Faults injected against a running server, each with the others' queries unharmed.

Real PostgreSQL (through a TCP proxy, so the "restart" never touches the service) and MariaDB
serve a large streaming product each; clients read them through ADBC batch by batch while the
test terminates the PostgreSQL backend (``pg_terminate_backend``), kills the MariaDB query
(``KILL QUERY``), stops and starts the proxy, or kills a client process mid-stream. Each time the
reader gets UNAVAILABLE naming the store, another client is served meanwhile, the store serves
again without a gateway restart, and a vanished client's source queries stop at the store.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import textwrap
import time
import uuid

import adbc_driver_manager
import pytest

from tests.support.mesh import grant_everything
from tests.support.server import connect, running_server
from tests.support.stores import (
    MARIADB,
    POSTGRES,
    TcpProxy,
    mysql_admin,
    postgres_admin,
    postgres_store,
    require,
)

ROWS = 3_000_000
MARKER = f"mgfault{uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    require(POSTGRES)
    require(MARIADB)
    root = tmp_path_factory.mktemp("faults") / "mesh"
    root.mkdir()
    proxy = TcpProxy(POSTGRES.host, POSTGRES.port).start()
    (root / "mesh.yaml").write_text(
        textwrap.dedent(
            f"""
            name: t
            stores:
              crm_pg: {postgres_store(proxy.port, pool_size=1)}
              ops_db: {{kind: mysql, host: {MARIADB.host}, port: {MARIADB.port},
                        user: {MARIADB.user}, database: {MARIADB.database},
                        connect_timeout_seconds: 3, pool_size: 1}}
            gateway: {{audit_log: null}}
            """
        )
    )
    products = {
        ("crm", "stream"): (
            "crm_pg",
            f"SELECT i::bigint AS i, repeat('x', 200) AS s, '{MARKER}pg' AS m "
            f"FROM (SELECT generate_series(1, {ROWS}) AS i) AS g",
        ),
        ("crm", "small"): ("crm_pg", "SELECT generate_series(1, 10)::bigint AS i"),
        ("ops", "stream"): (
            "ops_db",
            f"SELECT seq AS i, repeat('x', 200) AS s, '{MARKER}my' AS m FROM seq_1_to_{ROWS}",
        ),
        ("ops", "small"): ("ops_db", "SELECT seq AS i FROM seq_1_to_10"),
    }
    for (domain, product), (store, sql) in products.items():
        (root / domain).mkdir(exist_ok=True)
        columns = "  - {name: i, type: bigint}\n"
        if product == "stream":
            columns += "  - {name: s, type: varchar}\n  - {name: m, type: varchar}\n"
        (root / domain / f"{product}.yaml").write_text(
            f"product: {product}\nversion: 1\nowner: o@example.com\ndescription: d\n"
            f'store: {store}\nsql: "{sql}"\ncolumns:\n{columns}'
        )
    grant_everything(root)
    try:
        with running_server(root) as (uri, gateway):
            yield uri, gateway, proxy
    finally:
        proxy.stop()


def _pg_running() -> int:
    with contextlib.closing(postgres_admin()) as admin:
        return admin.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE query LIKE %s AND pid <> pg_backend_pid()",
            (f"%{MARKER}pg%",),
        ).fetchone()[0]


def _my_running() -> int:
    with contextlib.closing(mysql_admin()) as admin, admin.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM information_schema.processlist WHERE command <> 'Sleep' "
            "AND info LIKE %s AND id <> CONNECTION_ID()",
            (f"%{MARKER}my%",),
        )
        return cursor.fetchone()[0]


def _eventually(check, what: str, seconds: float = 20.0) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, f"{what} did not happen within {seconds:g} s"
        time.sleep(0.2)


def _small(uri: str, address: str) -> int:
    with connect(uri, "tester") as conn, conn.cursor() as cur:
        cur.execute(f"SELECT count(*) FROM {address}")
        return cur.fetchone()[0]


@contextlib.contextmanager
def _streaming(uri: str, address: str):
    """A reader of ``address`` with its first batch read: the store query is running."""
    with connect(uri, "tester") as conn, conn.cursor() as cur:
        cur.execute(f"SELECT * FROM {address}")
        reader = cur.fetch_record_batch()
        assert reader.read_next_batch().num_rows > 0
        yield reader


def _read_rest(reader) -> str:
    # ADBC's record batch reader raises OSError where its cursor raises adbc_driver_manager.Error
    with pytest.raises((adbc_driver_manager.Error, OSError)) as caught:
        while True:
            reader.read_next_batch()
    return str(caught.value)


def test_a_postgres_backend_terminated_mid_stream(served):
    uri, gateway, _ = served
    with _streaming(uri, "crm.stream") as reader:
        _eventually(lambda: _pg_running() > 0, "the PostgreSQL query starting")
        assert _small(uri, "ops.small") == 10, "another store serves meanwhile"
        with contextlib.closing(postgres_admin()) as admin:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query LIKE %s "
                "AND pid <> pg_backend_pid()",
                (f"%{MARKER}pg%",),
            )
        text = _read_rest(reader)
    assert "(Unavailable;" in text and "crm_pg" in text, text
    assert _small(uri, "crm.small") == 10, "PostgreSQL serves again, no gateway restart"
    _eventually(lambda: gateway.admission.running() == 0, "the slots returning")


def test_a_mariadb_query_killed_mid_stream(served):
    uri, gateway, _ = served
    with _streaming(uri, "ops.stream") as reader:
        _eventually(lambda: _my_running() > 0, "the MariaDB query starting")
        assert _small(uri, "crm.small") == 10, "another store serves meanwhile"
        with contextlib.closing(mysql_admin()) as admin, admin.cursor() as cursor:
            cursor.execute(
                "SELECT id FROM information_schema.processlist WHERE info LIKE %s "
                "AND id <> CONNECTION_ID()",
                (f"%{MARKER}my%",),
            )
            for (thread,) in cursor.fetchall():
                cursor.execute(f"KILL QUERY {int(thread)}")
        text = _read_rest(reader)
    assert "(Unavailable;" in text and "ops_db" in text, text
    assert _small(uri, "ops.small") == 10, "MariaDB serves again (pool_size 1: it came back)"
    _eventually(lambda: gateway.admission.running() == 0, "the slots returning")


def test_a_store_restarted_mid_stream_is_served_again(served):
    uri, _, proxy = served
    with _streaming(uri, "crm.stream") as reader:
        proxy.stop()
        try:
            text = _read_rest(reader)
            assert "(Unavailable;" in text and "crm_pg" in text, text
            assert _small(uri, "ops.small") == 10
        finally:
            proxy.start()
    assert _small(uri, "crm.small") == 10, "served again once it is back"


CLIENT = """
import os, sys
import adbc_driver_flightsql.dbapi as flightsql
conn = flightsql.connect(sys.argv[1], db_kwargs={"username": "tester", "password": "tester"},
                         autocommit=True)
cur = conn.cursor()
cur.execute(f"SELECT * FROM {sys.argv[2]}")
reader = cur.fetch_record_batch()
reader.read_next_batch()
print("read", flush=True)
sys.stdin.readline()
os._exit(0)  # gone mid-stream: no close, no cancel, the socket just drops
"""


@pytest.mark.parametrize(
    ("address", "running", "small"),
    [("crm.stream", _pg_running, "crm.small"), ("ops.stream", _my_running, "ops.small")],
    ids=["postgres", "mariadb"],
)
def test_a_client_that_vanishes_mid_stream_stops_its_store_query(served, address, running, small):
    uri, gateway, _ = served
    client = subprocess.Popen(
        [sys.executable, "-c", CLIENT, uri, address],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert client.stdout.readline().strip() == "read"
        _eventually(lambda: running() > 0, "the store query starting")
        client.stdin.write("\n")
        client.stdin.flush()
        client.wait(timeout=30)
        _eventually(lambda: running() == 0, "the store query being cancelled", seconds=15)
        _eventually(lambda: gateway.admission.running() == 0, "the gateway slot returning")
        started = time.monotonic()
        assert _small(uri, small) == 10, "the pooled connection is back (pool_size 1)"
        assert time.monotonic() - started < 3, "without waiting for the pool's timeout"
    finally:
        if client.poll() is None:
            client.kill()
            client.wait()

"""A store that goes down fails only the queries that need it, and is used again when it is back.

PostgreSQL is reached through a TCP proxy that the test stops and starts, with a SQLite product
beside it, all through the real Flight SQL server and the ADBC client.
"""

from __future__ import annotations

import sqlite3
import textwrap

import adbc_driver_manager
import pytest

from tests.support.mesh import grant_everything
from tests.support.server import connect, running_server
from tests.support.stores import POSTGRES, TcpProxy, postgres_admin, postgres_store, require


@pytest.fixture
def mesh(tmp_path):
    require(POSTGRES)
    admin = postgres_admin()
    admin.execute("DROP TABLE IF EXISTS public.meshgate_down")
    admin.execute("CREATE TABLE public.meshgate_down AS SELECT generate_series(1, 10) AS k")
    proxy = TcpProxy(POSTGRES.host, POSTGRES.port).start()
    lite = sqlite3.connect(tmp_path / "ref.sqlite")
    lite.execute("CREATE TABLE codes (code VARCHAR)")
    lite.executemany("INSERT INTO codes VALUES (?)", [("a",), ("b",)])
    lite.commit()
    lite.close()
    (tmp_path / "mesh.yaml").write_text(
        textwrap.dedent(
            f"""
            name: t
            stores:
              sales_pg: {postgres_store(proxy.port)}
              ref: {{kind: sqlite, path: ref.sqlite}}
            """
        )
    )
    for domain, store, table, column in (
        ("sales", "sales_pg", "public.meshgate_down", "k: bigint"),
        ("reference", "ref", "codes", "code: varchar"),
    ):
        name, kind = column.split(": ")
        (tmp_path / domain).mkdir()
        (tmp_path / domain / "things.yaml").write_text(
            f"product: things\nversion: 1\nowner: o@example.com\ndescription: things\n"
            f"store: {store}\ntable: {table}\ncolumns:\n  - {{name: {name}, type: {kind}}}\n"
        )
    grant_everything(tmp_path)
    yield tmp_path, proxy
    proxy.stop()
    admin.execute("DROP TABLE IF EXISTS public.meshgate_down")
    admin.close()


def test_a_store_that_is_down_fails_only_its_queries_and_recovers(mesh):
    root, proxy = mesh
    with running_server(root) as (uri, _), connect(uri, "tester") as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM sales.things")
        assert cur.fetchone() == (10,)
        proxy.stop()
        with pytest.raises(adbc_driver_manager.Error) as caught:
            cur.execute("SELECT count(*) FROM sales.things")
            cur.fetchall()
        assert "(Unavailable;" in str(caught.value)  # gRPC UNAVAILABLE, as ADBC shows it
        assert "sales_pg" in str(caught.value)
        cur.execute("SELECT count(*) FROM reference.things")
        assert cur.fetchone() == (2,), "the other store keeps serving"
        proxy.start()
        cur.execute("SELECT count(*) FROM sales.things")
        assert cur.fetchone() == (10,), "the store is used again once it is back"

"""Lineage and metrics of a query joining PostgreSQL and MariaDB, and of PostgreSQL going down.

Real services: a PostgreSQL table (reached through a TCP proxy the test stops) and a MariaDB
table, both with names unique to the run and dropped afterwards, served through the real Flight
SQL server and read by ADBC.
"""

from __future__ import annotations

import textwrap
import uuid

import pytest

from tests.support.discovery import serving
from tests.support.observed import read_jsonl, samples, value
from tests.support.openlineage_schema import validate
from tests.support.principals_for_tests import write_reader_with_pii_masked
from tests.support.server import connect
from tests.support.stores import (
    MARIADB,
    POSTGRES,
    TcpProxy,
    mysql_admin,
    postgres_admin,
    postgres_store,
    require,
)

QUERY = """SELECT a.k, a.secret, p.name FROM sales.accounts a JOIN crm.people p ON p.k = a.k
           ORDER BY a.k"""


@pytest.fixture
def mesh(tmp_path):
    require(POSTGRES)
    require(MARIADB)
    table = f"meshgate_obs_{uuid.uuid4().hex[:10]}"
    pg, my = postgres_admin(), mysql_admin()
    pg.execute(f"CREATE TABLE public.{table} (k bigint, secret varchar)")
    pg.execute(f"INSERT INTO public.{table} VALUES (1, 'alpha'), (2, 'bravo'), (3, 'gamma')")
    with my.cursor() as cur:
        cur.execute(f"CREATE TABLE {table} (k INT, name VARCHAR(20))")
        cur.execute(f"INSERT INTO {table} VALUES (1, 'one'), (2, 'two')")
    proxy = TcpProxy(POSTGRES.host, POSTGRES.port).start()
    (tmp_path / "mesh.yaml").write_text(
        textwrap.dedent(
            f"""
            name: t
            stores:
              sales_pg: {postgres_store(proxy.port)}
              crm_db: {{kind: mysql, host: {MARIADB.host}, port: {MARIADB.port},
                        user: {MARIADB.user}, database: {MARIADB.database}}}
            gateway:
              observability:
                lineage: {{transport: file, path: lineage.jsonl, include_principal: true}}
            """
        )
    )
    for domain, name, store, physical, columns in (
        ("sales", "accounts", "sales_pg", f"public.{table}", "k: bigint, secret: varchar pii"),
        ("crm", "people", "crm_db", table, "k: integer, name: varchar"),
    ):
        lines = []
        for column in columns.split(", "):
            column_name, kind = column.split(": ")
            kind, _, classification = kind.partition(" ")
            lines.append(
                f"  - {{name: {column_name}, type: {kind}, "
                f"classification: {classification or 'public'}}}"
            )
        (tmp_path / domain).mkdir()
        (tmp_path / domain / f"{name}.yaml").write_text(
            f"product: {name}\nversion: 1\nowner: o@example.com\ndescription: {name}\n"
            f"store: {store}\ntable: {physical}\ncolumns:\n" + "\n".join(lines) + "\n"
        )
    write_reader_with_pii_masked(tmp_path)
    yield tmp_path, proxy, table
    proxy.stop()
    pg.execute(f"DROP TABLE IF EXISTS public.{table}")
    with my.cursor() as cur:
        cur.execute(f"DROP TABLE IF EXISTS {table}")
    pg.close()
    my.close()


def test_cross_store_lineage_names_the_physical_tables_and_a_store_down_is_counted(mesh):
    root, proxy, table = mesh
    with serving(root) as served:
        gateway = served.gateway
        with connect(served.flight_uri, "reader") as conn, conn.cursor() as cur:
            cur.execute(QUERY)
            answer = cur.fetch_arrow_table().to_pylist()
            assert [row["name"] for row in answer] == ["one", "two"]
            assert all(row["secret"] != "alpha" for row in answer)  # masked for the reader
            proxy.stop()  # PostgreSQL goes down
            with pytest.raises(Exception, match="sales_pg"):
                cur.execute(QUERY)
                cur.fetch_arrow_table()
        import httpx

        found = samples(httpx.get(f"{served.http_url}/metrics").text)
        gateway.observe.flush()
        audit = read_jsonl(root / "audit" / "events.jsonl")
        events = read_jsonl(root / "lineage.jsonl")

    ok_run, failed_run = audit[-2]["query_id"], audit[-1]["query_id"]
    assert audit[-1]["outcome"] == "error"
    for event in events:
        validate(event)
    complete = next(
        e for e in events if e["run"]["runId"] == ok_run and e["eventType"] == "COMPLETE"
    )
    inputs = {(d["namespace"], d["name"]) for d in complete["inputs"]}
    assert inputs == {
        ("meshgate://t", "sales.accounts"),
        ("meshgate://t", "crm.people"),
        (f"postgres://127.0.0.1:{proxy.port}", f"{POSTGRES.database}.public.{table}"),
        (f"mysql://{MARIADB.host}:{MARIADB.port}", f"{MARIADB.database}.{table}"),
    }
    assert complete["run"]["facets"]["meshgate"]["principal"] == "reader"  # configured
    fields = complete["outputs"][0]["facets"]["columnLineage"]["fields"]
    assert fields["secret"]["transformationType"] == "MASKED"
    assert fields["secret"]["inputFields"][0]["name"] == "sales.accounts"
    assert fields["name"]["transformationType"] == "IDENTITY"
    assert fields["name"]["inputFields"][0]["name"] == "crm.people"
    failed = [e["eventType"] for e in events if e["run"]["runId"] == failed_run]
    assert failed == ["START", "FAIL"]

    assert value(found, "meshgate_store_up", store="sales_pg", kind="postgres") == 0
    assert value(found, "meshgate_store_up", store="crm_db", kind="mysql") == 1
    unavailable = {"store": "sales_pg", "kind": "postgres", "code": "UNAVAILABLE"}
    assert value(found, "meshgate_store_errors_total", **unavailable) == 1
    error = {"outcome": "error", "code": "UNAVAILABLE", "role": "reader"}
    assert value(found, "meshgate_queries_total", **error) == 1
    assert value(found, "meshgate_store_connections_in_use", store="sales_pg", kind="postgres") == 0

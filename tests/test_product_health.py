"""SLOs, contracts, quality and life cycle measured while a real gateway serves PostgreSQL.

Each test owns a PostgreSQL schema of its own (dropped afterwards) behind a TcpProxy, serves it
through the real Flight SQL server and HTTP port, changes the store under the running gateway
(stale data, a store going down, a column dropped or retyped) and reads what the API, the Flight
SQL metadata, the audit trail and the log say.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import textwrap
import time
import uuid

import adbc_driver_manager
import httpx
import pyarrow as pa
import pyarrow.flight as flight
import pytest

from tests.support.discovery import serving
from tests.support.mesh import grant_everything
from tests.support.server import connect
from tests.support.stores import POSTGRES, TcpProxy, postgres_admin, postgres_store, require

TODAY = dt.datetime.now(dt.UTC).date()

ORDERS = """
product: orders
version: 2
owner: shop-data@example.com
description: Orders of the shop, one row per order.
store: shop_pg
table: {schema}.orders
columns:
  - {{name: o_id, type: bigint, description: Order id, classification: public}}
  - {{name: o_status, type: varchar, description: "F, O or P", classification: public}}
  - {{name: o_total, type: "decimal(10,2)", description: Total, classification: internal}}
  - {{name: o_updated, type: timestamptz, description: Last change, classification: internal}}
  - {{name: o_comment, type: varchar, description: Note, classification: pii}}
slo:
  freshness: {{column: o_updated, max_age: 1h}}
  availability: {{min_percent: 99}}
  latency: {{p95_ms: 60000}}
  volume: {{min_rows: 3}}
quality:
  - {{metric: nullValues, column: o_id}}
  - {{metric: duplicateValues, column: o_id}}
  - {{metric: invalidValues, column: o_status, arguments: {{validValues: [F, O, P]}}}}
  - {{metric: invalidValues, column: o_total, arguments: {{minimum: 0, maximum: 1000}}}}
  - {{metric: rowCount, mustBeGreaterThan: 0}}
lineage: []
"""

ORDERS_V1 = """
product: orders
version: 1
owner: shop-data@example.com
description: Orders, first version.
store: shop_pg
table: {schema}.orders
columns:
  - {{name: o_id, type: bigint}}
  - {{name: o_total, type: "decimal(10,2)"}}
deprecated: {{since: {since}, sunset: {sunset}, replacement: shop.orders_v2}}
"""

LEGACY = """
product: legacy
version: 1
owner: shop-data@example.com
description: The old order feed.
store: shop_pg
table: {schema}.orders
columns:
  - {{name: o_id, type: bigint}}
deprecated: {{since: 2020-01-01, sunset: 2020-06-30, replacement: shop.orders}}
"""


@pytest.fixture
def shop(tmp_path):
    """A mesh over a fresh PostgreSQL schema reached through a proxy that can go down."""
    require(POSTGRES)
    schema = f"meshgate_health_{uuid.uuid4().hex[:10]}"
    admin = postgres_admin()
    admin.execute(f"CREATE SCHEMA {schema}")
    admin.execute(
        f"CREATE TABLE {schema}.orders (o_id bigint, o_status text, o_total numeric(10,2), "
        "o_updated timestamptz, o_comment text)"
    )
    admin.execute(
        f"INSERT INTO {schema}.orders VALUES (1, 'F', 10.5, now(), 'a'), "
        "(2, 'O', 20, now(), 'b'), (3, 'P', 30, now(), 'c'), (4, 'F', 40, now(), 'd')"
    )
    proxy = TcpProxy(POSTGRES.host, POSTGRES.port).start()
    (tmp_path / "mesh.yaml").write_text(
        textwrap.dedent(
            f"""
            name: shop
            stores:
              shop_pg: {postgres_store(proxy.port)}
            """
        )
    )
    (tmp_path / "shop").mkdir()
    since, sunset = TODAY - dt.timedelta(days=10), TODAY + dt.timedelta(days=30)
    (tmp_path / "shop" / "orders.yaml").write_text(ORDERS.format(schema=schema))
    (tmp_path / "shop" / "orders_v1.yaml").write_text(
        ORDERS_V1.format(schema=schema, since=since, sunset=sunset)
    )
    (tmp_path / "shop" / "legacy.yaml").write_text(LEGACY.format(schema=schema))
    grant_everything(tmp_path)
    try:
        yield tmp_path, schema, admin, proxy
    finally:
        proxy.stop()
        admin.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        admin.close()


def _record(served, address: str = "shop.orders") -> dict:
    response = httpx.get(
        f"{served.http_url}/api/products/{address}", auth=("tester", "tester"), timeout=30
    )
    assert response.status_code == 200, response.text
    return response.json()


def _slos(served, address: str = "shop.orders") -> dict[str, str]:
    return {s["kind"]: s["status"] for s in _record(served, address)["slos"]}


def _breaches(caplog, kind: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith(kind)]


def _table_metadata(served, table: str) -> dict[str, str]:
    """The table-level schema metadata GetTables(include_schema) reports for ``shop.<table>``."""
    from google.protobuf import any_pb2

    from gateway.flightsql import flight_sql_pb2 as sql_pb2

    command = sql_pb2.CommandGetTables(
        db_schema_filter_pattern="shop", table_name_filter_pattern=table, include_schema=True
    )
    wrapped = any_pb2.Any()
    wrapped.Pack(command)
    client = flight.FlightClient(served.flight_uri)
    try:
        options = flight.FlightCallOptions(
            headers=[client.authenticate_basic_token("tester", "tester")]
        )
        info = client.get_flight_info(
            flight.FlightDescriptor.for_command(wrapped.SerializeToString()), options
        )
        result = client.do_get(info.endpoints[0].ticket, options).read_all()
    finally:
        client.close()
    schema = pa.ipc.read_schema(pa.py_buffer(result.column("table_schema")[0].as_py()))
    return {k.decode(): v.decode() for k, v in (schema.metadata or {}).items()}


def test_freshness_goes_broken_when_data_goes_stale_and_the_breach_is_logged_once(shop, caplog):
    root, schema, admin, _ = shop
    caplog.set_level(logging.INFO, logger="meshgate.monitor")
    with serving(root) as served:
        served.gateway.monitor.check_now()
        assert _slos(served)["freshness"] == "met"
        assert _table_metadata(served, "orders")["meshgate:status:freshness"] == "met"
        admin.execute(f"UPDATE {schema}.orders SET o_updated = now() - interval '2 hours'")
        served.gateway.monitor.check_now()
        served.gateway.monitor.check_now()  # still stale: no second "started"
        freshness = next(s for s in _record(served)["slos"] if s["kind"] == "freshness")
        assert freshness["status"] == "broken" and "2.0h old" in freshness["measured"]
        assert _table_metadata(served, "orders")["meshgate:status:freshness"] == "broken"
        started = _breaches(caplog, "breach started: shop.orders_v2 freshness")
        assert len(started) == 1
        admin.execute(f"UPDATE {schema}.orders SET o_updated = now() - interval '55 minutes'")
        served.gateway.monitor.check_now()
        assert _slos(served)["freshness"] == "at_risk"
        admin.execute(f"UPDATE {schema}.orders SET o_updated = now()")
        served.gateway.monitor.check_now()
        assert _slos(served)["freshness"] == "met"
        assert len(_breaches(caplog, "breach ended: shop.orders_v2 freshness")) == 1
        assert len(_breaches(caplog, "breach started: shop.orders_v2 freshness")) == 1


def test_freshness_is_measured_on_a_schedule_without_anyone_asking(shop):
    root, schema, admin, _ = shop
    with serving(root, monitor_interval=0.5) as served:
        deadline = time.monotonic() + 60
        while _slos(served)["freshness"] != "met" and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _slos(served)["freshness"] == "met"
        admin.execute(f"UPDATE {schema}.orders SET o_updated = now() - interval '3 hours'")
        while _slos(served)["freshness"] != "broken" and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _slos(served)["freshness"] == "broken"


def test_a_read_measures_a_product_nobody_checked_yet(shop):
    root, _, _, _ = shop
    with serving(root) as served, connect(served.flight_uri, "tester") as conn:
        monitor, product = served.gateway.monitor, served.gateway.mesh.products["shop.orders"]
        assert {s["status"] for s in monitor.measurements(product).slos} == {"unknown"}
        with conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM shop.orders")
            assert cur.fetchone() == (4,)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            freshness = monitor.measurements(product).slos[0]
            if freshness["status"] != "unknown":
                break
            time.sleep(0.1)
        assert freshness["kind"] == "freshness" and freshness["status"] == "met"


def test_availability_breaks_while_the_store_is_down_and_recovers(shop, caplog):
    root, _, _, proxy = shop
    caplog.set_level(logging.INFO, logger="meshgate.monitor")
    with serving(root) as served, connect(served.flight_uri, "tester") as conn:
        served.gateway.monitor.check_now()
        assert _slos(served)["availability"] == "met"
        proxy.stop()
        with conn.cursor() as cur, pytest.raises(adbc_driver_manager.Error) as caught:
            cur.execute("SELECT count(*) FROM shop.orders")
            cur.fetchall()
        assert "(Unavailable;" in str(caught.value)
        availability = next(s for s in _record(served)["slos"] if s["kind"] == "availability")
        assert availability["status"] == "broken"
        assert "down now" in availability["measured"]
        served.gateway.monitor.check_now(["shop.orders"])
        assert _slos(served)["availability"] == "broken"
        assert len(_breaches(caplog, "breach started: shop.orders_v2 availability")) == 1
        proxy.start()
        served.gateway.monitor.check_now(["shop.orders"])
        # up again, but the last hour's share of answered probes is below 99%
        assert _slos(served)["availability"] == "at_risk"
        assert len(_breaches(caplog, "breach ended: shop.orders_v2 availability")) == 1
        with conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM shop.orders")
            assert cur.fetchone() == (4,)


def test_latency_and_volume_are_measured_from_queries_and_the_store(shop):
    root, schema, admin, _ = shop
    with serving(root) as served, connect(served.flight_uri, "tester") as conn:
        served.gateway.monitor.check_now()
        slos = {s["kind"]: s for s in _record(served)["slos"]}
        assert slos["latency"]["status"] == "unknown"  # no query yet
        assert slos["volume"]["status"] == "met" and slos["volume"]["measured"] == "4 rows"
        with conn.cursor() as cur:
            for _ in range(5):
                cur.execute("SELECT o_id, o_total FROM shop.orders ORDER BY o_id")
                assert len(cur.fetchall()) == 4
        latency = next(s for s in _record(served)["slos"] if s["kind"] == "latency")
        assert latency["status"] == "met" and "over 5 queries" in latency["measured"]
        admin.execute(f"DELETE FROM {schema}.orders WHERE o_id > 2")
        served.gateway.monitor.check_now()
        assert _slos(served)["volume"] == "broken"


def test_quality_rules_run_at_the_store_and_report_each_rule(shop):
    root, schema, admin, _ = shop
    with serving(root) as served:
        served.gateway.monitor.check_now()
        quality = {q["name"]: q for q in _record(served)["quality"]}
        assert {q["status"] for q in quality.values()} == {"met"}, quality
        admin.execute(
            f"INSERT INTO {schema}.orders VALUES (4, 'X', 5000, now(), 'dup'), "
            "(NULL, 'F', 1, now(), 'no id')"
        )
        served.gateway.monitor.check_now()
        quality = {q["name"]: q for q in _record(served)["quality"]}
        assert quality["nullValues of o_id"]["status"] == "broken"
        assert quality["nullValues of o_id"]["measured"] == "1"
        assert quality["duplicateValues of o_id"]["status"] == "broken"
        invalid = [q for q in _record(served)["quality"] if q["metric"] == "invalidValues"]
        assert [q["status"] for q in invalid] == ["broken", "broken"]
        assert quality["rowCount"]["status"] == "met"


def test_a_dropped_column_under_a_running_gateway_is_reported_and_named(shop, caplog):
    root, schema, admin, _ = shop
    caplog.set_level(logging.INFO, logger="meshgate.monitor")
    with serving(root) as served, connect(served.flight_uri, "tester") as conn:
        served.gateway.monitor.check_now()
        assert _record(served)["contract"]["status"] == "ok"
        with conn.cursor() as cur:
            cur.execute("SELECT o_comment FROM shop.orders WHERE o_id = 1")
            assert cur.fetchall() == [("a",)]
        admin.execute(f"ALTER TABLE {schema}.orders DROP COLUMN o_comment")
        # found when the store answers something else, before any scheduled check
        with conn.cursor() as cur, pytest.raises(adbc_driver_manager.Error) as caught:
            cur.execute("SELECT o_comment FROM shop.orders WHERE o_id = 1")
            cur.fetchall()
        message = str(caught.value)
        assert "'o_comment' is not in the store" in message
        assert "shop-data@example.com" in message and "(Unavailable;" in message
        contract = _record(served)["contract"]
        assert contract["status"] == "drift"
        assert any("o_comment" in p for p in contract["problems"])
        assert not any("o_status" in p for p in contract["problems"])  # no store column list
        page = httpx.get(
            f"{served.http_url}/products/shop.orders", auth=("tester", "tester"), timeout=30
        )
        assert "drift" in page.text and "&#39;o_comment&#39; is not in the store" in page.text
        # the product is not served changed: other columns are refused too, naming the drift
        with conn.cursor() as cur, pytest.raises(adbc_driver_manager.Error) as caught:
            cur.execute("SELECT o_id FROM shop.orders")
            cur.fetchall()
        assert "o_comment" in str(caught.value)
        served.gateway.monitor.check_now()
        assert len(_breaches(caplog, "breach started: shop.orders_v2 contract")) == 1
        # v1 never promised o_comment: it is still served
        with conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM shop.orders_v1")
            assert cur.fetchone() == (4,)
        admin.execute(f"ALTER TABLE {schema}.orders ADD COLUMN o_comment text")
        served.gateway.monitor.check_now()
        assert _record(served)["contract"]["status"] == "ok"
        assert len(_breaches(caplog, "breach ended: shop.orders_v2 contract")) == 1
        with conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM shop.orders")
            assert cur.fetchone() == (4,)


def test_a_retyped_column_is_found_on_schedule_and_never_served_changed(shop):
    root, schema, admin, _ = shop
    with serving(root) as served, connect(served.flight_uri, "tester") as conn:
        served.gateway.monitor.check_now()
        admin.execute(f"ALTER TABLE {schema}.orders ALTER COLUMN o_total TYPE text")
        served.gateway.monitor.check_now()
        contract = _record(served)["contract"]
        assert contract["status"] == "drift"
        (problem,) = contract["problems"]
        assert "'o_total'" in problem and "decimal(10,2)" in problem
        assert _table_metadata(served, "orders")["meshgate:status:contract"] == "drift"
        with conn.cursor() as cur, pytest.raises(adbc_driver_manager.Error) as caught:
            cur.execute("SELECT o_id, o_total FROM shop.orders_v2")
            cur.fetchall()
        assert "'o_total'" in str(caught.value) and "not served" in str(caught.value)
        # a widening the contract still holds (numeric(12,2)) is no drift: served as promised
        admin.execute(
            f"ALTER TABLE {schema}.orders ALTER COLUMN o_total TYPE numeric(12,2) "
            "USING o_total::numeric"
        )
        served.gateway.monitor.check_now()
        assert _record(served)["contract"]["status"] == "ok"
        with conn.cursor() as cur:
            cur.execute("SELECT o_total FROM shop.orders WHERE o_id = 1")
            table = cur.fetch_arrow_table()
        assert table.schema.field("o_total").type == pa.decimal128(10, 2)


class _Headers(flight.ClientMiddlewareFactory):
    """Keeps the response headers of every call a pyarrow Flight client makes."""

    def __init__(self) -> None:
        self.received: list[dict] = []

    def start_call(self, info):
        factory = self

        class Middleware(flight.ClientMiddleware):
            def received_headers(self, headers):
                factory.received.append(headers)

        return Middleware()


def _flight_sql_query(uri: str, sql: str, headers: _Headers) -> pa.Table:
    from google.protobuf import any_pb2

    from gateway.flightsql import flight_sql_pb2 as sql_pb2

    wrapped = any_pb2.Any()
    wrapped.Pack(sql_pb2.CommandStatementQuery(query=sql))
    client = flight.FlightClient(uri, middleware=[headers])
    try:
        options = flight.FlightCallOptions(
            headers=[client.authenticate_basic_token("tester", "tester")]
        )
        info = client.get_flight_info(
            flight.FlightDescriptor.for_command(wrapped.SerializeToString()), options
        )
        return client.do_get(info.endpoints[0].ticket, options).read_all()
    finally:
        client.close()


def test_a_deprecated_version_warns_until_its_sunset_and_then_names_the_replacement(shop):
    root, _, _, _ = shop
    with serving(root) as served:
        headers = _Headers()
        table = _flight_sql_query(served.flight_uri, "SELECT o_id FROM shop.orders_v1", headers)
        assert table.num_rows == 4
        warnings = [w for h in headers.received for w in h.get("x-meshgate-warning", [])]
        assert warnings, headers.received
        assert "shop.orders_v1 is deprecated" in warnings[0]
        assert "read shop.orders_v2 instead" in warnings[0]
        current = _Headers()
        _flight_sql_query(served.flight_uri, "SELECT o_id FROM shop.orders", current)
        assert not [h for h in current.received if "x-meshgate-warning" in h]
        events = [
            json.loads(line) for line in (root / "audit" / "events.jsonl").read_text().splitlines()
        ]
        v1_event = next(e for e in events if "shop.orders_v1" in e["statement"])
        assert v1_event["warnings"] and "deprecated" in v1_event["warnings"][0]
        assert not next(e for e in events if e["statement"].endswith("shop.orders"))["warnings"]
        # the API lists who still reads it; the page shows the deprecation
        record = _record(served, "shop.orders_v1")
        assert record["deprecation"]["replacement"] == "shop.orders_v2"
        assert record["usage"]["readers_week"] == ["tester"]
        assert record["usage"]["queries_day"] == 1
        page = httpx.get(
            f"{served.http_url}/products/shop.orders_v1", auth=("tester", "tester"), timeout=30
        )
        assert "deprecated" in page.text and "Still read this week by: tester" in page.text
        # after the sunset: refused, naming the replacement, by every client path
        with connect(served.flight_uri, "tester") as conn, conn.cursor() as cur:
            with pytest.raises(adbc_driver_manager.Error) as caught:
                cur.execute("SELECT o_id FROM shop.legacy")
            assert "retired on 2020-06-30" in str(caught.value)
            assert "read shop.orders instead" in str(caught.value)
            assert "(NotFound;" in str(caught.value)
            cur.execute("SELECT count(*) FROM shop.orders")
            assert cur.fetchone() == (4,)

"""End to end: the ADBC Flight SQL driver against a real meshgate server on the demo mesh."""

from __future__ import annotations

import base64
import decimal

import adbc_driver_manager
import pyarrow as pa
import pyarrow.flight as flight
import pytest

from gateway.flightsql import flight_sql_pb2 as sql_pb2
from gateway.flightsql.server import _pack
from gateway.mesh import load_mesh
from tests.support.server import connect, running_server

JOIN_THROUGH_CUSTOMER = """
    SELECT n.n_name AS nation, count(*) AS orders, sum(o.o_totalprice) AS revenue
    FROM sales.orders o
    JOIN sales.customer c ON c.c_custkey = o.o_custkey
    JOIN reference.nation n ON n.n_nationkey = c.c_nationkey
    GROUP BY n.n_name
    ORDER BY n.n_name
"""


@pytest.fixture(scope="module")
def server(demo_mesh):
    with running_server(demo_mesh) as (uri, gateway):
        yield uri


@pytest.fixture(scope="module")
def reference(demo_reference):
    return demo_reference


@pytest.fixture
def admin(server):
    with connect(server, "admin") as conn:
        yield conn


def test_cross_store_join_matches_duckdb_over_the_same_data(admin, reference):
    with admin.cursor() as cur:
        cur.execute(JOIN_THROUGH_CUSTOMER)
        got = cur.fetch_arrow_table()
    expected = reference.execute(
        JOIN_THROUGH_CUSTOMER.replace("sales.", "").replace("reference.", "")
    ).to_arrow_table()
    assert got.num_rows == 25
    assert got.column("nation").to_pylist() == expected.column("nation").to_pylist()
    assert got.column("orders").to_pylist() == expected.column("orders").to_pylist()
    assert got.column("revenue").to_pylist() == expected.column("revenue").to_pylist()


def test_bound_parameters_and_re_execution(admin):
    with admin.cursor() as cur:
        sql = "SELECT n_name FROM reference.nation WHERE n_nationkey = ?"
        cur.execute(sql, parameters=(7,))
        assert cur.fetchall() == [("GERMANY",)]
        cur.execute(sql, parameters=(6,))
        assert cur.fetchall() == [("FRANCE",)]
        cur.execute(
            "SELECT count(*) FROM sales.orders WHERE o_orderdate >= ? AND o_orderstatus = ?",
            parameters=("1998-01-01", "O"),
        )
        (count,) = cur.fetchone()
        assert count > 0


def test_get_objects_lists_domains_products_and_columns(admin, demo_mesh):
    objects = admin.adbc_get_objects(depth="all").read_all().to_pylist()
    (catalog,) = objects
    assert catalog["catalog_name"] == "mesh"
    schemas = {s["db_schema_name"]: s for s in catalog["catalog_db_schemas"]}
    assert set(schemas) == {"sales", "fulfillment", "supply", "reference", "audit"}
    mesh = load_mesh(demo_mesh)
    for address, product in mesh.products.items():
        domain, _, name = address.partition(".")
        tables = {t["table_name"]: t for t in schemas[domain]["db_schema_tables"]}
        assert name in tables, address
        listed = [c["column_name"] for c in tables[name]["table_columns"]]
        assert listed == [c.name for c in product.columns], address


def test_table_schema_matches_the_descriptor(admin, demo_mesh):
    mesh = load_mesh(demo_mesh)
    product = mesh.products["sales.customer"]
    schema = admin.adbc_get_table_schema("customer", db_schema_filter="sales")
    assert schema.names == [c.name for c in product.columns]
    assert schema.types == product.arrow_schema().types
    described = {f.name: f.metadata[b"description"].decode() for f in schema}
    assert described == {c.name: c.description for c in product.columns}
    assert all(described.values()), "every demo column carries a description"


def test_versioned_addresses(admin):
    v1 = admin.adbc_get_table_schema("orders_v1", db_schema_filter="sales")
    latest = admin.adbc_get_table_schema("orders", db_schema_filter="sales")
    assert "o_comment" in v1.names and "o_comment" not in latest.names
    assert "o_orderyear" in latest.names
    with admin.cursor() as cur:
        cur.execute("SELECT count(*) FROM sales.orders_v1")
        (v1_rows,) = cur.fetchone()
        cur.execute("SELECT count(*) FROM sales.orders")
        assert cur.fetchone() == (v1_rows,)


def test_info_and_table_types(admin):
    info = admin.adbc_get_info()
    assert info["vendor_name"] == "meshgate"
    assert info["vendor_arrow_version"] == pa.__version__
    assert admin.adbc_get_table_types() == ["TABLE"]


def test_execute_schema_is_known_at_prepare_time(admin):
    with admin.cursor() as cur:
        schema = cur.adbc_execute_schema(
            "SELECT c_custkey, c_acctbal, c_name FROM sales.customer WHERE c_nationkey = ?"
        )
    assert schema.names == ["c_custkey", "c_acctbal", "c_name"]
    assert schema.types == [pa.int64(), pa.decimal128(15, 2), pa.string()]


def test_pandas_and_polars_reads(server):
    polars = pytest.importorskip("polars")
    with connect(server, "analyst") as conn:
        with conn.cursor() as cur:
            cur.execute("SELECT r_regionkey, r_name FROM reference.region ORDER BY r_regionkey")
            frame = cur.fetch_df()
        assert frame["r_name"].tolist() == ["AFRICA", "AMERICA", "ASIA", "EUROPE", "MIDDLE EAST"]
        pl_frame = polars.read_database(
            "SELECT p_partkey, p_retailprice FROM supply.part ORDER BY p_partkey LIMIT 5",
            connection=conn,
        )
    assert pl_frame.height == 5
    assert pl_frame["p_retailprice"].dtype == polars.Decimal(15, 2)


def test_large_results_arrive_in_batches_capped_by_bytes(admin):
    with admin.cursor() as cur:
        cur.execute("SELECT * FROM fulfillment.lineitem")
        reader = cur.fetch_record_batch()
        sizes = [batch.nbytes for batch in reader]
    assert len(sizes) > 1
    assert max(sizes) <= 4 * 1024 * 1024 * 1.05
    for field in reader.schema:
        assert not pa.types.is_string_view(field.type) and not pa.types.is_large_string(field.type)


def test_explain_shows_fragments(admin):
    with admin.cursor() as cur:
        cur.execute("EXPLAIN " + JOIN_THROUGH_CUSTOMER)
        plan = "\n".join(row[0] for row in cur.fetchall())
    assert "store 'sales_db'" in plan and "store 'reference_db'" in plan
    assert "runs locally" in plan


@pytest.mark.parametrize(
    ("sql", "status", "says"),
    [
        ("SELEC * FROM sales.orders", "INVALID_ARGUMENT", "line 1, column"),
        ("SELECT * FROM sales.order", "NOT_FOUND", "did you mean sales.orders"),
        ("SELECT * FROM orders", "NOT_FOUND", "<domain>.<product>"),
        ("SELECT * FROM main.orders", "NOT_FOUND", "no data product"),
        ("DROP TABLE sales.orders", "INVALID_ARGUMENT", "read-only"),
        ("DELETE FROM sales.orders", "INVALID_ARGUMENT", "read-only"),
        ("INSERT INTO sales.orders VALUES (1)", "INVALID_ARGUMENT", "read-only"),
        ("SELECT 1; DROP TABLE sales.orders", "INVALID_ARGUMENT", "exactly one"),
        ("SELECT * FROM read_parquet('/etc/passwd')", "INVALID_ARGUMENT", "not allowed"),
        ("SELECT nope FROM sales.orders", "INVALID_ARGUMENT", "nope"),
    ],
)
def test_bad_input_gets_a_clear_error_and_the_server_keeps_serving(admin, sql, status, says):
    with admin.cursor() as cur:
        with pytest.raises(adbc_driver_manager.Error) as caught:
            cur.execute(sql)
            cur.fetchall()
        assert status in str(caught.value)
        assert says in str(caught.value)
        assert "__source" not in str(caught.value) and "stores/" not in str(caught.value)
        cur.execute("SELECT count(*) FROM reference.region")
        assert cur.fetchone() == (5,)


def test_wrong_credentials_are_unauthenticated(server):
    with (
        pytest.raises(adbc_driver_manager.Error) as caught,
        connect(server, "admin", "not-the-password") as conn,
        conn.cursor() as cur,
    ):
        cur.execute("SELECT 1")
    assert "UNAUTHENTICATED" in str(caught.value)
    with connect(server, "admin") as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM reference.nation")
        assert cur.fetchone() == (25,)


def _flight_client(uri: str, user: str) -> tuple[flight.FlightClient, flight.FlightCallOptions]:
    client = flight.FlightClient(uri)
    token = client.authenticate_basic_token(user, user)
    return client, flight.FlightCallOptions(headers=[token])


def test_tickets_are_bound_to_the_principal_and_tamper_proof(server):
    query = sql_pb2.CommandStatementQuery(query="SELECT n_name FROM reference.nation")
    descriptor = flight.FlightDescriptor.for_command(_pack(query))
    analyst, analyst_options = _flight_client(server, "analyst")
    admin, admin_options = _flight_client(server, "admin")
    info = analyst.get_flight_info(descriptor, analyst_options)
    ticket = info.endpoints[0].ticket
    assert analyst.do_get(ticket, analyst_options).read_all().num_rows == 25
    with pytest.raises(pa.ArrowKeyError, match="unknown ticket"):
        admin.do_get(ticket, admin_options).read_all()
    inner = sql_pb2.TicketStatementQuery()
    from google.protobuf import any_pb2

    wrapped = any_pb2.Any()
    wrapped.ParseFromString(ticket.ticket)
    wrapped.Unpack(inner)
    body, _, mac = inner.statement_handle.partition(b".")
    forged_body = base64.urlsafe_b64encode(
        base64.urlsafe_b64decode(body + b"=" * (-len(body) % 4)).replace(b"analyst", b"admin!!")
    ).rstrip(b"=")
    forged = flight.Ticket(
        _pack(sql_pb2.TicketStatementQuery(statement_handle=forged_body + b"." + mac))
    )
    with pytest.raises(pa.ArrowKeyError, match="altered"):
        admin.do_get(forged, admin_options).read_all()


def test_decimal_values_are_exact(admin, reference):
    with admin.cursor() as cur:
        cur.execute("SELECT sum(l_extendedprice) FROM fulfillment.lineitem")
        (total,) = cur.fetchone()
    (expected,) = reference.execute("SELECT sum(l_extendedprice) FROM lineitem").fetchone()
    assert isinstance(total, decimal.Decimal)
    assert total == expected


def test_demo_policies_mask_filter_and_hide(server, reference):
    with connect(server, "analyst") as conn, conn.cursor() as cur:
        cur.execute("SELECT c_name, c_phone FROM sales.customer LIMIT 5")
        for name, phone in cur.fetchall():
            assert name.startswith("****") and phone.startswith("****")
    european = reference.execute(
        "SELECT count(*) FROM customer JOIN nation ON c_nationkey = n_nationkey "
        "JOIN region ON n_regionkey = r_regionkey WHERE r_name = 'EUROPE'"
    ).fetchone()
    with connect(server, "eu_analyst") as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM sales.customer")
        assert cur.fetchone() == european
    with connect(server, "guest") as conn:
        schemas = conn.adbc_get_objects(depth="db_schemas").read_all().to_pylist()
        listed = [s["db_schema_name"] for s in schemas[0]["catalog_db_schemas"]]
        assert sorted(listed) == ["fulfillment", "reference", "sales", "supply"]  # discoverable
        with conn.cursor() as cur, pytest.raises(adbc_driver_manager.Error) as caught:
            cur.execute("SELECT * FROM sales.customer")
        assert "PermissionDenied" in str(caught.value)  # gRPC PERMISSION_DENIED
        assert "ask its owner (sales-data@acme.example)" in str(caught.value)


def _audit_events(mesh) -> list[dict]:
    import json

    lines = (mesh / "audit" / "events.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def test_every_query_leaves_an_audit_event(server, demo_mesh):
    statement = "SELECT c_custkey, c_name FROM sales.customer WHERE c_custkey < 11"
    with connect(server, "analyst") as conn, conn.cursor() as cur:
        cur.execute(statement)
        assert len(cur.fetchall()) == 10
    (event,) = [e for e in _audit_events(demo_mesh) if e["statement"] == statement]
    assert event["principal"] == "analyst" and event["outcome"] == "ok"
    assert event["products"] == ["sales.customer"] and event["rows"] == 10
    assert "RIGHT" in event["masks"]["sales.customer.c_name"].upper()
    assert event["fragments"] and event["fragments"][0]["store"] == "sales_db"
    denied = "SELECT count(*) FROM supply.part"
    with (
        connect(server, "guest") as conn,
        conn.cursor() as cur,
        pytest.raises(adbc_driver_manager.Error),
    ):
        cur.execute(denied)
    (event,) = [e for e in _audit_events(demo_mesh) if e["statement"] == denied]
    assert event["principal"] == "guest" and event["outcome"] == "denied"
    # the governance group reads the trail as a product; analysts do not even see it
    with connect(server, "admin") as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT principal, outcome, rows FROM audit.events WHERE statement = ?",
            parameters=(statement,),
        )
        assert cur.fetchall() == [("analyst", "ok", 10)]
    with connect(server, "analyst") as conn:
        listed = conn.adbc_get_objects(depth="db_schemas").read_all().to_pylist()
        assert "audit" not in [s["db_schema_name"] for s in listed[0]["catalog_db_schemas"]]


def test_the_audit_log_counts_a_dynamic_filters_keys_rather_than_listing_them(server, demo_mesh):
    """The SQL sent to a store can carry thousands of keys read from another store; the audit
    event keeps the query and says how many keys it carried."""
    statement = (
        "SELECT count(*) AS n FROM sales.orders o JOIN fulfillment.lineitem l "
        "ON l.l_orderkey = o.o_orderkey WHERE o.o_custkey < 40"
    )
    with connect(server, "admin") as conn, conn.cursor() as cur:
        cur.execute(statement)
        assert cur.fetchall()[0][0] > 0
        cur.execute("SELECT count(DISTINCT o_orderkey) FROM sales.orders WHERE o_custkey < 40")
        (orders,) = cur.fetchone()
    (event,) = [e for e in _audit_events(demo_mesh) if e["statement"] == statement]
    narrowed = [f["sql"] for f in event["fragments"] if "narrowed" in f["sql"]]
    assert orders > 20 and narrowed, event["fragments"]
    assert f"IN (<{orders} keys>)" in narrowed[0]

"""BI access: the real Arrow Flight SQL JDBC driver against a real meshgate server.

One JVM per module runs ``tests/support/JdbcProbe.java`` with the driver jar; every call below
is a real ``java.sql`` call (DatabaseMetaData as DBeaver and Tableau make them when they open a
connection and browse it, Statement, PreparedStatement) answered by a server thread.
"""

from __future__ import annotations

import datetime
import decimal
import textwrap
import uuid
from pathlib import Path

import duckdb
import pyarrow.flight as flight
import pytest

import gateway
from gateway.flightsql import flight_sql_pb2 as sql_pb2
from gateway.flightsql.server import _pack
from gateway.mesh import load_mesh
from tests.support.jdbc import DRIVER_VERSION, Jdbc, JdbcError, by_name, compile_probe, driver_jar
from tests.support.jdbc import rows as values
from tests.support.mesh import grant_everything
from tests.support.server import running_server
from tests.support.stores import POSTGRES, TcpProxy, postgres_admin, postgres_store, require

BIG_ROWS = 1_000_000

# java.sql.Types
BIT, TINYINT, SMALLINT, INTEGER, BIGINT = -7, -6, 5, 4, -5
REAL, DOUBLE, DECIMAL, VARCHAR, VARBINARY = 7, 8, 3, 12, -3
BOOLEAN, DATE, TIME, TIMESTAMP, TIMESTAMP_WITH_TIMEZONE = 16, 91, 92, 93, 2014
FLOAT = 6

# (column, contract type, DuckDB literal of the first row, JDBC type, Java class, value read back)
CONTRACT_TYPES = [
    ("c_boolean", "boolean", "true", BOOLEAN, "java.lang.Boolean", "true"),
    ("c_tinyint", "tinyint", "-7", TINYINT, "java.lang.Byte", "-7"),
    ("c_smallint", "smallint", "-32768", SMALLINT, "java.lang.Short", "-32768"),
    ("c_integer", "integer", "2147483647", INTEGER, "java.lang.Integer", "2147483647"),
    ("c_bigint", "bigint", "-9007199254740993", BIGINT, "java.lang.Long", "-9007199254740993"),
    # the driver reports single precision as FLOAT and reads it as a Double (both JDBC's way)
    ("c_real", "real", "1.5", FLOAT, "java.lang.Double", "1.5"),
    ("c_double", "double", "-0.1", DOUBLE, "java.lang.Double", "-0.1"),
    ("c_money", "decimal(15,2)", "1234567890123.45", DECIMAL, "java.math.BigDecimal",
     "1234567890123.45"),
    ("c_ratio", "decimal(38,10)", "-0.0000000001", DECIMAL, "java.math.BigDecimal",
     "-0.0000000001"),
    ("c_varchar", "varchar", "'grüße, \"quoted\"'", VARCHAR, "java.lang.String",
     'grüße, "quoted"'),
    ("c_date", "date", "DATE '2024-02-29'", DATE, "java.sql.Date", "2024-02-29"),
    ("c_time", "time", "TIME '23:59:58.5'", TIME,
     "org.apache.arrow.driver.jdbc.ArrowFlightJdbcTime",
     "23:59:58.500"),
    ("c_timestamp", "timestamp", "TIMESTAMP '2024-02-29 13:45:30.123456'", TIMESTAMP,
     "java.sql.Timestamp", "2024-02-29 13:45:30.123456"),
    # an instant: getObject is not implemented for it in 18.3.0 (Avatica), getTimestamp is (UTC)
    ("c_timestamptz", "timestamptz", "TIMESTAMPTZ '2024-02-29 13:45:30.5+02:00'",
     TIMESTAMP_WITH_TIMEZONE, None, "2024-02-29 11:45:30.5"),
    ("c_blob", "blob", "'\\x00\\xFFab'::BLOB", VARBINARY, "[B", "00ff6162"),
]  # fmt: skip


# --- fixtures ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def jdbc(tmp_path_factory: pytest.TempPathFactory):
    jar = driver_jar()
    directory = tmp_path_factory.mktemp("jdbc")
    client = Jdbc(jar, compile_probe(jar, directory), log_path=directory / "jvm.log")
    yield client
    client.close()


def jdbc_url(uri: str) -> str:
    """The URL a BI tool is given for a plaintext meshgate at ``uri``."""
    host_port = uri.removeprefix("grpc://")
    return f"jdbc:arrow-flight-sql://{host_port}/?useEncryption=false"


@pytest.fixture(scope="module")
def demo_uri(demo_mesh):
    with running_server(demo_mesh) as (uri, _):
        yield uri


@pytest.fixture(scope="module")
def demo_url(demo_uri):
    return jdbc_url(demo_uri)


@pytest.fixture(scope="module")
def admin(jdbc, demo_url):
    with jdbc.connect(demo_url, user="admin", password="admin") as conn:
        yield conn


def build_lab_mesh(root: Path) -> Path:
    """A DuckDB store with ``lab.types`` (a column of every contract type: one row of edge
    values, one of NULLs) and ``lab.big`` (1M rows)."""
    root.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect(str(root / "lab.duckdb"))
    columns = ", ".join(f"{name} {kind.upper()}" for name, kind, *_ in CONTRACT_TYPES)
    con.execute(f"CREATE TABLE types (id INTEGER, {columns})")
    con.execute(f"INSERT INTO types VALUES (1, {', '.join(c[2] for c in CONTRACT_TYPES)})")
    con.execute(f"INSERT INTO types VALUES (2, {', '.join('NULL' for _ in CONTRACT_TYPES)})")
    con.execute(
        "CREATE TABLE big AS SELECT range AS id, "
        "CASE WHEN range % 1000 = 0 THEN NULL ELSE (range % 100000 / 100)::DECIMAL(12,2) END "
        "AS amount, 'row-' || range AS label FROM range(1000000)"
    )
    con.close()
    (root / "mesh.yaml").write_text(
        "name: lab\nstores:\n  lab_db: {kind: duckdb, path: lab.duckdb}\n"
    )
    (root / "lab").mkdir(exist_ok=True)
    type_columns = "\n".join(
        f'  - {{name: {name}, type: "{kind}", description: "A {kind} value"}}'
        for name, kind, *_ in CONTRACT_TYPES
    )
    (root / "lab" / "types.yaml").write_text(
        "product: types\nversion: 1\nowner: lab@example.com\ndescription: Every contract type\n"
        "store: lab_db\ntable: types\ncolumns:\n  - {name: id, type: integer, description: Row}\n"
        f"{type_columns}\n"
    )
    (root / "lab" / "big.yaml").write_text(
        textwrap.dedent(
            """
            product: big
            version: 1
            owner: lab@example.com
            description: A million rows
            store: lab_db
            table: big
            columns:
              - {name: id, type: bigint}
              - {name: amount, type: "decimal(12,2)"}
              - {name: label, type: varchar}
            """
        )
    )
    grant_everything(root)
    return root


@pytest.fixture(scope="module")
def lab_mesh(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_lab_mesh(tmp_path_factory.mktemp("lab") / "mesh")


@pytest.fixture(scope="module")
def big_expected(lab_mesh: Path) -> tuple:
    """DuckDB's own count and sums over ``big``, read before the gateway opens the file."""
    con = duckdb.connect(str(lab_mesh / "lab.duckdb"), read_only=True)
    try:
        return con.execute(
            "SELECT count(*), sum(id), sum(amount), sum(length(label)), "
            "count(*) - count(amount) FROM big"
        ).fetchone()
    finally:
        con.close()


@pytest.fixture(scope="module")
def lab(jdbc, lab_mesh, big_expected):
    with (
        running_server(lab_mesh) as (uri, _),
        jdbc.connect(jdbc_url(uri), user="tester", password="tester") as conn,
    ):
        yield conn


# --- connecting and what the driver reads first ------------------------------------------------


def test_connects_with_user_and_password_and_names_the_server(admin):
    assert admin.meta("getDatabaseProductName") == "meshgate"
    assert admin.meta("getDatabaseProductVersion") == gateway.__version__
    assert admin.meta("getDriverName") == "Arrow Flight SQL JDBC Driver Core"
    assert admin.meta("getDriverVersion") == DRIVER_VERSION
    assert admin.meta("getUserName") == "admin"
    assert admin.meta("getIdentifierQuoteString") == '"'
    keywords = admin.meta("getSQLKeywords").split(", ")
    assert {"QUALIFY", "EXPLAIN"} <= set(keywords)
    assert admin.meta("isReadOnly") is True
    assert admin.call("isReadOnly") is True
    assert admin.call("getAutoCommit") is True


def test_the_url_the_readme_gives_connects(jdbc, demo_url):
    """Credentials in the URL, as a BI tool's connection dialog often takes them."""
    with jdbc.connect(f"{demo_url}&user=analyst&password=analyst") as conn:
        assert conn.meta("getUserName") == "analyst"
        assert values(conn.query("SELECT count(*) FROM reference.region")) == [["5"]]


def test_every_argument_free_metadata_call_answers(admin):
    """DBeaver and Tableau read dozens of these when a connection opens; the 18.3.0 driver
    fails on any SqlInfo id the server leaves out or sends in another union member."""
    answered = admin.every_meta()
    assert answered["errors"] == {}, answered["errors"]
    got = answered["values"]
    assert len(got) >= 140  # every method of java.sql.DatabaseMetaData without arguments
    assert got["getDefaultTransactionIsolation"] == 0  # Connection.TRANSACTION_NONE
    assert got["supportsTransactions"] is False
    assert got["doesMaxRowSizeIncludeBlobs"] is False
    assert got["getMaxColumnNameLength"] == 0  # no limit
    assert got["supportsConvert"] is True
    assert got["supportsGroupBy"] is True and got["supportsGroupByUnrelated"] is True
    assert got["supportsUnion"] is True and got["supportsUnionAll"] is True
    assert got["supportsOuterJoins"] is True and got["supportsLimitedOuterJoins"] is True
    assert got["supportsCorrelatedSubqueries"] is True
    assert got["supportsSubqueriesInExists"] is True and got["supportsSubqueriesInIns"] is True
    assert got["supportsStoredProcedures"] is False and got["supportsBatchUpdates"] is False
    assert got["getSchemaTerm"] == "domain" and got["getCatalogTerm"] == "catalog"
    assert got["getSearchStringEscape"] == "\\"
    assert got["getSystemFunctions"] == "COALESCE, NULLIF, CAST"
    assert "DATE_TRUNC" in got["getTimeDateFunctions"]


def test_conversions_and_capabilities_taking_arguments(admin):
    assert admin.meta("supportsConvert", str(INTEGER), str(VARCHAR)) is True
    assert admin.meta("supportsConvert", str(VARCHAR), str(DATE)) is True
    assert admin.meta("supportsConvert", str(DATE), str(INTEGER)) is False
    assert admin.meta("supportsTransactionIsolationLevel", "0") is True
    assert admin.meta("supportsResultSetType", "1003") is True  # TYPE_FORWARD_ONLY
    assert admin.meta("supportsResultSetType", "1004") is False  # TYPE_SCROLL_INSENSITIVE


# --- browsing: catalogs, schemas, tables, columns, keys ------------------------------------------


def test_catalogs_and_schemas(admin):
    assert values(admin.meta("getCatalogs")) == [["mesh"]]
    schemas = admin.meta("getSchemas")
    assert [c["label"] for c in schemas["columns"]] == ["TABLE_SCHEM", "TABLE_CATALOG"]
    assert values(schemas) == [
        [domain, "mesh"] for domain in ("audit", "fulfillment", "reference", "sales", "supply")
    ]
    assert values(admin.meta("getSchemas", "mesh", "s%")) == [["sales", "mesh"], ["supply", "mesh"]]
    assert values(admin.meta("getSchemas", "other", None)) == []


def test_tables_with_patterns_and_table_types(admin, demo_mesh):
    everything = by_name(admin.meta("getTables", None, None, "%", None))
    expected = sorted(load_mesh(demo_mesh).products)
    assert [f"{t['TABLE_SCHEM']}.{t['TABLE_NAME']}" for t in everything] == expected
    assert {(t["TABLE_CAT"], t["TABLE_TYPE"]) for t in everything} == {("mesh", "TABLE")}
    assert values(admin.meta("getTableTypes")) == [["TABLE"]]
    versions = admin.meta("getTables", "mesh", "sal_s", "orders\\_v_", "TABLE")
    assert [t["TABLE_NAME"] for t in by_name(versions)] == ["orders_v1", "orders_v2"]
    assert values(admin.meta("getTables", None, "sales", "%", "VIEW")) == []
    assert values(admin.meta("getTables", None, "sales", "ordersx", None)) == []


def test_columns_carry_types_precision_nullability_and_descriptions(admin, demo_mesh):
    product = load_mesh(demo_mesh).products["sales.orders"]
    columns = by_name(admin.meta("getColumns", "mesh", "sales", "orders", "%"))
    assert [c["COLUMN_NAME"] for c in columns] == [c.name for c in product.columns]
    assert [c["REMARKS"] for c in columns] == [c.description for c in product.columns]
    assert [c["ORDINAL_POSITION"] for c in columns] == [str(i) for i in range(1, len(columns) + 1)]
    price = next(c for c in columns if c["COLUMN_NAME"] == "o_totalprice")
    assert (price["DATA_TYPE"], price["TYPE_NAME"]) == (str(DECIMAL), "DECIMAL")
    assert (price["COLUMN_SIZE"], price["DECIMAL_DIGITS"]) == ("15", "2")
    assert (price["NULLABLE"], price["IS_NULLABLE"]) == ("1", "YES")
    # the driver matches column patterns itself, reading ``\\`` as a literal: no escapes
    only = by_name(admin.meta("getColumns", "mesh", "sales", "orders", "o_orderke_"))
    assert [c["COLUMN_NAME"] for c in only] == ["o_orderkey"]


def test_columns_of_every_contract_type(lab):
    columns = {
        c["COLUMN_NAME"]: c for c in by_name(lab.meta("getColumns", None, "lab", "types", "c%"))
    }
    assert list(columns) == [c[0] for c in CONTRACT_TYPES]
    for name, kind, _, jdbc_type, *_ in CONTRACT_TYPES:
        column = columns[name]
        assert column["DATA_TYPE"] == str(jdbc_type), name
        assert column["REMARKS"] == f"A {kind} value", name
    assert (columns["c_ratio"]["COLUMN_SIZE"], columns["c_ratio"]["DECIMAL_DIGITS"]) == ("38", "10")
    assert columns["c_timestamptz"]["TYPE_NAME"] == "TIMESTAMP WITH TIME ZONE"
    assert columns["c_timestamp"]["DECIMAL_DIGITS"] == "6"  # microseconds


def test_keys_answer_without_rows(admin):
    """Descriptors declare no keys, so every key call answers with no rows. (The 18.3.0 driver
    gives an empty metadata result set no columns: it builds them from the first batch.)"""
    for method, args in (
        ("getPrimaryKeys", ("mesh", "sales", "orders")),
        ("getImportedKeys", ("mesh", "sales", "orders")),
        ("getExportedKeys", ("mesh", "sales", "customer")),
        ("getCrossReference", ("mesh", "sales", "customer", "mesh", "sales", "orders")),
        ("getIndexInfo", ("mesh", "sales", "orders", "false", "true")),
    ):
        assert admin.meta(method, *args)["rows"] == [], method


def test_type_info_answers(admin, demo_uri):
    """The 18.3.0 driver answers getTypeInfo itself (an empty list, Avatica's default); ODBC
    clients such as Power BI ask the server with GetXdbcTypeInfo, answered here too."""
    assert admin.meta("getTypeInfo")["rows"] == []
    client = flight.FlightClient(demo_uri)
    options = flight.FlightCallOptions(headers=[client.authenticate_basic_token("admin", "admin")])
    descriptor = flight.FlightDescriptor.for_command(_pack(sql_pb2.CommandGetXdbcTypeInfo()))
    info = client.get_flight_info(descriptor, options)
    types = client.do_get(info.endpoints[0].ticket, options).read_all().to_pylist()
    names = {t["type_name"]: t for t in types}
    assert {"BOOLEAN", "INTEGER", "BIGINT", "DECIMAL", "VARCHAR", "DATE", "TIMESTAMP"} <= set(names)
    assert names["DECIMAL"]["create_params"] == ["precision", "scale"]
    assert names["DATE"]["sql_data_type"] == 9 and names["DATE"]["datetime_subcode"] == 1
    only = flight.FlightDescriptor.for_command(_pack(sql_pb2.CommandGetXdbcTypeInfo(data_type=12)))
    info = client.get_flight_info(only, options)
    assert [
        t["type_name"]
        for t in client.do_get(info.endpoints[0].ticket, options).read_all().to_pylist()
    ] == ["VARCHAR"]
    client.close()


def test_a_principal_sees_what_the_mesh_lets_it_discover(jdbc, demo_url, demo_mesh):
    """The demo lists the products a principal may not read (``denied_products: discoverable``)
    but keeps its audit trail invisible to all but the governance group."""
    discoverable = [d for d in load_mesh(demo_mesh).domains() if d != "audit"]
    with jdbc.connect(demo_url, user="guest", password="guest") as guest:
        assert values(guest.meta("getSchemas")) == [[d, "mesh"] for d in discoverable]
        tables = by_name(guest.meta("getTables", None, None, "%", None))
        assert {t["TABLE_SCHEM"] for t in tables} == set(discoverable)
        assert guest.meta("getColumns", None, "audit", "events", "%")["rows"] == []
        assert guest.meta("getColumns", None, "sales", "orders", "%")["rows"] != []
        with pytest.raises(JdbcError, match="ask its owner"):
            guest.query("SELECT count(*) FROM sales.orders")


# --- queries ----------------------------------------------------------------------------------


def test_plain_query(admin, demo_reference):
    got = admin.query("SELECT n_nationkey, n_name FROM reference.nation ORDER BY n_nationkey")
    assert [(c["label"], c["type"]) for c in got["columns"]] == [
        ("n_nationkey", BIGINT),
        ("n_name", VARCHAR),
    ]
    expected = demo_reference.execute(
        "SELECT n_nationkey, n_name FROM nation ORDER BY 1"
    ).fetchall()
    assert values(got) == [[str(k), name] for k, name in expected]
    # BI tools quote every identifier and qualify tables with the catalog
    quoted = admin.query('SELECT count(*) AS "n" FROM "mesh"."reference"."nation" AS "t"')
    assert values(quoted) == [[str(len(expected))]]


def test_prepared_statements_bind_typed_parameters(admin, demo_reference):
    nation = admin.prepare("SELECT n_name FROM reference.nation WHERE n_nationkey = ?")
    assert [(p["type"], p["class"]) for p in nation.parameters] == [(BIGINT, "long")]
    assert nation.columns[0]["label"] == "n_name"
    assert values(nation.execute("long:7")) == [["GERMANY"]]
    assert values(nation.execute("int:6")) == [["FRANCE"]], "re-executed on the same handle"
    assert values(nation.execute("null:-5")) == []
    nation.close()

    sql = (
        "SELECT count(*) AS n, sum(o_totalprice) AS total FROM sales.orders "
        "WHERE o_orderdate >= ? AND o_orderstatus = ? AND o_totalprice > ?"
    )
    orders = admin.prepare(sql)
    assert [p["type"] for p in orders.parameters] == [DATE, VARCHAR, DECIMAL]
    got = values(orders.execute("date:1998-01-01", "string:O", "decimal:1000.00"))
    expected = demo_reference.execute(
        sql.replace("sales.", ""), [datetime.date(1998, 1, 1), "O", decimal.Decimal("1000.00")]
    ).fetchone()
    assert got == [[str(expected[0]), str(expected[1])]]
    orders.close()

    with admin.prepare("SELECT o_orderkey FROM sales.orders ORDER BY 1 LIMIT ?") as limited:
        assert [p["type"] for p in limited.parameters] == [BIGINT]
        assert len(values(limited.execute("long:3"))) == 3


def test_a_parameter_bound_with_the_wrong_java_type_is_refused_by_the_driver(admin):
    """The driver converts each value to the parameter's declared Arrow type, or refuses."""
    with admin.prepare("SELECT n_name FROM reference.nation WHERE n_nationkey = ?") as nation:
        with pytest.raises(JdbcError) as caught:
            nation.execute("string:7")
        refusal = "Binding value of type STRING is not yet supported for expected Arrow type"
        assert f"{refusal} Int(64, true)" in caught.value.message
        assert values(nation.execute("long:7")) == [["GERMANY"]]


def test_every_contract_type_reads_back_with_its_jdbc_type(lab):
    got = lab.query("SELECT * FROM lab.types ORDER BY id")
    columns = {c["label"]: c for c in got["columns"]}
    first, nulls = got["rows"]
    assert all(v is None for v in nulls[1:]), "the NULL row reads back as SQL NULLs"
    for index, (name, _, _, jdbc_type, java_class, text) in enumerate(CONTRACT_TYPES, start=1):
        assert columns[name]["type"] == jdbc_type, name
        if java_class is None:  # getObject fails; getTimestamp and getString read the instant
            assert first[index] == {"error": "not implemented", "timestamp": text, "text": text}
        else:
            assert first[index] == {"class": java_class, "text": text}, name


def test_decimal_columns_keep_precision_and_scale_in_result_metadata(lab):
    prepared = lab.prepare("SELECT c_money, c_ratio FROM lab.types")
    assert [(c["precision"], c["scale"]) for c in prepared.columns] == [(15, 2), (38, 10)]
    prepared.close()


def test_a_million_rows_count_and_checksum_match_duckdb(lab, big_expected):
    count, ids, amounts, lengths, nulls = big_expected
    got = lab.scan("SELECT id, amount, label FROM lab.big")
    assert got["rows"] == count == BIG_ROWS
    assert got["nulls"] == nulls == BIG_ROWS // 1000
    assert got["sums"] == [str(ids), str(amounts), str(lengths)]


def test_catalog_property_sets_the_session_catalog(jdbc, demo_url):
    """The driver sends its ``catalog`` property as SetSessionOptions when it connects."""
    conn = jdbc.connect(demo_url, user="admin", password="admin", catalog="mesh")
    assert values(conn.query("SELECT count(*) FROM mesh.reference.region")) == [["5"]]
    conn.call("setCatalog", "mesh")  # 18.3.0 keeps this on the client, sending nothing
    assert values(conn.query("SELECT count(*) FROM reference.region")) == [["5"]]
    with pytest.raises(JdbcError) as caught:
        jdbc.connect(demo_url, user="admin", password="admin", catalog="warehouse")
    assert "Cannot set session option for catalog = Optional[warehouse]" in caught.value.message


@pytest.mark.xfail(
    strict=True,
    reason="the 18.3.0 driver shuts its channel down before it sends CloseSession for a "
    "connection with a catalog (apache/arrow-java#66, fixed by apache/arrow-java#910)",
)
def test_closing_a_connection_with_a_catalog_is_clean(jdbc, demo_url):
    conn = jdbc.connect(demo_url, user="admin", password="admin", catalog="mesh")
    conn.close()


# --- errors -----------------------------------------------------------------------------------

LEAKS = ("Traceback", '.py"', "/gateway/", "pyarrow/_flight")


def failing_call(kind: str, jdbc: Jdbc, url: str, store_down_url: str | None):
    """The call that meets error ``kind``, and a word its message must carry."""
    if kind == "syntax error":
        return lambda: _query(jdbc, url, "admin", "SELEC 1"), "syntax error at line 1"
    if kind == "unknown product":
        return lambda: _query(jdbc, url, "admin", "SELECT * FROM sales.nope"), "sales.orders"
    if kind == "denied product":
        return lambda: _query(jdbc, url, "guest", "SELECT * FROM sales.orders"), "may not read"
    if kind == "wrong password":
        return lambda: jdbc.connect(
            url, user="admin", password="nope"
        ), "wrong username or password"
    assert store_down_url is not None
    return lambda: _query(jdbc, store_down_url, "tester", "SELECT * FROM sales.things"), "sales_pg"


def _query(jdbc: Jdbc, url: str, user: str, sql: str) -> None:
    with jdbc.connect(url, user=user, password=user) as conn:
        conn.query(sql)


@pytest.fixture(scope="module")
def store_down_url(tmp_path_factory: pytest.TempPathFactory):
    """A mesh whose only product lives in a PostgreSQL that has gone down."""
    require(POSTGRES)
    root = tmp_path_factory.mktemp("down")
    table = f"meshgate_jdbc_{uuid.uuid4().hex[:8]}"
    admin = postgres_admin()
    admin.execute(f"CREATE TABLE public.{table} AS SELECT generate_series(1, 3) AS k")
    proxy = TcpProxy(POSTGRES.host, POSTGRES.port).start()
    (root / "mesh.yaml").write_text(f"name: t\nstores:\n  sales_pg: {postgres_store(proxy.port)}\n")
    (root / "sales").mkdir()
    (root / "sales" / "things.yaml").write_text(
        "product: things\nversion: 1\nowner: o@example.com\ndescription: things\n"
        f"store: sales_pg\ntable: public.{table}\ncolumns:\n  - {{name: k, type: integer}}\n"
    )
    grant_everything(root)
    try:
        with running_server(root) as (uri, _):
            proxy.stop()
            yield jdbc_url(uri)
    finally:
        proxy.stop()
        admin.execute(f"DROP TABLE IF EXISTS public.{table}")
        admin.close()


ERROR_KINDS = ["syntax error", "unknown product", "denied product", "wrong password", "store down"]


@pytest.mark.parametrize("kind", ERROR_KINDS)
def test_errors_arrive_as_sqlexceptions_with_the_gateways_message(kind, jdbc, demo_url, request):
    down = request.getfixturevalue("store_down_url") if kind == "store down" else None
    call, expected = failing_call(kind, jdbc, demo_url, down)
    with pytest.raises(JdbcError) as caught:
        call()
    assert caught.value.java_class == "java.sql.SQLException"
    assert expected in caught.value.message
    _query(jdbc, demo_url, "admin", "SELECT 1")  # the server keeps serving


@pytest.mark.parametrize(
    "kind",
    [kind for kind in ERROR_KINDS],
)
def test_errors_show_no_python_traceback_or_server_path(kind, jdbc, demo_url, request):
    down = request.getfixturevalue("store_down_url") if kind == "store down" else None
    call, _ = failing_call(kind, jdbc, demo_url, down)
    with pytest.raises(JdbcError) as caught:
        call()
    shown = caught.value.everything_shown
    assert not [leak for leak in LEAKS if leak in shown], shown

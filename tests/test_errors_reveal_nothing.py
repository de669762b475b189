"""Every error a client can receive says what happened and what to do, and nothing else.

Through the real server and the real ADBC Flight SQL driver (and pyarrow's Flight client for the
calls ADBC cannot make), each error kind is provoked against real stores: PostgreSQL behind a
TCP proxy, Parquet files, SQLite. Its text must carry the right status and no Python traceback,
no server file path, no physical table name and no store host. EXPLAIN shows physical relations
only to the governance group and the domain's owners.
"""

from __future__ import annotations

import logging
import re
import sqlite3
import textwrap
import uuid

import adbc_driver_manager
import pyarrow as pa
import pyarrow.flight as flight
import pyarrow.parquet as pq
import pytest

from gateway.principals import Principal, hash_password
from tests.support.server import connect, running_server
from tests.support.stores import POSTGRES, TcpProxy, postgres_admin, postgres_store, require

FORBIDDEN = (
    re.compile(r"Traceback"),
    re.compile(r"\.py\b"),
    re.compile(r"\.pyx\b"),
    re.compile(r"(?:/[\w.*-]+){2,}"),  # an absolute path
    re.compile(r"File \""),
)


def assert_reveals_nothing(text: str, secrets: list[str]) -> None:
    """``text`` (what a client got) holds no traceback, path or secret of the mesh."""
    for pattern in FORBIDDEN:
        assert not pattern.search(text), f"{pattern.pattern!r} in: {text}"
    for secret in secrets:
        assert secret.lower() not in text.lower(), f"{secret!r} in: {text}"


def _principals(root, entries: dict[str, list[str]]) -> None:
    lines = ["principals:"]
    for name, roles in entries.items():
        lines += [
            f"  {name}:",
            f"    password_hash: '{hash_password(name, rounds=4)}'",
            f"    roles: [{', '.join(roles)}]",
        ]
    (root / "principals.yaml").write_text("\n".join(lines) + "\n")


@pytest.fixture(scope="module")
def secure_mesh(tmp_path_factory):
    """A mesh whose physical names differ from its addresses: PostgreSQL table
    ``hz_<id>.ledger_phys_<id>`` behind a proxy, Parquet under ``vault_<id>/``, SQLite file
    ``secret_<id>.sqlite``. Principals: ``gov`` (governance: see:physical), ``owner`` (owns the
    crm domain), ``reader`` (reads everything), ``outsider`` (reads only ref)."""
    require(POSTGRES)
    root = tmp_path_factory.mktemp("secure") / "mesh"
    root.mkdir()
    tag = uuid.uuid4().hex[:8]
    schema, table = f"hz_{tag}", f"ledger_phys_{tag}"
    admin = postgres_admin()
    admin.execute(f"CREATE SCHEMA {schema}")
    admin.execute(
        f"CREATE TABLE {schema}.{table} AS SELECT g AS k, 'n' || g AS name "
        "FROM generate_series(1, 2000) g"
    )
    proxy = TcpProxy(POSTGRES.host, POSTGRES.port).start()
    vault = root / f"vault_{tag}"
    vault.mkdir()
    pq.write_table(
        pa.table({"e": list(range(100)), "label": ["x"] * 100}), vault / "events.parquet"
    )
    lite = sqlite3.connect(root / f"secret_{tag}.sqlite")
    lite.execute(f"CREATE TABLE codes_phys_{tag} (code VARCHAR)")
    lite.executemany(f"INSERT INTO codes_phys_{tag} VALUES (?)", [("a",), ("b",)])
    lite.commit()
    lite.close()
    (root / "mesh.yaml").write_text(
        textwrap.dedent(
            f"""
            name: t
            stores:
              crm_pg: {postgres_store(proxy.port, query_timeout_seconds=2)}
              lake: {{kind: files, root: vault_{tag}}}
              ref: {{kind: sqlite, path: secret_{tag}.sqlite}}
            gateway: {{audit_log: null}}
            """
        )
    )
    products = (
        ("crm", "accounts", "crm_pg", f"{schema}.{table}", "k: bigint", "name: varchar"),
        ("lake", "events", "lake", "events.parquet", "e: bigint", "label: varchar"),
        ("ref", "codes", "ref", f"codes_phys_{tag}", "code: varchar", None),
    )
    for domain, product, store, physical, *columns in products:
        (root / domain).mkdir()
        listed = "".join(
            f"  - {{name: {c.split(': ')[0]}, type: {c.split(': ')[1]}}}\n" for c in columns if c
        )
        (root / domain / f"{product}.yaml").write_text(
            f"product: {product}\nversion: 1\nowner: o@example.com\ndescription: d\n"
            f"store: {store}\ntable: {physical}\ncolumns:\n{listed}"
        )
    (root / "crm" / "slow.yaml").write_text(
        "product: slow\nversion: 1\nowner: o@example.com\ndescription: d\nstore: crm_pg\n"
        f"sql: SELECT k FROM {schema}.{table}, pg_sleep(30) LIMIT 1\n"
        "columns:\n  - {name: k, type: bigint}\n"
    )
    (root / "policies").mkdir()
    (root / "policies" / "global.yaml").write_text(
        textwrap.dedent(
            """
            roles: {gov: ["see:physical"], crm_owner: ["owner:crm"], reader: [], outsider: []}
            grants:
              - {role: [gov, crm_owner, reader], products: "*"}
              - {role: outsider, products: "ref.*"}
            """
        )
    )
    _principals(
        root,
        {"gov": ["gov"], "owner": ["crm_owner"], "reader": ["reader"], "outsider": ["outsider"]},
    )
    secrets = [schema, table, f"vault_{tag}", f"secret_{tag}", f"codes_phys_{tag}", str(root)]
    secrets += [f"127.0.0.1:{proxy.port}", str(proxy.port), "events.parquet", "pg_sleep"]
    try:
        with running_server(root) as (uri, gateway):
            yield uri, gateway, secrets, proxy
    finally:
        proxy.stop()
        admin.execute(f"DROP SCHEMA {schema} CASCADE")
        admin.close()


def _adbc_error(uri: str, user: str, sql: str, *, password: str | None = None) -> str:
    with (
        pytest.raises(adbc_driver_manager.Error) as caught,
        connect(uri, user, password) as conn,
        conn.cursor() as cur,
    ):
        cur.execute(sql)
        cur.fetch_arrow_table()
    return str(caught.value)


ADBC_CASES = [
    ("syntax error", "reader", "SELEC k FROM crm.accounts", "(InvalidArgument;"),
    ("DML", "reader", "DELETE FROM crm.accounts", "(InvalidArgument;"),
    ("unknown product", "reader", "SELECT * FROM crm.acounts", "(NotFound;"),
    ("unknown column", "reader", "SELECT nope FROM crm.accounts", "(InvalidArgument;"),
    ("denied product", "outsider", "SELECT * FROM crm.accounts", "(NotFound;"),  # invisible
    ("store rejects at run time", "reader", "SELECT k / (k - k) FROM crm.accounts", "(Invalid"),
    (
        "file store fails at run time",
        "reader",
        "SELECT CAST(label AS INTEGER) FROM lake.events",
        "(InvalidArgument;",
    ),
    (
        "local engine fails at run time",
        "reader",
        "SELECT CAST(a.name AS INTEGER) FROM crm.accounts a JOIN lake.events e ON a.k = e.e",
        "(InvalidArgument;",
    ),
    ("store timeout", "reader", "SELECT * FROM crm.slow", "(DeadlineExceeded;"),
]


@pytest.mark.parametrize(
    ("user", "sql", "status"),
    [case[1:] for case in ADBC_CASES],
    ids=[case[0] for case in ADBC_CASES],
)
def test_adbc_errors_reveal_nothing(secure_mesh, user, sql, status):
    uri, _, secrets, _ = secure_mesh
    text = _adbc_error(uri, user, sql)
    assert status in text, text
    assert_reveals_nothing(text, secrets)


def test_division_by_zero_at_postgres_says_so_without_the_sql(secure_mesh):
    uri, _, secrets, _ = secure_mesh
    text = _adbc_error(uri, "reader", "SELECT k / (k - k) FROM crm.accounts")
    assert "crm_pg" in text and "division by zero" in text, text
    assert_reveals_nothing(text, secrets)


@pytest.mark.parametrize(
    ("sql", "value", "says"),
    [
        ("SELECT CAST(label AS INTEGER) FROM lake.events", "'x'", "Could not convert"),
        ("SELECT CAST(name AS INTEGER) FROM crm.accounts", '"n', "invalid input syntax"),
    ],
    ids=["duckdb", "postgres"],
)
def test_a_failed_cast_does_not_quote_the_value(secure_mesh, sql, value, says):
    """A store may evaluate a cast on rows the principal's row filter would drop."""
    uri, _, secrets, _ = secure_mesh
    text = _adbc_error(uri, "reader", sql)
    assert says in text and value not in text, text
    assert_reveals_nothing(text, secrets)


def test_wrong_password_and_forged_token_are_unauthenticated(secure_mesh):
    uri, _, secrets, _ = secure_mesh
    text = _adbc_error(uri, "reader", "SELECT 1", password="wrong")
    assert "(Unauthenticated;" in text and "wrong username or password" in text
    assert_reveals_nothing(text, secrets)
    client = flight.connect(uri)
    options = flight.FlightCallOptions(headers=[(b"authorization", b"Bearer forged.token")])
    with pytest.raises(flight.FlightUnauthenticatedError) as caught:
        list(client.do_action(flight.Action("CloseSession", b""), options))
    assert_reveals_nothing(str(caught.value), secrets)


def _bearer(uri: str, user: str) -> flight.FlightCallOptions:
    client = flight.connect(uri)
    token = client.authenticate_basic_token(user, user)
    return client, flight.FlightCallOptions(headers=[token])


def test_flight_calls_adbc_cannot_make_reveal_nothing(secure_mesh):
    """Unknown actions (UNIMPLEMENTED), altered tickets (NOT_FOUND), garbage commands."""
    uri, _, secrets, _ = secure_mesh
    client, options = _bearer(uri, "reader")
    with pytest.raises(NotImplementedError) as unimplemented:
        list(client.do_action(flight.Action("DropEverything", b""), options))
    from google.protobuf import any_pb2

    from gateway.flightsql import flight_sql_pb2

    altered = any_pb2.Any()
    altered.Pack(flight_sql_pb2.TicketStatementQuery(statement_handle=b"eyJwIjoiZ292In0.forged"))
    with pytest.raises(pa.ArrowKeyError) as not_found:
        client.do_get(flight.Ticket(altered.SerializeToString()), options).read_all()
    with pytest.raises(pa.ArrowInvalid) as invalid:
        client.get_flight_info(flight.FlightDescriptor.for_command(b"\xff\xfe"), options)
    for caught in (unimplemented, not_found, invalid):
        text = str(caught.value)
        details = set(re.findall(r"Python exception: ([^.]*)", text))
        assert details <= {"InvalidArgument", "NotFound", "Unimplemented"}, text
        assert_reveals_nothing(text, secrets)


def test_a_store_that_is_down_is_named_but_not_located(secure_mesh):
    uri, _, secrets, proxy = secure_mesh
    proxy.stop()
    try:
        text = _adbc_error(uri, "reader", "SELECT count(*) FROM crm.accounts")
    finally:
        proxy.start()
    assert "(Unavailable;" in text and "crm_pg" in text, text
    assert_reveals_nothing(text, secrets)
    with connect(uri, "reader") as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM crm.accounts")
        assert cur.fetchone() == (2000,)


class _BrokenPolicy:
    """A policy whose decisions raise: a bug inside the gateway, with internals in its text."""

    def __init__(self, inner):
        self._inner = inner

    def __getattr__(self, name):
        return getattr(self._inner, name)

    def decide(self, principal, product, **kwargs):
        raise RuntimeError(f"bug reading {product.path} for {principal.name}")


def test_an_unexpected_error_is_internal_with_a_reference_the_log_explains(
    secure_mesh, tmp_path, caplog
):
    _, gateway, secrets, _ = secure_mesh
    from policies import PolicyEngine

    broken = _BrokenPolicy(PolicyEngine.load(gateway.mesh))
    with (
        running_server(gateway.mesh.root, policy=broken) as (uri, _),
        caplog.at_level(logging.ERROR),
    ):
        text = _adbc_error(uri, "reader", "SELECT * FROM crm.accounts")
    assert "(Internal;" in text, text
    assert "bug reading" not in text
    assert_reveals_nothing(text, secrets)
    reference = re.search(r"reference ([0-9a-f]{12})", text).group(1)
    logged = [r for r in caplog.records if reference in r.getMessage()]
    assert logged and logged[0].exc_info is not None, "the log carries the traceback"
    assert "bug reading" in str(logged[0].exc_info[1])


def _explain(uri: str, user: str, sql: str) -> str:
    with connect(uri, user) as conn, conn.cursor() as cur:
        cur.execute(f"EXPLAIN {sql}")
        return "\n".join(row[0] for row in cur.fetchall())


JOIN = "SELECT a.name, e.label FROM crm.accounts a JOIN lake.events e ON a.k = e.e"


def test_explain_shows_consumers_products_and_stores_only(secure_mesh):
    uri, _, secrets, _ = secure_mesh
    text = _explain(uri, "reader", JOIN)
    assert "crm_pg" in text and "lake" in text
    assert "<product crm.accounts_v1>" in text and "<product lake.events_v1>" in text
    assert_reveals_nothing(text, secrets)


def test_explain_shows_the_governance_group_everything(secure_mesh):
    uri, _, secrets, _ = secure_mesh
    text = _explain(uri, "gov", JOIN)
    schema, table, vault = secrets[0], secrets[1], secrets[2]
    assert f"{schema}" in text and table in text
    assert vault in text and "READ_PARQUET" in text.upper()


def test_explain_shows_a_domain_owner_only_its_own_physical_names(secure_mesh):
    uri, _, secrets, _ = secure_mesh
    text = _explain(uri, "owner", JOIN)
    schema, table, vault = secrets[0], secrets[1], secrets[2]
    assert table in text and schema in text, "the crm owner sees the crm table"
    assert vault not in text and "<product lake.events_v1>" in text, "but not the lake's files"


def test_holds_follows_included_roles():
    from gateway.redact import holds

    includes = {"admin": ["gov"], "gov": ["see:physical"]}
    assert holds(Principal("a", roles=("admin",)), "see:physical", includes)
    assert not holds(Principal("b", roles=("analyst",)), "see:physical", includes)


def test_explain_hides_the_query_behind_a_sql_product(secure_mesh):
    uri, _, secrets, _ = secure_mesh
    text = _explain(uri, "reader", "SELECT k FROM crm.slow")
    assert "<product crm.slow_v1>" in text and "crm_pg" in text, text
    assert_reveals_nothing(text, secrets)
    assert "pg_sleep" in _explain(uri, "owner", "SELECT k FROM crm.slow").lower(), (
        "its owner sees it"
    )


# --- the same through the Arrow Flight SQL JDBC driver (what BI tools show) ------------------


@pytest.fixture(scope="module")
def jdbc(tmp_path_factory):
    from tests.support.jdbc import Jdbc, compile_probe, driver_jar

    jar = driver_jar()
    directory = tmp_path_factory.mktemp("jdbc")
    client = Jdbc(jar, compile_probe(jar, directory), log_path=directory / "jvm.log")
    yield client
    client.close()


def _jdbc_error(jdbc, uri: str, user: str, sql: str, *, password: str | None = None) -> str:
    from tests.support.jdbc import JdbcError

    url = f"jdbc:arrow-flight-sql://{uri.removeprefix('grpc://')}/?useEncryption=false"
    with pytest.raises(JdbcError) as caught:  # noqa: PT012 - connecting may be what fails
        conn = jdbc.connect(url, user=user, password=password if password is not None else user)
        try:
            conn.query(sql)
        finally:
            conn.close()
    return caught.value.everything_shown


@pytest.mark.parametrize(
    ("user", "sql"),
    [case[1:3] for case in ADBC_CASES],
    ids=[case[0] for case in ADBC_CASES],
)
def test_jdbc_errors_reveal_nothing(secure_mesh, jdbc, user, sql):
    uri, _, secrets, _ = secure_mesh
    text = _jdbc_error(jdbc, uri, user, sql)
    assert text.strip(), "the driver shows a message"
    assert_reveals_nothing(text, secrets)


def test_jdbc_wrong_password_and_store_down_reveal_nothing(secure_mesh, jdbc):
    uri, _, secrets, proxy = secure_mesh
    text = _jdbc_error(jdbc, uri, "reader", "SELECT 1", password="wrong")
    assert "wrong username or password" in text, text
    assert_reveals_nothing(text, secrets)
    proxy.stop()
    try:
        text = _jdbc_error(jdbc, uri, "reader", "SELECT count(*) FROM crm.accounts")
    finally:
        proxy.start()
    assert "crm_pg" in text, text
    assert_reveals_nothing(text, secrets)


def test_scrub_keeps_product_names_that_are_also_table_names(demo_mesh):
    """The demo's reference.region is the SQLite table `region`: a message naming the product
    stays readable, while the store's file path goes."""
    from gateway.service import Gateway

    gateway = Gateway.open(demo_mesh)
    try:
        message = "'guest' may not read reference.region; ask its owner"
        assert gateway.redactor.scrub(message) == message
        store_file = str(gateway.connectors["reference_db"].path)
        assert store_file not in gateway.redactor.scrub(f"cannot open {store_file}: gone")
    finally:
        gateway.close()

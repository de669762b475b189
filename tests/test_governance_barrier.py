"""Predicates that cannot fail cross a row filter's barrier and reach the store; others never do.

A row-filtered relation keeps the query's own predicates above its filter, so they never run on a
row the principal may not see (``tests/test_governance_bypass.py`` probes that). The predicates
``gateway/planner/safe_predicates.py`` proves cannot fail on any value — column against literal
of a type it compares with, IS NULL, IN lists, BETWEEN, LIKE without escapes, and NOT/AND/OR of
those — cross it, to run beside the filter at the store. Here: the rule on its own (a fixture of
predicates and verdicts), then through a real server: what EXPLAIN and the audit trail say each
store was sent over the demo mesh (as eu_analyst, whose filters read another store), and what a
real PostgreSQL received (``pg_stat_activity``), with every answer checked against DuckDB over the
same rows filtered by hand.
"""

from __future__ import annotations

import json
import textwrap
import threading
import time
import uuid

import pytest
from sqlglot import exp, parse_one

from gateway.planner.parameters import bind_parameters
from gateway.planner.safe_predicates import (
    Kind,
    cannot_fail,
    column_kind,
    fits,
    is_safe,
    stored_as_is,
)
from gateway.principals import hash_password
from tests.support.server import connect, running_server
from tests.support.stores import POSTGRES, postgres_admin

# --- the rule ----------------------------------------------------------------------------------

KINDS = {
    "i": Kind("integer"),
    "d": Kind("decimal", 15, 2),
    "f": Kind("floating"),
    "s": Kind("text"),
    "b": Kind("boolean"),
    "day": Kind("date"),
    "ts": Kind("timestamp"),
}
"""The crossing columns of relation ``t`` in the fixture below (``m`` is masked: not listed)."""

SAFE = [
    "t.i = 5",
    "5 < t.i",
    "t.i >= -9223372036854775808",
    "t.i <> 9223372036854775807",
    "t.d > 0",
    "t.d BETWEEN 0.05 AND 1234567890123.99",
    "t.d IN (1, 2.5, NULL)",
    "t.f > 1.5 AND t.f < 99999999999",
    "t.s = 'BUILDING'",
    "t.s IN ('a', 'b') OR t.s IS NULL",
    "t.s LIKE '%BRASS'",
    "t.s NOT ILIKE 'a_c%'",
    "t.b",
    "t.b = FALSE",
    "NOT (t.i IS NOT NULL)",
    "t.day >= DATE '1995-01-01' AND t.day < CAST('1996-02-29' AS DATE)",
    "t.ts > TIMESTAMP '1995-01-01 12:30:00.5'",
    "t.i IS DISTINCT FROM 3",
    "t.i = NULL",
    "(t.i = 1 OR t.i = 2) AND t.s <> 'x'",
]

UNSAFE = {
    "division": "1 / (t.i - 5) > 0",
    "arithmetic": "t.i + 1 = 5",
    "function": "abs(t.i) = 5",
    "cast_of_the_column": "CAST(t.s AS INT) = 5",
    "text_against_a_number": "t.s = 5",
    "number_against_text": "t.i = '5'",
    "integer_against_a_decimal": "t.i > 2.5",
    "more_places_than_the_scale": "t.d > 0.125",
    "more_digits_than_the_precision": "t.d > 12345678901234",
    "beyond_64_bits": "t.i > 9223372036854775808",
    "exponent": "t.f > 1e5",
    "invalid_date": "t.day = DATE '1995-02-30'",
    "date_as_text": "t.day = '1995-01-01'",
    "timestamp_against_a_date": "t.day >= TIMESTAMP '1995-01-01 00:00:00'",
    "timestamp_with_a_zone": "t.ts > CAST('1995-01-01 00:00:00+02' AS TIMESTAMP)",
    "like_with_a_backslash": "t.s LIKE 'a\\'",
    "like_with_escape": "t.s LIKE 'a!%' ESCAPE '!'",
    "regex": "regexp_matches(t.s, '(')",
    "case": "CASE WHEN t.i = 5 THEN error('x') ELSE TRUE END",
    "subquery": "t.i IN (SELECT 1)",
    "masked_column": "t.m = 'x'",
    "another_relation": "u.i = 5",
    "two_columns": "t.i = t.d",
    "placeholder": "t.i = ?",
    "safe_and_unsafe": "t.i = 5 AND 1 / t.i > 0",
    "safe_or_unsafe": "t.i = 5 OR abs(t.i) = 1",
    "boolean_against_a_number": "t.b = 1",
    "text_column_alone": "t.s",
}


@pytest.mark.parametrize("sql", SAFE)
def test_predicates_that_cannot_fail_are_safe(sql):
    assert is_safe(parse_one(sql, read="duckdb"), alias="t", kinds=KINDS)


@pytest.mark.parametrize("sql", UNSAFE.values(), ids=UNSAFE.keys())
def test_predicates_that_can_fail_or_read_other_values_are_not(sql):
    assert not is_safe(parse_one(sql, read="duckdb"), alias="t", kinds=KINDS)


def test_a_parameter_counts_as_any_value_of_its_class():
    """A plan is reused for every value of the class it was planned with, so the verdict for
    ``d > ?`` (decimal(10,2), 8 digits before the point) must hold for all of them: a 32-bit
    integer may have 10 digits, so even 5 does not cross; written in the statement, 5 does."""
    narrow = {"d": Kind("decimal", 10, 2), "i": Kind("integer"), "s": Kind("text")}

    def safe(sql: str, *values: object) -> bool:
        bound = bind_parameters(parse_one(sql, read="duckdb"), list(values))
        return is_safe(bound.find(exp.Where).this, alias="t", kinds=narrow)

    assert safe("SELECT 1 FROM t WHERE t.d > 5")
    assert not safe("SELECT 1 FROM t WHERE t.d > ?", 5)
    assert safe("SELECT 1 FROM t WHERE t.i > ?", 5)
    assert safe("SELECT 1 FROM t WHERE t.i > ?", -5000000000)
    assert not safe("SELECT 1 FROM t WHERE t.i > ?", 2**70)
    assert safe("SELECT 1 FROM t WHERE t.s = ?", "it's")
    assert not safe("SELECT 1 FROM t WHERE t.s LIKE ?", "a%")  # another could end in \


def test_only_kinds_that_compare_without_parsing_cross():
    assert column_kind("decimal(15,2)") == Kind("decimal", 15, 2)
    assert column_kind("numeric(9)") == Kind("decimal", 9, 0)
    assert column_kind("int4") == Kind("integer")
    assert column_kind("timestamp") == Kind("timestamp")
    for name in ("uuid", "json", "timestamptz", "time", "blob"):
        assert column_kind(name) is None, name
    assert fits(parse_one("DATE '2024-02-29'"), Kind("date"))
    assert not fits(parse_one("DATE '2023-02-29'"), Kind("date"))


def test_columns_a_products_sql_computes_do_not_cross():
    sql = "SELECT o_orderkey, o_orderdate AS day, CAST(extract(year FROM o_orderdate) AS INT) AS y"
    assert stored_as_is(sql + " FROM main.orders", "duckdb") == {"o_orderkey", "day"}
    assert stored_as_is("SELECT * FROM a JOIN b ON a.k = b.k", "duckdb") == {"*"}
    assert stored_as_is("SELECT k FROM (SELECT CAST(v AS INT) AS k FROM t)", "duckdb") == set()
    assert stored_as_is("SELECT k FROM a UNION ALL SELECT k FROM b", "duckdb") == set()


TOTAL_FILTERS = [
    "c_nationkey IN (SELECT n_nationkey FROM nation JOIN region ON n_regionkey = r_regionkey "
    "WHERE r_name = 'EUROPE')",
    "o_custkey IN (SELECT c_custkey FROM customer WHERE c_acctbal > 0) OR o_custkey IS NULL",
    "EXISTS (SELECT 1 FROM t GROUP BY k HAVING count(*) > 1) AND day >= DATE '2020-01-01'",
    "region LIKE 'EU%'",
]
FALLIBLE_FILTERS = [
    "CAST(code AS INT) = 5",
    "k IN (SELECT n FROM t WHERE 10 / n > 1)",
    "upper(region) = 'EU'",
    "region LIKE ?",
    "region LIKE 'EU\\'",
    "k IN (SELECT sum(n) FROM t)",
]


@pytest.mark.parametrize("sql", TOTAL_FILTERS)
def test_row_filters_of_parts_that_cannot_fail_let_predicates_cross(sql):
    assert cannot_fail(parse_one(sql, read="duckdb"))


@pytest.mark.parametrize("sql", FALLIBLE_FILTERS)
def test_row_filters_that_could_fail_keep_every_predicate_above(sql):
    """Run first, a crossing predicate would spare such a filter the rows it fails on, and
    whether the query fails would tell whether a hidden row passed the predicate."""
    assert not cannot_fail(parse_one(sql, read="duckdb"))


# --- through a real server, over the demo mesh ---------------------------------------------------

EUROPEAN_NATIONS = (6, 7, 19, 22, 23)


def explained(connection, sql: str) -> tuple[dict[str, list[str]], str]:
    """``({store: [sql of each fragment it runs]}, the local query)`` of EXPLAIN ``sql``."""
    with connection.cursor() as cur:
        cur.execute("EXPLAIN " + sql)
        lines = [row[0] for row in cur.fetchall()]
    stores: dict[str, list[str]] = {}
    local = ""
    for header, body in zip(lines, lines[1:], strict=False):
        if header.startswith("fragment ") and " on store '" in header:
            stores.setdefault(header.split("'")[1], []).append(body.strip())
        elif header.startswith("runs locally"):
            local = body.strip()
    return stores, local


def customer_fragment(stores: dict[str, list[str]]) -> str:
    (sql,) = [s for s in stores["sales_db"] if "sales.customer" in s]
    return sql


@pytest.fixture(scope="module")
def eu(demo_mesh):
    with running_server(demo_mesh) as (uri, _), connect(uri, "eu_analyst") as connection:
        yield connection


def rows(connection, sql: str, parameters: tuple | None = None) -> list[tuple]:
    with connection.cursor() as cur:
        cur.execute(sql, parameters=parameters)
        return sorted((tuple(r.values()) for r in cur.fetch_arrow_table().to_pylist()), key=repr)


def european(demo_reference, sql: str) -> list[tuple]:
    """DuckDB's answer over the TPC-H tables, with eu_analyst's customer filter by hand."""
    customer = f"(SELECT * FROM customer WHERE c_nationkey IN {EUROPEAN_NATIONS})"
    sql = sql.replace("sales.customer", customer).replace("reference.", "")
    return sorted(demo_reference.execute(sql).fetchall(), key=repr)


CROSSING = {
    "filter": (
        "c_mktsegment = 'BUILDING' AND c_acctbal > 0",
        ["\"c_mktsegment\" = 'BUILDING'", '"c_acctbal" > 0'],
    ),
    "in_between_null": (
        "c_nationkey IN (6, 7, 8) AND c_acctbal BETWEEN -100.5 AND 5000 AND c_custkey IS NOT NULL",
        ['"c_nationkey" IN (6, 7, 8)', '"c_acctbal" >= -100.5', '"c_custkey" IS NULL'],
    ),
    "like_or": (
        "c_mktsegment LIKE 'AUTO%' OR c_mktsegment = 'MACHINERY'",
        ["LIKE 'AUTO%'", "= 'MACHINERY'"],
    ),
}


@pytest.mark.parametrize(("where", "expected"), CROSSING.values(), ids=CROSSING.keys())
def test_safe_predicates_reach_the_store_beside_the_row_filter(where, expected, eu, demo_reference):
    sql = f"SELECT c_custkey, c_acctbal FROM sales.customer WHERE {where}"
    stores, local = explained(eu, sql)
    fragment = customer_fragment(stores)
    for text in expected:
        assert text in fragment, (text, fragment)
    assert "WHERE" not in local.rsplit(') AS "customer"', 1)[-1], local  # nothing left above
    assert rows(eu, sql) == european(demo_reference, sql)


KEPT_ABOVE = {
    "division": ("1 / (c_acctbal - 5) > 0", "/ ("),
    "cast": ("CAST(c_mktsegment AS VARCHAR(3)) = 'BUI'", "CAST("),
    "function": ("abs(c_acctbal) > 100", "ABS("),
    "masked_column": ("c_phone LIKE '%1'", "LIKE"),
    "more_places_than_the_column": ("c_acctbal > 100.125", "100.125"),
    "integer_against_a_decimal": ("c_nationkey > 2.5", "2.5"),
    "subquery": ("c_nationkey IN (SELECT n_nationkey FROM reference.nation)", "IN (SELECT"),
}


@pytest.mark.parametrize(("where", "text"), KEPT_ABOVE.values(), ids=KEPT_ABOVE.keys())
def test_other_predicates_stay_above_the_row_filter(where, text, eu, demo_reference):
    sql = f"SELECT c_custkey FROM sales.customer WHERE c_custkey > 10 AND {where}"
    stores, local = explained(eu, sql)
    fragment = customer_fragment(stores)
    assert '"c_custkey" > 10' in fragment, fragment  # the safe conjunct still crosses
    assert text not in fragment, fragment
    above = local.rsplit(') AS "customer"', 1)[-1]
    assert text.upper() in above.upper(), local  # ... and this one runs over permitted rows
    if where.startswith("c_phone"):
        return  # masked: test_governance_bypass.py checks the masked answers
    assert rows(eu, sql) == european(demo_reference, sql)


def test_join_and_left_join_conditions_cross_where_they_keep_their_meaning(eu, demo_reference):
    inner = (
        "SELECT n.n_name, c.c_custkey FROM reference.nation n JOIN sales.customer c "
        "ON c.c_nationkey = n.n_nationkey "
        "WHERE c.c_acctbal > 9000 AND c.c_mktsegment = 'AUTOMOBILE'"
    )
    left_on = (
        "SELECT n.n_name, c.c_custkey FROM reference.nation n LEFT JOIN sales.customer c "
        "ON c.c_nationkey = n.n_nationkey AND c.c_acctbal > 9000"
    )
    left_where = (
        "SELECT n.n_name, c.c_custkey FROM reference.nation n LEFT JOIN sales.customer c "
        "ON c.c_nationkey = n.n_nationkey WHERE c.c_custkey IS NULL"
    )
    for sql, crossed in ((inner, True), (left_on, True), (left_where, False)):
        stores, _ = explained(eu, sql)
        fragment = customer_fragment(stores)
        assert ('"c_acctbal" > 9000' in fragment or "IS NULL" in fragment) is crossed, fragment
        # the left join keeps every nation, with NULLs where no customer passed
        assert rows(eu, sql) == european(demo_reference, sql)


def test_a_bound_parameter_crosses_as_its_value_did(eu, demo_mesh, demo_reference):
    marker = uuid.uuid4().hex[:8]
    sql = f"SELECT c_custkey, '{marker}' AS m FROM sales.customer WHERE c_acctbal > ?"
    assert [r[0] for r in rows(eu, sql, (7000,))] == [
        r[0] for r in european(demo_reference, sql.replace("?", "7000"))
    ]
    sent = _audited(demo_mesh, marker)
    (fragment,) = [f["sql"] for f in sent if "main.customer" in f["sql"]]
    assert '"c_acctbal" > 7000' in fragment, fragment
    # the plan is reused for another value of the class: the store is sent that value
    assert len(rows(eu, sql, (9000,))) < len(european(demo_reference, sql.replace("?", "7000")))
    assert any('"c_acctbal" > 9000' in f["sql"] for f in _audited(demo_mesh, marker))


def test_a_row_filter_reading_other_products_narrows_the_store_by_their_keys(
    eu, demo_mesh, demo_reference
):
    """eu_analyst's orders are those of European customers (``o_custkey IN (SELECT c_custkey
    FROM sales.customer JOIN reference.nation ... JOIN reference.region ...)``): the customers'
    keys, read first, go to the orders' store with the query, as they do for the filter by hand."""
    marker = uuid.uuid4().hex[:8]
    sql = (
        f"SELECT o.o_orderkey, o.o_totalprice, '{marker}' AS m FROM sales.orders AS o "
        "JOIN sales.customer AS c ON c.c_custkey = o.o_custkey WHERE c.c_mktsegment = 'BUILDING'"
    )
    with eu.cursor() as cur:
        cur.execute("EXPLAIN " + sql)
        plan = [row[0] for row in cur.fetchall()]
    (orders,) = [
        header.split()[1]
        for header, body in zip(plan, plan[1:], strict=False)
        if header.startswith("fragment ") and "sales.orders" in body
    ]
    assert any(line.startswith(f"dynamic filter: {orders} waits for") for line in plan), plan
    european_orders = (
        "(SELECT * FROM orders WHERE o_custkey IN (SELECT c_custkey FROM customer "
        f"WHERE c_nationkey IN {EUROPEAN_NATIONS}))"
    )
    expected = european(demo_reference, sql.replace("sales.orders", european_orders))
    assert rows(eu, sql) == expected
    (sent,) = [f["sql"] for f in _audited(demo_mesh, marker) if "main.orders" in f["sql"]]
    assert '"o_custkey" IN' in sent.rsplit(") AS", 1)[-1] or "BETWEEN" in sent, sent


def _audited(mesh_dir, marker: str) -> list[dict]:
    """The fragments, as sent, of the last audited statement containing ``marker``."""
    path = mesh_dir / "audit" / "events.jsonl"
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        events = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
        found = [e for e in events if marker in e["statement"] and e["outcome"] == "ok"]
        if found:
            return found[-1]["fragments"]
        time.sleep(0.1)
    raise AssertionError(f"no audit event for {marker}")


# --- what a real PostgreSQL receives --------------------------------------------------------------

ACCOUNTS = [
    (1, "Ada", "GB", 100),
    (2, "Grace", "US", 4300),
    (3, "Alan", "GB", 4300),
    (4, "Edsger", "NL", 50),
]


@pytest.fixture(scope="module")
def bank(tmp_path_factory):
    """``bank.accounts`` in PostgreSQL, filtered for ``eu`` by a list of countries in a CSV
    file of another store, so the filter runs in the gateway and the query reaches PostgreSQL
    as a fragment."""
    pg = postgres_admin()
    schema = f"mg_barrier_{uuid.uuid4().hex[:12]}"
    pg.execute(f"CREATE SCHEMA {schema}")
    pg.execute(
        f"CREATE TABLE {schema}.accounts (id BIGINT, holder TEXT, country TEXT, balance BIGINT)"
    )
    with pg.cursor() as cur:
        cur.executemany(f"INSERT INTO {schema}.accounts VALUES (%s, %s, %s, %s)", ACCOUNTS)
    root = tmp_path_factory.mktemp("barrier-mesh")
    (root / "data").mkdir()
    (root / "data" / "countries.csv").write_text("code,region\nGB,EU\nNL,EU\nUS,AMERICA\n")
    (root / "mesh.yaml").write_text(
        textwrap.dedent(
            f"""
            name: barrier
            stores:
              pg: {{kind: postgres, host: {POSTGRES.host}, port: {POSTGRES.port},
                   user: {POSTGRES.user}, database: {POSTGRES.database}}}
              files: {{kind: files, root: ./data}}
            """
        )
    )
    account = [
        ("id", "bigint"),
        ("holder", "varchar"),
        ("country", "varchar"),
        ("balance", "bigint"),
    ]
    country = [("code", "varchar"), ("region", "varchar")]
    for domain, product, store, table, columns in (
        ("bank", "accounts", "pg", f"{schema}.accounts", account),
        ("ref", "countries", "files", "countries.csv", country),
    ):
        (root / domain).mkdir()
        (root / domain / f"{product}.yaml").write_text(
            f"product: {product}\nversion: 1\nowner: t@example.com\ndescription: {product}\n"
            f"store: {store}\ntable: {table}\ncolumns:\n"
            + "".join(f"  - {{name: {n}, type: {t}, classification: public}}\n" for n, t in columns)
        )
    (root / "policies").mkdir()
    (root / "policies" / "global.yaml").write_text(
        textwrap.dedent(
            """
            roles: {regional: [], coded: []}
            grants: [{role: [regional, coded], products: "*"}]
            row_filters:
              - role: regional
                products: bank.accounts
                filter: "country IN (SELECT code FROM ref.countries WHERE region = ${region})"
              - role: coded
                products: bank.accounts
                filter: "length(country) = 2 AND country IN (SELECT code FROM ref.countries)"
            """
        )
    )
    (root / "principals.yaml").write_text(
        "principals:\n"
        f"  eu: {{password_hash: '{hash_password('eu', rounds=4)}', roles: [regional], "
        "attributes: {region: EU}}\n"
        f"  coded: {{password_hash: '{hash_password('coded', rounds=4)}', roles: [coded]}}\n"
    )
    try:
        with running_server(root) as (uri, _):
            yield uri, schema, pg
    finally:
        pg.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        pg.close()


def test_postgres_receives_the_safe_predicates_and_never_the_others(bank):
    """The table is locked while the query runs, so PostgreSQL shows the statement it is
    waiting to run in ``pg_stat_activity`` (once run, the pooled connection shows its DISCARD)."""
    import psycopg

    uri, schema, pg = bank
    marker = 5000 + uuid.uuid4().int % 1000  # a literal only this run's query holds
    sql = (
        f"SELECT id FROM bank.accounts WHERE balance < {marker} AND holder <> 'Ada' "
        "AND balance / 2 > 1000 ORDER BY id"
    )
    answers: list = []

    def read() -> None:
        with connect(uri, "eu") as connection, connection.cursor() as cur:
            cur.execute(sql)
            answers.append(cur.fetchall())

    with psycopg.connect(
        host=POSTGRES.host, port=POSTGRES.port, user=POSTGRES.user, dbname=POSTGRES.database
    ) as locker:
        locker.execute(f"LOCK TABLE {schema}.accounts IN ACCESS EXCLUSIVE MODE")
        reader = threading.Thread(target=read)
        reader.start()
        try:
            query = _waiting(pg, str(marker))
        finally:
            locker.rollback()
            reader.join(timeout=60)
    assert answers == [[(3,)]]  # Alan; Grace is American, Ada named, Edsger poor
    assert schema in query and f"< {marker}" in query and "<> 'Ada'" in query, query
    assert "/ 2" not in query, query  # division could fail on a hidden row: it stays above


def _waiting(pg, marker: str) -> str:
    """The query text of the backend waiting on a lock whose statement holds ``marker``."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        found = pg.execute(
            "SELECT query FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
            "AND query LIKE %s AND pid <> pg_backend_pid()",
            (f"%{marker}%",),
        ).fetchall()
        if found:
            return found[0][0]
        time.sleep(0.05)
    raise AssertionError("PostgreSQL never received the query")


def test_no_predicate_crosses_a_row_filter_that_could_fail(bank):
    """``length()`` is a function: the filter might fail on some row, so nothing runs before it
    (tests/test_governance_barrier.py::test_row_filters_that_could_fail_keep_every_predicate_above
    says why)."""
    uri, _, _ = bank
    sql = "SELECT id FROM bank.accounts WHERE balance < 4000 AND holder <> 'Ada' ORDER BY id"
    with connect(uri, "coded") as connection:
        stores, local = explained(connection, sql)
        (fragment,) = stores["pg"]
        assert "4000" not in fragment and "'Ada'" not in fragment, fragment
        assert "4000" in local and "'Ada'" in local, local
        with connection.cursor() as cur:
            cur.execute(sql)
            assert cur.fetchall() == [(4,)]  # Edsger: the others are Ada or hold 4300


# --- a store never runs the query's predicates before the row filter --------------------------

LEAKS = "CASE WHEN country = 'US' THEN CAST(holder AS INT) = 1 ELSE TRUE END"
"""Fails on Grace's row (an American the filter hides), and only there."""


@pytest.fixture(scope="module")
def fenced(tmp_path_factory):
    """``pg.accounts`` in PostgreSQL and ``duck.accounts`` in DuckDB, each filtered for ``gb``
    by a list of countries in the same store: the whole governed relation goes to the store,
    whose optimizer is free to pull a subquery up and run the query's predicates first."""
    import duckdb

    pg = postgres_admin()
    schema = f"mg_fence_{uuid.uuid4().hex[:12]}"
    pg.execute(f"CREATE SCHEMA {schema}")
    root = tmp_path_factory.mktemp("fence-mesh")
    duck = duckdb.connect(str(root / "bank.duckdb"))
    for run in (pg.execute, duck.execute):
        prefix = f"{schema}." if run == pg.execute else ""
        run(f"CREATE TABLE {prefix}accounts (id BIGINT, holder TEXT, country TEXT)")
        run(f"CREATE TABLE {prefix}allowed (code TEXT)")
        run(f"INSERT INTO {prefix}allowed VALUES ('GB')")
        for id_, holder, country, _ in ACCOUNTS:
            run(f"INSERT INTO {prefix}accounts VALUES ({id_}, '{holder}', '{country}')")
    duck.close()
    (root / "mesh.yaml").write_text(
        textwrap.dedent(
            f"""
            name: fence
            stores:
              pg: {{kind: postgres, host: {POSTGRES.host}, port: {POSTGRES.port},
                   user: {POSTGRES.user}, database: {POSTGRES.database}}}
              duck: {{kind: duckdb, path: bank.duckdb}}
            """
        )
    )
    columns = {"accounts": ("id", "holder", "country"), "allowed": ("code",)}
    types = {"id": "bigint"}
    for domain, store, prefix in (("pg", "pg", f"{schema}."), ("duck", "duck", "")):
        (root / domain).mkdir()
        for product, names in columns.items():
            (root / domain / f"{product}.yaml").write_text(
                f"product: {product}\nversion: 1\nowner: t@example.com\ndescription: {product}\n"
                f"store: {store}\ntable: {prefix}{product}\ncolumns:\n"
                + "".join(
                    f"  - {{name: {n}, type: {types.get(n, 'varchar')}, classification: public}}\n"
                    for n in names
                )
            )
    (root / "policies").mkdir()
    (root / "policies" / "global.yaml").write_text(
        textwrap.dedent(
            """
            roles: {british: []}
            grants: [{role: british, products: "*"}]
            row_filters:
              - role: british
                products: pg.accounts
                filter: "country IN (SELECT code FROM pg.allowed)"
              - role: british
                products: duck.accounts
                filter: "country IN (SELECT code FROM duck.allowed)"
            """
        )
    )
    (root / "principals.yaml").write_text(
        "principals:\n"
        f"  gb: {{password_hash: '{hash_password('gb', rounds=4)}', roles: [british]}}\n"
    )
    try:
        with running_server(root) as (uri, _):
            yield uri, root
    finally:
        pg.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        pg.close()


@pytest.mark.parametrize("domain", ["pg", "duck"])
@pytest.mark.parametrize(
    "sql",
    [
        f"SELECT id FROM {{domain}}.accounts WHERE {LEAKS} ORDER BY id",
        f"SELECT a.id FROM {{domain}}.accounts a JOIN {{domain}}.allowed l ON a.country = l.code "
        f"WHERE {LEAKS} ORDER BY a.id",
        f"SELECT count(*) FROM (SELECT * FROM {{domain}}.accounts) t WHERE {LEAKS}",
    ],
    ids=["where", "same_store_join", "derived_table"],
)
def test_a_store_runs_the_row_filter_before_the_querys_predicates(fenced, domain, sql):
    """Were the store to evaluate the CASE on Grace's row, the cast error would tell the
    principal that a hidden American exists: the filter must run first, wherever it runs."""
    uri, _ = fenced
    with connect(uri, "gb") as connection, connection.cursor() as cur:
        cur.execute(sql.format(domain=domain))
        answer = cur.fetchall()
    assert answer in ([(1,), (3,)], [(2,)]), answer


def test_the_fence_is_what_keeps_postgresql_from_running_them_first(fenced):
    """PostgreSQL's Capabilities.fence flipped off: the same plan, less its OFFSET 0, lets
    PostgreSQL pull the governed relation up and fail on the hidden row."""
    import copy
    import dataclasses

    from gateway.errors import InvalidQuery
    from gateway.planner import plan_query
    from gateway.service import Gateway

    _, root = fenced
    sql = f"SELECT id FROM pg.accounts WHERE {LEAKS} ORDER BY id"
    gateway = Gateway.open(root)
    try:
        context = gateway.context(gateway.principals.get("gb"))
        fenced_plan = plan_query(sql, context=context)
        connector = copy.copy(context.connectors["pg"])
        connector.capabilities = dataclasses.replace(connector.capabilities, fence=None)
        bare = dataclasses.replace(context, connectors={**context.connectors, "pg": connector})
        bare_plan = plan_query(sql, context=bare)
        assert "OFFSET 0" in fenced_plan.explain() and "OFFSET" not in bare_plan.explain()
        assert gateway.execute(fenced_plan).read_all().to_pylist() == [{"id": 1}, {"id": 3}]
        with pytest.raises(InvalidQuery, match="rejected the query"):
            gateway.execute(bare_plan).read_all()
    finally:
        gateway.close()

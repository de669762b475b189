"""Masks and row filters are compiled into each store's dialect and run at the store.

A mesh with one product in PostgreSQL and one in MariaDB, read through the real Flight SQL server:
EXPLAIN shows the masked expressions and the row filters inside the SQL each store receives, and
the answers are masked and filtered.
"""

from __future__ import annotations

import textwrap
import uuid

import pytest

from gateway.principals import hash_password
from tests.support.server import connect, running_server
from tests.support.stores import MARIADB, POSTGRES, mysql_admin, postgres_admin

ACCOUNTS = [
    (1, "Ada Lovelace", "GB", 100),
    (2, "Grace Hopper", "US", 250),
    (3, "Alan Turing", "GB", 75),
]

POLICIES = """
roles: {auditor: [], gb_analyst: [], small_accounts: []}
grants:
  - {role: auditor, products: "*"}
  - {role: gb_analyst, products: "*"}
  - {role: small_accounts, products: "*"}
masks:
  - {classification: pii, mask: partial, option: 4, unless: auditor}
row_filters:
  - {role: auditor, products: "*", filter: "TRUE"}
  - {role: gb_analyst, products: "*", filter: "country = ${country}"}
  - {role: small_accounts, products: "*", filter: "balance < 200"}
"""

DESCRIPTOR = """
product: accounts
version: 1
owner: team@example.com
description: Accounts
store: {store}
table: {table}
columns:
  - {{name: id, type: bigint, classification: public}}
  - {{name: holder, type: varchar, classification: pii}}
  - {{name: country, type: varchar, classification: public}}
  - {{name: balance, type: bigint, classification: internal}}
"""


@pytest.fixture(scope="module")
def mesh(tmp_path_factory):
    pg, my = postgres_admin(), mysql_admin()
    schema = f"mg_gov_{uuid.uuid4().hex[:12]}"  # this run's own: others run the suite at once
    maria_table = f"{schema}_accounts"
    pg.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
    pg.execute(f"CREATE SCHEMA {schema}")
    pg.execute(
        f"CREATE TABLE {schema}.accounts (id BIGINT, holder TEXT, country TEXT, balance BIGINT)"
    )
    with pg.cursor() as cur:
        cur.executemany(f"INSERT INTO {schema}.accounts VALUES (%s, %s, %s, %s)", ACCOUNTS)
    with my.cursor() as cur:
        cur.execute(f"DROP TABLE IF EXISTS {maria_table}")
        cur.execute(
            f"CREATE TABLE {maria_table} "
            "(id BIGINT, holder VARCHAR(40), country VARCHAR(2), balance BIGINT)"
        )
        cur.executemany(f"INSERT INTO {maria_table} VALUES (%s, %s, %s, %s)", ACCOUNTS)
    root = tmp_path_factory.mktemp("gov-mesh")
    (root / "mesh.yaml").write_text(
        textwrap.dedent(
            f"""
            name: gov
            stores:
              pg: {{kind: postgres, host: {POSTGRES.host}, port: {POSTGRES.port},
                   user: {POSTGRES.user}, database: {POSTGRES.database}}}
              maria: {{kind: mysql, host: {MARIADB.host}, port: {MARIADB.port},
                      user: {MARIADB.user}, database: {MARIADB.database}}}
            """
        )
    )
    for domain, store, table in (
        ("bank", "pg", f"{schema}.accounts"),
        ("lender", "maria", maria_table),
    ):
        (root / domain).mkdir()
        (root / domain / "accounts.yaml").write_text(DESCRIPTOR.format(store=store, table=table))
    (root / "policies").mkdir()
    (root / "policies" / "global.yaml").write_text(POLICIES)
    (root / "principals.yaml").write_text(
        "principals:\n"
        f"  auditor: {{password_hash: '{hash_password('auditor', rounds=4)}', roles: [auditor]}}\n"
        f"  gb: {{password_hash: '{hash_password('gb', rounds=4)}', roles: [gb_analyst], "
        "attributes: {country: GB}}\n"
        f"  small: {{password_hash: '{hash_password('small', rounds=4)}', "
        "roles: [small_accounts]}\n"
    )
    yield root
    pg.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
    pg.close()
    with my.cursor() as cur:
        cur.execute(f"DROP TABLE IF EXISTS {maria_table}")
    my.close()


@pytest.fixture(scope="module")
def server(mesh):
    with running_server(mesh) as (uri, _):
        yield uri


# Text comparisons stay local on MariaDB (its collations ignore case), so its row filter here is
# numeric; tests/test_dialect_semantics.py covers the text case.
STORES = {
    "postgres": ("bank.accounts", "pg", "gb", "'GB'"),
    "mariadb": ("lender.accounts", "maria", "small", "< 200"),
}


@pytest.mark.parametrize(
    ("address", "store", "principal", "row_filter"), STORES.values(), ids=STORES.keys()
)
def test_explain_shows_masks_and_filters_in_the_sql_sent_to_the_store(
    server, address, store, principal, row_filter
):
    with connect(server, principal) as conn, conn.cursor() as cur:
        cur.execute(f"EXPLAIN SELECT id, holder, balance FROM {address} WHERE balance > 50")
        plan = "\n".join(row[0] for row in cur.fetchall())
        cur.execute(f"SELECT id, holder FROM {address} WHERE balance > 50 ORDER BY id")
        rows = cur.fetchall()
    assert f"fragment the answer runs on store '{store}'" in plan
    sent = plan.split("\n", 1)[1]
    assert "RIGHT(" in sent.upper(), "the mask runs at the store"
    assert row_filter in sent, "the row filter runs at the store"
    assert "> 50" in sent
    assert rows == [(1, "****lace"), (3, "****ring")]


def test_an_unmasked_principal_sees_clear_values_and_every_row(server):
    with connect(server, "auditor") as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT b.id, b.holder, l.holder FROM bank.accounts b "
            "JOIN lender.accounts l ON l.id = b.id ORDER BY b.id"
        )
        assert cur.fetchall() == [(i, h, h) for i, h, _, _ in ACCOUNTS]


def test_a_sum_computed_at_postgres_arrives_as_an_exact_decimal(tmp_path):
    """PostgreSQL's sum(numeric) has no declared scale; the gateway pins it to the promised one."""
    import decimal

    from gateway.planner import plan_query
    from gateway.service import Gateway
    from tests.support.mesh import grant_everything

    pg = postgres_admin()
    pg.execute("DROP TABLE IF EXISTS public.meshgate_amounts")
    pg.execute("CREATE TABLE public.meshgate_amounts (v NUMERIC(15, 2))")
    pg.execute("INSERT INTO meshgate_amounts SELECT 1234567890123.45 FROM generate_series(1, 777)")
    (tmp_path / "mesh.yaml").write_text(
        f"name: t\nstores:\n  pg: {{kind: postgres, host: {POSTGRES.host}, port: {POSTGRES.port}, "
        f"user: {POSTGRES.user}, database: {POSTGRES.database}}}\n"
    )
    (tmp_path / "bank").mkdir()
    (tmp_path / "bank" / "amounts.yaml").write_text(
        "product: amounts\nversion: 1\nowner: t@example.com\ndescription: amounts\nstore: pg\n"
        'table: public.meshgate_amounts\ncolumns:\n  - {name: v, type: "decimal(15,2)"}\n'
    )
    principal = grant_everything(tmp_path)
    gateway = Gateway.open(tmp_path)
    try:
        context = gateway.context(principal)
        plan = plan_query("SELECT sum(v) AS total FROM bank.amounts", context=context)
        assert "CAST(SUM(" in plan.fragments[0].sql.upper().replace('"', "")
        (total,) = gateway.execute(plan).read_all().column("total").to_pylist()
    finally:
        gateway.close()
        pg.execute("DROP TABLE public.meshgate_amounts")
        pg.close()
    assert total == decimal.Decimal("1234567890123.45") * 777

"""Governance gives the same answers through the Trino engine as through the local engine.

Over the federated TPC-H mesh with every store reachable by the real Trino (the reference domain
copied into PostgreSQL), three principals — ``admin`` (sees everything), ``analyst`` (``pii``
masked to its last 4 characters, ``c_acctbal`` nulled) and ``eu`` (masked, and only European
customers and orders from 1996, a row filter that reads other products) — run the query shapes
that matter for bypasses: aliases, CTEs, ``SELECT *``, functions over and joins on masked
columns, aggregates over filtered rows, EXISTS and UNION ALL across stores, and predicates that
probe a clear value. Each answer through Trino must equal the local engine's (whose governance
the bypass suite checks against ground truth), and what Trino itself returns to the gateway must
already be masked and filtered: it never answers with more than the principal may see.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from gateway.principals import hash_password
from gateway.service import Gateway
from tests import test_tpch_federated as federated
from tests.support.stores import MARIADB, POSTGRES, TRINO, require, trino_admin
from tests.support.tpch_mesh import answer_difference
from tests.support.trino_mesh import ENGINE, trino_tpch_mesh

pytestmark = pytest.mark.stores

mesh = federated.mesh
reference = federated.reference

PRINCIPALS = ("admin", "analyst", "eu")
POLICY = """
roles: {admin: ["unmask:pii"], analyst: [], eu: []}
masking: {hash_key_env: MESHGATE_TEST_MASK_KEY}
grants:
  - {role: admin, products: "*"}
  - {role: analyst, products: "*"}
  - {role: eu, products: "*"}
masks:
  - {classification: pii, mask: partial, option: 4, unless: "unmask:pii"}
  - {column: sales.customer.c_acctbal, mask: "null", unless: admin}
  - {column: supply.supplier.s_phone, mask: hash, unless: admin}
row_filters:
  - {role: admin, products: [sales.customer, sales.orders], filter: "TRUE"}
  - {role: analyst, products: [sales.customer, sales.orders], filter: "TRUE"}
  - role: eu
    products: sales.customer
    filter: >-
      c_nationkey IN (SELECT n_nationkey FROM reference.nation
      JOIN reference.region ON n_regionkey = r_regionkey WHERE r_name = 'EUROPE')
  - {role: eu, products: sales.orders, filter: "o_orderdate >= DATE '1996-01-01'"}
"""

MASK_KEY = "trino-governance-test-mask-key"
QUERIES = {
    "hash mask (Trino lacks md5: computed locally)": "SELECT s.s_suppkey, s.s_phone, c.c_name "
    "FROM supply.supplier s JOIN sales.customer c ON c.c_custkey = s.s_suppkey "
    "ORDER BY s.s_suppkey",
    "masked columns across stores": "SELECT c.c_custkey, c.c_name, c.c_phone, c.c_acctbal, "
    "n.n_name FROM sales.customer c JOIN reference.nation n ON n.n_nationkey = c.c_nationkey "
    "ORDER BY c.c_custkey LIMIT 50",
    "CTE and alias": "WITH x AS (SELECT * FROM sales.customer) SELECT x.c_name AS who, "
    "s.s_name FROM x JOIN supply.supplier s ON s.s_suppkey = x.c_custkey "
    "ORDER BY x.c_custkey LIMIT 50",
    "SELECT *": "SELECT * FROM sales.customer c JOIN reference.nation n "
    "ON n.n_nationkey = c.c_nationkey ORDER BY c.c_custkey LIMIT 20",
    "functions over masked": "SELECT upper(c.c_name) AS u, length(c.c_phone) AS l, "
    "substr(c.c_address, 1, 3) AS a FROM sales.customer c JOIN supply.supplier s "
    "ON s.s_nationkey = c.c_nationkey ORDER BY c.c_custkey, s.s_suppkey LIMIT 40",
    "join on masked": "SELECT count(*) AS n FROM sales.customer c JOIN supply.supplier s "
    "ON c.c_name = s.s_name",
    "aggregate over filtered": "SELECT n.n_name, count(*) AS customers, sum(c.c_acctbal) AS b, "
    "count(o.o_orderkey) AS orders FROM sales.customer c JOIN reference.nation n "
    "ON n.n_nationkey = c.c_nationkey LEFT JOIN sales.orders o ON o.o_custkey = c.c_custkey "
    "GROUP BY n.n_name ORDER BY n.n_name",
    "EXISTS across stores": "SELECT count(*) AS n FROM fulfillment.lineitem l WHERE EXISTS "
    "(SELECT 1 FROM sales.orders o WHERE o.o_orderkey = l.l_orderkey)",
    "UNION ALL of masked": "SELECT c_name AS name FROM sales.customer UNION ALL "
    "SELECT s_name FROM supply.supplier ORDER BY 1 LIMIT 30",
    "probe a clear value": "SELECT count(*) AS n FROM sales.customer c JOIN reference.nation n "
    "ON n.n_nationkey = c.c_nationkey WHERE c.c_name = 'Customer#000000001'",
    "predicate on masked": "SELECT c.c_custkey FROM sales.customer c JOIN supply.supplier s "
    "ON s.s_suppkey = c.c_custkey WHERE c.c_phone LIKE '%1' AND s.s_name LIKE '%0001' "
    "ORDER BY 1",
    "text compares case-sensitively at MariaDB through Trino": "SELECT count(*) AS n "
    "FROM supply.supplier s JOIN sales.customer c ON c.c_custkey = s.s_suppkey "
    "WHERE s.s_comment = lower(s.s_comment) AND s.s_name = 'supplier#000000001'",
}


def _governed(directory: Path) -> Path:
    (directory / "policies" / "global.yaml").write_text(POLICY)
    (directory / "principals.yaml").write_text(
        "principals:\n"
        + "".join(
            f"  {name}:\n    password_hash: '{hash_password(name, rounds=4)}'\n"
            f"    roles: [{name}]\n"
            for name in PRINCIPALS
        )
    )
    return directory


@pytest.fixture(scope="module")
def gateways(mesh: Path, tmp_path_factory):
    """(local gateway, Trino gateway): the same governed mesh, routing ``local`` and ``trino``."""
    require(TRINO)
    require(POSTGRES)
    require(MARIADB)
    root = tmp_path_factory.mktemp("trino-governance")
    os.environ["MESHGATE_TEST_MASK_KEY"] = MASK_KEY  # both gateways hash alike
    with (
        trino_tpch_mesh(mesh, root / "trino", mode="trino", reference="postgres") as routed,
        trino_tpch_mesh(mesh, root / "local", mode="local", reference="postgres") as unrouted,
    ):
        trino = Gateway.open(_governed(routed))
        local = Gateway.open(_governed(unrouted))
        yield local, trino
        local.close()
        trino.close()


@pytest.mark.parametrize("principal", PRINCIPALS)
@pytest.mark.parametrize("shape", list(QUERIES))
def test_governed_answers_are_the_same_through_both_engines(gateways, principal, shape):
    local, trino = gateways
    sql = QUERIES[shape]
    who = trino.principals.get(principal)
    through_trino = trino.plan(sql, who)
    assert through_trino.engine == ENGINE, through_trino.explain()
    assert ENGINE in {f.store for f in through_trino.fragments}
    locally = local.plan(sql, local.principals.get(principal))
    assert locally.engine == "local" and ENGINE not in {f.store for f in locally.fragments}
    expected = local.execute(locally).read_all()
    answer = trino.execute(through_trino).read_all()
    difference = answer_difference(answer, expected, ordered=True)
    assert difference is None, f"{difference}\n{trino.explain(through_trino)}"


def test_trino_answers_the_gateway_only_masked_and_filtered_rows(gateways, reference):
    """The SQL sent to Trino, run on Trino directly, already gives the governed answer."""
    _, trino = gateways
    sql = QUERIES["masked columns across stores"].replace(" LIMIT 50", "")
    plan = trino.plan(sql, trino.principals.get("eu"))
    (fragment,) = plan.fragments
    assert fragment.store == ENGINE and plan.local_sql is None
    cursor = trino_admin().cursor()
    cursor.execute(fragment.sql)
    rows = cursor.fetchall()
    european = reference.execute(
        "SELECT count(*) FROM customer JOIN nation ON n_nationkey = c_nationkey "
        "JOIN region ON r_regionkey = n_regionkey WHERE r_name = 'EUROPE'"
    ).fetchone()[0]
    assert len(rows) == european > 0
    names = {row[1] for row in rows}
    assert all(name.startswith("****") and len(name) == 8 for name in names), sorted(names)[:3]
    assert {row[3] for row in rows} == {None}, "c_acctbal is nulled for eu"
    nations = {row[4] for row in rows}
    assert nations <= {"FRANCE", "GERMANY", "ROMANIA", "RUSSIA", "UNITED KINGDOM"}


def test_a_probe_of_a_clear_value_finds_nothing_unless_unmasked(gateways):
    local, trino = gateways
    sql = QUERIES["probe a clear value"]
    for gateway in (local, trino):
        counts = {
            name: gateway.run(sql, gateway.principals.get(name)).read_all()["n"][0].as_py()
            for name in PRINCIPALS
        }
        assert counts == {"admin": 1, "analyst": 0, "eu": 0}


def test_a_hash_mask_trino_cannot_compute_runs_locally_over_trinos_fragment(gateways):
    """Trino's md5 differs from the gateway's (TrinoConnector declares MD5 unsupported): the
    masked column is computed by the local engine, the rest still runs on Trino."""
    _, trino = gateways
    sql = QUERIES["hash mask (Trino lacks md5: computed locally)"]
    masked = trino.plan(sql, trino.principals.get("analyst"))
    assert masked.local_sql is not None and "MD5" in masked.local_sql.upper()
    assert all("MD5" not in f.sql.upper() for f in masked.fragments if f.store == ENGINE)
    clear = trino.plan(sql, trino.principals.get("admin"))
    assert clear.local_sql is None and clear.fragments[0].store == ENGINE

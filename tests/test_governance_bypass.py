"""Bypass attempts against the mesh's governance, each through ADBC against a running server.

Every attempt a principal may run is answered twice: by the gateway, as that principal, over the
demo mesh; and by DuckDB over the demo's TPC-H Parquet, where each principal's view of each
product is written out by hand from the demo policies (``pii`` shown as ``'****'`` and its last 4
characters unless admin; eu_analyst sees only European customers and their orders; guest only the
reference domain). A leak changes the answer, so it is detected rather than assumed away: attempts
that probe masked or hidden data also check that the clear data would have answered differently.
Attempts a principal may not run must fail with a client error that reveals nothing.

A second, small mesh (a copy of the demo with extra principals and policies) covers what the demo
policies cannot show: attribute injection, a filter on a product in a single store, hash masks and
their key, and row filters that read columns masked for the principal.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

import adbc_driver_manager
import duckdb
import pyarrow as pa
import pyarrow.flight as flight
import pytest
import yaml

from demo import DOMAINS, TPCH_TABLES, load_tpch_reference, tpch_dir
from gateway.flightsql import flight_sql_pb2 as sql_pb2
from gateway.flightsql.server import _pack, _unpack
from gateway.mesh import load_mesh
from gateway.principals import hash_password
from tests.support.server import connect, running_server

PRINCIPALS = ("admin", "analyst", "eu_analyst", "guest")
MASKED = ("analyst", "eu_analyst")
ROWS = ("eu_analyst",)
EUROPEAN_CUSTOMERS = (
    "SELECT c_custkey FROM memory.main.customer "
    "JOIN memory.main.nation ON c_nationkey = n_nationkey "
    "JOIN memory.main.region ON n_regionkey = r_regionkey WHERE r_name = 'EUROPE'"
)
ROW_FILTERS = {
    "eu_analyst": {
        "customer": f"c_custkey IN ({EUROPEAN_CUSTOMERS})",
        "orders": f"o_custkey IN ({EUROPEAN_CUSTOMERS})",
    }
}
COMPUTED_COLUMNS = {"o_orderyear": "CAST(extract(year FROM o_orderdate) AS INTEGER)"}
CLIENT_ERRORS = ("INVALID_ARGUMENT", "NOT_FOUND", "UNAUTHORIZED", "UNIMPLEMENTED")
LAB_MASK_KEY = "lab-hash-key-0123456789abcdef"


# --- the ground truth --------------------------------------------------------------------------


def governed_views(con: duckdb.DuckDBPyConnection, mesh_dir: Path) -> None:
    """One catalog per principal, holding every TPC-H product it may read as the policies shape
    it."""
    mesh = load_mesh(mesh_dir)
    for principal in PRINCIPALS:
        con.execute(f"ATTACH ':memory:' AS {principal}")
        for address, product in mesh.products.items():
            domain, name = address.split(".")
            if product.name not in TPCH_TABLES or (principal == "guest" and domain != "reference"):
                continue
            columns = []
            for column in product.columns:
                value = COMPUTED_COLUMNS.get(column.name, column.name)
                if column.classification.value == "pii" and principal != "admin":
                    value = f"'****' || right({value}, 4)"
                columns.append(f"{value} AS {column.name}")
            row_filter = ROW_FILTERS.get(principal, {}).get(product.name, "TRUE")
            con.execute(f"CREATE SCHEMA IF NOT EXISTS {principal}.{domain}")
            con.execute(
                f"CREATE VIEW {principal}.{domain}.{name} AS SELECT {', '.join(columns)} "
                f"FROM memory.main.{product.name} WHERE {row_filter}"
            )


def _key(row: tuple) -> tuple:
    return tuple(str(value) for value in row)


def same_rows(got: list[tuple], expected: list[tuple], *, ordered: bool) -> bool:
    if not ordered:
        got, expected = sorted(got, key=_key), sorted(expected, key=_key)
    return got == expected


# --- fixtures ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def served(demo_mesh):
    with running_server(demo_mesh) as (uri, gateway):
        yield uri, gateway


@pytest.fixture(scope="module")
def truth(demo_mesh):
    """``truth(principal, sql)``: DuckDB's answer over the principal's governed views."""
    con = duckdb.connect()
    load_tpch_reference(con, tpch_dir(demo_mesh))
    governed_views(con, demo_mesh)
    cursors = {}

    def answer(principal: str, sql: str) -> list[tuple]:
        if principal not in cursors:
            cursors[principal] = con.cursor()
            cursors[principal].execute(f"USE {principal}")
        return cursors[principal].execute(sql).fetchall()

    yield answer
    con.close()


@pytest.fixture(scope="module")
def client(served):
    """``client(user)``: one open ADBC connection per principal for the module."""
    uri, _ = served
    connections = {}

    def get(user: str):
        if user not in connections:
            connections[user] = connect(uri, user)
        return connections[user]

    yield get
    for connection in connections.values():
        connection.close()


@pytest.fixture(scope="module")
def secrets_of(served, truth, demo_mesh):
    """``secrets_of(principal)``: text no error or plan shown to that principal may contain."""
    _, gateway = served
    common = [
        gateway.policy.mask_key,
        str(Path(demo_mesh).resolve()),
        "stores/",
        "read_parquet",
        "main.customer",
        "__source",
        "__fragment_",
        "source_1",
    ]
    # comments of rows eu_analyst may not see (but not those inside a comment it may see)
    hidden_comments = [
        row[0]
        for row in truth(
            "admin",
            """
            WITH visible AS (SELECT c_comment AS v FROM eu_analyst.sales.customer
                             UNION ALL SELECT o_comment FROM eu_analyst.sales.orders_v1),
                 hidden AS ((SELECT c_comment AS h FROM sales.customer
                             EXCEPT SELECT v FROM visible)
                            UNION ALL (SELECT o_comment FROM sales.orders_v1
                                       EXCEPT SELECT v FROM visible))
            SELECT h FROM hidden WHERE NOT EXISTS (SELECT 1 FROM visible WHERE contains(v, h))
            """,
        )
    ]
    clear_pii = ["Customer#0", "Supplier#0"]

    def secrets(principal: str) -> list[str]:
        found = list(common)
        if principal != "eu_analyst":
            found.append("= 'EUROPE'")  # eu_analyst's filter
        if principal == "eu_analyst":
            found += hidden_comments
        if principal != "admin":
            found += clear_pii
        return found

    return secrets


def run(connection, sql: str, parameters: tuple | None = None) -> list[tuple]:
    with connection.cursor() as cur:
        cur.execute(sql, parameters=parameters)
        table = cur.fetch_arrow_table()
    return [tuple(row.values()) for row in table.to_pylist()]


def refusal(connection, sql: str) -> str:
    """The error message the gateway answers ``sql`` with; fails if it answers with data."""
    with connection.cursor() as cur, pytest.raises(adbc_driver_manager.Error) as caught:
        cur.execute(sql)
        cur.fetch_arrow_table()
    return str(caught.value)


def assert_reveals_nothing(message: str, secrets: list[str], *, typed: str = "") -> None:
    """None of ``secrets`` may appear in ``message`` unless the user typed it in ``typed``."""
    for secret in secrets:
        if secret and secret.lower() not in typed.lower():
            assert secret.lower() not in message.lower(), (secret, message)


# --- attempts answered exactly as the governed views answer them -------------------------------


@dataclass(frozen=True)
class Attempt:
    id: str
    sql: str
    ordered: bool = False
    probes: tuple[str, ...] = MASKED
    """Principals whose view must answer differently from the clear data, so that a leak to them
    would change the answer (masks change values for both, the row filter only eu_analyst's)."""
    truth_sql: str | None = None
    """The same question for the ground truth, when the attempt's own SQL names the mesh."""
    known_gap: str | None = None
    """Why the gateway refuses a query it should answer; the attempt then checks it is refused."""


def _fragment_shadow(number: int) -> Attempt:
    regions = ", ".join(f"({k}, 'EUROPE', '')" for k in range(5))
    return Attempt(
        f"cte_named_like_fragment_{number}_fakes_the_filter_input",
        f"WITH __fragment_{number}(r_regionkey, r_name, r_comment) AS (VALUES {regions}) "
        f"SELECT count(*), max(f.r_name) FROM sales.customer, __fragment_{number} f",
        probes=ROWS,
    )


JOIN_THROUGH_CUSTOMER = (
    "SELECT n.n_name, count(*), sum(o.o_totalprice) FROM sales.orders o "
    "JOIN sales.customer c ON c.c_custkey = o.o_custkey "
    "JOIN reference.nation n ON n.n_nationkey = c.c_nationkey GROUP BY n.n_name"
)

ATTEMPTS = [
    # aliases
    Attempt("alias", "SELECT c.c_custkey, c.c_name, c.c_phone FROM sales.customer AS c"),
    Attempt("alias_without_as", "SELECT x.c_name FROM sales.customer x WHERE x.c_custkey < 50"),
    Attempt(
        "alias_named_like_the_product", "SELECT customer.c_address FROM sales.customer AS customer"
    ),
    Attempt("alias_named_like_another_product", "SELECT orders.c_name FROM sales.customer orders"),
    Attempt(
        "column_aliases_on_the_table", "SELECT k, n FROM sales.customer AS c(k, n) WHERE k < 90"
    ),
    Attempt("domain_qualified_column", "SELECT sales.customer.c_name FROM sales.customer"),
    Attempt(
        "self_join_through_aliases",
        "SELECT a.c_name, b.c_phone FROM sales.customer a "
        "JOIN sales.customer b ON a.c_custkey = b.c_custkey + 1",
    ),
    # CTEs
    Attempt(
        "cte", "WITH c AS (SELECT * FROM sales.customer) SELECT c_custkey, c_name, c_address FROM c"
    ),
    Attempt(
        "cte_named_like_the_product",
        "WITH customer AS (SELECT c_custkey, c_phone FROM sales.customer) SELECT * FROM customer",
    ),
    Attempt(
        "cte_chain",
        "WITH a AS (SELECT * FROM sales.customer), b AS (SELECT c_name AS n, c_phone AS p FROM a) "
        "SELECT n, p FROM b",
    ),
    Attempt(
        "cte_inside_a_subquery",
        "SELECT * FROM (WITH c AS (SELECT c_name FROM sales.customer) SELECT c_name FROM c) t",
    ),
    Attempt(
        "cte_materialized",
        "WITH c AS MATERIALIZED (SELECT * FROM sales.customer) SELECT c_name, c_phone FROM c",
    ),
    Attempt(
        "recursive_cte_walking_customers",
        "WITH RECURSIVE r(k, name) AS (SELECT c_custkey, c_name FROM sales.customer "
        "WHERE c_custkey IN (1, 6) UNION ALL SELECT c.c_custkey, c.c_name FROM sales.customer c "
        "JOIN r ON c.c_custkey = r.k + 1 WHERE r.k < 40) SELECT k, name FROM r",
    ),
    *[_fragment_shadow(number) for number in (1, 2, 3, 4)],
    Attempt(
        "cte_named_like_the_source_placeholder_reads_the_physical_table",
        "WITH \"__source:sales.customer\" AS (SELECT 1 AS c_custkey, 'x' AS c_name) "
        'SELECT c_custkey, c_name FROM "__source:sales.customer"',
        probes=(),
    ),
    Attempt(
        "cte_named_like_physical_tables",
        "WITH nation AS (SELECT 99 AS n_nationkey), customer AS (SELECT 7 AS c_custkey) "
        "SELECT n.n_name, x.k, y.c FROM reference.nation n, (SELECT max(n_nationkey) AS k "
        "FROM nation) x, (SELECT max(c_custkey) AS c FROM customer) y",
        probes=(),
    ),
    # subqueries
    Attempt(
        "scalar_subqueries",
        "SELECT (SELECT max(c_name) FROM sales.customer), "
        "(SELECT min(c_phone) FROM sales.customer)",
    ),
    Attempt(
        "in_subquery_on_a_masked_column",
        "SELECT count(*) FROM sales.orders WHERE o_custkey IN "
        "(SELECT c_custkey FROM sales.customer WHERE c_name LIKE 'Customer#00000001%')",
    ),
    Attempt(
        "exists_correlated",
        "SELECT c_custkey, c_name FROM sales.customer c WHERE EXISTS (SELECT 1 FROM sales.orders o "
        "WHERE o.o_custkey = c.c_custkey AND o.o_totalprice > 300000)",
    ),
    Attempt(
        "not_exists_correlated",
        "SELECT count(*) FROM sales.customer c "
        "WHERE NOT EXISTS (SELECT 1 FROM sales.orders o WHERE o.o_custkey = c.c_custkey)",
        probes=ROWS,
    ),
    Attempt(
        "correlated_scalar_subquery",
        "SELECT c_custkey, c_name, (SELECT count(*) FROM sales.orders o "
        "WHERE o.o_custkey = c.c_custkey) FROM sales.customer c WHERE c_custkey < 100",
    ),
    Attempt(
        "correlated_comparison_of_masked_columns",
        "SELECT s_suppkey FROM supply.supplier s WHERE s_phone > "
        "(SELECT min(c_phone) FROM sales.customer c WHERE c.c_nationkey = s.s_nationkey)",
    ),
    Attempt(
        "derived_table_renaming_masked_columns",
        "SELECT * FROM (SELECT c_name AS n, c_phone AS p FROM sales.customer) t "
        "WHERE t.n LIKE '%1'",
    ),
    Attempt(
        "lateral_join",
        "SELECT n.n_name, x.c_address FROM reference.nation n, LATERAL (SELECT c_address "
        "FROM sales.customer c WHERE c.c_nationkey = n.n_nationkey ORDER BY c_address LIMIT 1) x",
    ),
    Attempt(
        "any_subquery_guessing_a_name",
        "SELECT count(*) FROM sales.customer WHERE c_name = ANY (SELECT 'Customer#000000001')",
    ),
    # set operations mixing products
    Attempt(
        "union_masked_and_clear_columns",
        "SELECT c_name AS v FROM sales.customer UNION SELECT n_name FROM reference.nation",
    ),
    Attempt(
        "union_all_allowed_then_other_product",
        "SELECT n_name AS v FROM reference.nation UNION ALL SELECT c_phone FROM sales.customer",
    ),
    Attempt(
        "union_all_of_all_pii",
        "SELECT c_name AS v FROM sales.customer UNION ALL SELECT s_name FROM supply.supplier "
        "UNION ALL SELECT c_address FROM sales.customer "
        "UNION ALL SELECT s_phone FROM supply.supplier",
    ),
    Attempt(
        "intersect_with_a_guessed_name",
        "SELECT c_name FROM sales.customer INTERSECT SELECT 'Customer#000000001'",
    ),
    Attempt(
        "except_a_guessed_name",
        "SELECT 'Customer#000000001' AS v EXCEPT SELECT c_name FROM sales.customer",
    ),
    Attempt(
        "except_between_products",
        "SELECT c_custkey FROM sales.customer EXCEPT SELECT o_custkey FROM sales.orders",
        probes=ROWS,
    ),
    Attempt(
        "union_by_name",
        "SELECT c_name AS v FROM sales.customer UNION ALL BY NAME SELECT s_name AS v "
        "FROM supply.supplier",
    ),
    # stars
    Attempt("star", "SELECT * FROM sales.customer"),
    Attempt(
        "table_star_through_a_join",
        "SELECT c.* FROM sales.customer c JOIN reference.nation n ON c.c_nationkey = n.n_nationkey",
    ),
    Attempt("star_exclude", "SELECT * EXCLUDE (c_comment) FROM sales.customer"),
    Attempt("star_replace", "SELECT * REPLACE (upper(c_name) AS c_name) FROM sales.customer"),
    Attempt(
        "columns_regex",
        "SELECT COLUMNS('c_(name|phone)') FROM sales.customer",
        known_gap="projection pushdown drops the columns COLUMNS('regex') would select",
    ),
    Attempt("row_as_struct", "SELECT c FROM sales.customer c WHERE c.c_custkey < 30"),
    Attempt("row_to_json", "SELECT to_json(c) FROM sales.customer c WHERE c.c_custkey < 30"),
    Attempt("star_customer_v1", "SELECT * FROM sales.customer_v1"),
    Attempt("star_orders_v1", "SELECT * FROM sales.orders_v1", probes=ROWS),
    Attempt("star_orders_v2", "SELECT * FROM sales.orders_v2", probes=ROWS),
    Attempt("star_orders_latest", "SELECT * FROM sales.orders", probes=ROWS),
    Attempt("star_supplier", "SELECT * FROM supply.supplier"),
    # functions over masked columns trying to recover the clear value
    Attempt(
        "length",
        "SELECT c_custkey, length(c_name), length(c_address), length(c_phone) FROM sales.customer",
    ),
    Attempt(
        "substr_left_slice",
        "SELECT substr(c_name, 1, 9), left(c_address, 5), c_phone[1:3] FROM sales.customer",
    ),
    Attempt(
        "lower_upper_reverse",
        "SELECT lower(c_name), upper(c_address), reverse(c_phone) FROM sales.customer",
    ),
    Attempt("hashes", "SELECT md5(c_name), sha256(c_phone), hash(c_address) FROM sales.customer"),
    Attempt(
        "concat",
        "SELECT concat(c_name, '|', c_address, '|', c_phone), c_name || c_phone "
        "FROM sales.customer",
    ),
    Attempt(
        "casts",
        "SELECT CAST(c_name AS BLOB), c_phone::VARCHAR, CAST(c_address AS VARCHAR) "
        "FROM sales.customer",
    ),
    Attempt(
        "regexp",
        r"SELECT regexp_extract(c_name, '#(\d+)', 1), regexp_replace(c_phone, '\d', 'x', 'g') "
        "FROM sales.customer",
    ),
    Attempt(
        "string_agg_and_list",
        "SELECT c_nationkey, string_agg(c_name, ',' ORDER BY c_custkey), "
        "list(c_phone ORDER BY c_custkey) FROM sales.customer GROUP BY c_nationkey",
    ),
    Attempt(
        "min_max_first_arg_max",
        "SELECT min(c_name), max(c_address), first(c_phone ORDER BY c_custkey), "
        "arg_max(c_address, c_acctbal) FROM sales.customer",
    ),
    Attempt(
        "string_distances",
        "SELECT levenshtein(c_name, 'Customer#000000001'), "
        "jaro_winkler_similarity(c_address, 'IVhzIApeRb ot,c,E') FROM sales.customer",
    ),
    Attempt(
        "positions",
        "SELECT instr(c_name, '#'), contains(c_phone, '-'), strpos(c_address, 'a') "
        "FROM sales.customer",
    ),
    Attempt(
        "format_printf", "SELECT format('{}', c_name), printf('%s', c_phone) FROM sales.customer"
    ),
    Attempt("struct_literal", "SELECT {'n': c_name, 'p': c_phone} FROM sales.customer"),
    Attempt("base64", "SELECT to_base64(CAST(c_name AS BLOB)) FROM sales.customer"),
    Attempt(
        "split_and_replace",
        "SELECT split_part(c_phone, '-', 1), replace(c_name, '*', ''), "
        "translate(c_address, '*', '') FROM sales.customer",
    ),
    Attempt(
        "supplier_functions", "SELECT s_name, length(s_phone), md5(s_address) FROM supply.supplier"
    ),
    # predicates over masked columns
    Attempt(
        "equals_a_clear_name",
        "SELECT c_custkey FROM sales.customer WHERE c_name = 'Customer#000000001'",
    ),
    Attempt(
        "in_clear_names",
        "SELECT c_custkey FROM sales.customer "
        "WHERE c_name IN ('Customer#000000001', 'Customer#000000002')",
    ),
    Attempt("like_prefix", "SELECT c_custkey FROM sales.customer WHERE c_name LIKE 'Customer#%'"),
    Attempt("ilike", "SELECT c_custkey FROM sales.customer WHERE c_address ILIKE '%a%'"),
    Attempt("not_like", "SELECT count(*) FROM sales.customer WHERE c_name NOT LIKE '****%'"),
    Attempt(
        "range",
        "SELECT c_custkey FROM sales.customer "
        "WHERE c_name >= 'Customer#000000100' AND c_name < 'Customer#000000200'",
    ),
    Attempt(
        "between", "SELECT c_custkey FROM sales.customer WHERE c_phone BETWEEN '10-' AND '20-'"
    ),
    Attempt(
        "starts_with", "SELECT c_custkey FROM sales.customer WHERE starts_with(c_phone, '25-')"
    ),
    Attempt(
        "regexp_matches",
        r"SELECT c_custkey FROM sales.customer WHERE regexp_matches(c_phone, '^\d\d-')",
    ),
    Attempt("glob", "SELECT c_custkey FROM sales.customer WHERE c_name GLOB 'Customer*'"),
    Attempt(
        "similar_to",
        "SELECT c_custkey FROM sales.customer WHERE c_address SIMILAR TO '.*[A-Z]{3}.*'",
    ),
    Attempt(
        "case_when_counting_matches",
        "SELECT sum(CASE WHEN c_name LIKE 'Customer#0000001%' THEN 1 ELSE 0 END) "
        "FROM sales.customer",
    ),
    Attempt(
        "predicate_in_join_on",
        "SELECT c.c_custkey FROM sales.customer c JOIN reference.nation n "
        "ON c.c_nationkey = n.n_nationkey AND c.c_name LIKE 'Cust%'",
    ),
    Attempt(
        "having_on_a_masked_column",
        "SELECT c_nationkey, count(*) FROM sales.customer GROUP BY c_nationkey "
        "HAVING max(c_name) > 'Customer'",
    ),
    Attempt(
        "masked_join_key_across_products",
        "SELECT count(*) FROM sales.customer c JOIN supply.supplier s ON c.c_phone = s.s_phone",
    ),
    # joins through an allowed product into a filtered one
    Attempt("orders_through_customer_by_nation", JOIN_THROUGH_CUSTOMER, probes=ROWS),
    Attempt(
        "orders_count_and_revenue",
        "SELECT count(*), sum(o_totalprice) FROM sales.orders",
        probes=ROWS,
    ),
    Attempt(
        "lineitem_joined_to_orders",
        "SELECT count(*), sum(l_extendedprice) FROM fulfillment.lineitem l "
        "JOIN sales.orders o ON l.l_orderkey = o.o_orderkey",
        probes=ROWS,
    ),
    Attempt(
        "lineitem_semi_join_orders",
        "SELECT count(*) FROM fulfillment.lineitem WHERE l_orderkey IN "
        "(SELECT o_orderkey FROM sales.orders)",
        probes=ROWS,
    ),
    Attempt(
        "nation_left_join_customer",
        "SELECT n.n_name, count(c.c_custkey) FROM reference.nation n "
        "LEFT JOIN sales.customer c ON c.c_nationkey = n.n_nationkey GROUP BY n.n_name",
        probes=ROWS,
    ),
    Attempt(
        "customer_right_join_nation",
        "SELECT n.n_name, c.c_custkey FROM sales.customer c "
        "RIGHT JOIN reference.nation n ON c.c_nationkey = n.n_nationkey",
        probes=ROWS,
    ),
    Attempt(
        "full_join_customer_orders",
        "SELECT count(*), count(c.c_custkey), count(o.o_orderkey) FROM sales.customer c "
        "FULL JOIN sales.orders o ON o.o_custkey = c.c_custkey",
        probes=ROWS,
    ),
    Attempt(
        "anti_join_orders_without_visible_customer",
        "SELECT count(*) FROM sales.orders "
        "WHERE o_custkey NOT IN (SELECT c_custkey FROM sales.customer)",
        probes=(),  # 0 for everyone: an order whose customer is hidden would be a leak
    ),
    Attempt(
        "versions_joined",
        "SELECT count(*) FROM sales.orders_v1 a JOIN sales.orders_v2 b USING (o_orderkey) "
        "JOIN sales.customer_v1 c ON c.c_custkey = a.o_custkey",
        probes=ROWS,
    ),
    Attempt(
        "window_count_over_everything",
        "SELECT count(*) OVER () FROM sales.customer LIMIT 1",
        probes=ROWS,
    ),
    # ordering, grouping, distinct and windows on masked columns
    Attempt(
        "order_by_masked_address",
        "SELECT c_custkey, c_address FROM sales.customer ORDER BY c_address, c_custkey",
        ordered=True,
    ),
    Attempt(
        "order_by_masked_phone_limit",
        "SELECT c_custkey FROM sales.customer ORDER BY c_phone DESC, c_custkey LIMIT 10",
        ordered=True,
    ),
    Attempt(
        "order_by_expression_over_masked",
        "SELECT c_custkey FROM sales.customer ORDER BY substr(c_address, 5), c_custkey LIMIT 10",
        ordered=True,
    ),
    Attempt("group_by_masked", "SELECT c_phone, count(*) FROM sales.customer GROUP BY c_phone"),
    Attempt(
        "group_by_expression_over_masked",
        "SELECT left(c_address, 2), count(*) FROM sales.customer GROUP BY 1",
    ),
    Attempt("group_by_all", "SELECT c_mktsegment, max(c_address) FROM sales.customer GROUP BY ALL"),
    Attempt("distinct", "SELECT DISTINCT c_address FROM sales.customer"),
    Attempt(
        "count_distinct",
        "SELECT count(DISTINCT c_name), count(DISTINCT c_address), count(DISTINCT c_phone) "
        "FROM sales.customer",
    ),
    Attempt(
        "distinct_on",
        "SELECT DISTINCT ON (c_nationkey) c_nationkey, c_address FROM sales.customer "
        "ORDER BY c_nationkey, c_address",
        ordered=True,
    ),
    Attempt(
        "row_number_over_masked_order",
        "SELECT c_custkey, row_number() OVER (ORDER BY c_address, c_custkey) FROM sales.customer",
    ),
    Attempt(
        "rank_partitioned_by_masked",
        "SELECT c_custkey, rank() OVER (PARTITION BY c_phone ORDER BY c_custkey) "
        "FROM sales.customer",
    ),
    Attempt(
        "lag_lead",
        "SELECT c_custkey, lag(c_name) OVER (ORDER BY c_custkey), "
        "lead(c_address) OVER (ORDER BY c_custkey) FROM sales.customer",
    ),
    Attempt(
        "qualify_on_masked_order",
        "SELECT c_custkey, c_name FROM sales.customer "
        "QUALIFY row_number() OVER (PARTITION BY c_nationkey ORDER BY c_address, c_custkey) = 1",
    ),
    # quoting and case
    Attempt("quoted_upper_case", 'SELECT c_custkey, c_name FROM "SALES"."CUSTOMER"'),
    Attempt("mixed_case", "SELECT C_CUSTKEY, C_NAME FROM Sales.Customer"),
    Attempt("quoted_column", 'SELECT "C_NAME", "c_Phone" FROM sales.customer'),
    Attempt(
        "catalog_mesh",
        "SELECT c_custkey, c_name FROM mesh.sales.customer",
        truth_sql="SELECT c_custkey, c_name FROM sales.customer",
    ),
    Attempt(
        "catalog_quoted_mixed_case",
        'SELECT c_custkey, c_address FROM "MESH"."Sales"."customer"',
        truth_sql="SELECT c_custkey, c_address FROM sales.customer",
    ),
    Attempt("version_upper_case", "SELECT count(*), max(c_name) FROM SALES.CUSTOMER_V1"),
    # comments
    Attempt(
        "line_comment_hiding_a_statement",
        "SELECT c_name FROM sales.customer -- ; SELECT * FROM sales.customer",
    ),
    Attempt(
        "block_comment_hiding_a_statement",
        "SELECT c_name /* ; DROP TABLE sales.customer; */ FROM sales.customer",
    ),
    Attempt("comment_between_domain_and_product", "SELECT c_phone FROM sales./* x */customer"),
    Attempt("comment_marker_in_a_string", "SELECT '--' || c_name || '/*' FROM sales.customer"),
]


def _ids(attempts: list[Attempt]) -> list[str]:
    ids = [a.id for a in attempts]
    assert len(ids) == len(set(ids)), "attempt ids must be unique"
    return ids


@pytest.mark.parametrize("principal", PRINCIPALS)
@pytest.mark.parametrize("attempt", ATTEMPTS, ids=_ids(ATTEMPTS))
def test_attempt_answers_exactly_as_the_governed_view(
    attempt, principal, client, truth, secrets_of
):
    truth_sql = attempt.truth_sql or attempt.sql
    try:
        expected = truth(principal, truth_sql)
    except duckdb.CatalogException:  # names a product the principal may not read
        message = refusal(client(principal), attempt.sql)
        assert message.startswith(("UNAUTHORIZED", "NOT_FOUND")), message
        assert_reveals_nothing(message, secrets_of(principal), typed=attempt.sql)
        return
    if attempt.known_gap:
        refusal(client(principal), attempt.sql)  # fails closed: nothing to leak
        pytest.xfail(attempt.known_gap)
    got = run(client(principal), attempt.sql)
    assert same_rows(got, expected, ordered=attempt.ordered), (
        f"{principal} got {got[:5]}..., the governed view answers {expected[:5]}..."
    )
    if principal in attempt.probes:
        clear = truth("admin", truth_sql)
        assert not same_rows(clear, expected, ordered=attempt.ordered), (
            "the clear data answers this attempt the same way, so it would not detect a leak"
        )


def test_order_by_a_masked_column_orders_the_masked_values(client):
    """No ordering side channel: the order is that of the masked strings, not of the clear ones."""
    got = run(client("analyst"), "SELECT c_address FROM sales.customer ORDER BY c_address")
    addresses = [row[0] for row in got]
    assert all(a.startswith("****") and len(a) <= 8 for a in addresses)
    assert addresses == sorted(addresses)
    clear_order = run(client("admin"), "SELECT c_custkey FROM sales.customer ORDER BY c_address")
    masked_order = run(
        client("analyst"), "SELECT c_custkey FROM sales.customer ORDER BY c_address, c_custkey"
    )
    assert clear_order != masked_order


def test_bound_parameters_are_masked_comparisons_never_names_or_sql(client):
    sql = "SELECT count(*) FROM sales.customer WHERE c_name = ?"
    assert run(client("admin"), sql, ("Customer#000000001",)) == [(1,)]
    assert run(client("analyst"), sql, ("Customer#000000001",)) == [(0,)]
    assert run(client("analyst"), sql, ("****0001",)) == [(1,)]
    assert run(client("eu_analyst"), sql, ("****0001",)) == [(0,)]  # customer 1 is in Morocco
    assert run(client("analyst"), sql, ("x' OR '1'='1",)) == [(0,)]
    for table in ("sales.customer", "tpch/customer.parquet"):
        with client("guest").cursor() as cur, pytest.raises(adbc_driver_manager.Error) as caught:
            cur.execute("SELECT * FROM ?", parameters=(table,))
            cur.fetch_arrow_table()
        assert str(caught.value).startswith("INVALID_ARGUMENT"), caught.value


# --- hidden rows never reach the query's own expressions ---------------------------------------

EUROPEAN_NATIONS = "(6, 7, 19, 22, 23)"
HIDDEN_ROW_ORACLES = [
    (
        "error_in_where",
        f"SELECT count(*) FROM sales.customer WHERE CASE WHEN c_nationkey NOT IN "
        f"{EUROPEAN_NATIONS} THEN error('hidden customer ' || c_custkey) ELSE true END",
    ),
    (
        "error_in_join_on",
        f"SELECT count(*) FROM sales.customer c JOIN reference.nation n ON "
        f"c.c_nationkey = n.n_nationkey AND CASE WHEN c.c_nationkey NOT IN {EUROPEAN_NATIONS} "
        "THEN error('hidden customer ' || c.c_custkey) ELSE true END",
    ),
    (
        "error_in_a_derived_table",
        f"SELECT count(*) FROM (SELECT * FROM sales.customer) t WHERE CASE WHEN t.c_nationkey "
        f"NOT IN {EUROPEAN_NATIONS} THEN error('hidden customer') ELSE true END",
    ),
    (
        "error_through_a_cte",
        f"WITH t AS (SELECT * FROM sales.customer) SELECT count(*) FROM t WHERE CASE WHEN "
        f"c_nationkey NOT IN {EUROPEAN_NATIONS} THEN error('hidden customer') ELSE true END",
    ),
    (
        "error_on_hidden_orders",
        "SELECT count(*) FROM sales.orders WHERE CASE WHEN o_custkey NOT IN "
        "(SELECT c_custkey FROM sales.customer) THEN error('hidden order ' || o_orderkey) "
        "ELSE true END",
    ),
]


@pytest.mark.parametrize(
    "sql", [sql for _, sql in HIDDEN_ROW_ORACLES], ids=[i for i, _ in HIDDEN_ROW_ORACLES]
)
def test_hidden_rows_never_reach_the_querys_predicates(sql, client, truth):
    """A predicate that fails on any row the filter hides must never fail: it only sees rows the
    principal may see (else the error, or its absence, would tell hidden rows apart)."""
    table = "orders" if "sales.orders" in sql else "customer"
    expected = truth("eu_analyst", f"SELECT count(*) FROM sales.{table}")
    assert run(client("eu_analyst"), sql) == expected
    assert expected != truth("admin", f"SELECT count(*) FROM sales.{table}")


# --- errors --------------------------------------------------------------------------------------

FAILING = [
    ("cast_of_a_masked_column", "analyst", "SELECT CAST(c_name AS INTEGER) FROM sales.customer"),
    (
        "cast_in_a_pushed_predicate",
        "analyst",
        "SELECT c_custkey FROM sales.customer WHERE CAST(c_phone AS INTEGER) = 1",
    ),
    (
        "cast_on_rows_of_hidden_customers",
        "eu_analyst",
        "SELECT * FROM sales.customer WHERE CAST(c_comment AS INTEGER) = 1",
    ),
    (
        "cast_on_hidden_orders",
        "eu_analyst",
        "SELECT count(*) FROM sales.orders_v1 WHERE CAST(o_comment AS INTEGER) = 1",
    ),
    (
        "cast_at_the_lake",
        "analyst",
        "SELECT * FROM fulfillment.lineitem WHERE CAST(l_comment AS INTEGER) = 1",
    ),
    ("cast_at_sqlite", "guest", "SELECT CAST(n_comment AS INTEGER) + 'x' FROM reference.nation"),
    ("unknown_column", "eu_analyst", "SELECT c_nam FROM sales.customer"),
    ("unknown_column_in_a_join", "analyst", JOIN_THROUGH_CUSTOMER.replace("n.n_name", "n.n_nam")),
    ("type_mismatch", "eu_analyst", "SELECT c_name + 1 FROM sales.customer"),
    ("error_function", "analyst", "SELECT error(c_address) FROM sales.customer"),
    ("denied_product", "guest", "SELECT c_name FROM sales.customer"),
    (
        "denied_product_in_a_cte",
        "guest",
        "WITH c AS (SELECT * FROM supply.supplier) SELECT * FROM c",
    ),
    ("misspelt_product", "guest", "SELECT * FROM sales.customerz"),
]


@pytest.mark.parametrize(
    ("principal", "sql"), [f[1:] for f in FAILING], ids=[f[0] for f in FAILING]
)
def test_errors_reveal_no_data_paths_filters_or_keys(principal, sql, client, secrets_of):
    message = refusal(client(principal), sql)
    assert message.startswith(CLIENT_ERRORS), message
    assert_reveals_nothing(message, secrets_of(principal), typed=sql)
    if "did you mean" in message:  # it suggests only what the principal may know of
        suggested = message.split("did you mean ", 1)[1].split("?", 1)[0].split(", ")
        assert all(not s.startswith("audit.") for s in suggested)
    with client(principal).cursor() as cur:  # and the server keeps serving
        cur.execute("SELECT count(*) FROM reference.region")
        assert cur.fetchone() == (5,)


# --- statements, names and functions that are refused -------------------------------------------

REFUSED = {
    # several statements
    "two_selects": "SELECT 1; SELECT 2",
    "select_then_drop": "SELECT c_name FROM sales.customer; DROP TABLE sales.customer",
    "comment_then_second_statement": "SELECT 1 /* */; SELECT * FROM sales.customer",
    "line_comment_then_statement": "SELECT 1 --\n; ATTACH 'x.duckdb' AS x",
    # DDL and DML
    "insert": "INSERT INTO sales.customer (c_custkey) VALUES (1)",
    "insert_select": "INSERT INTO sales.orders SELECT * FROM sales.orders",
    "update": "UPDATE sales.customer SET c_name = 'x'",
    "update_from": "UPDATE sales.customer SET c_name = n_name FROM reference.nation",
    "delete": "DELETE FROM sales.customer",
    "delete_in_a_cte": "WITH d AS (DELETE FROM sales.customer RETURNING *) SELECT * FROM d",
    "merge": "MERGE INTO sales.customer USING reference.nation ON TRUE WHEN MATCHED THEN DELETE",
    "truncate": "TRUNCATE sales.customer",
    "create_table": "CREATE TABLE t AS SELECT * FROM sales.customer",
    "create_temp_table": "CREATE TEMP TABLE t AS SELECT 1",
    "create_view": "CREATE VIEW v AS SELECT * FROM sales.customer",
    "create_macro": "CREATE MACRO m(x) AS x + 1",
    "create_secret": "CREATE SECRET s (TYPE s3, KEY_ID 'k', SECRET 's')",
    "alter_table": "ALTER TABLE sales.customer ADD COLUMN x INTEGER",
    "drop_table": "DROP TABLE sales.customer",
    "drop_view": "DROP VIEW sales.customer",
    "select_into": "SELECT * INTO t FROM sales.customer",
    "select_for_update": "SELECT * FROM sales.customer FOR UPDATE",
    "attach": "ATTACH 'stores/sales.duckdb' AS s",
    "attach_sqlite": "ATTACH 'stores/reference.sqlite' AS r (TYPE sqlite)",
    "detach": "DETACH sales",
    "copy_to": "COPY (SELECT * FROM sales.customer) TO 'out.csv'",
    "copy_from": "COPY sales.customer FROM 'in.csv'",
    "export_database": "EXPORT DATABASE 'out'",
    "import_database": "IMPORT DATABASE 'in'",
    "pragma": "PRAGMA database_list",
    "pragma_table_info": "PRAGMA table_info('customer')",
    "set": "SET enable_external_access = true",
    "reset": "RESET threads",
    "set_variable": "SET VARIABLE x = 1",
    "call": "CALL pragma_version()",
    "install": "INSTALL httpfs",
    "load": "LOAD httpfs",
    "use": "USE sales",
    "begin": "BEGIN TRANSACTION",
    "checkpoint": "CHECKPOINT",
    "vacuum": "VACUUM",
    "summarize": "SUMMARIZE sales.customer",
    "describe": "DESCRIBE sales.customer",
    "show_tables": "SHOW TABLES",
    "explain_analyze": "EXPLAIN ANALYZE SELECT * FROM sales.customer",
    # physical names
    "duckdb_table": "SELECT * FROM main.customer",
    "bare_table": "SELECT * FROM customer",
    "bare_sqlite_table": "SELECT * FROM nation",
    "store_catalog": "SELECT * FROM sales_db.main.customer",
    "store_file_catalog": 'SELECT * FROM "sales.duckdb".main.customer',
    "domain_and_schema": "SELECT * FROM sales.main.customer",
    "source_placeholder": "SELECT * FROM __source",
    "source_placeholder_of_a_product": 'SELECT * FROM "__source:sales.customer"',
    "source_placeholder_in_a_domain": 'SELECT * FROM sales."__source:sales.customer"',
    "fragment": "SELECT * FROM __fragment_1",
    "empty_relation": "SELECT * FROM __empty_1",
    "source_alias": "SELECT * FROM source_1",
    "lake_directory": "SELECT * FROM lineitem",
    "string_as_table": "SELECT * FROM 'stores/lake/lineitem/lineitem-0.parquet'",
    "quoted_dotted_name": 'SELECT * FROM "sales.customer"',
    # table functions
    "read_parquet": "SELECT * FROM read_parquet('stores/lake/lineitem/*.parquet')",
    "read_parquet_in_a_subquery": (
        "SELECT (SELECT count(*) FROM read_parquet('tpch/customer.parquet'))"
    ),
    "read_csv": "SELECT * FROM read_csv('/etc/passwd')",
    "read_csv_auto": "SELECT * FROM read_csv_auto('/etc/hosts')",
    "read_json": "SELECT * FROM read_json('x.json')",
    "read_text": "SELECT * FROM read_text('/etc/passwd')",
    "read_blob": "SELECT * FROM read_blob('stores/sales.duckdb')",
    "parquet_scan": "SELECT * FROM parquet_scan('tpch/customer.parquet')",
    "sqlite_scan": "SELECT * FROM sqlite_scan('stores/reference.sqlite', 'nation')",
    "glob": "SELECT * FROM glob('*')",
    "query_table": "SELECT * FROM query_table('customer')",
    "query": "SELECT * FROM query('SELECT * FROM customer')",
    "range": "SELECT * FROM range(3)",
    "json_execute_serialized_sql": "SELECT * FROM json_execute_serialized_sql('x')",
    "postgres_scan": "SELECT * FROM postgres_scan('dbname=test', 'public', 'customer')",
    "iceberg_scan": "SELECT * FROM iceberg_scan('x')",
    # system catalogs
    "information_schema_tables": "SELECT * FROM information_schema.tables",
    "information_schema_columns": "SELECT * FROM information_schema.columns",
    "duckdb_tables": "SELECT * FROM duckdb_tables()",
    "duckdb_settings": "SELECT * FROM duckdb_settings()",
    "duckdb_databases": "SELECT * FROM duckdb_databases()",
    "sqlite_master": "SELECT * FROM sqlite_master",
    "sqlite_schema": "SELECT * FROM main.sqlite_schema",
    "pg_catalog": "SELECT * FROM pg_catalog.pg_tables",
    "pg_class": "SELECT * FROM pg_class",
    "pragma_function": "SELECT * FROM pragma_table_info('customer')",
    # scalar functions that reach past the products
    "current_query": "SELECT current_query() FROM sales.customer",
    "current_database": "SELECT current_database() FROM reference.region",
    "current_schema": "SELECT current_schema() FROM reference.region",
    "current_user": "SELECT current_user FROM reference.region",
    "current_setting": "SELECT current_setting('threads')",
    "getenv": "SELECT getenv('HOME')",
    "stats": "SELECT stats(c_acctbal) FROM sales.customer",
    "query_to_xml": "SELECT query_to_xml('SELECT * FROM customer', true, true, '')",
    "table_to_xml": "SELECT table_to_xml('customer', true, true, '')",
    "pg_read_file": "SELECT pg_read_file('/etc/passwd')",
    "load_file": "SELECT load_file('/etc/passwd')",
    # look-alike names
    "backticks": "SELECT * FROM `sales`.`customer`",
    "cyrillic_a_in_the_domain": "SELECT * FROM s\u0430les.customer",
    "cyrillic_o_in_the_product": "SELECT * FROM sales.cust\u043emer",
    "fullwidth_letters": "SELECT * FROM \uff53ales.customer",
    "zero_width_space": "SELECT * FROM sales.cus\u200btomer",
}


@pytest.fixture(scope="module")
def store_digest(demo_mesh):
    """Size and modification time of every store file, to prove no attempt changed one."""

    def digest() -> list[tuple[str, int, int]]:
        paths = sorted(p for p in (Path(demo_mesh) / "stores").rglob("*") if p.is_file())
        return [(str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in paths]

    return digest


@pytest.mark.parametrize("sql", list(REFUSED.values()), ids=list(REFUSED))
def test_refused_and_nothing_written(sql, client, secrets_of, store_digest, demo_mesh):
    before = store_digest()
    for principal in ("analyst", "guest"):
        message = refusal(client(principal), sql)
        assert message.startswith(CLIENT_ERRORS), message
        assert_reveals_nothing(message, secrets_of(principal), typed=sql)
    assert store_digest() == before
    for folder in (Path(demo_mesh), Path.cwd()):
        assert not (folder / "out.csv").exists() and not (folder / "out").exists()


# --- metadata and EXPLAIN ----------------------------------------------------------------------


def test_metadata_lists_only_what_the_principal_may_read_or_discover(client, demo_mesh):
    """The demo's products are discoverable (`denied_products: discoverable`): guest sees them
    listed though it reads only reference; the audit trail (`when_denied: invisible`) it never
    sees, whatever the pattern."""
    mesh = load_mesh(demo_mesh)
    guest = client("guest")
    (catalog,) = guest.adbc_get_objects(depth="all").read_all().to_pylist()
    listed = {
        f"{schema['db_schema_name']}.{table['table_name']}"
        for schema in catalog["catalog_db_schemas"]
        for table in schema["db_schema_tables"]
    }
    assert listed == {a for a in mesh.products if not a.startswith("audit.")}
    for pattern in ("audit", "aud%", "%", "a_dit"):
        objects = guest.adbc_get_objects(depth="tables", db_schema_filter=pattern).read_all()
        schemas = objects.to_pylist()[0]["catalog_db_schemas"] if objects.num_rows else []
        assert "audit" not in {s["db_schema_name"] for s in schemas}, pattern
    tables = guest.adbc_get_objects(depth="tables", table_name_filter="%vent%").read_all()
    assert "events" not in str(tables.to_pylist())
    for table, domain in (("events", "audit"), ("events_v1", "audit")):
        with pytest.raises(adbc_driver_manager.Error):
            guest.adbc_get_table_schema(table, db_schema_filter=domain)
    schema = guest.adbc_get_table_schema("customer", db_schema_filter="sales")
    assert "c_custkey" in schema.names  # discoverable: its contract is shown, not its rows
    analyst_listed = {
        f"{s['db_schema_name']}.{t['table_name']}"
        for s in client("eu_analyst")
        .adbc_get_objects(depth="tables")
        .read_all()
        .to_pylist()[0]["catalog_db_schemas"]
        for t in s["db_schema_tables"]
    }
    assert analyst_listed == {a for a in mesh.products if a.split(".")[0] in DOMAINS}


def test_the_audit_trail_is_only_the_governance_groups(client, demo_mesh):
    """The trail holds every principal's statements, filters and the SQL sent to the stores."""
    if "audit.events" not in load_mesh(demo_mesh).products:
        pytest.skip("this demo mesh does not publish its audit trail as a product")
    for principal in ("analyst", "eu_analyst", "guest"):
        message = refusal(client(principal), "SELECT * FROM audit.events")
        assert message.startswith(("UNAUTHORIZED", "NOT_FOUND")), message
        (catalog,) = client(principal).adbc_get_objects(depth="db_schemas").read_all().to_pylist()
        assert "audit" not in {s["db_schema_name"] for s in catalog["catalog_db_schemas"]}
    denied = run(
        client("admin"),
        "SELECT principal FROM audit.events WHERE statement = 'SELECT * FROM audit.events' "
        "AND outcome = 'denied'",
    )
    assert {"analyst", "eu_analyst", "guest"} <= {row[0] for row in denied}


def _explain(connection, sql: str) -> str:
    return "\n".join(row[0] for row in run(connection, "EXPLAIN " + sql))


def test_explain_of_a_denied_product_is_refused(client, secrets_of):
    for sql in ("SELECT * FROM sales.customer", "SELECT 1; SELECT * FROM supply.supplier"):
        message = refusal(client("guest"), "EXPLAIN " + sql)
        assert message.startswith(CLIENT_ERRORS), message
        assert_reveals_nothing(message, secrets_of("guest"), typed=sql)


def test_explain_shows_no_other_principals_filters_and_never_the_key(client, served):
    _, gateway = served
    sql = JOIN_THROUGH_CUSTOMER.replace("SELECT n.n_name", "SELECT n.n_name, max(c.c_phone)")
    plans = {p: _explain(client(p), sql) for p in ("admin", "analyst", "eu_analyst")}
    assert "'EUROPE'" in plans["eu_analyst"]  # its own filter, compiled into the plan
    assert "EUROPE" not in plans["admin"] and "EUROPE" not in plans["analyst"]
    assert "****" in plans["analyst"] and "****" not in plans["admin"]
    for plan in plans.values():
        assert gateway.policy.mask_key not in plan


# --- tickets and prepared statements belong to one principal -------------------------------------


def _flight(uri: str, user: str) -> tuple[flight.FlightClient, flight.FlightCallOptions]:
    client = flight.FlightClient(uri)
    token = client.authenticate_basic_token(user, user)
    return client, flight.FlightCallOptions(headers=[token])


def test_tickets_and_prepared_handles_do_not_work_for_another_principal(served):
    uri, _ = served
    analyst, analyst_options = _flight(uri, "analyst")
    request = sql_pb2.ActionCreatePreparedStatementRequest(
        query="SELECT c_custkey, c_name FROM sales.customer"
    )
    (result,) = analyst.do_action(
        flight.Action("CreatePreparedStatement", _pack(request)), analyst_options
    )
    handle = _unpack(result.body.to_pybytes()).prepared_statement_handle
    prepared = flight.FlightDescriptor.for_command(
        _pack(sql_pb2.CommandPreparedStatementQuery(prepared_statement_handle=handle))
    )
    info = analyst.get_flight_info(prepared, analyst_options)
    ticket = info.endpoints[0].ticket
    names = analyst.do_get(ticket, analyst_options).read_all().column("c_name").to_pylist()
    assert names and all(n.startswith("****") for n in names)
    for other in ("admin", "guest"):  # admin would see clear names, guest no customers at all
        client, options = _flight(uri, other)
        with pytest.raises(pa.ArrowKeyError, match="unknown prepared statement"):
            client.get_flight_info(prepared, options)
        with pytest.raises(pa.ArrowKeyError, match="unknown ticket"):
            client.do_get(ticket, options).read_all()
    guest, guest_options = _flight(uri, "guest")
    statement = flight.FlightDescriptor.for_command(
        _pack(sql_pb2.CommandStatementQuery(query="SELECT c_name FROM sales.customer"))
    )
    with pytest.raises(flight.FlightUnauthorizedError):  # the unprepared path is governed too
        guest.get_flight_info(statement, guest_options)


# --- a lab mesh: injection, single-store filters, hash masks, filters over masked columns ------

LAB_PRINCIPALS = {
    "quote_or_true": (["analyst"], {"region": "EUROPE' OR '1'='1"}),
    "quote_comment": (["analyst"], {"region": "EUROPE') OR TRUE --"}),
    "eu_again": (["analyst"], {"region": "EUROPE"}),
    "regional": (["regional"], {"region": "EUROPE"}),
    "hasher": (["hasher"], {}),
    "excluder": (["excluder"], {}),
    "includer": (["includer"], {}),
}
LAB_ROLES = ("regional", "hasher", "excluder", "includer")
FIRST_CUSTOMER = "SELECT c_custkey FROM sales.customer WHERE c_name = 'Customer#000000001'"


@dataclass
class Lab:
    root: Path
    uri: str
    connections: dict = field(default_factory=dict)

    def __call__(self, user: str):
        """An open ADBC connection as ``user`` (password = user name), one per user."""
        if user not in self.connections:
            self.connections[user] = connect(self.uri, user)
        return self.connections[user]


@pytest.fixture(scope="module")
def lab(demo_mesh, tmp_path_factory):
    """A copy of the demo mesh with the principals and policies above, served with a known key."""
    root = tmp_path_factory.mktemp("lab") / "mesh"
    shutil.copytree(demo_mesh, root, ignore=shutil.ignore_patterns("tpch"))
    audit = root / "audit" / "events.jsonl"
    if audit.exists():
        audit.write_text("")  # the lab's own trail starts empty
    principals = yaml.safe_load((root / "principals.yaml").read_text())
    for name, (roles, attributes) in LAB_PRINCIPALS.items():
        principals["principals"][name] = {
            "password_hash": hash_password(name, rounds=4),
            "roles": roles,
            "attributes": attributes,
        }
    (root / "principals.yaml").write_text(yaml.safe_dump(principals))
    policies = root / "policies"
    rules = yaml.safe_load((policies / "global.yaml").read_text())
    rules["roles"].update({role: [] for role in LAB_ROLES})
    rules["grants"] += [
        {"role": "regional", "products": "reference.*"},
        {"role": ["hasher", "excluder", "includer"], "products": ["sales.*", "reference.*"]},
    ]
    rules["masks"].append(
        {
            "column": ["sales.customer.c_custkey", "sales.orders.o_custkey"],
            "mask": "hash",
            "unless": ["admin", "analyst", "regional", "excluder", "includer"],
        }
    )
    (policies / "global.yaml").write_text(yaml.safe_dump(rules))
    sales = yaml.safe_load((policies / "sales.yaml").read_text())
    sales["row_filters"] += [
        {
            "role": ["hasher", "excluder", "includer"],
            "products": "sales.customer",
            "filter": "TRUE",
        },
        {"role": "hasher", "products": "sales.orders", "filter": "TRUE"},
        # filters reading a column masked for the principal (c_name is pii)
        {
            "role": "excluder",
            "products": "sales.orders",
            "filter": f"o_custkey NOT IN ({FIRST_CUSTOMER})",
        },
        {
            "role": "includer",
            "products": "sales.orders",
            "filter": f"o_custkey IN ({FIRST_CUSTOMER})",
        },
    ]
    (policies / "sales.yaml").write_text(yaml.safe_dump(sales))
    # a filter whose product and subquery live in one SQLite store: the query goes down whole
    reference = {
        "row_filters": [
            {
                "role": "regional",
                "products": "reference.nation",
                "filter": "n_regionkey IN "
                "(SELECT r_regionkey FROM reference.region WHERE r_name = ${region})",
            },
            {
                "role": ["admin", "analyst", "guest", *LAB_ROLES[1:]],
                "products": "reference.nation",
                "filter": "TRUE",
            },
        ]
    }
    (policies / "reference.yaml").write_text(yaml.safe_dump(reference))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MESHGATE_MASK_KEY", LAB_MASK_KEY)
        with running_server(root) as (uri, _):
            served = Lab(root, uri)
            yield served
            for connection in served.connections.values():
                connection.close()


@pytest.mark.parametrize("principal", ["quote_or_true", "quote_comment"])
def test_attribute_values_are_literals_not_sql(principal, lab, truth):
    european = truth("eu_analyst", "SELECT count(*) FROM sales.customer")
    assert run(lab("eu_again"), "SELECT count(*) FROM sales.customer") == european
    for product in ("sales.customer", "sales.orders", "sales.orders_v1"):
        assert run(lab(principal), f"SELECT count(*) FROM {product}") == [(0,)]


REGION_FAKES = " UNION ALL ".join(
    f"SELECT {k} AS r_regionkey, 'EUROPE' AS r_name, '' AS r_comment" for k in range(5)
)


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT count(*) FROM reference.nation",
        f"WITH region AS ({REGION_FAKES}) SELECT count(*), max(r.k || r.n) FROM reference.nation, "
        "(SELECT max(r_regionkey) AS k, max(r_name) AS n FROM region) r",
        f'WITH "__source:reference.region" AS ({REGION_FAKES}) SELECT count(*), max(r.k) '
        'FROM reference.nation, (SELECT max(r_regionkey) AS k FROM "__source:reference.region") r',
    ],
    ids=["plain", "cte_named_like_the_physical_table", "cte_named_like_the_source"],
)
def test_a_filter_run_whole_by_one_store_cannot_be_fed_or_probed(sql, lab, truth):
    """reference.nation is filtered by a subquery on reference.region, in the same SQLite file."""
    european = truth(
        "admin",
        "SELECT count(*) FROM reference.nation JOIN reference.region ON n_regionkey = r_regionkey "
        "WHERE r_name = 'EUROPE'",
    )
    (row,) = run(lab("regional"), sql)
    assert row[:1] == european[0]


def test_hash_masks_keep_their_key_secret(lab, truth):
    hashed = run(lab("hasher"), "SELECT c_custkey FROM sales.customer")
    assert [(len(hashed),)] == truth("admin", "SELECT count(*) FROM sales.customer")
    assert all(len(value) == 32 for (value,) in hashed)
    join = "SELECT count(*) FROM sales.orders o JOIN sales.customer c ON o.o_custkey = c.c_custkey"
    assert run(lab("hasher"), join) == truth("admin", join)  # hashed identifiers still join
    for sql in (
        "SELECT c_name FROM sales.customer WHERE CAST(c_custkey AS INTEGER) = 1",
        "SELECT CAST(c_custkey AS INTEGER) FROM sales.customer",
        "SELECT c_custkey::DATE FROM sales.customer",
        "SELECT current_query() FROM sales.customer",
    ):
        message = refusal(lab("hasher"), sql)
        assert message.startswith(CLIENT_ERRORS), message
        assert LAB_MASK_KEY not in message and "main.customer" not in message
    plan = _explain(lab("hasher"), "SELECT c_custkey FROM sales.customer")
    assert "MD5" in plan.upper() and LAB_MASK_KEY not in plan
    audit = (lab.root / "audit" / "events.jsonl").read_text(encoding="utf-8")
    assert '"principal":"hasher","statement":"SELECT c_name' in audit
    assert LAB_MASK_KEY not in audit


@pytest.mark.parametrize(
    ("principal", "expected"),
    [
        ("excluder", "SELECT count(*) FROM orders WHERE o_custkey <> 1"),
        ("includer", "SELECT count(*) FROM orders WHERE o_custkey = 1"),
    ],
)
def test_row_filters_compare_clear_values_of_the_products_they_read(
    principal, expected, lab, truth
):
    """A filter reading a column masked for the principal (c_name) must neither let the rows it
    excludes through (NOT IN over masked values matches nothing) nor drop the ones it admits."""
    (want,) = truth("admin", expected.replace("orders", "memory.main.orders"))
    assert run(lab(principal), "SELECT count(*) FROM sales.orders") == [want]
    names = run(lab(principal), "SELECT c_name FROM sales.customer WHERE c_custkey = 1")
    assert names == [("****0001",)]  # the filter's clear read never reaches the principal

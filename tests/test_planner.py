"""The planner's rules one at a time, on a small two-store mesh: input SQL, expected SQL.

Some fixtures are executed: the plan's answer must equal DuckDB's over the same data.
"""

from __future__ import annotations

import sqlite3
import textwrap

import duckdb
import pytest
from sqlglot import exp

from gateway.errors import InvalidQuery, NotFound
from gateway.planner import plan_query
from gateway.planner.govern import apply_governance
from gateway.planner.parameters import shape_key
from gateway.planner.parse import parse_statement
from gateway.planner.resolve import product_address, resolve_products
from gateway.service import Gateway
from tests.support.mesh import grant_everything

ORDERS = [(k, k % 3, f"{k * 1.5:.2f}") for k in range(1, 31)] + [(31, None, "9.99"), (32, 7, None)]
NATIONS = [(0, "ALGERIA"), (1, "ARGENTINA"), (2, "BRAZIL"), (5, "EGYPT"), (6, None)]
ITEMS = [(k, q) for k in range(1, 33) for q in (k % 4, 10 + k % 4)] + [(None, 3)]


@pytest.fixture(scope="module")
def gateway(tmp_path_factory):
    root = tmp_path_factory.mktemp("planner-mesh")
    (root / "sales").mkdir()
    (root / "reference").mkdir()
    con = duckdb.connect(str(root / "sales.duckdb"))
    con.execute("CREATE TABLE orders (o_orderkey BIGINT, o_custkey BIGINT, o_total DECIMAL(15,2))")
    con.executemany("INSERT INTO orders VALUES (?, ?, ?)", ORDERS)
    con.execute("CREATE TABLE secrets (s VARCHAR)")
    con.close()
    lite = sqlite3.connect(root / "ref.sqlite")
    lite.execute("CREATE TABLE nation (n_nationkey BIGINT, n_name VARCHAR)")
    lite.executemany("INSERT INTO nation VALUES (?, ?)", NATIONS)
    lite.commit()
    lite.close()
    (root / "fulfillment").mkdir()
    (root / "lake" / "items").mkdir(parents=True)
    items = duckdb.connect()
    items.execute("CREATE TABLE items (i_orderkey BIGINT, i_qty INTEGER)")
    items.executemany("INSERT INTO items VALUES (?, ?)", ITEMS)
    # small row groups in key order, as lineitem is: a range of keys skips most of them
    target = root / "lake" / "items" / "i.parquet"
    items.execute(
        f"COPY (SELECT * FROM items ORDER BY i_orderkey) TO '{target}' "
        "(FORMAT parquet, ROW_GROUP_SIZE 8)"
    )
    items.close()
    (root / "mesh.yaml").write_text(
        textwrap.dedent(
            """
            name: t
            stores:
              sales_db: {kind: duckdb, path: sales.duckdb}
              ref: {kind: sqlite, path: ref.sqlite}
              lake: {kind: files, root: lake}
            """
        )
    )
    descriptor = """
        product: {name}
        version: 1
        owner: team@example.com
        description: test
        store: {store}
        table: {table}
        columns:
        {columns}
    """
    (root / "sales" / "orders.yaml").write_text(
        textwrap.dedent(descriptor).format(
            name="orders",
            store="sales_db",
            table="orders",
            columns="  - {name: o_orderkey, type: bigint}\n  - {name: o_custkey, type: bigint}\n"
            '  - {name: o_total, type: "decimal(15,2)"}',
        )
    )
    (root / "reference" / "nation.yaml").write_text(
        textwrap.dedent(descriptor).format(
            name="nation",
            store="ref",
            table="nation",
            columns="  - {name: n_nationkey, type: bigint}\n  - {name: n_name, type: varchar}",
        )
    )
    (root / "fulfillment" / "items.yaml").write_text(
        textwrap.dedent(descriptor).format(
            name="items",
            store="lake",
            table="items/*.parquet",
            columns="  - {name: i_orderkey, type: bigint}\n  - {name: i_qty, type: integer}",
        )
    )
    grant_everything(root)
    gateway = Gateway.open(root)
    yield gateway
    gateway.close()


@pytest.fixture
def context(gateway):
    return gateway.context(gateway.principals.get("tester"))


RESOLVE = [
    ("SELECT * FROM sales.orders", ["sales.orders"]),
    ('SELECT * FROM "SALES"."Orders" AS o', ["sales.orders"]),
    ("SELECT * FROM mesh.sales.orders_v1", ["sales.orders_v1"]),
    ("WITH x AS (SELECT * FROM reference.nation) SELECT * FROM x", ["reference.nation"]),
]


@pytest.mark.parametrize(("sql", "addresses"), RESOLVE)
def test_resolve_annotates_product_references(sql, addresses, context):
    resolved = resolve_products(parse_statement(sql, dialect="duckdb"), context=context)
    tables = resolved.find_all(exp.Table)
    found = [product_address(t) for t in tables if product_address(t)]
    assert found == addresses


@pytest.mark.parametrize(
    ("sql", "error", "says"),
    [
        ("SELECT * FROM orders", NotFound, "<domain>.<product>"),
        ("SELECT * FROM main.orders", NotFound, "no data product 'main.orders'"),
        ("SELECT * FROM sales.secrets", NotFound, "no data product"),
        ("SELECT * FROM other.sales.orders", NotFound, "catalog is 'mesh'"),
        ("SELECT * FROM sales.ordrs", NotFound, "did you mean sales.orders"),
        ("SELECT * FROM range(10)", InvalidQuery, "not a data product"),
    ],
)
def test_resolve_refuses_everything_but_product_addresses(sql, error, says, context):
    with pytest.raises(error, match=says):
        resolve_products(parse_statement(sql, dialect="duckdb"), context=context)


def test_govern_projects_only_the_contract_columns(context):
    resolved = resolve_products(
        parse_statement("SELECT * FROM sales.orders AS o", dialect="duckdb"), context=context
    )
    governed = apply_governance(resolved, context=context)
    assert governed.sql("duckdb") == (
        'SELECT * FROM (SELECT "o_orderkey", "o_custkey", "o_total" '
        'FROM "__source:sales.orders") AS o'
    )
    assert resolved.sql("duckdb") == "SELECT * FROM sales.orders AS o", "rules never mutate input"


SPLIT = [
    (
        "SELECT count(*) AS n FROM sales.orders WHERE o_custkey = 1",
        ["sales_db"],
        None,
    ),
    (
        "SELECT n_name FROM reference.nation ORDER BY n_nationkey LIMIT 1",
        ["ref"],
        None,
    ),
    (
        "SELECT n.n_name, sum(o.o_total) AS total FROM sales.orders o "
        "JOIN reference.nation n ON n.n_nationkey = o.o_custkey GROUP BY n.n_name ORDER BY 1",
        ["sales_db", "ref"],
        "JOIN",
    ),
    (
        "WITH n AS (SELECT * FROM reference.nation) "
        "SELECT a.n_name, b.n_name FROM n a JOIN n b ON a.n_nationkey = b.n_nationkey + 1 "
        "JOIN sales.orders o ON o.o_orderkey = a.n_nationkey ORDER BY 1",
        ["ref", "sales_db"],
        "WITH",
    ),
]


@pytest.fixture(scope="module")
def reference():
    """The same data in one DuckDB, for the answers the plans must give."""
    con = duckdb.connect()
    con.execute("CREATE TABLE orders (o_orderkey BIGINT, o_custkey BIGINT, o_total DECIMAL(15,2))")
    con.executemany("INSERT INTO orders VALUES (?, ?, ?)", ORDERS)
    con.execute("CREATE TABLE nation (n_nationkey BIGINT, n_name VARCHAR)")
    con.executemany("INSERT INTO nation VALUES (?, ?)", NATIONS)
    con.execute("CREATE TABLE items (i_orderkey BIGINT, i_qty INTEGER)")
    con.executemany("INSERT INTO items VALUES (?, ?)", ITEMS)
    yield con
    con.close()


@pytest.mark.parametrize(("sql", "stores", "local_has"), SPLIT)
def test_split_pushes_single_store_queries_whole_and_runs_the_rest_locally(
    sql, stores, local_has, gateway, context, reference
):
    plan = plan_query(sql, context=context)
    assert sorted(f.store for f in plan.fragments) == sorted(stores)
    if local_has is None:
        assert plan.local_sql is None
    else:
        assert local_has in plan.local_sql
    answer = gateway.execute(plan).read_all()
    expected = reference.execute(sql.replace("sales.", "").replace("reference.", "")).fetchall()
    assert expected, "a fixture that returns nothing proves nothing"
    assert [tuple(row.values()) for row in answer.to_pylist()] == expected


def test_parameters_bind_as_literals_in_order(context):
    plan = plan_query(
        "SELECT o_orderkey FROM sales.orders WHERE o_custkey = ? AND o_orderkey < ?",
        context=context,
        parameters=[2, 10],
    )
    (fragment,) = plan.fragments
    assert '"o_custkey" = 2 AND "source_1"."o_orderkey" < 10' in fragment.sql
    with pytest.raises(InvalidQuery, match="1 value"):
        plan_query(
            "SELECT * FROM sales.orders WHERE o_custkey = ? AND o_total > ?",
            context=context,
            parameters=[1],
        )


TEMPLATES = {
    "a point query": ("SELECT * FROM sales.orders WHERE o_orderkey = ?", [3], [17]),
    "values on both sides of a cross-store join": (
        "SELECT o.o_orderkey, n.n_name FROM sales.orders o JOIN reference.nation n "
        "ON n.n_nationkey = o.o_custkey WHERE o.o_total > ? AND n.n_name <> ? ORDER BY 1",
        [10, "EGYPT"],
        [30, "it's"],
    ),
    "equal values in two fragments, then different ones": (
        "WITH a AS (SELECT o_orderkey FROM sales.orders WHERE o_orderkey = ?), "
        "b AS (SELECT o_orderkey FROM sales.orders WHERE o_orderkey = ?) "
        "SELECT a.o_orderkey AS x, b.o_orderkey AS y, n.n_name FROM a, b, reference.nation n "
        "WHERE n.n_nationkey = 0",
        [1, 1],
        [1, 2],
    ),
    "a value the local engine computes with": (
        "SELECT n.n_name || ? AS tagged, count(*) AS n FROM sales.orders o "
        "JOIN reference.nation n ON n.n_nationkey = o.o_custkey GROUP BY 1 HAVING count(*) > ? "
        "ORDER BY 1",
        ["!", 1],
        ["?", 9],
    ),
    "a value in a subquery and in LIMIT": (
        "SELECT o_orderkey FROM sales.orders WHERE o_custkey IN "
        "(SELECT n_nationkey FROM reference.nation WHERE n_name LIKE ?) ORDER BY 1 LIMIT ?",
        ["A%", 3],
        ["B%", 3],
    ),
    "values in an OR across relations, factored into each": (
        "SELECT n.n_name, o.o_orderkey FROM sales.orders o, reference.nation n "
        "WHERE (o.o_custkey = n.n_nationkey AND n.n_name = ? AND o.o_total > ?) "
        "OR (o.o_custkey = n.n_nationkey AND n.n_name = ? AND o.o_total < ?) ORDER BY 1, 2",
        ["BRAZIL", 10, "EGYPT", 5],
        ["ALGERIA", 20, "ARGENTINA", 9],
    ),
    "decimals of one shape": (
        "SELECT o_orderkey, o_total * ? AS scaled FROM sales.orders WHERE o_total < ? ORDER BY 1",
        [1.5, 9.25],
        [2.5, 7.75],
    ),
}


@pytest.mark.parametrize(("sql", "first", "then"), TEMPLATES.values(), ids=TEMPLATES.keys())
def test_a_plan_made_for_some_values_serves_others_of_their_shape(
    sql, first, then, gateway, context, reference
):
    """The plan cache binds new values into a plan made for others; that must be the very plan
    planning the new values would make, and give DuckDB's answer."""
    principal = gateway.principals.get("tester")
    fresh = plan_query(sql, context=context, parameters=then)
    assert shape_key(sql, "duckdb", first) == shape_key(sql, "duckdb", then)
    gateway.plan(sql, principal, first)  # made and cached for the first values
    misses = gateway.plans.misses
    rebound = gateway.plan(sql, principal, then)
    assert gateway.plans.misses == misses, "values of the same shape were planned again"
    assert rebound.reusable
    assert [(f.store, f.sql) for f in rebound.fragments] == [
        (f.store, f.sql) for f in fresh.fragments
    ]
    assert rebound.local_sql == fresh.local_sql
    assert rebound.schema == fresh.schema
    answer = gateway.execute(rebound).read_all()
    local = sql.replace("sales.", "").replace("reference.", "")
    expected = reference.execute(local, then).fetchall()
    assert expected, "a fixture that returns nothing proves nothing"
    assert [tuple(row.values()) for row in answer.to_pylist()] == expected


def test_values_in_plain_places_are_written_into_kept_text(context):
    """Binding rewrites only the values, not the whole SQL, where no dialect rewrites around
    them; a LIKE pattern or a function's argument has the whole tree written again."""
    plain = plan_query(
        "SELECT o_orderkey FROM sales.orders WHERE o_orderkey = ? OR o_total > ?",
        context=context,
        parameters=[3, 2.5],
    )
    (fragment,) = plain.fragments
    assert fragment.template.writes_text
    assert "= 4 OR" in fragment.bind([4, 2.5]).sql and "> 7.5" in fragment.bind([3, 7.5]).sql
    pattern = plan_query(
        "SELECT n_name FROM reference.nation WHERE n_name LIKE ? OR substr(n_name, ?, 1) = 'A'",
        context=context,
        parameters=["A%", 1],
    )
    (fragment,) = pattern.fragments
    assert not fragment.template.writes_text
    assert "LIKE 'E%'" in fragment.bind(["E%", 1]).sql


@pytest.mark.parametrize(
    ("first", "then"),
    [
        (5, 5_000_000_000),  # INTEGER, then BIGINT
        (1.5, 12.25),  # DECIMAL(2,1), then DECIMAL(4,2)
        (1, 1.0),
        (1, True),
        (1, "1"),
        (1, None),
    ],
)
def test_values_whose_literals_type_differently_are_planned_apart(first, then, gateway):
    sql = "SELECT ? AS v, o_orderkey FROM sales.orders WHERE o_orderkey = 1"
    assert shape_key(sql, "duckdb", [first]) != shape_key(sql, "duckdb", [then])
    principal = gateway.principals.get("tester")
    answer = gateway.execute(gateway.plan(sql, principal, [then])).read_all()
    assert answer.column("v").to_pylist() == [then]


def test_a_value_in_limit_is_part_of_the_plan(gateway):
    sql = "SELECT o_orderkey FROM sales.orders ORDER BY 1 LIMIT ?"
    assert shape_key(sql, "duckdb", [2]) != shape_key(sql, "duckdb", [3])
    principal = gateway.principals.get("tester")
    for limit in (2, 3):
        rows = gateway.execute(gateway.plan(sql, principal, [limit])).read_all().num_rows
        assert rows == limit


SEMANTICS = {
    "left join, filter on the null-supplying side": (
        "SELECT n.n_name, o.o_orderkey FROM reference.nation n "
        "LEFT JOIN sales.orders o ON o.o_custkey = n.n_nationkey "
        "WHERE o.o_orderkey IS NULL ORDER BY 1"
    ),
    "left join, filter in ON": (
        "SELECT n.n_nationkey, count(o.o_orderkey) FROM reference.nation n "
        "LEFT JOIN sales.orders o ON o.o_custkey = n.n_nationkey AND o.o_total > 20 "
        "GROUP BY 1 ORDER BY 1"
    ),
    "full join": (
        "SELECT n.n_nationkey, o.o_custkey FROM reference.nation n "
        "FULL JOIN (SELECT DISTINCT o_custkey FROM sales.orders) o ON o.o_custkey = n.n_nationkey "
        "ORDER BY 1 NULLS LAST, 2 NULLS LAST"
    ),
    "limit inside, filter outside": (
        "SELECT * FROM (SELECT o_orderkey, o_custkey FROM sales.orders "
        "ORDER BY o_orderkey LIMIT 5) t "
        "JOIN reference.nation n ON n.n_nationkey = t.o_custkey WHERE t.o_custkey = 1 ORDER BY 1"
    ),
    "window inside, filter outside": (
        "SELECT * FROM (SELECT o_orderkey, o_custkey, row_number() OVER "
        "(PARTITION BY o_custkey ORDER BY o_orderkey) AS rn FROM sales.orders) t "
        "JOIN reference.nation n ON n.n_nationkey = t.o_custkey WHERE t.rn <= 2 ORDER BY 1"
    ),
    "aggregate inside, having and filter outside": (
        "SELECT n.n_name, t.total FROM (SELECT o_custkey, sum(o_total) AS total FROM sales.orders "
        "GROUP BY o_custkey HAVING count(*) > 5) t JOIN reference.nation n "
        "ON n.n_nationkey = t.o_custkey WHERE t.total > 200 ORDER BY 1"
    ),
    "union inside": (
        "SELECT k, count(*) FROM (SELECT o_custkey AS k FROM sales.orders UNION ALL "
        "SELECT n_nationkey FROM reference.nation) u GROUP BY k ORDER BY k NULLS FIRST"
    ),
    "correlated subquery": (
        "SELECT n.n_name FROM reference.nation n WHERE EXISTS (SELECT 1 FROM sales.orders o "
        "WHERE o.o_custkey = n.n_nationkey AND o.o_total > 40) ORDER BY 1"
    ),
    "null comparisons and IN": (
        "SELECT count(*) FROM sales.orders o WHERE o.o_custkey NOT IN "
        "(SELECT n_nationkey FROM reference.nation WHERE n_name IS NOT NULL)"
    ),
    "like compares case, at SQLite too": (
        "SELECT n_name FROM reference.nation WHERE n_name LIKE 'a%' OR n_name LIKE 'E%' ORDER BY 1"
    ),
    "an empty SQLite fragment keeps its text columns": (
        "SELECT o.o_orderkey, upper(n.n_name) AS n FROM sales.orders o "
        "LEFT JOIN reference.nation n ON n.n_nationkey = o.o_custkey AND n.n_name = 'ATLANTIS' "
        "ORDER BY 1 LIMIT 3"
    ),
    "distinct and scalar subquery": (
        "SELECT DISTINCT o_custkey, (SELECT max(n_name) FROM reference.nation) AS m "
        "FROM sales.orders ORDER BY 1 NULLS FIRST"
    ),
}


@pytest.mark.parametrize("sql", SEMANTICS.values(), ids=SEMANTICS.keys())
def test_pushdown_keeps_the_meaning(sql, gateway, context, reference):
    plan = plan_query(sql, context=context)
    answer = gateway.execute(plan).read_all()
    expected = reference.execute(sql.replace("sales.", "").replace("reference.", "")).fetchall()
    assert expected, "a fixture that returns nothing proves nothing"
    assert [tuple(row.values()) for row in answer.to_pylist()] == expected


EXISTS = {
    "star": "SELECT n.n_name FROM reference.nation n WHERE EXISTS (SELECT * FROM sales.orders o "
    "WHERE o.o_custkey = n.n_nationkey) ORDER BY 1",
    "aggregate, a row whatever matches": "SELECT n.n_name FROM reference.nation n WHERE EXISTS "
    "(SELECT count(*) FROM sales.orders o WHERE o.o_custkey = n.n_nationkey AND o.o_total > 1000) "
    "ORDER BY 1",
}


@pytest.mark.parametrize("sql", EXISTS.values(), ids=EXISTS.keys())
def test_exists_fetches_only_the_columns_its_subquery_reads(sql, gateway, context, reference):
    """The expanded star of EXISTS (SELECT * ...) used to fetch every column from the store."""
    plan = plan_query(sql, context=context)
    (orders,) = (f for f in plan.fragments if f.store == "sales_db")
    assert "o_custkey" in orders.sql and "o_orderkey" not in orders.sql
    answer = gateway.execute(plan).read_all()
    expected = reference.execute(sql.replace("sales.", "").replace("reference.", "")).fetchall()
    assert expected, "a fixture that returns nothing proves nothing"
    assert [tuple(row.values()) for row in answer.to_pylist()] == expected


def _local(sql: str) -> str:
    """``sql`` over the reference DuckDB's tables."""
    for domain in ("sales.", "reference.", "fulfillment."):
        sql = sql.replace(domain, "")
    return sql


def _answers_as_reference(gateway, plan, sql, reference, *, sent=None) -> None:
    answer = gateway.execute(plan, sent=sent).read_all()
    expected = reference.execute(_local(sql)).fetchall()
    assert expected, "a fixture that returns nothing proves nothing"
    assert [tuple(row.values()) for row in answer.to_pylist()] == expected


def _probe_sql(sent: list[tuple[str, str]], store: str) -> str:
    (sql,) = [q for s, q in sent if s == store]
    return sql


DYNAMIC = {
    "inner join": (
        "SELECT o.o_orderkey FROM sales.orders o JOIN reference.nation n "
        "ON n.n_nationkey = o.o_custkey WHERE n.n_name = 'BRAZIL' ORDER BY 1"
    ),
    "right side of a left join": (
        "SELECT n.n_name, o.o_orderkey FROM reference.nation n LEFT JOIN sales.orders o "
        "ON o.o_custkey = n.n_nationkey WHERE n.n_name IN ('BRAZIL', 'EGYPT') ORDER BY 1, 2"
    ),
    # a point filter is taken to select fewer rows than a range
    "both filtered, the point filter builds": (
        "SELECT o.o_orderkey FROM sales.orders o JOIN reference.nation n "
        "ON n.n_nationkey = o.o_custkey WHERE n.n_name = 'BRAZIL' AND o.o_total > 10 ORDER BY 1"
    ),
    "an EXISTS subquery correlated with the filtered side": (
        "SELECT n.n_name FROM reference.nation n WHERE n.n_name IN ('BRAZIL', 'EGYPT') AND EXISTS "
        "(SELECT 1 FROM sales.orders o WHERE o.o_custkey = n.n_nationkey AND o.o_total > 4) "
        "ORDER BY 1"
    ),
    "a NOT EXISTS subquery correlated with the filtered side": (
        "SELECT n.n_name FROM reference.nation n WHERE n.n_name IN ('BRAZIL', 'EGYPT') "
        "AND NOT EXISTS (SELECT 1 FROM sales.orders o WHERE o.o_custkey = n.n_nationkey "
        "AND o.o_total > 40) ORDER BY 1"
    ),
}


@pytest.mark.parametrize("sql", DYNAMIC.values(), ids=DYNAMIC.keys())
def test_a_filtered_side_narrows_its_partner_at_the_store(sql, gateway, context, reference):
    plan = plan_query(sql, context=context)
    (dynamic,) = plan.dynamic_filters
    probe = next(f for f in plan.fragments if f.name == dynamic.probe)
    assert probe.store == "sales_db" and dynamic.probe_column == "o_custkey"
    assert "dynamic filter" in plan.explain()
    sent: list[tuple[str, str]] = []
    _answers_as_reference(gateway, plan, sql, reference, sent=sent)
    assert "IN (2" in _probe_sql(sent, "sales_db")


def test_a_scalar_subquery_over_the_probe_is_narrowed_too(gateway, context, reference):
    """TPC-H Q17's shape: the outer read of a table and the correlated aggregate over it."""
    sql = (
        "SELECT count(o.o_orderkey) AS c, sum(o.o_total) AS t FROM sales.orders o "
        "JOIN reference.nation n "
        "ON n.n_nationkey = o.o_custkey WHERE n.n_name IN ('BRAZIL', 'ARGENTINA') AND o.o_total "
        "< (SELECT avg(o2.o_total) FROM sales.orders o2 WHERE o2.o_custkey = n.n_nationkey)"
    )
    plan = plan_query(sql, context=context)
    assert {f.probe_column for f in plan.dynamic_filters} == {"o_custkey"}
    assert len(plan.dynamic_filters) == 2
    sent: list[tuple[str, str]] = []
    _answers_as_reference(gateway, plan, sql, reference, sent=sent)
    narrowed = [q for s, q in sent if s == "sales_db"]
    assert len(narrowed) == 2 and all("IN (1, 2)" in q for q in narrowed)


CHAIN = (
    "SELECT n.n_name, o.o_orderkey, sum(i.i_qty) AS q FROM reference.nation n "
    "JOIN sales.orders o ON o.o_custkey = n.n_nationkey "
    "JOIN fulfillment.items i ON i.i_orderkey = o.o_orderkey "
    "WHERE n.n_name = 'BRAZIL' GROUP BY 1, 2 ORDER BY 1, 2"
)


def test_filters_chain_through_the_join_order(gateway, context, reference):
    """nation narrows orders, whose keys then narrow items: each probe waits for its build."""
    plan = plan_query(CHAIN, context=context)
    stores = {f.name: f.store for f in plan.fragments}
    edges = [(stores[f.build], stores[f.probe]) for f in plan.dynamic_filters]
    assert edges == [("ref", "sales_db"), ("sales_db", "lake")]
    sent: list[tuple[str, str]] = []
    _answers_as_reference(gateway, plan, CHAIN, reference, sent=sent)
    assert [s for s, _ in sent] == ["ref", "sales_db", "lake"]
    assert "IN (2, 5, 8, 11, 14, 17, 20, 23, 26, 29)" in _probe_sql(sent, "lake")


def test_many_keys_go_as_a_table_or_a_range(gateway, context, reference, monkeypatch):
    """Past MAX_KEYS, a store that reads tables gets a semi-join with the keys (and their range,
    for its Parquet row groups); another store gets the range alone."""
    from gateway import executor

    monkeypatch.setattr(executor, "MAX_KEYS", 2)
    monkeypatch.setattr(executor, "KEY_TABLE_FROM", 2)
    sent: list[tuple[str, str]] = []
    _answers_as_reference(gateway, plan_query(CHAIN, context=context), CHAIN, reference, sent=sent)
    lake = _probe_sql(sent, "lake")
    assert "BETWEEN 2 AND 29" in lake and 'IN (SELECT "key" FROM __meshgate_keys_1)' in lake
    sql = (
        "SELECT o.o_orderkey, n.n_name FROM sales.orders o JOIN reference.nation n "
        "ON n.n_nationkey = o.o_custkey WHERE o.o_orderkey BETWEEN 4 AND 20 ORDER BY 1"
    )
    sent = []
    _answers_as_reference(gateway, plan_query(sql, context=context), sql, reference, sent=sent)
    assert _probe_sql(sent, "ref").endswith('WHERE "n_nationkey" BETWEEN 0 AND 2')


def test_a_fragment_read_twice_is_fetched_per_read_where_each_can_be_narrowed(
    gateway, context, reference
):
    """TPC-H Q21's shape: one read of items joins the filtered orders, the other is correlated
    with the first. Fetched once, neither read could be narrowed."""
    sql = (
        "SELECT i1.i_orderkey, i1.i_qty FROM fulfillment.items i1 JOIN sales.orders o "
        "ON o.o_orderkey = i1.i_orderkey WHERE o.o_custkey = 1 AND EXISTS (SELECT 1 FROM "
        "fulfillment.items i2 WHERE i2.i_orderkey = i1.i_orderkey AND i2.i_qty <> i1.i_qty) "
        "ORDER BY 1, 2"
    )
    plan = plan_query(sql, context=context)
    first, second = [f for f in plan.fragments if f.store == "lake"]
    assert first.sql == second.sql and first.name != second.name
    stores = {f.name: f.store for f in plan.fragments}
    assert [(stores[f.build], f.probe) for f in plan.dynamic_filters] == [
        ("sales_db", first.name),
        ("lake", second.name),
    ]
    sent: list[tuple[str, str]] = []
    _answers_as_reference(gateway, plan, sql, reference, sent=sent)
    narrowed = [q for s, q in sent if s == "lake"]
    assert all("IN (1, 4, 7, 10, 13, 16, 19, 22, 25, 28)" in q for q in narrowed)


def test_a_fragment_read_twice_at_a_remote_store_is_fetched_once(gateway, context, reference):
    sql = (
        "SELECT o.o_orderkey, n1.n_name FROM sales.orders o JOIN reference.nation n1 "
        "ON n1.n_nationkey = o.o_custkey WHERE EXISTS (SELECT 1 FROM reference.nation n2 "
        "WHERE n2.n_nationkey = n1.n_nationkey + 1 AND n2.n_name <> n1.n_name) ORDER BY 1"
    )
    plan = plan_query(sql, context=context)
    (nation,) = [f for f in plan.fragments if f.store == "ref"]
    assert plan.local_sql.count(nation.name) == 2
    _answers_as_reference(gateway, plan, sql, reference)


def test_an_uncorrelated_in_subquery_runs_at_its_store_and_narrows_the_outer_side(
    gateway, context, reference
):
    """TPC-H Q18's shape: the grouped IN subquery goes down whole, its few keys narrow orders."""
    sql = (
        "SELECT o.o_orderkey, o.o_total FROM sales.orders o WHERE o.o_orderkey IN "
        "(SELECT i_orderkey FROM fulfillment.items GROUP BY i_orderkey HAVING sum(i_qty) > 14) "
        "ORDER BY 1"
    )
    plan = plan_query(sql, context=context)
    (items,) = [f for f in plan.fragments if f.store == "lake"]
    assert "HAVING" in items.sql
    (dynamic,) = plan.dynamic_filters
    assert (dynamic.build, dynamic.probe_column) == (items.name, "o_orderkey")
    sent: list[tuple[str, str]] = []
    _answers_as_reference(gateway, plan, sql, reference, sent=sent)
    narrowed = _probe_sql(sent, "sales_db").partition("AS narrowed WHERE")[2]
    assert sorted(int(k) for k in narrowed.split("IN (")[1].rstrip(")").split(", ")) == list(
        range(3, 32, 4)
    )


def test_an_in_subquery_the_local_engine_filters_still_narrows_with_its_fragments_keys(
    gateway, context, reference
):
    """TPC-H Q20's shape: the IN subquery filters its store's rows further in the local engine;
    the fragment's keys are a superset of the subquery's, which narrows less but drops nothing."""
    sql = (
        "SELECT o.o_orderkey FROM sales.orders o WHERE o.o_custkey IN (SELECT n_nationkey "
        "FROM reference.nation WHERE n_nationkey < 6 AND md5(n_name) <> md5('BRAZIL')) ORDER BY 1"
    )
    plan = plan_query(sql, context=context)
    (nation,) = [f for f in plan.fragments if f.store == "ref"]
    assert "md5" not in nation.sql.lower(), "SQLite has no md5(): it runs locally"
    (dynamic,) = plan.dynamic_filters
    assert (dynamic.build, dynamic.probe_column) == (nation.name, "o_custkey")
    sent: list[tuple[str, str]] = []
    _answers_as_reference(gateway, plan, sql, reference, sent=sent)
    assert _probe_sql(sent, "sales_db").endswith('"o_custkey" IN (0, 1, 2, 5)')


NOT_NARROWED = {
    # the preserved side of a LEFT JOIN keeps its unmatched rows: it may not be narrowed
    "preserved side of a left join": (
        "SELECT o.o_orderkey, n.n_name FROM sales.orders o LEFT JOIN reference.nation n "
        "ON n.n_nationkey = o.o_custkey AND n.n_name = 'BRAZIL' ORDER BY 1"
    ),
    # the probe's rows are read again elsewhere, where the join does not narrow them
    "probe read twice": (
        "WITH o AS (SELECT * FROM sales.orders) SELECT o.o_orderkey FROM o "
        "JOIN reference.nation n ON n.n_nationkey = o.o_custkey WHERE n.n_name = 'BRAZIL' "
        "UNION ALL SELECT o_orderkey FROM o ORDER BY 1"
    ),
    # NOT IN keeps the rows whose key the subquery does not return
    "not in": (
        "SELECT o.o_orderkey FROM sales.orders o WHERE o.o_orderkey NOT IN "
        "(SELECT n_nationkey FROM reference.nation WHERE n_name IS NOT NULL) ORDER BY 1"
    ),
    # a correlated IN subquery is no list of keys
    "correlated in": (
        "SELECT o.o_orderkey FROM sales.orders o WHERE o.o_custkey IN "
        "(SELECT n.n_nationkey FROM reference.nation n WHERE n.n_nationkey < o.o_orderkey) "
        "ORDER BY 1"
    ),
    # the correlation is one branch of an OR: other rows of the subquery count too
    "correlation under OR": (
        "SELECT n.n_name FROM reference.nation n WHERE n.n_name IN ('BRAZIL', 'EGYPT') AND EXISTS "
        "(SELECT 1 FROM sales.orders o WHERE o.o_custkey = n.n_nationkey OR o.o_total > 40) "
        "ORDER BY 1"
    ),
    # NULL keys join nothing with =, but do with IS NOT DISTINCT FROM
    "null-safe equality": (
        "SELECT o.o_orderkey FROM sales.orders o JOIN (SELECT * FROM reference.nation "
        "WHERE n_name IS NULL OR n_name = 'BRAZIL') n ON n.n_nationkey IS NOT DISTINCT FROM "
        "o.o_custkey ORDER BY 1"
    ),
}


@pytest.mark.parametrize("sql", NOT_NARROWED.values(), ids=NOT_NARROWED.keys())
def test_no_dynamic_filter_where_it_could_change_the_answer(sql, gateway, context, reference):
    plan = plan_query(sql, context=context)
    narrowed = {f.probe for f in plan.dynamic_filters}
    orders = [f.name for f in plan.fragments if f.store == "sales_db"]
    assert orders and not narrowed & set(orders)
    _answers_as_reference(gateway, plan, sql, reference)


def test_a_limit_inside_the_probe_picks_its_rows_before_the_keys_narrow_them(
    gateway, context, reference
):
    """The keys filter the fragment's answer, after its LIMIT: below it they would pick others."""
    sql = (
        "SELECT t.o_orderkey FROM (SELECT o_orderkey, o_custkey FROM sales.orders "
        "ORDER BY o_orderkey LIMIT 12 OFFSET 3) t JOIN reference.nation n "
        "ON n.n_nationkey = t.o_custkey WHERE n.n_name = 'BRAZIL' ORDER BY 1"
    )
    plan = plan_query(sql, context=context)
    assert len(plan.dynamic_filters) == 1
    sent: list[tuple[str, str]] = []
    _answers_as_reference(gateway, plan, sql, reference, sent=sent)
    probe = _probe_sql(sent, "sales_db")
    assert probe.index("LIMIT 12") < probe.index(") AS narrowed WHERE") < probe.index("IN (2)")


def test_null_keys_of_a_build_narrow_to_the_keys_that_can_join(gateway, context, reference):
    """Order 31 has no customer: its NULL is no key, and no nation joins it."""
    sql = (
        "SELECT n.n_name, o.o_orderkey FROM reference.nation n JOIN sales.orders o "
        "ON o.o_custkey = n.n_nationkey WHERE o.o_orderkey > 28 ORDER BY 1, 2"
    )
    plan = plan_query(sql, context=context)
    (dynamic,) = plan.dynamic_filters
    assert dynamic.probe_column == "n_nationkey"
    sent: list[tuple[str, str]] = []
    _answers_as_reference(gateway, plan, sql, reference, sent=sent)
    assert _probe_sql(sent, "ref").endswith('WHERE "n_nationkey" IN (2, 0, 7)')


FACTORED = {
    # TPC-H Q19's shape: each branch filters both relations and repeats the join
    "each branch filters both sides": (
        "SELECT n.n_name, o.o_orderkey FROM sales.orders o, reference.nation n "
        "WHERE (o.o_custkey = n.n_nationkey AND n.n_name = 'BRAZIL' AND o.o_total > 10) "
        "OR (o.o_custkey = n.n_nationkey AND n.n_name IN ('EGYPT', 'ALGERIA') AND o.o_total < 5) "
        "ORDER BY 1, 2",
        {"sales_db": ('"o_total" > 10', " OR "), "ref": ("n_name", " OR ")},
    ),
    # the second branch says nothing of nation: any nation row may meet it
    "a branch silent on one side": (
        "SELECT n.n_name, o.o_orderkey FROM sales.orders o JOIN reference.nation n "
        "ON o.o_custkey = n.n_nationkey WHERE (n.n_name = 'BRAZIL' AND o.o_total > 40) "
        "OR o.o_total < 3 ORDER BY 1, 2",
        {"sales_db": ('"o_total" < 3', " OR "), "ref": None},
    ),
    # random() drawn again apart from the OR could keep a row the OR drops
    "a volatile function": (
        "SELECT n.n_name, o.o_orderkey FROM sales.orders o JOIN reference.nation n "
        "ON o.o_custkey = n.n_nationkey WHERE (n.n_name = 'BRAZIL' AND random() < 2) "
        "OR (n.n_name = 'EGYPT' AND o.o_total > 40) ORDER BY 1, 2",
        {"ref": None},
    ),
    # NULL-extended rows of the outer join meet the second branch: nothing goes below the join
    "outer join, a branch on the null-extended side": (
        "SELECT o.o_orderkey, n.n_name FROM sales.orders o LEFT JOIN reference.nation n "
        "ON o.o_custkey = n.n_nationkey AND n.n_nationkey > 0 "
        "WHERE (n.n_name = 'BRAZIL' AND o.o_total > 40) OR (n.n_name IS NULL AND o.o_total < 6) "
        "ORDER BY 1",
        {"ref": None},
    ),
}


@pytest.mark.parametrize(("sql", "filtered"), FACTORED.values(), ids=FACTORED.keys())
def test_an_or_across_relations_also_filters_each_at_its_store(
    sql, filtered, gateway, context, reference
):
    plan = plan_query(sql, context=context)
    for store, says in filtered.items():
        (fragment,) = [f for f in plan.fragments if f.store == store]
        where = fragment.sql.partition(" WHERE ")[2]
        if says is None:
            assert " OR " not in where, fragment.sql
        else:
            assert all(word in where for word in says), fragment.sql
    _answers_as_reference(gateway, plan, sql, reference)


def test_instants_are_served_in_utc_whatever_the_hosts_zone(context):
    """The local engine labels timestamptz with its session's zone (the host's); clients get UTC."""
    import pyarrow as pa

    from gateway.types import serving_type

    assert serving_type(pa.timestamp("us", tz="Europe/Berlin")) == pa.timestamp("us", tz="UTC")
    plan = plan_query(
        "SELECT TIMESTAMPTZ '2020-01-01 00:00:00+00' AS t, o_orderkey FROM sales.orders",
        context=context,
    )
    assert plan.schema.field("t").type == pa.timestamp("us", tz="UTC")


GROUPED = {
    "comma joins": (
        "SELECT n.n_name, count(*) FROM sales.orders a, sales.orders b, reference.nation n "
        "WHERE a.o_orderkey = b.o_orderkey + 1 AND a.o_custkey = n.n_nationkey "
        "GROUP BY n.n_name ORDER BY 1"
    ),
    "inner joins with ON and a correlated subquery": (
        "SELECT a.o_orderkey, n.n_name FROM sales.orders a JOIN sales.orders b "
        "ON b.o_orderkey = a.o_orderkey - 1 JOIN reference.nation n ON n.n_nationkey = b.o_custkey "
        "WHERE EXISTS (SELECT 1 FROM sales.orders c WHERE c.o_custkey = a.o_custkey "
        "AND c.o_orderkey > a.o_orderkey) ORDER BY 1"
    ),
}


@pytest.mark.parametrize("sql", GROUPED.values(), ids=GROUPED.keys())
def test_same_store_joins_run_at_their_store(sql, gateway, context, reference):
    plan = plan_query(sql, context=context)
    joined = [f for f in plan.fragments if f.store == "sales_db" and "o_orderkey" in f.sql]
    assert any(' AS "a"' in f.sql and ' AS "b"' in f.sql for f in joined), plan.explain()
    answer = gateway.execute(plan).read_all()
    expected = reference.execute(sql.replace("sales.", "").replace("reference.", "")).fetchall()
    assert expected
    assert [tuple(row.values()) for row in answer.to_pylist()] == expected


def test_outer_joins_are_not_regrouped(gateway, context, reference):
    sql = (
        "SELECT a.o_orderkey, b.o_orderkey, n.n_name FROM sales.orders a "
        "LEFT JOIN sales.orders b ON b.o_orderkey = a.o_orderkey + 40 "
        "JOIN reference.nation n ON n.n_nationkey = a.o_custkey ORDER BY 1"
    )
    plan = plan_query(sql, context=context)
    assert "__group_" not in (plan.local_sql or "")
    answer = gateway.execute(plan).read_all()
    expected = reference.execute(sql.replace("sales.", "").replace("reference.", "")).fetchall()
    assert [tuple(row.values()) for row in answer.to_pylist()] == expected


def test_a_probe_starts_once_one_build_has_few_keys(monkeypatch):
    """The other builds keep running at their stores; their keys would narrow little more."""
    import pyarrow as pa

    from gateway import executor
    from gateway.planner.dynamic_filters import DynamicFilter

    filters = [DynamicFilter("a", "k", "p", "x"), DynamicFilter("b", "k", "p", "y")]
    few = pa.table({"k": [1, 2, 2, None]})
    assert not executor._may_start(filters, {})
    assert executor._may_start(filters, {"a": few})
    assert not executor._may_start(filters, {"a": None}), (
        "a build too large to read narrows nothing"
    )
    monkeypatch.setattr(executor, "ENOUGH_KEYS", 1)
    assert not executor._may_start(filters, {"a": few})
    assert executor._may_start(filters, {"a": few, "b": None})


def test_a_build_past_its_limits_streams_on_whole(monkeypatch):
    """What was read to find out is put back in front of the rest, in order."""
    import pyarrow as pa

    from gateway import executor

    batches = [pa.record_batch({"k": list(range(i, i + 10))}) for i in range(0, 50, 10)]
    schema = batches[0].schema
    table, reader = executor._read_small(pa.RecordBatchReader.from_batches(schema, iter(batches)))
    assert table is not None and table.num_rows == 50
    for limit, value in (("MAX_BUILD_ROWS", 25), ("MAX_BUILD_BYTES", 200)):
        monkeypatch.setattr(executor, limit, value)
        stream = pa.RecordBatchReader.from_batches(schema, iter(batches))
        table, reader = executor._read_small(stream)
        assert table is None
        assert reader.read_all().column("k").to_pylist() == list(range(50))
        monkeypatch.undo()


def test_a_duckdb_file_store_opened_read_only_joins_a_key_table(
    gateway, context, reference, monkeypatch
):
    from gateway import executor

    monkeypatch.setattr(executor, "KEY_TABLE_FROM", 0)
    sql = DYNAMIC["inner join"]
    sent: list[tuple[str, str]] = []
    _answers_as_reference(gateway, plan_query(sql, context=context), sql, reference, sent=sent)
    assert 'IN (SELECT "key" FROM __meshgate_keys_1)' in _probe_sql(sent, "sales_db")


def test_keys_sql_cannot_write_narrow_nothing(gateway):
    """An interval has no SQL literal in sqlglot: that filter is dropped, the others stay."""
    import datetime

    import pyarrow as pa

    from gateway import executor
    from gateway.planner.dynamic_filters import DynamicFilter

    built = {
        "a": pa.table({"k": pa.array([datetime.timedelta(days=1)], pa.duration("us"))}),
        "b": pa.table({"k": [3, 4]}),
    }
    filters = [DynamicFilter("a", "k", "p", "x"), DynamicFilter("b", "k", "p", "y")]
    predicates, tables = executor._narrowing(filters, built, gateway.connectors["ref"])
    assert predicates == ['"y" IN (3, 4)'] and not tables


def test_long_key_lists_are_counted_not_listed_for_the_audit_log():
    from gateway.audit import abbreviated
    from gateway.narrowing import keys_in, narrowed_sql

    texts = [f"it's, {i}" for i in range(30)]  # quotes and commas inside the keys
    sql = narrowed_sql(
        "SELECT a, b FROM t WHERE a IN (1, 2)",
        predicates=[keys_in("a", list(range(25)), dialect="duckdb"),
                    keys_in("b", texts, dialect="postgres"),
                    keys_in("a", [7, 8], dialect="duckdb")],
    )  # fmt: skip
    short = abbreviated(sql)
    assert short.startswith("SELECT * FROM (SELECT a, b FROM t WHERE a IN (1, 2))")
    assert '"a" IN (<25 keys>) AND "b" IN (<30 keys>) AND "a" IN (7, 8)' in short
    assert (
        abbreviated("SELECT x FROM t WHERE x IN (1, 2, 3)")
        == "SELECT x FROM t WHERE x IN (1, 2, 3)"
    )


# --- every capability a connector declares changes the plan ---------------------------------

CAPABILITY_FLIPS = {
    # capability: (store, the flipped value, a query whose plan depends on it)
    "filters": ("ref", False, "SELECT n_name FROM reference.nation WHERE n_nationkey = 1"),
    "limits": ("ref", False, "SELECT n_name FROM reference.nation ORDER BY n_nationkey LIMIT 2"),
    "sorts": ("ref", False, "SELECT n_name FROM reference.nation ORDER BY n_nationkey"),
    "aggregates": ("ref", False, "SELECT count(*) AS n FROM reference.nation"),
    "joins": (
        "ref",
        False,
        "SELECT a.n_name FROM reference.nation a JOIN reference.nation b "
        "ON a.n_nationkey = b.n_nationkey + 1",
    ),
    "large_joins": (
        "sales_db",
        False,
        "SELECT n.n_name, p.o_total FROM sales.orders o, sales.orders p, reference.nation n "
        "WHERE o.o_orderkey = p.o_custkey AND n.n_nationkey = o.o_custkey",
    ),
    "window_functions": (
        "ref",
        False,
        "SELECT n_name, row_number() OVER (ORDER BY n_nationkey) AS r FROM reference.nation",
    ),
    "set_operations": (
        "ref",
        False,
        "SELECT n_name FROM reference.nation UNION ALL SELECT n_name FROM reference.nation",
    ),
    "subqueries": (
        "ref",
        False,
        "SELECT n_name FROM reference.nation WHERE n_nationkey IN "
        "(SELECT n_nationkey + 1 FROM reference.nation WHERE n_name LIKE 'A%')",
    ),
    "distinct_ordered_limits": (
        "ref",
        False,
        "SELECT DISTINCT n_name FROM reference.nation ORDER BY n_name LIMIT 2",
    ),
    "case_insensitive_text": (
        "ref",
        True,
        "SELECT n_nationkey FROM reference.nation WHERE n_name = 'EGYPT'",
    ),
    "unsupported_functions": (
        "ref",
        frozenset({exp.Upper}),
        "SELECT upper(n_name) AS u FROM reference.nation",
    ),
    "typed_columns": ("ref", True, "SELECT n_nationkey * 1.5 AS x FROM reference.nation"),
    "unknown_functions": ("sales_db", False, "SELECT hash(o_orderkey) AS h FROM sales.orders"),
    "key_tables": (
        "lake",
        False,
        "SELECT i.i_qty, n.n_name FROM fulfillment.items i JOIN reference.nation n "
        "ON n.n_nationkey = i.i_orderkey WHERE n.n_name = 'EGYPT' AND i.i_qty = 1",
    ),
}


def test_every_capability_has_a_flip_below():
    """A capability no test flips is a promise nobody checks (issue 15): each is listed."""
    import dataclasses

    from connectors.base import Capabilities

    declared = {f.name for f in dataclasses.fields(Capabilities)} - {"dialect"}
    assert declared == set(CAPABILITY_FLIPS) | set(FLIPPED_ELSEWHERE)


FLIPPED_ELSEWHERE = {
    # a fence only shows over a row filter, at a store whose optimizer would move predicates
    "fence": "tests/test_governance_barrier.py::"
    "test_the_fence_is_what_keeps_postgresql_from_running_them_first",
}


def _with_capability(context, store: str, name: str, value):
    """``context`` with ``store``'s connector declaring ``name`` as ``value``: a copy of the real
    connector, so the plan is made for it and runs at the real store."""
    import copy
    import dataclasses

    connector = copy.copy(context.connectors[store])
    connector.capabilities = dataclasses.replace(connector.capabilities, **{name: value})
    return dataclasses.replace(context, connectors={**context.connectors, store: connector})


def _plan_shape(plan) -> tuple:
    return (
        tuple((f.store, f.sql) for f in plan.fragments),
        plan.local_sql,
        plan.dynamic_filters,
    )


@pytest.mark.parametrize("capability", sorted(CAPABILITY_FLIPS))
def test_flipping_a_capability_changes_the_plan_not_the_answer(
    capability, gateway, context, reference
):
    store, value, sql = CAPABILITY_FLIPS[capability]
    assert getattr(context.connectors[store].capabilities, capability) != value
    plan = plan_query(sql, context=context)
    flipped = plan_query(sql, context=_with_capability(context, store, capability, value))
    assert _plan_shape(flipped) != _plan_shape(plan), plan.explain()
    expected = sorted(reference.execute(to_reference(sql)).fetchall(), key=repr)
    assert expected, "a fixture that returns nothing proves nothing"
    for each in (plan, flipped):
        answer = gateway.execute(each).read_all()
        assert sorted((tuple(r.values()) for r in answer.to_pylist()), key=repr) == expected


def to_reference(sql: str) -> str:
    for domain in ("sales.", "reference.", "fulfillment."):
        sql = sql.replace(domain, "")
    return sql


# --- the pipeline: pure steps over one typed state -------------------------------------------

PIPELINE_QUERIES = [
    "SELECT n.n_name, sum(o.o_total) AS total FROM sales.orders o "
    "JOIN reference.nation n ON n.n_nationkey = o.o_custkey WHERE o.o_total > ? "
    "GROUP BY n.n_name ORDER BY 1",
    "WITH n AS (SELECT * FROM reference.nation) SELECT a.n_name FROM n a, sales.orders o, "
    "sales.orders p WHERE a.n_nationkey = o.o_custkey AND o.o_orderkey = p.o_custkey "
    "AND (a.n_name = 'EGYPT' OR o.o_total < 3)",
    "SELECT i.i_qty FROM fulfillment.items i WHERE i.i_orderkey IN "
    "(SELECT o_orderkey FROM sales.orders WHERE o_custkey = 1) AND EXISTS "
    "(SELECT * FROM reference.nation n WHERE n.n_nationkey = i.i_qty)",
]


@pytest.mark.parametrize("sql", PIPELINE_QUERIES)
def test_each_step_returns_a_new_state_and_leaves_its_input_as_it_was(sql, context):
    import dataclasses

    from gateway.planner import PIPELINE, plan_of, plan_query
    from gateway.planner.state import PlanState

    state = PlanState(sql=sql, context=context, parameters=(2,) if "?" in sql else ())
    for _, steps in PIPELINE:
        for step in steps:
            before = {f.name: getattr(state, f.name) for f in dataclasses.fields(state)}
            text = state.expression.sql("duckdb") if state.expression is not None else None
            state = step(state)
            if before["expression"] is not None:
                assert before["expression"].sql("duckdb") == text, f"{step.__name__} mutated it"
    planned = plan_query(sql, context=context, parameters=list(state.parameters))
    assert plan_of(state) == planned


SQLGLOT_NOTES = {"line", "col", "start", "end", "nonnull"}
"""sqlglot's own notes: where its parser found a node, what its simplifier proved of it."""


@pytest.mark.parametrize("sql", PIPELINE_QUERIES)
def test_no_step_leaves_notes_in_the_tree_but_the_parameter_tags(sql, context):
    """Steps hand each other the state's fields, never ``meta`` on nodes: a rewrite that builds
    new nodes would drop such a note silently. Bound values carry their position (the one tag,
    planner.parameters.TAG), which only bind writes and only the templates read."""
    from gateway.planner import PIPELINE
    from gateway.planner.parameters import TAG
    from gateway.planner.state import PlanState

    state = PlanState(sql=sql, context=context, parameters=(2,) if "?" in sql else ())
    for _, steps in PIPELINE:
        for step in steps:
            state = step(state)
            trees = [state.expression, state.local, *(f.query for f in state.fragments)]
            for tree in filter(None, trees):
                notes = {k for node in tree.walk() if node._meta for k in node.meta}
                allowed = {TAG, *SQLGLOT_NOTES}
                assert notes <= allowed, f"{step.__name__} left {notes - allowed}"


def test_a_row_filtered_relation_is_known_by_the_name_govern_gives_it():
    """Predicate pushdown finds the barriers by the inner alias govern writes (names.ROW_FILTERED),
    which every rewrite keeps; the same shape under another alias is a client's derived table."""
    from gateway.planner.sources import is_row_filtered, row_filtered_address

    def relation(inner_alias: str) -> exp.Subquery:
        sql = (
            'SELECT * FROM (SELECT "a" AS "a" FROM (SELECT "a" FROM "__source:sales.orders") '
            f'AS "{inner_alias}" WHERE "a" > 1) AS o'
        )
        return parse_statement(sql, dialect="duckdb").find(exp.Subquery)

    governed = relation("__filtered_orders")
    assert row_filtered_address(governed) == "sales.orders"
    assert row_filtered_address(governed.copy()) == "sales.orders", "copies keep the mark"
    assert not is_row_filtered(relation("orders"))
    unfiltered = relation("__filtered_orders")
    unfiltered.this.set("where", None)
    assert not is_row_filtered(unfiltered)

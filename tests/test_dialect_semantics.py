"""Where a store would answer differently from the gateway, that part runs locally.

MariaDB's default collations compare text ignoring case and trailing spaces; meshgate's SQL
compares text exactly. These tests run against the real MariaDB service.
"""

from __future__ import annotations

import math

import pytest

from gateway.planner import plan_query
from tests.support.mesh import mariadb_people

NAMES = [(1, "alice"), (2, "ALICE"), (3, "Alice "), (4, "bob"), (5, "Bob")]


@pytest.fixture(scope="module")
def gateway(tmp_path_factory):
    with mariadb_people(tmp_path_factory.mktemp("mysql-mesh"), "meshgate_people", NAMES) as gateway:
        yield gateway


@pytest.fixture
def context(gateway):
    return gateway.context(gateway.principals.get("tester"))


CASES = {
    "equality on text": ("SELECT k FROM crm.people WHERE name = 'alice' ORDER BY k", [(1,)]),
    "grouping on text": ("SELECT count(DISTINCT name) FROM crm.people", [(5,)]),
    "like on text": ("SELECT count(*) FROM crm.people WHERE name LIKE 'b%'", [(1,)]),
    "ordering on text": (
        "SELECT name FROM crm.people ORDER BY name, k",
        [("ALICE",), ("Alice ",), ("Bob",), ("alice",), ("bob",)],
    ),
    "max of text": ("SELECT max(name) FROM crm.people", [("bob",)]),
}


@pytest.mark.parametrize(("sql", "expected"), CASES.values(), ids=CASES.keys())
def test_text_semantics_are_the_gateways_not_the_collations(sql, expected, gateway, context):
    plan = plan_query(sql, context=context)
    assert plan.local_sql is not None, "MariaDB would compare this text ignoring case"
    (fragment,) = plan.fragments
    assert fragment.store == "crm_db"
    answer = gateway.execute(plan).read_all()
    assert [tuple(row.values()) for row in answer.to_pylist()] == expected


def test_numeric_work_still_goes_down_whole(gateway, context):
    plan = plan_query("SELECT count(*), sum(k) FROM crm.people WHERE k > 2", context=context)
    assert plan.local_sql is None
    (fragment,) = plan.fragments
    assert "WHERE" in fragment.sql and "SUM" in fragment.sql.upper()
    answer = gateway.execute(plan).read_all()
    assert [tuple(row.values()) for row in answer.to_pylist()] == [(3, 12)]


def test_a_percent_sign_reaches_mariadb_as_sql_not_as_a_placeholder(gateway, context):
    """PyMySQL used to read the % of a modulo as a format placeholder and fail the query."""
    sql = "SELECT k % 3 AS m FROM crm.people WHERE k % 2 = 1 ORDER BY k"
    plan = plan_query(sql, context=context)
    assert plan.local_sql is None and "%" in plan.fragments[0].sql
    answer = gateway.execute(plan).read_all()
    assert [tuple(row.values()) for row in answer.to_pylist()] == [(1,), (0,), (2,)]


DECIMAL_ARITHMETIC = {
    "division": ("SELECT k / 3 AS q FROM crm.people ORDER BY k", [(k / 3,) for k in range(1, 6)]),
    "division by zero": ("SELECT k / 0 AS q FROM crm.people WHERE k = 1", [(math.inf,)]),
    "average": ("SELECT avg(k) AS a FROM crm.people WHERE k IN (1, 2, 4)", [(7 / 3,)]),
}


@pytest.mark.parametrize(("sql", "expected"), DECIMAL_ARITHMETIC.values(), ids=DECIMAL_ARITHMETIC)
def test_division_and_averages_run_locally_where_mariadb_computes_them_in_decimal(
    sql, expected, gateway, context
):
    """MariaDB gave 0.3333 for 1 / 3, 2.3333 for avg(1, 2, 4) and NULL for 1 / 0."""
    plan = plan_query(sql, context=context)
    assert plan.local_sql is not None
    (fragment,) = plan.fragments
    assert fragment.store == "crm_db" and "/" not in fragment.sql
    answer = gateway.execute(plan).read_all()
    assert [tuple(row.values()) for row in answer.to_pylist()] == expected

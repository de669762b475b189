"""A scan the store cannot filter exactly is still narrowed by what it can filter.

MariaDB compares text ignoring case and trailing spaces, so ``name = 'alice'`` runs locally. Its
answer is a superset of the exact one (text equal byte for byte is equal under any collation),
so the scan at MariaDB carries the predicate and the local engine applies it again, exactly.
"""

from __future__ import annotations

import pytest

from gateway.planner import plan_query
from tests.support.mesh import mariadb_people
from tests.support.stores import MARIADB, require

NAMES = [(1, "alice"), (2, "ALICE"), (3, "alice "), (4, "bob"), (5, "Bob"), (6, None)]


@pytest.fixture(scope="module")
def gateway(tmp_path_factory):
    require(MARIADB)
    root = tmp_path_factory.mktemp("prefilter-mesh")
    with mariadb_people(root, "meshgate_prefilter_people", NAMES) as gateway:
        yield gateway


@pytest.fixture
def context(gateway):
    return gateway.context(gateway.principals.get("tester"))


NARROWED = {
    "equality": ("SELECT k FROM crm.people WHERE name = 'alice' ORDER BY k", [(1,)], "= 'alice'"),
    "in a list": (
        "SELECT k FROM crm.people WHERE name IN ('Bob', 'ALICE') ORDER BY k",
        [(2,), (5,)],
        "IN ('Bob', 'ALICE')",
    ),
    "like with % only": (
        "SELECT k FROM crm.people WHERE name LIKE 'B%' OR name LIKE '%ICE' ORDER BY k",
        [(2,), (5,)],
        "LIKE 'B%'",
    ),
    # AND and OR of parts that each keep a superset keep a superset
    "or with an exact predicate": (
        "SELECT k FROM crm.people WHERE name = 'bob' OR k = 1 ORDER BY k",
        [(1,), (4,)],
        "OR",
    ),
    "beside an exact predicate": (
        "SELECT k FROM crm.people WHERE name = 'bob' AND k > 1 ORDER BY k",
        [(4,)],
        "> 1",
    ),
}


@pytest.mark.parametrize(("sql", "expected", "sent"), NARROWED.values(), ids=NARROWED.keys())
def test_text_equality_narrows_the_scan_and_is_applied_again_exactly(
    sql, expected, sent, gateway, context
):
    plan = plan_query(sql, context=context)
    assert plan.local_sql is not None, "MariaDB would compare this text ignoring case"
    (fragment,) = plan.fragments
    assert "WHERE" in fragment.sql and sent in fragment.sql
    answer = gateway.execute(plan).read_all()
    assert [tuple(row.values()) for row in answer.to_pylist()] == expected


NOT_NARROWED = {
    # a collation's inequality is no superset: 'ALICE' <> 'alice' is false at MariaDB
    "inequality": (
        "SELECT k FROM crm.people WHERE name <> 'alice' ORDER BY k",
        [(2,), (3,), (4,), (5,)],
    ),
    # MySQL's _ is one character, a byte-wise one may be one byte; its LIKE escapes with \\
    "like with _": ("SELECT k FROM crm.people WHERE name LIKE 'B_b' ORDER BY k", [(5,)]),
    "like with a backslash": ("SELECT k FROM crm.people WHERE name LIKE 'b\\%' ORDER BY k", []),
    "range": ("SELECT k FROM crm.people WHERE name > 'a' ORDER BY k", [(1,), (3,), (4,)]),
    "not in": (
        "SELECT k FROM crm.people WHERE name NOT IN ('alice') ORDER BY k",
        [(2,), (3,), (4,), (5,)],
    ),
    # under NOT, the collation's superset turns into a subset
    "not": (
        "SELECT k FROM crm.people WHERE NOT (name = 'bob' OR k = 1) ORDER BY k",
        [(2,), (3,), (5,)],
    ),
}


@pytest.mark.parametrize(("sql", "expected"), NOT_NARROWED.values(), ids=NOT_NARROWED.keys())
def test_other_text_predicates_stay_local(sql, expected, gateway, context):
    plan = plan_query(sql, context=context)
    (fragment,) = plan.fragments
    assert "name" not in fragment.sql.partition("WHERE")[2]
    answer = gateway.execute(plan).read_all()
    assert [tuple(row.values()) for row in answer.to_pylist()] == expected


def test_a_volatile_predicate_stays_local(gateway, context):
    """Evaluated at MariaDB and again locally, random() would have to pass twice."""
    sql = "SELECT k FROM crm.people WHERE name = 'bob' AND random() < 2 ORDER BY k"
    plan = plan_query(sql, context=context)
    (fragment,) = plan.fragments
    where = fragment.sql.partition("WHERE")[2]
    assert "'bob'" in where and "RAND" not in where.upper()
    answer = gateway.execute(plan).read_all()
    assert [tuple(row.values()) for row in answer.to_pylist()] == [(4,)]

"""What SQLite lacks is declared on its Capabilities and runs locally (issue 11).

The fuzzer had these pushed to the SQLite store, which failed with its own error. Each case plans
the statement twice: as declared, the function stays out of the SQL SQLite receives and the answer
equals DuckDB's over the same data; with the declaration flipped, the plan sends the function to
SQLite, so the declaration is what changes the plan.
"""

from __future__ import annotations

import dataclasses

import pytest
from sqlglot import exp

from connectors.sqlite import SQLiteConnector
from gateway.service import Gateway

CASES = {
    exp.SimilarTo: (
        "SELECT count(*) FROM supply.part WHERE p_name SIMILAR TO '.*(rose|lace).*'",
        "SIMILAR",
    ),
    exp.RegexpLike: (
        "SELECT count(*) FROM supply.part WHERE regexp_matches(p_name, '^a')",
        "REGEXP",
    ),
    exp.RegexpReplace: (
        "SELECT max(regexp_replace(p_name, 'a', 'b')) FROM supply.part",
        "REGEXP_REPLACE",
    ),
    exp.Repeat: ("SELECT max(repeat(p_brand, 2)) FROM supply.part", "REPEAT"),
    exp.StartsWith: (
        "SELECT count(*) FROM supply.part WHERE starts_with(p_name, 'a')",
        "STARTS_WITH",
    ),
    exp.Contains: ("SELECT count(*) FROM supply.part WHERE contains(p_name, 'rose')", "CONTAINS"),
    exp.Year: ("SELECT max(year(CAST('1995-03-01' AS DATE))) FROM supply.part", "YEAR"),
    exp.Reverse: ("SELECT max(reverse(p_name)) FROM supply.part", "REVERSE"),
    exp.SplitPart: ("SELECT max(split_part(p_name, ' ', 2)) FROM supply.part", "SPLIT_PART"),
    exp.Left: ("SELECT max(left(p_name, 3)) FROM supply.part", "LEFT"),
    exp.Stddev: ("SELECT round(stddev(p_size), 6) FROM supply.part", "STDDEV"),
    exp.Median: ("SELECT median(p_size) FROM supply.part", "PERCENTILE_CONT"),
}
CASES[exp.Interval] = (
    "SELECT max(CAST('1995-01-01' AS DATE) + INTERVAL 1 DAY) FROM supply.part",
    "INTERVAL",
)
UNKNOWN = ("SELECT max(hash(p_name)) = max(hash(p_name)) FROM supply.part", "HASH")


@pytest.fixture(scope="module")
def gateway(demo_mesh):
    gateway = Gateway.open(demo_mesh)
    yield gateway
    gateway.close()


def _supply_sql(gateway: Gateway, sql: str) -> str:
    plan = gateway.plan(sql, gateway.current_principals().get("admin"))
    return " ".join(f.sql for f in plan.fragments if f.store == "supply_db").upper()


def _answer(gateway: Gateway, sql: str):
    plan = gateway.plan(sql, gateway.current_principals().get("admin"))
    return gateway.execute(plan).read_all().to_pylist()


def _reference(demo_reference, sql: str):
    local = sql.replace("supply.", "")
    return [
        dict(zip(["_col_0"], row, strict=True)) for row in demo_reference.execute(local).fetchall()
    ]


@pytest.fixture
def flip(gateway):
    """Set the SQLite stores' capabilities to ``capabilities`` for one test."""
    stores = [c for c in gateway.connectors.values() if isinstance(c, SQLiteConnector)]

    def apply(capabilities) -> None:
        gateway.plans.clear()
        for store in stores:
            store.capabilities = capabilities

    yield apply
    gateway.plans.clear()
    for store in stores:
        store.__dict__.pop("capabilities", None)


@pytest.mark.parametrize("function", list(CASES), ids=lambda f: f.__name__)
def test_a_function_sqlite_lacks_runs_locally(gateway, demo_reference, flip, function):
    sql, name = CASES[function]
    declared = SQLiteConnector.capabilities
    assert function in declared.unsupported_functions
    assert name not in _supply_sql(gateway, sql)
    assert [list(r.values()) for r in _answer(gateway, sql)] == [
        list(r.values()) for r in _reference(demo_reference, sql)
    ]
    flip(
        dataclasses.replace(
            declared, unsupported_functions=declared.unsupported_functions - {function}
        )
    )
    assert name in _supply_sql(gateway, sql)


def test_functions_sqlglot_does_not_know_run_locally(gateway, flip):
    sql, name = UNKNOWN
    assert SQLiteConnector.capabilities.unknown_functions is False
    assert name not in _supply_sql(gateway, sql)
    assert [list(r.values()) for r in _answer(gateway, sql)] == [[True]]
    flip(dataclasses.replace(SQLiteConnector.capabilities, unknown_functions=True))
    assert name in _supply_sql(gateway, sql)


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ("SELECT COLUMNS('p_.*') FROM supply.part", "COLUMNS(...) picks columns by a pattern"),
        ("SELECT count(*) FROM supply.part POSITIONAL JOIN sales.orders", "POSITIONAL JOIN"),
    ],
)
def test_what_no_plan_can_keep_is_refused_with_the_gateways_message(gateway, sql, expected):
    from gateway.errors import InvalidQuery

    with pytest.raises(InvalidQuery, match=expected.replace("(", r"\(").replace(")", r"\)")):
        gateway.plan(sql, gateway.current_principals().get("admin"))

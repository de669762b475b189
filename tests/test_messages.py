"""Messages a user can act on, as the real ADBC client receives them from a real server."""

from __future__ import annotations

import adbc_driver_manager
import pytest

from gateway.planner.parse import describe_syntax_error
from tests.support.server import connect, running_server


@pytest.fixture(scope="module")
def analyst(demo_mesh):
    with running_server(demo_mesh) as (uri, _), connect(uri, "analyst") as conn:
        yield conn


def refusal(conn, sql: str) -> str:
    with conn.cursor() as cur, pytest.raises(adbc_driver_manager.Error) as caught:
        cur.execute(sql)
    return str(caught.value).split(". Detail:")[0]


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ("SELECT * FROM", "line 1, column 13 near 'FROM': expected a table name but the statement"),
        ("SELECT FROM WHERE", "column 17 near 'WHERE': expected a table name but found 'WHERE'"),
        ("SELECT n_name FROM reference.nation WHERE", "near 'WHERE': WHERE needs a condition"),
        (
            "SELECT * FROM reference.nation WHERE n_nationkey = = 1",
            "a comparison needs a value on each side",
        ),
        ("SELECT (1", "column 9 near '1': expected )"),
        ("SELECT 'abc", "a quoted string or identifier is not closed"),
    ],
)
def test_syntax_errors_name_the_position_and_what_was_expected(analyst, sql, expected):
    message = refusal(analyst, sql)
    assert message.startswith("INVALID_ARGUMENT"), message
    assert expected in message
    for internal in ("<class", "sqlglot", "Token", "TokenType", "SENTINEL", "expressions."):
        assert internal not in message, message


def test_an_unknown_column_of_the_latest_version_names_the_version_that_has_it(analyst):
    message = refusal(analyst, "SELECT o_comment FROM sales.orders")
    assert "sales.orders is v2, which does not have o_comment; sales.orders_v1 has it" in message
    joined = refusal(
        analyst,
        "SELECT o.o_comment FROM sales.orders o JOIN sales.customer c ON c.c_custkey = o.o_custkey",
    )
    assert 'relation "o" has no column "o_comment"' in joined
    assert "sales.orders_v1 has it" in joined
    assert "Values list" not in joined
    pinned = refusal(analyst, "SELECT o_orderyear FROM sales.orders_v1")
    assert "sales.orders_v1 does not have o_orderyear; sales.orders_v2 has it" in pinned
    typo = refusal(analyst, "SELECT o_commen FROM sales.orders")
    assert "has it" not in typo and "fix the query" in typo
    with analyst.cursor() as cur:
        cur.execute("SELECT count(o_comment) FROM sales.orders_v1")
        assert cur.fetchone()[0] > 0


def test_every_sqlglot_description_seen_is_rewritten():
    assert describe_syntax_error("Expecting )") == "expected )"
    assert (
        describe_syntax_error(
            "Required keyword: 'expression' missing for <class 'sqlglot.expressions.core.Div'>"
        )
        == "an incomplete div"
    )

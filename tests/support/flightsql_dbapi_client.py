"""Run what a flightsql-dbapi user runs against a meshgate server, and print it as JSON.

Started by tests/test_clients.py in a process of its own: flightsql-dbapi ships its own
generated Flight SQL protobuf module, which cannot be imported in a process that already holds
meshgate's (the same messages cannot be registered twice), and it pins SQLAlchemy below 2.0,
which the rest of the suite cannot use. ``python flightsql_dbapi_client.py HOST PORT USER``
(the password is the user name).
"""

from __future__ import annotations

import datetime
import decimal
import json
import sys


def _plain(value: object) -> object:
    if isinstance(value, decimal.Decimal | datetime.date | datetime.datetime):
        return str(value)
    if hasattr(value, "item"):  # NumPy scalars: the DB-API cursor goes through pandas
        return value.item()
    return value


def _attempt(call) -> object:
    """What ``call`` returns, or the error it raised as {"error": {"class", "message"}}."""
    try:
        return call()
    except Exception as exc:  # noqa: BLE001 - reported to the test, which judges it
        return {"error": {"class": type(exc).__name__, "message": str(exc)}}


def _rows(cursor, sql: str, parameters: tuple = ()) -> list[list[object]]:
    cursor.execute(sql, parameters) if parameters else cursor.execute(sql)
    return [[_plain(v) for v in row] for row in cursor.fetchall()]


def main(host: str, port: int, user: str) -> dict[str, object]:
    from flightsql import FlightSQLClient, connect

    client = FlightSQLClient(host=host, port=port, user=user, password=user, insecure=True)
    conn = connect(client)
    cursor = conn.cursor()
    out: dict[str, object] = {
        "nations": _attempt(
            lambda: _rows(cursor, "SELECT n_nationkey, n_name FROM reference.nation ORDER BY 1")
        ),
        "description": [d[0] for d in cursor.description or []],
        "bound_int": _attempt(
            lambda: _rows(cursor, "SELECT n_name FROM reference.nation WHERE n_nationkey = ?", (7,))
        ),
        # it binds int, float, str, bool and bytes only (no dates)
        "bound_text_and_date": _attempt(
            lambda: _rows(
                cursor,
                "SELECT count(*) FROM sales.orders WHERE o_orderstatus = ? AND o_orderdate >= ?",
                ("O", "1998-01-01"),
            )
        ),
        "schemas": _attempt(lambda: sorted(conn.flightsql_get_schema_names())),
        "tables": _attempt(lambda: sorted(conn.flightsql_get_table_names(schema="reference"))),
        "columns": _attempt(
            lambda: [c["name"] for c in conn.flightsql_get_columns("nation", schema="reference")]
        ),
        "sql_info": _attempt(
            lambda: {str(k): _plain(v) for k, v in conn.flightsql_get_sql_info([0, 3]).items()}
        ),
        "unknown_product": _attempt(lambda: _rows(cursor, "SELECT * FROM nowhere.nothing")),
    }
    conn.close()
    client.close()
    return out


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1], int(sys.argv[2]), sys.argv[3])))

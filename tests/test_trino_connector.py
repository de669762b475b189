"""The Trino connector through the real ``trino`` client against a real Trino coordinator.

The coordinator is the one ``scripts/test-services`` starts (Trino 476, single node), or the one
``MESHGATE_TRINO_URL`` names (``http://user@host:8080/catalog/schema``; the schema must take
CREATE TABLE). Without one the tests that need it skip, saying so; under
``MESHGATE_REQUIRE_STORES=1`` they fail. Running and cancelled queries are read from Trino's
own ``system.runtime.queries``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import math
import threading
import time
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from sqlglot import exp

from connectors.trino import TrinoConnector, arrow_column
from gateway.errors import InvalidQuery, MeshConfigError, QueryTimeout, SourceUnavailable
from tests.support.stores import TRINO, TcpProxy, require, trino_admin, trino_settings

UTC = dt.UTC
NUMBERS = 50_000


@pytest.fixture
def target() -> dict[str, Any]:
    """Connection settings for the real coordinator (skips or fails when it is not up)."""
    require(TRINO)
    return trino_settings()


@pytest.fixture(scope="module")
def numbers() -> Any:
    """A table of NUMBERS rows (``x`` bigint, ``s`` varchar) made through Trino; dropped after."""
    require(TRINO)
    name = f"mg_numbers_{uuid.uuid4().hex[:10]}"
    with contextlib.closing(trino_admin()) as admin:
        run(
            admin,
            f"CREATE TABLE {name} AS SELECT x, 'n' || CAST(x AS varchar) AS s FROM "
            "(SELECT a * 1000 + b AS x FROM UNNEST(sequence(0, 49)) AS t(a) "
            "CROSS JOIN UNNEST(sequence(0, 999)) AS u(b))",
        )
        try:
            yield name
        finally:
            run(admin, f"DROP TABLE {name}")


def run(connection: Any, sql: str) -> list[Any]:
    cursor = connection.cursor()
    cursor.execute(sql)
    return cursor.fetchall()  # a statement is done when its last page is read


def queries_tagged(marker: str) -> list[tuple[str, str | None, str | None]]:
    """(state, error_code, source) of the coordinator's queries whose text holds ``marker``."""
    with contextlib.closing(trino_admin()) as admin:
        return [
            tuple(row)
            for row in run(
                admin,
                "SELECT state, error_code, source FROM system.runtime.queries "
                f"WHERE strpos(query, '{marker}') > 0 AND strpos(query, 'system.runtime') = 0",
            )
        ]


def wait_for(condition, seconds: float = 15.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.2)
    return condition()


def connect(settings: dict[str, Any], tmp_path: Path, **overrides: Any) -> TrinoConnector:
    return TrinoConnector(
        "sales_trino", {**settings, "kind": "trino", **overrides}, base_dir=tmp_path
    )


def same(actual: list[Any], expected: list[Any]) -> bool:
    """Equal lists, NaN equal to NaN."""
    return len(actual) == len(expected) and all(
        a == e
        or (isinstance(a, float) and isinstance(e, float) and math.isnan(a) and math.isnan(e))
        for a, e in zip(actual, expected, strict=True)
    )


# (Trino SQL expression, Arrow type served, the value it must arrive as)
TYPE_CASES = [
    ("CAST(-7 AS tinyint)", pa.int8(), -7),
    ("CAST(-300 AS smallint)", pa.int16(), -300),
    ("CAST(70000 AS integer)", pa.int32(), 70000),
    ("CAST('-9223372036854775808' AS bigint)", pa.int64(), -9223372036854775808),
    ("true", pa.bool_(), True),
    ("CAST(1.5 AS real)", pa.float32(), 1.5),
    ("CAST(2.25 AS double)", pa.float64(), 2.25),
    ("CAST('NaN' AS double)", pa.float64(), math.nan),
    ("CAST('-Infinity' AS double)", pa.float64(), -math.inf),
    ("CAST('-12.34' AS decimal(10,2))", pa.decimal128(10, 2), Decimal("-12.34")),
    (
        "CAST('12345678901234567890123456.0123456789' AS decimal(38,10))",
        pa.decimal128(38, 10),
        Decimal("12345678901234567890123456.0123456789"),
    ),
    ("CAST('zürich ✓' AS varchar(20))", pa.string(), "zürich ✓"),
    ("CAST('abc' AS char(3))", pa.string(), "abc"),
    ("DATE '2024-02-29'", pa.date32(), dt.date(2024, 2, 29)),
    ("TIME '12:34:56.123'", pa.time64("us"), dt.time(12, 34, 56, 123000)),
    (
        "TIMESTAMP '2024-02-29 12:34:56.123'",
        pa.timestamp("us"),
        dt.datetime(2024, 2, 29, 12, 34, 56, 123000),
    ),
    (
        "TIMESTAMP '2024-02-29 12:34:56.123456'",
        pa.timestamp("us"),
        dt.datetime(2024, 2, 29, 12, 34, 56, 123456),
    ),
    (
        "CAST('2024-02-29 12:34:56.123456789' AS timestamp(9))",
        pa.timestamp("ns"),
        pa.scalar(1709210096123456789, pa.timestamp("ns")).as_py(),
    ),
    (
        "TIMESTAMP '2024-02-29 12:34:56.123456 UTC'",
        pa.timestamp("us", tz="UTC"),
        dt.datetime(2024, 2, 29, 12, 34, 56, 123456, tzinfo=UTC),
    ),
    (
        "TIMESTAMP '2024-07-01 09:15:00.000 America/New_York'",
        pa.timestamp("us", tz="UTC"),
        dt.datetime(2024, 7, 1, 13, 15, tzinfo=UTC),
    ),
    ("X'0102ff'", pa.binary(), b"\x01\x02\xff"),
    (
        "UUID '12151fd2-7586-11e9-8f9e-2a86e4085a59'",
        pa.string(),
        "12151fd2-7586-11e9-8f9e-2a86e4085a59",
    ),
    ("""JSON '{"a":1}'""", pa.string(), '{"a":1}'),
    ("ARRAY[1, 2]", pa.string(), "[1, 2]"),
    ("CAST(ROW(1, 'x') AS ROW(a integer, b varchar))", pa.string(), '[1, "x"]'),
    ("MAP(ARRAY['k'], ARRAY[1])", pa.string(), '{"k": 1}'),
]


@pytest.mark.parametrize("timezone", ["UTC", "America/New_York"])
def test_every_type_and_its_null_arrive_as_the_right_arrow_type(target, tmp_path, timezone):
    """Row 0 holds each value, row 1 its NULL; the session zone must not change any instant."""
    columns = ", ".join(
        f"CASE WHEN k = 0 THEN {sql} END AS c{i}" for i, (sql, _, _) in enumerate(TYPE_CASES)
    )
    connector = connect(target, tmp_path, timezone=timezone)
    try:
        table = connector.execute(
            f"SELECT k, {columns} FROM (VALUES 0, 1) AS t(k) ORDER BY k"
        ).read_all()
    finally:
        connector.close()
    for i, (sql, arrow, value) in enumerate(TYPE_CASES):
        column = table.column(f"c{i}")
        assert column.type == arrow, sql
        assert same(column.to_pylist(), [value, None]), (sql, column.to_pylist())


def test_parameters_are_bound_by_the_server(target, tmp_path):
    connector = connect(target, tmp_path)
    try:
        table = connector.execute(
            "SELECT x, ? AS tag FROM UNNEST(sequence(1, 10)) AS t(x) WHERE x BETWEEN ? AND ? "
            "ORDER BY x",
            parameters=pa.record_batch({"tag": ["p"], "low": [3], "high": [5]}),
        ).read_all()
    finally:
        connector.close()
    assert table.column("x").to_pylist() == [3, 4, 5]
    assert table.column("tag").to_pylist() == ["p", "p", "p"]


STREAM_SQL = (
    "SELECT a * 1000 + b AS x, 'stream' AS tag FROM UNNEST(sequence(0, 49)) AS s(a) "
    "CROSS JOIN UNNEST(sequence(0, 999)) AS u(b)"
)


def test_a_multi_page_result_streams_as_bounded_batches(target, tmp_path):
    connector = connect(target, tmp_path, batch_rows=4000)
    try:
        batches = list(connector.execute(STREAM_SQL))
    finally:
        connector.close()
    assert all(b.num_rows <= 4000 for b in batches)
    assert len(batches) >= math.ceil(NUMBERS / 4000)
    values = pa.Table.from_batches(batches).column("x").to_pylist()
    assert sorted(values) == list(range(NUMBERS))


def test_an_empty_result_keeps_its_schema(target, tmp_path):
    connector = connect(target, tmp_path)
    try:
        table = connector.execute(
            "SELECT x, CAST(x AS varchar) AS s FROM UNNEST(sequence(1, 3)) AS t(x) WHERE x < 0"
        ).read_all()
    finally:
        connector.close()
    assert table.num_rows == 0
    assert table.schema == pa.schema([("x", pa.int64()), ("s", pa.string())])


@pytest.mark.parametrize(
    ("sql", "error_name"),
    [
        ("SELECT * FORM numbers", "SYNTAX_ERROR"),
        ("SELECT * FROM meshgate_no_such_table", "TABLE_NOT_FOUND"),
    ],
)
def test_trino_errors_are_invalid_queries_with_trinos_message(target, tmp_path, sql, error_name):
    connector = connect(target, tmp_path)
    try:
        with pytest.raises(InvalidQuery, match=f"'sales_trino'.*{error_name}"):
            connector.execute(sql)
        # The connection stays usable after a rejected query.
        assert connector.execute("SELECT 1 AS one").read_all().column("one").to_pylist() == [1]
    finally:
        connector.close()


def test_an_unreachable_coordinator_is_source_unavailable_until_it_returns(target, tmp_path):
    proxy = TcpProxy(TRINO.host, TRINO.port)  # not started: nothing listens on its port yet
    connector = connect(
        target, tmp_path, host="127.0.0.1", port=proxy.port, connect_timeout_seconds=2
    )
    try:
        started = time.monotonic()
        with pytest.raises(
            SourceUnavailable, match=f"'sales_trino'.*127.0.0.1:{proxy.port}.*cannot be reached"
        ):
            connector.execute("SELECT 1")
        assert time.monotonic() - started < 10
        proxy.start()
        table = connector.execute("SELECT count(*) AS n FROM UNNEST(sequence(1, 7)) AS t(x)")
        assert table.read_all()["n"].to_pylist() == [7]
    finally:
        connector.close()
        proxy.stop()


def test_closing_a_reader_early_cancels_the_query_at_the_coordinator(target, tmp_path, numbers):
    connector = connect(target, tmp_path, batch_rows=1000, pool_size=1)
    marker = f"early close {uuid.uuid4().hex[:8]}"
    # Far more rows than the client reads ahead: the query is still running when it is closed.
    sql = f"SELECT a.x, b.s, '{marker}' AS tag FROM {numbers} a CROSS JOIN {numbers} b"
    try:
        reader = connector.execute(sql)
        assert reader.read_next_batch().num_rows == 1000
        # pyarrow runs a from_batches reader's generator cleanup when the reader's last
        # reference goes, not on close(): drop it as the Flight server does after a stream.
        reader.close()
        del reader
        assert wait_for(lambda: queries_tagged(marker)[0][:2] == ("FAILED", "USER_CANCELED")), (
            queries_tagged(marker)
        )
        # The one pooled connection is free again and works.
        count = connector.execute(f"SELECT count(*) AS n FROM {numbers}").read_all()
        assert count["n"][0].as_py() == NUMBERS
    finally:
        connector.close()


def test_a_slow_query_times_out_and_is_cancelled_at_the_coordinator(target, tmp_path):
    connector = connect(target, tmp_path, query_timeout_seconds=1)
    marker = f"slow {uuid.uuid4().hex[:8]}"
    # 10^12 sums before the first (only) row: hours of work unless the cancel stops it.
    sql = (
        f"SELECT '{marker}' AS m, sum(a.x + b.x + c.x) AS h FROM UNNEST(sequence(1, 10000)) "
        "AS a(x) CROSS JOIN UNNEST(sequence(1, 10000)) AS b(x) "
        "CROSS JOIN UNNEST(sequence(1, 10000)) AS c(x)"
    )
    from connectors.watchdog import watchdog

    kept = []  # the deadline is the shared watchdog's, not a timer thread of its own
    probe = threading.Thread(
        target=lambda: kept.append(wait_for(lambda: watchdog.pending() > 0, seconds=5)),
        daemon=True,
    )
    started = time.monotonic()
    probe.start()
    try:
        with pytest.raises(QueryTimeout, match="'sales_trino'.*1 s"):
            connector.execute(sql).read_all()
    finally:
        connector.close()
    probe.join(10)
    assert kept == [True]
    assert not [t for t in threading.enumerate() if isinstance(t, threading.Timer)]
    assert time.monotonic() - started < 10
    assert wait_for(lambda: queries_tagged(marker)[0][:2] == ("FAILED", "USER_CANCELED")), (
        queries_tagged(marker)
    )


def test_queries_carry_the_configured_session(target, tmp_path):
    connector = connect(
        target, tmp_path, user="analyst", source="meshgate-test", timezone="Europe/Berlin"
    )
    marker = f"session {uuid.uuid4().hex[:8]}"
    try:
        row = (
            connector.execute(
                f"SELECT '{marker}' AS m, current_user AS u, current_catalog AS c, "
                "current_schema AS s, current_timezone() AS z"
            )
            .read_all()
            .to_pylist()[0]
        )
    finally:
        connector.close()
    assert (row["u"], row["c"], row["s"], row["z"]) == (
        "analyst",
        target["catalog"],
        target["schema"],
        "Europe/Berlin",
    )
    assert queries_tagged(marker)[0][2] == "meshgate-test"


def test_describe_reports_the_columns_trino_reports(target, tmp_path, numbers):
    # One pooled connection: a reader dropped before its first batch must give it back.
    connector = connect(target, tmp_path, pool_size=1)
    try:
        schema = connector.describe(exp.to_table(numbers))
        assert connector.describe(exp.to_table(numbers)) == schema
        with pytest.raises(InvalidQuery, match="TABLE_NOT_FOUND"):
            connector.describe(exp.to_table("meshgate_missing"))
    finally:
        connector.close()
    assert schema == pa.schema([("x", pa.int64()), ("s", pa.string())])


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"password_env": "MESHGATE_TEST_PW"}, "https"),
        (
            {"http_scheme": "https", "password_env": "MESHGATE_TEST_UNSET_PW"},
            "MESHGATE_TEST_UNSET_PW",
        ),
        ({"timezone": "Mars/Olympus"}, "unknown time zone"),
        ({"schema": None}, "stores.t.schema"),
    ],
)
def test_bad_settings_are_mesh_config_errors(tmp_path, monkeypatch, settings, message):
    monkeypatch.setenv("MESHGATE_TEST_PW", "secret")
    monkeypatch.delenv("MESHGATE_TEST_UNSET_PW", raising=False)
    base = {"kind": "trino", "host": "h", "user": "u", "catalog": "c", "schema": "s"}
    with pytest.raises(MeshConfigError, match=message):
        TrinoConnector(
            "t", {k: v for k, v in {**base, **settings}.items() if v is not None}, base_dir=tmp_path
        )


def test_basic_auth_over_https_is_accepted(tmp_path, monkeypatch):
    monkeypatch.setenv("MESHGATE_TEST_PW", "secret")
    settings = {"kind": "trino", "host": "h", "user": "u", "catalog": "c", "schema": "s"}
    connector = TrinoConnector(
        "t",
        {**settings, "http_scheme": "https", "password_env": "MESHGATE_TEST_PW"},
        base_dir=tmp_path,
    )
    assert connector.url == "https://h:8080"
    connector.close()


@pytest.mark.parametrize(
    ("trino_type", "text", "expected"),
    [
        # Offsets and named zones, and a daylight-saving overlap (read as the earlier instant).
        (
            "timestamp(3) with time zone",
            "2024-07-01 09:15:00.000 +05:30",
            dt.datetime(2024, 7, 1, 3, 45, tzinfo=UTC),
        ),
        (
            "timestamp(0) with time zone",
            "2024-11-03 01:30:00 America/New_York",
            dt.datetime(2024, 11, 3, 5, 30, tzinfo=UTC),
        ),
        (
            "timestamp(12)",
            "2024-02-29 12:34:56.123456789012",
            pa.scalar(1709210096123456789, pa.timestamp("ns")).as_py(),
        ),
        ("time(12)", "12:34:56.123456789012", pa.scalar(45296123456789, pa.time64("ns")).as_py()),
        ("real", "Infinity", math.inf),
        ("varbinary", "AQL/", b"\x01\x02\xff"),
        ("interval day to second", "1 02:03:04.000", "1 02:03:04.000"),
        ("time(3) with time zone", "12:34:56.123+02:00", "12:34:56.123+02:00"),
    ],
)
def test_trino_value_text_converts_column_wise(trino_type, text, expected):
    """Trino's JSON text for types the tests cannot easily produce at a coordinator."""
    arrow, convert = arrow_column(trino_type)
    assert convert([text, None]).to_pylist() == [expected, None]
    assert convert([text]).type == arrow

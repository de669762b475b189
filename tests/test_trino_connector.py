"""The Trino connector through the real ``trino`` client.

Every test runs against :class:`tests.support.trino_server.TrinoTestServer` (Trino's client
protocol over DuckDB). The type, parameter, streaming and error tests also run against a real
Trino when ``MESHGATE_TRINO_URL`` is set (``http://user@host:8080/catalog/schema``; a password
in the URL needs ``https``; the schema must exist), and are skipped otherwise. Their SQL is
Trino SQL over literals, so they need no tables on the real Trino.
"""

from __future__ import annotations

import datetime as dt
import math
import os
import socket
import time
import urllib.parse
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pytest
from sqlglot import exp

from connectors.trino import TrinoConnector, arrow_column
from gateway.errors import InvalidQuery, MeshConfigError, QueryTimeout, SourceUnavailable
from tests.support.trino_server import TrinoTestServer

TRINO_URL = os.environ.get("MESHGATE_TRINO_URL")
UTC = dt.UTC
NUMBERS = 50_000


@pytest.fixture(scope="module")
def duckdb_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("trino") / "store.duckdb"
    with duckdb.connect(str(path)) as con:
        con.execute(
            f"CREATE TABLE numbers AS SELECT range AS x, 'n' || range AS s FROM range({NUMBERS})"
        )
        con.execute(
            """
            CREATE TABLE duck_types AS
            SELECT * FROM (VALUES
                (0, 7::UTINYINT, 4000000000::UINTEGER, 18000000000000000000::UBIGINT,
                 -99999999999999999999999999999999999999::HUGEINT, 'NaN'::REAL, 'Infinity'::DOUBLE,
                 TIMESTAMP_S '2024-02-29 12:34:56', TIMESTAMP_MS '2024-02-29 12:34:56.123',
                 TIMESTAMP_NS '2024-02-29 12:34:56.123456789', TIMESTAMPTZ '2024-02-29 12:34:56+02',
                 INTERVAL 3 DAY, [DATE '2024-01-02', NULL],
                 {'d': 1.5::DECIMAL(4,2), 'b': '\\x01'::BLOB}),
                (1, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)
            ) AS t(k, u8, u32, u64, huge, r, d, ts_s, ts_ms, ts_ns, tstz, iv, list, struct)
            """
        )
    return path


@pytest.fixture(scope="module")
def server(duckdb_file: Path):
    with TrinoTestServer(duckdb_file, rows_per_page=500) as running:
        yield running


def _real_trino_settings(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    url = urllib.parse.urlsplit(TRINO_URL)
    catalog, _, schema = url.path.strip("/").partition("/")
    settings = {
        "host": url.hostname,
        "port": url.port or (443 if url.scheme == "https" else 8080),
        "http_scheme": url.scheme,
        "user": url.username or "meshgate",
        "catalog": catalog,
        "schema": schema or "default",
    }
    if url.password:
        monkeypatch.setenv("MESHGATE_TEST_TRINO_PASSWORD", urllib.parse.unquote(url.password))
        settings["password_env"] = "MESHGATE_TEST_TRINO_PASSWORD"
    return settings


@pytest.fixture(params=["test-server", "real-trino"])
def target(request, server, monkeypatch) -> dict[str, Any]:
    """Connection settings for the Trino a shared test runs against."""
    if request.param == "real-trino":
        if not TRINO_URL:
            pytest.skip("MESHGATE_TRINO_URL is not set (e.g. http://user@host:8080/catalog/schema)")
        return _real_trino_settings(monkeypatch)
    return server.store_settings()


def on_test_server(target: dict[str, Any], server: TrinoTestServer) -> bool:
    return (target["host"], target["port"]) == (server.host, server.port)


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


def test_duckdb_types_reach_the_client_as_trino_reports_them(server, tmp_path, duckdb_file):
    """Unsigned, huge, second/milli/nano timestamps, intervals and nested values from a table."""
    connector = connect(server.store_settings(), tmp_path)
    try:
        table = connector.execute("SELECT * FROM duck_types ORDER BY k").read_all()
    finally:
        connector.close()
    with duckdb.connect(str(duckdb_file), read_only=True) as con:
        source = con.execute("SELECT * FROM duck_types ORDER BY k").to_arrow_table()
    served = {
        "u8": pa.int16(),
        "u32": pa.int64(),
        "u64": pa.decimal128(20, 0),
        "huge": pa.decimal128(38, 0),
        "r": pa.float32(),
        "d": pa.float64(),
        "ts_s": pa.timestamp("us"),
        "ts_ms": pa.timestamp("us"),
        "ts_ns": pa.timestamp("ns"),
        "tstz": pa.timestamp("us", tz="UTC"),
    }
    for name, arrow in served.items():
        assert table.schema.field(name).type == arrow, name
        expected = source.column(name).cast(arrow).to_pylist()
        assert same(table.column(name).to_pylist(), expected), name
    assert table.column("iv").type == pa.string()
    assert table.column("list").to_pylist() == ['["2024-01-02", null]', None]
    assert table.column("struct").to_pylist() == ['["1.50", "AQ=="]', None]


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


def test_a_multi_page_result_streams_as_bounded_batches(target, tmp_path, server):
    connector = connect(target, tmp_path, batch_rows=4000)
    try:
        reader = connector.execute(STREAM_SQL)
        first = reader.read_next_batch()
        if on_test_server(target, server):
            # The server keeps only a few pages ahead: the first batch came before the scan ended.
            assert server.query(STREAM_SQL).rows_produced < NUMBERS / 2
        batches = [first, *reader]
    finally:
        connector.close()
    assert all(b.num_rows <= 4000 for b in batches)
    assert len(batches) == math.ceil(NUMBERS / 4000)
    values = pa.Table.from_batches(batches).column("x").to_pylist()
    assert sorted(values) == list(range(NUMBERS))
    if on_test_server(target, server):
        served = server.query(STREAM_SQL)
        assert served.pages_served == NUMBERS / server.rows_per_page
        assert served.state == "FINISHED"
        assert served.query_id not in server.cancelled_queries  # nothing to cancel after the end


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


def test_an_unreachable_coordinator_is_source_unavailable_until_it_returns(tmp_path, duckdb_file):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    settings = {"host": "127.0.0.1", "port": port, "user": "u", "catalog": "duck", "schema": "main"}
    connector = connect(settings, tmp_path, connect_timeout_seconds=2)
    try:
        started = time.monotonic()
        with pytest.raises(
            SourceUnavailable, match=f"'sales_trino'.*127.0.0.1:{port}.*cannot be reached"
        ):
            connector.execute("SELECT 1")
        assert time.monotonic() - started < 5
        with TrinoTestServer(duckdb_file, port=port):
            table = connector.execute("SELECT count(*) AS n FROM numbers").read_all()
        assert table["n"].to_pylist() == [NUMBERS]
    finally:
        connector.close()


def test_closing_a_reader_early_cancels_the_query_at_the_server(server, tmp_path):
    connector = connect(server.store_settings(), tmp_path, batch_rows=1000, pool_size=1)
    sql = "SELECT x, s, 'early close' AS tag FROM numbers"
    try:
        reader = connector.execute(sql)
        assert reader.read_next_batch().num_rows == 1000
        # pyarrow runs a from_batches reader's generator cleanup when the reader's last
        # reference goes, not on close(): drop it as the Flight server does after a stream.
        reader.close()
        del reader
        served = server.query("early close")
        assert served.query_id in server.cancelled_queries
        assert served.finished.wait(5), "the server kept producing after the DELETE"
        assert (served.state, served.error_name) == ("FAILED", "USER_CANCELED")
        assert served.rows_produced < NUMBERS / 2
        # The one pooled connection is free again and works.
        assert (
            connector.execute("SELECT count(*) AS n FROM numbers").read_all()["n"][0].as_py()
            == NUMBERS
        )
    finally:
        connector.close()


def test_a_slow_query_times_out_and_is_cancelled_at_the_server(server, tmp_path):
    connector = connect(server.store_settings(), tmp_path, query_timeout_seconds=0.5)
    # 25 billion pairs: about 30 s of DuckDB work here, unless the cancel interrupts it.
    sql = (
        "SELECT count(*) AS slow FROM numbers a CROSS JOIN numbers b "
        "CROSS JOIN UNNEST(sequence(1, 10)) AS c(n) WHERE a.x + b.x + c.n < 0"
    )
    started = time.monotonic()
    try:
        with pytest.raises(QueryTimeout, match="'sales_trino'.*0.5 s"):
            connector.execute(sql).read_all()
    finally:
        connector.close()
    assert time.monotonic() - started < 3
    served = server.query("AS slow")
    assert served.query_id in server.cancelled_queries
    assert served.finished.wait(5), "DuckDB kept running after the cancel"
    assert served.error_name == "USER_CANCELED"


def test_queries_carry_the_configured_session_headers(server, tmp_path):
    connector = connect(
        server.store_settings(user="analyst"),
        tmp_path,
        source="meshgate-test",
        timezone="Europe/Berlin",
    )
    try:
        connector.execute("SELECT 'headers' AS h").read_all()
    finally:
        connector.close()
    headers = {k.lower(): v for k, v in server.query("'headers'").headers.items()}
    assert headers["x-trino-user"] == "analyst"
    assert headers["x-trino-catalog"] == server.catalog
    assert headers["x-trino-schema"] == server.schema
    assert headers["x-trino-source"] == "meshgate-test"
    assert headers["x-trino-time-zone"] == "Europe/Berlin"


def test_describe_reports_the_columns_trino_reports(server, tmp_path):
    # One pooled connection: a reader dropped before its first batch must give it back.
    connector = connect(server.store_settings(), tmp_path, pool_size=1, connect_timeout_seconds=1)
    try:
        schema = connector.describe(exp.to_table("numbers"))
        assert connector.describe(exp.to_table("numbers")) == schema
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
    """Trino's JSON text for types the test server cannot produce."""
    arrow, convert = arrow_column(trino_type)
    assert convert([text, None]).to_pylist() == [expected, None]
    assert convert([text]).type == arrow

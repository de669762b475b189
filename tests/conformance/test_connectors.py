"""One set of test bodies over every store kind: types, streaming, errors, cancellation, pushdown.

Queries are written once in DuckDB's SQL, translated to each store's dialect with sqlglot (as the
planner does) and checked against DuckDB running the same query over the same Arrow data.
"""

from __future__ import annotations

import math
import time
import uuid
from decimal import Decimal
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest
import sqlglot
from sqlglot import exp

from gateway.errors import InvalidQuery, NotFound, QueryTimeout, SourceUnavailable
from tests.conformance.conftest import CONTRACT_SCHEMA, ORDERS, TYPES, open_store
from tests.conformance.kinds import CONTRACT_TYPES, StoreKind


def store_sql(connector, loaded, sql: str) -> str:
    """``sql`` (DuckDB dialect, suite table names) in the store's dialect and physical names."""
    _, refs = loaded
    dialect = connector.capabilities.dialect

    def physical(node: exp.Expression) -> exp.Expression:
        if isinstance(node, exp.Table) and node.name in refs:
            relation = connector.relation(refs[node.name], None).copy()
            relation.set("alias", exp.TableAlias(this=exp.to_identifier(node.alias_or_name)))
            return relation
        return node

    return sqlglot.parse_one(sql, read="duckdb").transform(physical).sql(dialect=dialect)


def local(sql: str, parameters: list | None = None) -> pa.Table:
    """The answer DuckDB computes over the suite's Arrow tables."""
    with duckdb.connect() as con:
        con.execute("SET TimeZone = 'UTC'")
        con.register("types", TYPES)
        con.register("orders", ORDERS)
        return con.execute(sql, parameters).to_arrow_table()


def same_rows(got: pa.Table, expected: pa.Table) -> None:
    """Equal answers: same columns and rows in order; numbers compared by value, not by type."""
    assert got.column_names == expected.column_names
    assert got.num_rows == expected.num_rows
    for got_row, expected_row in zip(got.to_pylist(), expected.to_pylist(), strict=True):
        for name, value in expected_row.items():
            actual = got_row[name]
            if isinstance(value, int | float | Decimal) and isinstance(
                actual, int | float | Decimal
            ):
                assert math.isclose(float(actual), float(value), rel_tol=1e-12), (name, actual)
                if isinstance(value, Decimal | int) and isinstance(actual, Decimal | int):
                    assert Decimal(actual) == Decimal(value), (name, actual, value)
            else:
                assert actual == value, (name, actual, value)


# -- types ------------------------------------------------------------------------------------


@pytest.mark.parametrize("column", [name for name in CONTRACT_TYPES if name != "id"])
def test_type_roundtrip(connector, loaded, column: str) -> None:
    """Every contract type, its extremes, unicode, empty values and NULL come back exactly."""
    sql = store_sql(connector, loaded, f"SELECT id, {column} FROM types ORDER BY id")
    got = connector.execute(sql).read_all()
    expected = TYPES.select(["id", column])
    assert got.schema.field(column).type == expected.schema.field(column).type
    assert got.column(column).to_pylist() == expected.column(column).to_pylist()


def test_describe_matches_contract(connector, loaded) -> None:
    _, refs = loaded
    described = connector.describe(connector.relation(refs["types"], None))
    assert described.names == CONTRACT_SCHEMA.names
    assert [f.type for f in described] == [f.type for f in CONTRACT_SCHEMA]


def test_unconstrained_numeric_is_exact(connector, loaded) -> None:
    """A decimal aggregate (NUMERIC without declared precision in some stores) stays exact."""
    sql = "SELECT sum(c_decimal) AS total FROM types"
    got = connector.execute(store_sql(connector, loaded, sql)).read_all()
    assert pa.types.is_decimal(got.schema.field("total").type)
    assert got.column(0).to_pylist() == local(sql).column(0).to_pylist()


def test_empty_result(connector, loaded) -> None:
    got = connector.execute(store_sql(connector, loaded, "SELECT * FROM types WHERE id < 0"))
    table = got.read_all()
    assert table.num_rows == 0
    assert table.column_names == CONTRACT_SCHEMA.names


# -- streaming --------------------------------------------------------------------------------


def _resident_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * 4096


def test_large_result_streams_in_bounded_memory(store_kind: StoreKind, connector) -> None:
    """A result far larger than a batch arrives in many batches without being held whole."""
    rows, row_bytes = 1_000_000, 210
    whole = rows * row_bytes  # ~210 MB if materialised
    bound = whole // 3
    reader = connector.execute(store_kind.rows_sql(rows, "stream"))
    start, start_arrow = _resident_bytes(), pa.total_allocated_bytes()
    peak = peak_arrow = 0
    batches = seen = 0
    for batch in reader:
        batches += 1
        seen += batch.num_rows
        peak = max(peak, _resident_bytes() - start)
        peak_arrow = max(peak_arrow, pa.total_allocated_bytes() - start_arrow)
        del batch
    assert seen == rows
    assert batches >= 4
    assert peak_arrow < bound, f"pyarrow pool grew {peak_arrow / 1e6:.0f} MB"
    assert peak < bound, (
        f"resident memory grew {peak / 1e6:.0f} MB for a {whole / 1e6:.0f} MB result"
    )


# -- errors -----------------------------------------------------------------------------------


def test_missing_table(store_kind: StoreKind, connector) -> None:
    relation = connector.relation(store_kind.missing_table, None)
    sql = exp.select("*").from_(relation).sql(dialect=connector.capabilities.dialect)
    with pytest.raises((InvalidQuery, NotFound)) as raised:
        connector.execute(sql).read_all()
    assert connector.name in str(raised.value)


def _probe(connector, kind: StoreKind) -> pa.Table:
    table = kind.probe_table()
    if table is None:
        return connector.execute("SELECT 1 AS one").read_all()
    relation = connector.relation(table, None)
    sql = exp.select("*").from_(relation).sql(dialect=connector.capabilities.dialect)
    return connector.execute(sql).read_all()


def test_store_down(store_kind: StoreKind, tmp_path: Path) -> None:
    connector = open_store(store_kind, store_kind.down(tmp_path), tmp_path)
    try:
        with pytest.raises(SourceUnavailable) as raised:
            _probe(connector, store_kind)
        assert connector.name in str(raised.value)
    finally:
        connector.close()


def test_recovers_when_store_returns(store_kind: StoreKind, tmp_path: Path) -> None:
    """A store that is down fails only its queries; the same connector answers once it is back."""
    with store_kind.outage(tmp_path) as (settings, bring_up, take_down):
        connector = open_store(store_kind, settings, tmp_path)
        try:
            with pytest.raises(SourceUnavailable):
                _probe(connector, store_kind)
            bring_up()
            assert _probe(connector, store_kind).num_rows == 1
            if take_down is not None:  # a server that goes away and restarts
                take_down()
                with pytest.raises(SourceUnavailable):
                    _probe(connector, store_kind)
                bring_up()
                assert _probe(connector, store_kind).num_rows == 1
        finally:
            connector.close()


# -- cancellation -----------------------------------------------------------------------------


def _wait_until_stopped(kind: StoreKind, marker: str) -> None:
    deadline = time.monotonic() + 10
    while (running := kind.running(marker)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not running, f"{running} quer(ies) tagged {marker} still run at the store"


def test_closing_reader_cancels_at_store(store_kind: StoreKind, connector) -> None:
    marker = f"mgcancel{uuid.uuid4().hex[:10]}"
    reader = connector.execute(store_kind.rows_sql(1_000_000_000, marker))
    assert reader.read_next_batch().num_rows > 0
    assert store_kind.running(marker) in (None, 1)
    started = time.monotonic()
    reader.close()
    # pyarrow 26 runs a Python-backed reader's cleanup when the reader is released, not at close()
    del reader
    assert time.monotonic() - started < 5
    _wait_until_stopped(store_kind, marker)
    assert connector.execute("SELECT 1 AS one").read_all().num_rows == 1


def test_timeout_cancels_at_store(store_kind: StoreKind, loaded, tmp_path: Path) -> None:
    settings, _ = loaded
    connector = open_store(store_kind, settings, tmp_path, query_timeout_seconds=1)
    marker = f"mgtimeout{uuid.uuid4().hex[:10]}"
    started = time.monotonic()
    try:
        with pytest.raises(QueryTimeout):
            connector.execute(store_kind.slow_sql(marker)).read_all()
        assert time.monotonic() - started < 10
        _wait_until_stopped(store_kind, marker)
    finally:
        connector.close()


# -- pushdown answers ---------------------------------------------------------------------------


FILTERS = """SELECT o_id, o_total, o_date FROM orders
WHERE o_cust = 7 AND o_weight > 10 AND o_date >= DATE '2024-02-01' ORDER BY o_id"""
PROJECTION_LIMIT = """SELECT o_status, o_date, o_id FROM orders
ORDER BY o_total DESC, o_id LIMIT 7 OFFSET 3"""
AGGREGATES = """SELECT o_status, count(*) AS n, sum(o_total) AS total, min(o_date) AS first,
max(o_weight) AS heaviest, avg(o_weight) AS mean, sum(o_cust) AS customers
FROM orders WHERE o_date BETWEEN DATE '2024-02-01' AND DATE '2024-03-31'
GROUP BY o_status ORDER BY o_status"""


def test_filters_match_local(connector, loaded) -> None:
    same_rows(connector.execute(store_sql(connector, loaded, FILTERS)).read_all(), local(FILTERS))


def test_projection_limit_match_local(connector, loaded) -> None:
    got = connector.execute(store_sql(connector, loaded, PROJECTION_LIMIT)).read_all()
    same_rows(got, local(PROJECTION_LIMIT))


def test_aggregates_match_local(connector, loaded) -> None:
    got = connector.execute(store_sql(connector, loaded, AGGREGATES)).read_all()
    same_rows(got, local(AGGREGATES))


def test_parameters_match_local(connector, loaded) -> None:
    sql = "SELECT o_id, o_weight FROM orders WHERE o_cust = ? AND o_status = ? ORDER BY o_id"
    parameters = pa.record_batch({"cust": pa.array([7], pa.int32()), "status": ["open"]})
    got = connector.execute(store_sql(connector, loaded, sql), parameters=parameters).read_all()
    same_rows(got, local(sql, [7, "open"]))

"""What descriptors promise, judged: SLO thresholds, quality SQL run on a real DuckDB, the new
descriptor fields' validation, and drift found at load in ``contract_check: warn`` mode."""

from __future__ import annotations

import textwrap

import duckdb
import pytest
from sqlglot import exp

from gateway import slos
from gateway.errors import ContractBroken, MeshConfigError
from gateway.mesh import QualityRule, duration_seconds, load_mesh
from gateway.monitor import quality_sql
from tests.support.mesh import grant_everything


@pytest.mark.parametrize(
    ("age", "status"),
    [(None, "unknown"), (0, "met"), (2800, "met"), (3300, "at_risk"), (3601, "broken")],
)
def test_freshness_thresholds(age, status):
    assert slos.freshness_status(age, 3600) == status


@pytest.mark.parametrize(
    ("outcomes", "status"),
    [
        ([], "unknown"),
        ([True] * 200, "met"),
        ([True] * 50 + [False], "broken"),  # down now
        ([False] + [True] * 50, "at_risk"),  # up again, the hour below 99%
        ([False] + [True] * 199, "met"),
    ],
)
def test_availability_thresholds(outcomes, status):
    assert slos.availability_status(outcomes, 99.0) == status


def test_latency_percentiles_against_objectives():
    samples = [10.0] * 90 + [500.0] * 10
    assert slos.percentile(samples, 50) == 10.0
    assert slos.percentile(samples, 95) == 500.0
    assert slos.latency_status(samples, p50_ms=100, p95_ms=None) == "met"
    assert slos.latency_status(samples, p50_ms=100, p95_ms=400) == "broken"
    assert slos.latency_status(samples, p50_ms=11, p95_ms=None) == "at_risk"
    assert slos.latency_status([], p50_ms=1, p95_ms=1) == "unknown"


@pytest.mark.parametrize(
    ("rows", "status"),
    [
        (None, "unknown"),
        (50, "broken"),
        (105, "at_risk"),
        (500, "met"),
        (950, "at_risk"),
        (1001, "broken"),
    ],
)
def test_volume_bounds(rows, status):
    assert slos.volume_status(rows, min_rows=100, max_rows=1000) == status


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        ({"metric": "nullValues", "column": "k"}, 1),
        ({"metric": "duplicateValues", "column": "k"}, 1),  # 2 appears twice; NULL is no value
        ({"metric": "invalidValues", "column": "s", "arguments": {"validValues": ["a", "b"]}}, 2),
        ({"metric": "invalidValues", "column": "k", "arguments": {"minimum": 1, "maximum": 2}}, 1),
        ({"metric": "rowCount"}, 5),
    ],
)
def test_quality_rules_count_offending_rows_on_a_real_store(rule, expected):
    con = duckdb.connect()
    con.execute(
        "CREATE TABLE t AS SELECT * FROM (VALUES (1, 'a'), (2, 'b'), (2, 'c'), (3, 'x'), "
        "(NULL, NULL)) v(k, s)"
    )
    sql = quality_sql(QualityRule.model_validate(rule), exp.to_table("t")).sql("duckdb")
    assert con.execute(sql).fetchone()[0] == expected


@pytest.mark.parametrize(
    ("operator", "value", "passes"),
    [
        ({}, 0, True),
        ({}, 1, False),
        ({"mustBeLessThan": 5}, 4, True),
        ({"mustBeGreaterOrEqualTo": 10}, 9, False),
        ({"mustBeBetween": [1, 3]}, 3, True),
        ({"mustNotBe": 0}, 0, False),
    ],
)
def test_quality_operators(operator, value, passes):
    rule = QualityRule.model_validate({"metric": "rowCount", **operator})
    name, operand = rule.operator()
    assert slos.passes(value, name, operand) is passes


@pytest.mark.parametrize(
    "module", ["gateway.slos", "gateway.monitor", "gateway.standards", "gateway.http.lineage"]
)
def test_the_examples_in_docstrings_hold(module):
    import doctest
    import importlib

    result = doctest.testmod(importlib.import_module(module))
    assert result.attempted > 0 and result.failed == 0


def test_durations():
    assert duration_seconds("90s") == 90 and duration_seconds("1.5h") == 5400
    with pytest.raises(ValueError, match="not a duration"):
        duration_seconds("one day")


def _mesh(tmp_path, descriptor: str, *, contract_check: str = "strict") -> None:
    con = duckdb.connect(str(tmp_path / "shop.duckdb"))
    con.execute("CREATE TABLE orders AS SELECT range AS o_id, 'F' AS o_status FROM range(10)")
    con.close()
    (tmp_path / "mesh.yaml").write_text(
        "name: t\nstores:\n  shop_db: {kind: duckdb, path: shop.duckdb}\n"
        f"gateway: {{contract_check: {contract_check}}}\n"
    )
    (tmp_path / "shop").mkdir(exist_ok=True)
    (tmp_path / "shop" / "orders.yaml").write_text(textwrap.dedent(descriptor))
    grant_everything(tmp_path)


BASE = """
    product: orders
    version: 1
    owner: o@example.com
    description: orders
    store: shop_db
    table: orders
    columns:
      - {name: o_id, type: bigint}
      - {name: o_status, type: varchar}
"""


def test_new_descriptor_fields_are_validated_with_the_file_the_field_and_the_fix(tmp_path):
    _mesh(
        tmp_path,
        BASE
        + """
    slo:
      freshness: {column: o_id, max_age: soon}
      volume: {min_rows: -1}
      throughput: {rows_per_second: 5}
    quality:
      - {metric: nullValues}
      - {metric: invalidValues, column: o_status}
      - {metric: rowCount, mustBe: 1, mustBeLessThan: 3}
    deprecated: {since: 2026-05-01, sunset: 2026-01-01, replacement: shop.order}
    """,
    )
    with pytest.raises(MeshConfigError) as caught:
        load_mesh(tmp_path)
    problems = "\n".join(caught.value.problems)
    assert "slo.freshness.max_age" in problems and "not a duration" in problems
    assert "slo.volume.min_rows" in problems
    assert "slo.throughput" in problems and "unknown field" in problems


def test_quality_and_deprecation_problems_name_the_field(tmp_path):
    _mesh(
        tmp_path,
        BASE
        + """
    quality:
      - {metric: nullValues}
      - {metric: invalidValues, column: o_status}
      - {metric: rowCount, mustBe: 1, mustBeLessThan: 3}
    deprecated: {since: 2026-05-01, sunset: 2026-01-01, replacement: shop.order}
    """,
    )
    with pytest.raises(MeshConfigError) as caught:
        load_mesh(tmp_path)
    problems = caught.value.problems
    assert any("quality.0.column" in p and "needs `column:`" in p for p in problems)
    assert any("quality.1.arguments" in p and "validValues" in p for p in problems)
    assert any("quality.2" in p and "one operator" in p for p in problems)
    assert any("deprecated.sunset" in p and "before" in p for p in problems)
    assert any(
        "deprecated.replacement" in p and "did you mean 'shop.orders'" in p for p in problems
    )


def test_drift_found_at_load_in_warn_mode_is_reported_and_refused(tmp_path):
    from gateway.service import Gateway

    _mesh(
        tmp_path,
        BASE + "      - {name: o_total, type: 'decimal(10,2)'}\n",
        contract_check="warn",
    )
    gateway = Gateway.open(tmp_path)
    try:
        product = gateway.mesh.products["shop.orders"]
        contract = gateway.monitor.measurements(product).contract
        assert contract["status"] == "drift"
        assert "'o_total' is not in the store" in contract["problems"][0]
        principal = gateway.principals.get("tester")
        with pytest.raises(ContractBroken, match="o_total"):
            gateway.run("SELECT o_id FROM shop.orders", principal).read_all()
    finally:
        gateway.close()

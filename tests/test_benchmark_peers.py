"""The TPC-H benchmark's peers and checks (benchmarks/peers.py, benchmarks/tpch.py).

The benchmark's verdicts are only as good as its peers and its comparison: DuckDB with the
stores ATTACHed and the real Trino must answer the federated TPC-H mesh's queries as DuckDB over
the same data in memory does, and the comparison must tell a wrong answer from a peer's own
rounding. The peers run for real, against the test mesh's own PostgreSQL schema and MariaDB
database (tests/test_tpch_federated.py's fixtures) and the Trino of scripts/test-services.
"""

from __future__ import annotations

import decimal
import math
from pathlib import Path

import pyarrow as pa
import pytest

from benchmarks import tpch
from benchmarks.peers import (
    attach_baseline,
    duckdb_runner,
    output_names,
    peer_difference,
    same_peer_value,
    trino_direct,
)
from tests import test_tpch_federated as federated
from tests.support.stores import TRINO, require
from tests.support.tpch_mesh import answer_difference

mesh = federated.mesh
reference = federated.reference
tpch_queries = federated.tpch_queries

D = decimal.Decimal

# --- the comparison ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("actual", "expected", "same"),
    [
        (D("25.52"), 25.522005853257337, True),  # Trino's avg of a decimal(15,2), DuckDB's double
        (D("25.53"), 25.522005853257337, False),  # a whole unit of the last digit off
        (D("1.230"), D("1.23"), True),  # two decimals at different scales, within half a unit
        (D("1.24"), D("1.23"), False),  # two decimals at one scale compare exactly
        (7, 7, True),
        (7, 8, False),
        (7, 7.0, True),
        (0.1 + 0.2, 0.3, True),
        (0.31, 0.3, False),
        (float("nan"), float("nan"), True),
        (float("nan"), 1.0, False),
        ("BUILDING", "BUILDING", True),
        ("BUILDING ", "BUILDING", False),  # text exactly: trailing spaces are a difference
        (None, None, True),
        (None, 0, False),
        (True, 1, False),
    ],
)
def test_peer_values_agree_within_the_coarser_sides_rounding(actual, expected, same):
    assert same_peer_value(actual, expected) is same


def test_peer_difference_names_what_differs():
    expected = pa.table({"o_orderpriority": ["1-URGENT", "2-HIGH"], "avg_qty": [25.5, 26.125]})
    rounded = pa.table(
        {"o_orderpriority": ["1-URGENT", "2-HIGH"], "avg_qty": [D("25.50"), D("26.13")]}
    )
    assert peer_difference(rounded, expected) is None
    wrong = pa.table({"o_orderpriority": ["1-URGENT", "2-HIGH"], "avg_qty": [25.5, 27.0]})
    assert "row 1 differs" in peer_difference(wrong, expected)
    assert "1 rows where 2" in peer_difference(wrong.slice(0, 1), expected)
    renamed = expected.rename_columns(["priority", "avg_qty"])
    assert "columns differ" in peer_difference(renamed, expected)
    swapped = pa.table({"o_orderpriority": ["2-HIGH", "1-URGENT"], "avg_qty": [26.125, 25.5]})
    assert "row 0 differs" in peer_difference(swapped, expected)  # order is part of the answer


# --- the options ------------------------------------------------------------------------------


def test_scale_factors_are_read_smallest_first():
    assert tpch.parse(["--scale-factors", "0.1,1,3"]).scale_factors == [0.1, 1.0, 3.0]
    assert tpch.parse(["--scale-factor", "0.5"]).scale_factors == [0.5]
    assert tpch.parse([]).scale_factors == [1.0]
    assert tpch.parse(["--systems", "gateway,trino"]).systems == ("gateway", "trino")
    for wrong in (
        ["--scale-factors", "1,0.1"],
        ["--scale-factors", "0.1,0.1"],
        ["--scale-factors", "one"],
        ["--scale-factors", "0,1"],
        ["--scale-factor", "1", "--scale-factors", "1,3"],
        ["--systems", "attach,trino"],  # the gateway is what is measured
        ["--systems", "gateway,spark"],
    ):
        with pytest.raises(SystemExit):
            tpch.parse(wrong)


def test_a_scale_factor_the_disk_cannot_take_is_refused_before_loading(tmp_path: Path):
    free = __import__("shutil").disk_usage(tmp_path).free
    too_big = math.ceil(free / tpch.DISK_PER_SCALE_FACTOR) + 1_000
    with pytest.raises(SystemExit, match="not enough disk"):
        tpch.check_disk([float(too_big)], tmp_path)
    assert not (tpch.mesh_directory(float(too_big))).exists()


def test_scaling_compares_each_scale_factors_time_with_its_data():
    def totals(sf: float, rows: int, gateway: float, attach: float) -> dict:
        return {
            "scale_factor": sf,
            "rows": rows,
            "total_seconds": {"gateway": gateway, "attach": attach},
            "gateway_peak_mb": 300.0 + sf,
        }

    grown = tpch.scaling([totals(0.1, 1_000, 2.0, 1.0), totals(1, 10_000, 10.0, 12.0)])
    assert grown[0]["growth_over_data"] == pytest.approx(1.0)
    assert grown[1]["data_growth"] == 10.0
    assert grown[1]["time_growth"] == {"gateway": 5.0, "attach": 12.0}
    assert grown[1]["growth_over_data"] == pytest.approx(0.5)  # grew half as fast as the data


# --- the peers, for real ----------------------------------------------------------------------


@pytest.mark.stores
@pytest.mark.parametrize("number", [3, 9, 13, 22])
def test_duckdb_with_the_stores_attached_answers_as_the_reference(
    number, mesh: Path, reference, tpch_queries
):
    attach = attach_baseline(mesh)
    try:
        answer = duckdb_runner(attach, tpch_queries[number])()
    finally:
        attach.close()
    expected = reference.execute(tpch_queries[number]).to_arrow_table()
    assert expected.num_rows > 0
    assert answer_difference(answer, expected, ordered=True) is None


@pytest.fixture(scope="module")
def trino(mesh: Path, tmp_path_factory):
    require(TRINO)
    with trino_direct(mesh, tmp_path_factory.mktemp("trino-direct")) as direct:
        yield direct


@pytest.mark.stores
@pytest.mark.parametrize("number", [1, 8, 14, 15, 18, 22])
def test_trino_directly_answers_as_the_reference_by_value(number, trino, reference, tpch_queries):
    """Q1 (avg of decimals), Q8 and Q14 (decimal divisions), Q15 (a GROUP BY over an output
    alias Trino cannot read), Q18 (IN over an aggregate) and Q22 (nation-free, averages in a
    filter) over Trino's postgresql, mysql and lake catalogs."""
    answer = trino.runner(
        tpch_queries[number], output=output_names(reference, tpch_queries[number])
    )()
    expected = reference.execute(tpch_queries[number]).to_arrow_table()
    assert expected.num_rows > 0
    assert peer_difference(answer, expected) is None
    if number == 1:  # Trino's own types reached the comparison: its avg is a decimal
        assert pa.types.is_decimal(answer.schema.field("avg_qty").type)
        assert pa.types.is_floating(expected.schema.field("avg_qty").type)


@pytest.mark.stores
def test_loading_says_how_far_it_got_table_by_table(tmp_path: Path):
    """Loading a scale factor takes minutes at SF 3: each table reports its rows and time."""
    import uuid

    from tests.support.stores import MARIADB, POSTGRES
    from tests.support.tpch_mesh import build_tpch_mesh, drop_tpch_stores

    require(POSTGRES)
    require(MARIADB)
    namespace = f"mg_tpch_{uuid.uuid4().hex[:12]}"
    messages: list[str] = []
    try:
        build_tpch_mesh(
            tmp_path / "mesh", scale_factor=0.01, progress=messages.append, namespace=namespace
        )
    finally:
        drop_tpch_stores(namespace)
    for table in ("customer", "orders", "part", "supplier", "partsupp"):
        assert any(m.strip().startswith(f"{table}: ") and " rows in " in m for m in messages), (
            messages
        )

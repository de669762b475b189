"""Fixtures of the conformance suite: every test runs once per store kind in kinds.KINDS."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pytest

from connectors import open_connector
from gateway.types import arrow_type
from tests.conformance.kinds import CONTRACT_TYPES, KINDS, StoreKind

UTC = dt.UTC
TYPE_ROWS = [
    {
        "id": 1,
        "c_bigint": 42,
        "c_integer": -7,
        "c_smallint": 12,
        "c_boolean": True,
        "c_double": 3.25,
        "c_decimal": Decimal("1234.56"),
        "c_varchar": "plain",
        "c_date": dt.date(2024, 2, 29),
        "c_timestamp": dt.datetime(2024, 2, 29, 12, 34, 56, 789012),
        "c_timestamptz": dt.datetime(2024, 2, 29, 12, 34, 56, 789012, tzinfo=UTC),
        "c_blob": b"\x00\x01\xff",
    },
    {
        "id": 2,
        "c_bigint": 2**63 - 1,
        "c_integer": -(2**31),
        "c_smallint": 32767,
        "c_boolean": False,
        "c_double": -1.5e300,
        "c_decimal": Decimal("-9999999999999.99"),
        "c_varchar": "名前 ☃ é – ß 🚀",
        "c_date": dt.date(1970, 1, 1),
        "c_timestamp": dt.datetime(1999, 12, 31, 23, 59, 59, 999999),
        "c_timestamptz": dt.datetime(2038, 1, 19, 3, 14, 7, tzinfo=UTC),
        "c_blob": b"",
    },
    {
        "id": 3,
        "c_bigint": 0,
        "c_integer": 0,
        "c_smallint": -32768,
        "c_boolean": False,
        "c_double": 0.0,
        "c_decimal": Decimal("0.01"),
        "c_varchar": "",
        "c_date": dt.date(2100, 12, 31),
        "c_timestamp": dt.datetime(2000, 1, 1),
        "c_timestamptz": dt.datetime(1970, 1, 2, tzinfo=UTC),
        "c_blob": b"x" * 100,
    },
    {"id": 4, **{name: None for name in CONTRACT_TYPES if name != "id"}},
]
CONTRACT_SCHEMA = pa.schema([(name, arrow_type(kind)) for name, kind in CONTRACT_TYPES.items()])
TYPES = pa.Table.from_pylist(TYPE_ROWS, schema=CONTRACT_SCHEMA)

STATUSES = ["open", "shipped", "returned"]
ORDERS = pa.table(
    {
        "o_id": pa.array(range(1, 2001), pa.int64()),
        "o_cust": pa.array([i % 37 for i in range(1, 2001)], pa.int32()),
        "o_status": pa.array([STATUSES[i % 3] for i in range(1, 2001)], pa.string()),
        "o_total": pa.array(
            [Decimal(i * 7919 % 100000) / 100 for i in range(1, 2001)], pa.decimal128(15, 2)
        ),
        "o_weight": pa.array([(i % 113) * 0.25 for i in range(1, 2001)], pa.float64()),
        "o_date": pa.array(
            [dt.date(2024, 1, 1) + dt.timedelta(days=i % 120) for i in range(1, 2001)],
            pa.date32(),
        ),
    }
)
TABLES = {"types": TYPES, "orders": ORDERS}


@pytest.fixture(scope="module", params=sorted(KINDS))
def store_kind(request: pytest.FixtureRequest) -> StoreKind:
    kind = KINDS[request.param]
    kind.available()
    return kind


@pytest.fixture(scope="module")
def store(store_kind: StoreKind, tmp_path_factory: pytest.TempPathFactory):
    """A fresh store of this kind: (settings, table name → ``table:``, or why it has no tables)."""
    with store_kind.store(tmp_path_factory.mktemp(store_kind.name), TABLES) as store:
        yield store


@pytest.fixture(scope="module")
def loaded(store):
    """The suite's tables in the store: (settings, table name → ``table:``)."""
    _, tables = store
    if isinstance(tables, str):
        pytest.skip(tables)
    return store


def open_store(kind: StoreKind, settings: dict, tmp_path: Path, **overrides):
    return open_connector(f"{kind.name}_conformance", settings | overrides, base_dir=tmp_path)


@pytest.fixture
def connector(store_kind: StoreKind, store, tmp_path: Path):
    settings, _ = store
    connector = open_store(store_kind, settings, tmp_path)
    yield connector
    connector.close()


@pytest.fixture(autouse=True)
def _known_gaps(request: pytest.FixtureRequest) -> None:
    """Mark the test xfail(strict) when its store kind declares a gap for it (or its column)."""
    if "store_kind" not in request.fixturenames:
        return
    kind: StoreKind = request.getfixturevalue("store_kind")
    column = getattr(request.node, "callspec", None) and request.node.callspec.params.get("column")
    for key in (f"{request.node.originalname}:{column}", request.node.originalname):
        if key in kind.gaps:
            request.applymarker(kind.gaps[key].mark())
            return

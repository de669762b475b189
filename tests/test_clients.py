"""The other real clients users pick, against a real meshgate server on the demo mesh.

- SQLAlchemy through ``sqlalchemy-adbc`` (the ADBC Flight SQL driver underneath): the engine,
  ``pandas.read_sql`` and the inspector.
- ``flightsql-dbapi``'s DB-API: plain queries, bound parameters and its metadata helpers. It
  runs in a process of its own (``tests/support/flightsql_dbapi_client.py`` says why), installed
  by ``scripts/test-services`` into a cache directory because it pins SQLAlchemy below 2.0,
  which ``sqlalchemy-adbc`` and pandas 3 cannot use, so it cannot live in the test extra.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.mesh import load_mesh
from tests.support.server import running_server
from tests.support.stores import stores_required

FLIGHTSQL_DBAPI = "flightsql-dbapi==0.2.2"
SQLALCHEMY_FOR_IT = "SQLAlchemy==1.4.54"
CLIENT_SCRIPT = Path(__file__).parent / "support" / "flightsql_dbapi_client.py"


@pytest.fixture(scope="module")
def server(demo_mesh):
    with running_server(demo_mesh) as (uri, _):
        yield uri


# --- SQLAlchemy through sqlalchemy-adbc ---------------------------------------------------------


@pytest.fixture(scope="module")
def engine(server):
    """An engine as the README tells users to make one: ``tls=false`` for a plaintext gateway,
    the credentials as ``db_kwargs`` (a URL password would be sent as a bearer token)."""
    import sqlalchemy as sa

    host_port = server.removeprefix("grpc://")
    engine = sa.create_engine(
        f"adbc+flightsql://{host_port}?tls=false",
        connect_args={"db_kwargs": {"username": "admin", "password": "admin"}, "autocommit": True},
    )
    yield engine
    engine.dispose()


def test_sqlalchemy_queries_with_bound_parameters(engine, demo_reference):
    import sqlalchemy as sa

    with engine.connect() as conn:
        got = conn.execute(
            sa.text("SELECT n_name FROM reference.nation WHERE n_nationkey = :key"), {"key": 7}
        ).fetchall()
        assert got == [("GERMANY",)]
        count = conn.execute(
            sa.text("SELECT count(*) FROM sales.orders WHERE o_orderstatus = :status"),
            {"status": "O"},
        ).scalar_one()
    expected = demo_reference.execute(
        "SELECT count(*) FROM orders WHERE o_orderstatus = 'O'"
    ).fetchone()
    assert count == expected[0]


def test_pandas_read_sql_through_the_engine(engine, demo_reference):
    import pandas as pd
    import sqlalchemy as sa

    sql = "SELECT n_nationkey, n_name FROM reference.nation ORDER BY n_nationkey"
    with engine.connect() as conn:
        frame = pd.read_sql(sql, conn)
        filtered = pd.read_sql(
            sa.text("SELECT n_name FROM reference.nation WHERE n_regionkey = :r ORDER BY 1"),
            conn,
            params={"r": 3},
        )
    expected = demo_reference.execute(sql.replace("reference.", "")).fetchall()
    assert list(frame.itertuples(index=False, name=None)) == expected
    europe = demo_reference.execute(
        "SELECT n_name FROM nation WHERE n_regionkey = 3 ORDER BY 1"
    ).fetchall()
    assert filtered["n_name"].tolist() == [name for (name,) in europe]


def test_sqlalchemy_inspector_lists_schemas_and_columns(engine, demo_mesh):
    import sqlalchemy as sa

    inspector = sa.inspect(engine)
    mesh = load_mesh(demo_mesh)
    assert inspector.get_schema_names() == mesh.domains()
    product = mesh.products["sales.orders"]
    columns = inspector.get_columns("orders", schema="sales")
    assert [c["name"] for c in columns] == [c.name for c in product.columns]
    types = {c["name"]: type(c["type"]) for c in columns}
    assert types["o_orderkey"] is sa.BigInteger and types["o_orderstatus"] is sa.String
    assert inspector.has_table("orders", schema="sales")
    assert not inspector.has_table("nothing", schema="sales")


def test_sqlalchemy_reflects_a_product_into_a_table_and_queries_it(engine):
    import sqlalchemy as sa

    nation = sa.Table("nation", sa.MetaData(), schema="reference", autoload_with=engine)
    assert nation.columns.keys() == ["n_nationkey", "n_name", "n_regionkey", "n_comment"]
    with engine.connect() as conn:
        got = conn.execute(sa.select(nation.c.n_name).where(nation.c.n_nationkey == 7)).all()
    assert got == [("GERMANY",)]


@pytest.mark.xfail(
    strict=True,
    reason="sqlalchemy-adbc 0.3.0 lists only tables whose ADBC table_type is exactly 'table'; "
    "meshgate reports 'TABLE', the JDBC and Flight SQL convention the JDBC driver and BI tools "
    "expect (has_table, get_columns and reflection work)",
)
def test_sqlalchemy_inspector_lists_table_names(engine):
    import sqlalchemy as sa

    assert sa.inspect(engine).get_table_names(schema="reference") == [
        "nation",
        "nation_v1",
        "region",
        "region_v1",
    ]


# --- flightsql-dbapi --------------------------------------------------------------------------


def _unavailable(reason: str) -> None:
    if stores_required():
        pytest.fail(f"MESHGATE_REQUIRE_STORES=1 but {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="module")
def flightsql_dbapi() -> Path:
    """The directory ``scripts/test-services`` installs flightsql-dbapi and the SQLAlchemy 1.4
    it imports into (``MESHGATE_FLIGHTSQL_DBAPI``, else its default place in the cache)."""
    cache = Path(os.environ.get("MESHGATE_CACHE", Path.home() / ".cache" / "meshgate"))
    directory = Path(
        os.environ.get("MESHGATE_FLIGHTSQL_DBAPI") or cache / FLIGHTSQL_DBAPI.replace("==", "-")
    )
    if not (directory / "flightsql" / "dbapi.py").is_file():
        _unavailable(
            f"{FLIGHTSQL_DBAPI} is not installed in {directory}; scripts/test-services installs it"
        )
    return directory


def run_flightsql_dbapi(directory: Path, uri: str, user: str) -> dict:
    host, port = uri.removeprefix("grpc://").rsplit(":", 1)
    completed = subprocess.run(
        [sys.executable, str(CLIENT_SCRIPT), host, port, user],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(directory)},
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    return json.loads(completed.stdout)


def test_flightsql_dbapi_queries_parameters_and_metadata(
    flightsql_dbapi, server, demo_reference, demo_mesh
):
    got = run_flightsql_dbapi(flightsql_dbapi, server, "admin")
    nations = demo_reference.execute("SELECT n_nationkey, n_name FROM nation ORDER BY 1").fetchall()
    assert [tuple(row) for row in got["nations"]] == nations
    assert got["description"] == ["n_nationkey", "n_name"]
    assert got["bound_int"] == [["GERMANY"]]
    (expected,) = demo_reference.execute(
        "SELECT count(*) FROM orders WHERE o_orderstatus = 'O' AND o_orderdate >= '1998-01-01'"
    ).fetchone()
    assert got["bound_text_and_date"] == [[expected]]
    assert got["schemas"] == load_mesh(demo_mesh).domains()
    assert got["tables"] == ["nation", "nation_v1", "region", "region_v1"]
    assert got["columns"] == ["n_nationkey", "n_name", "n_regionkey", "n_comment"]
    assert got["sql_info"] == {"0": "meshgate", "3": True}
    assert got["unknown_product"]["error"]["class"] == "ArrowKeyError"  # NOT_FOUND
    assert "no data product 'nowhere.nothing'" in got["unknown_product"]["error"]["message"]


def test_flightsql_dbapi_sees_only_what_the_principal_may_read(flightsql_dbapi, server, demo_mesh):
    got = run_flightsql_dbapi(flightsql_dbapi, server, "guest")
    # the demo lists denied products (discoverable) but not its audit trail (invisible)
    assert got["schemas"] == [d for d in load_mesh(demo_mesh).domains() if d != "audit"]
    assert got["bound_int"] == [["GERMANY"]]
    denied = got["bound_text_and_date"]["error"]
    assert denied["class"] == "FlightUnauthorizedError"
    assert "'guest' may not read sales.orders" in denied["message"]

"""The demo mesh: it loads, its stores hold exactly the generated TPC-H data with the contract
types, and it is built once, reused, and rebuilt when incomplete."""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from connectors import KINDS, open_connector
from demo import (
    MARKER,
    TPCH_TABLES,
    DemoBuildError,
    build_demo_mesh,
    generate_tpch,
    load_tpch_reference,
    tpch_dir,
    tpch_row_counts,
)
from gateway.mesh import Mesh, Product, load_mesh
from gateway.principals import PrincipalDirectory
from gateway.types import arrow_type, serving_type

DOMAIN_PRODUCTS = {
    "sales": {"customer", "orders"},
    "fulfillment": {"lineitem"},
    "supply": {"part", "supplier", "partsupp"},
    "reference": {"nation", "region"},
}
PII = {"c_name", "c_address", "c_phone", "s_name", "s_address", "s_phone"}


def load(directory: Path) -> Mesh:
    return load_mesh(directory, known_store_kinds=set(KINDS))


def versions(mesh: Mesh) -> list[Product]:
    """Every TPC-H product version once (the unversioned addresses repeat the latest); the
    audit domain is the gateway's own trail, tested on its own."""
    return [
        p
        for address, p in sorted(mesh.products.items())
        if address == p.versioned_address and p.domain != "audit"
    ]


def store_of(mesh: Mesh, product: Product) -> dict:
    return {
        "kind": mesh.config.stores[product.store].kind,
        **mesh.config.stores[product.store].settings,
    }


def physical_columns(mesh: Mesh, product: Product) -> list[tuple[str, pa.DataType]]:
    """Column names and Arrow types as the store itself declares them, read without the gateway."""
    store = store_of(mesh, product)
    table, sql = product.descriptor.table, product.descriptor.sql
    if store["kind"] == "duckdb":
        with duckdb.connect(str(mesh.root / store["path"]), read_only=True) as con:
            rows = con.execute(f"DESCRIBE {table or f'({sql})'}").fetchall()
        return [(name, arrow_type(declared)) for name, declared, *_ in rows]
    if store["kind"] == "sqlite":
        assert sql is None
        with sqlite3.connect(mesh.root / store["path"]) as con:
            rows = con.execute(f"PRAGMA table_info({table})").fetchall()
        return [(name, arrow_type(declared)) for _, name, declared, *_ in rows]
    assert store["kind"] == "files"
    files = sorted((mesh.root / store["root"]).glob(table))
    schemas = {pq.read_schema(f).remove_metadata() for f in files}
    assert len(files) >= 2 and len(schemas) == 1, f"{product.versioned_address}: {files}"
    return [(f.name, f.type) for f in schemas.pop()]


def contract_columns(product: Product) -> list[tuple[str, pa.DataType]]:
    return [(c.name, arrow_type(c.type)) for c in product.columns]


def test_mesh_loads_with_every_product_described(demo_mesh: Path):
    mesh = load(demo_mesh)

    expected = {f"{d}.{p}" for d, products in DOMAIN_PRODUCTS.items() for p in products}
    expected |= {"audit.events"}
    expected |= {f"{address}_v1" for address in expected} | {"sales.orders_v2"}
    assert set(mesh.addresses()) == expected
    assert {name: s.kind for name, s in mesh.config.stores.items()} == {
        "sales_db": "duckdb",
        "fulfillment_lake": "files",
        "supply_db": "sqlite",
        "reference_db": "sqlite",
        "audit_log": "files",
    }
    assert mesh.products["audit.events"].descriptor.owner == "governance@acme.example"
    for product in versions(mesh):
        d = product.descriptor
        if product.domain != "audit":
            assert d.owner == f"{product.domain}-data@acme.example"
        assert len(d.description) > 30, product.versioned_address
        assert all(len(c.description) > 5 for c in product.columns), product.versioned_address
    columns = {c.name: c for p in versions(mesh) for c in p.columns}
    assert {name for name, c in columns.items() if c.classification.value == "pii"} == PII
    assert all(c.classification.value == "internal" for n, c in columns.items() if "comment" in n)
    assert mesh.products["supply.partsupp"].descriptor.lineage == ["supply.part", "supply.supplier"]


def test_orders_has_a_second_version(demo_mesh: Path):
    mesh = load(demo_mesh)
    v1, v2 = mesh.products["sales.orders_v1"], mesh.products["sales.orders_v2"]

    assert mesh.products["sales.orders"] is v2
    assert (v1.version, v2.version) == (1, 2)
    assert v1.descriptor.table == "main.orders" and v2.descriptor.sql is not None
    v1_names, v2_names = [c.name for c in v1.columns], [c.name for c in v2.columns]
    assert "o_comment" in v1_names and "o_comment" not in v2_names
    assert "o_orderyear" in v2_names
    for product in (v1, v2):
        assert product.descriptor.slo.freshness.column == "o_orderdate"


def test_principals_sign_in_with_their_name_as_password(demo_mesh: Path):
    directory = PrincipalDirectory.load(demo_mesh)

    assert directory.names() == ["admin", "analyst", "eu_analyst", "guest"]
    assert directory.authenticate("admin", "admin").roles == ("admin",)
    assert directory.authenticate("analyst", "analyst").attributes == {}
    eu = directory.authenticate("eu_analyst", "eu_analyst")
    assert (eu.roles, eu.attributes) == (("analyst",), {"region": "EUROPE"})
    assert directory.authenticate("guest", "guest").roles == ("guest",)
    assert directory.authenticate("guest", "admin") is None


def test_the_demo_ships_the_demo_policies(demo_mesh: Path):
    from policies import PolicyEngine

    shipped = sorted(p.name for p in (demo_mesh / "policies").iterdir())
    assert shipped == ["README.md", "global.yaml", "sales.yaml"]
    engine = PolicyEngine.load(load(demo_mesh))
    assert engine.policy is not None


def test_descriptor_columns_equal_the_physical_columns(demo_mesh: Path):
    mesh = load(demo_mesh)
    for product in versions(mesh):
        assert physical_columns(mesh, product) == contract_columns(product), (
            product.versioned_address
        )


def test_connectors_report_the_contract_types(demo_mesh: Path):
    mesh = load(demo_mesh)
    for product in versions(mesh):
        connector = open_connector(product.store, store_of(mesh, product), base_dir=mesh.root)
        try:
            relation = connector.relation(product.descriptor.table, product.descriptor.sql)
            schema = connector.describe(relation)
        finally:
            connector.close()
        found = [(f.name, serving_type(f.type)) for f in schema]
        assert found == contract_columns(product), product.versioned_address


def test_stores_hold_exactly_the_generated_rows(demo_mesh: Path):
    """Each store's table, cast to its contract, equals the generated Parquet row for row."""
    import duckdb_extensions

    mesh = load(demo_mesh)
    generated = tpch_row_counts(tpch_dir(demo_mesh))
    assert json.loads((demo_mesh / MARKER).read_text())["rows"] == generated
    assert generated["orders"] == 15_000 and generated["lineitem"] > 50_000

    con = duckdb.connect()
    assert load_tpch_reference(con, tpch_dir(demo_mesh)) == generated
    duckdb_extensions.import_extension("sqlite_scanner", con=con)
    con.execute("SET sqlite_all_varchar = true")  # read what SQLite stored, cast below
    for name, store in mesh.config.stores.items():
        if store.kind in ("duckdb", "sqlite"):
            path = mesh.root / store.settings["path"]
            con.execute(f"ATTACH '{path}' AS {name} (TYPE {store.kind}, READ_ONLY)")

    for table in TPCH_TABLES:
        product = next(p for p in versions(mesh) if p.name == table and p.version == 1)
        store = store_of(mesh, product)
        if store["kind"] == "files":
            relation = f"read_parquet('{mesh.root / store['root'] / product.descriptor.table}')"
        else:
            relation = f"{product.store}.{product.descriptor.table}"
        cast = ", ".join(f"CAST({c.name} AS {c.type}) AS {c.name}" for c in product.columns)
        stored = f"SELECT {cast} FROM {relation}"
        count, missing, extra = con.execute(
            f"SELECT (SELECT count(*) FROM {relation}), "
            f"(SELECT count(*) FROM (FROM {table} EXCEPT ALL {stored})), "
            f"(SELECT count(*) FROM ({stored} EXCEPT ALL FROM {table}))"
        ).fetchone()
        assert (count, missing, extra) == (generated[table], 0, 0), table
    con.close()


def test_lake_files_use_plain_utf8_strings(demo_mesh: Path):
    files = sorted((demo_mesh / "stores" / "lake" / "lineitem").glob("*.parquet"))
    assert len(files) >= 2
    assert (
        sum(pq.read_metadata(f).num_rows for f in files)
        == tpch_row_counts(tpch_dir(demo_mesh))["lineitem"]
    )
    schema = pq.read_schema(files[0])
    types = {schema.field(name).type for name in ("l_returnflag", "l_shipmode", "l_comment")}
    assert types == {pa.string()}
    assert not any(
        pa.types.is_string_view(f.type) or pa.types.is_large_string(f.type) for f in schema
    )
    assert schema.field("l_extendedprice").type == pa.decimal128(15, 2)
    assert schema.field("l_shipdate").type == pa.date32()


def test_a_complete_mesh_is_reused(demo_mesh: Path):
    marker = demo_mesh / MARKER
    before = {p: p.stat().st_mtime_ns for p in (marker, demo_mesh / "stores" / "sales.duckdb")}
    messages: list[str] = []

    assert build_demo_mesh(demo_mesh, scale_factor=0.01, progress=messages.append) == demo_mesh

    assert {p: p.stat().st_mtime_ns for p in before} == before
    assert len(messages) == 1 and messages[0].startswith("reusing demo mesh")


def test_complete_tpch_output_is_reused(demo_mesh: Path):
    files = sorted(tpch_dir(demo_mesh).glob("*.parquet"))
    before = [f.stat().st_mtime_ns for f in files]
    messages: list[str] = []

    generate_tpch(tpch_dir(demo_mesh), scale_factor=0.01, progress=messages.append)

    assert [f.stat().st_mtime_ns for f in files] == before
    assert messages[0].startswith("reusing TPC-H")


def test_a_half_built_mesh_is_rebuilt(demo_mesh: Path, tmp_path: Path):
    directory = tmp_path / "mesh"
    shutil.copytree(demo_mesh, directory)
    (directory / MARKER).unlink()
    (directory / "stores" / "supply.sqlite").write_bytes(b"")  # as if the build stopped here

    build_demo_mesh(directory, scale_factor=0.01, progress=lambda message: None)

    assert json.loads((directory / MARKER).read_text())["scale_factor"] == 0.01
    load(directory)
    with sqlite3.connect(directory / "stores" / "supply.sqlite") as con:
        assert con.execute("SELECT count(*) FROM partsupp").fetchone() == (8_000,)
    assert not list(tmp_path.glob(".mesh.building-*")) and not list(tmp_path.glob(".mesh.old-*"))


def test_an_interrupted_rebuild_keeps_the_old_mesh(demo_mesh: Path, tmp_path: Path):
    directory = tmp_path / "mesh"
    shutil.copytree(demo_mesh, directory)

    def stop_at_sqlite(message: str) -> None:
        if "SQLite" in message:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        build_demo_mesh(directory, scale_factor=0.001, progress=stop_at_sqlite)

    assert json.loads((directory / MARKER).read_text())["scale_factor"] == 0.01
    load(directory)
    assert [p.name for p in tmp_path.iterdir()] == ["mesh"]  # no partial build left behind


def test_another_scale_factor_rebuilds(demo_mesh: Path, tmp_path: Path):
    directory = tmp_path / "mesh"
    shutil.copytree(demo_mesh, directory)

    build_demo_mesh(directory, scale_factor=0.001, progress=lambda message: None)

    marker = json.loads((directory / MARKER).read_text())
    assert marker["scale_factor"] == 0.001 and marker["rows"]["orders"] == 1_500
    with duckdb.connect(str(directory / "stores" / "sales.duckdb"), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM main.orders").fetchone() == (1_500,)


def test_refuses_a_directory_that_is_not_a_demo_mesh(tmp_path: Path):
    directory = tmp_path / "mine"
    directory.mkdir()
    (directory / "notes.txt").write_text("keep me")

    with pytest.raises(DemoBuildError, match="not a meshgate demo mesh"):
        build_demo_mesh(directory, progress=lambda message: None)
    assert [p.name for p in directory.iterdir()] == ["notes.txt"]
    with pytest.raises(DemoBuildError, match="positive number"):
        build_demo_mesh(tmp_path / "new", scale_factor=0, progress=lambda message: None)


def test_the_audit_trail_is_a_product_of_the_governance_group(demo_mesh: Path):
    mesh = load(demo_mesh)
    events = mesh.products["audit.events"]
    assert events.store == "audit_log" and events.descriptor.table == "events.jsonl"
    assert (demo_mesh / "audit" / "events.jsonl").is_file()
    assert {"principal", "statement", "outcome", "rows", "fragments"} <= {
        c.name for c in events.columns
    }

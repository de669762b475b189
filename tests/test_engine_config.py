"""The ``engines:`` section, per-store ``trino:`` reach and ``gateway.routing`` of mesh.yaml, and
the routing decision, without any service: what is refused with which message, and what each
connector names in Trino's terms."""

from __future__ import annotations

import doctest
from pathlib import Path

import pytest
from sqlglot import exp

import connectors
import gateway.planner.route as route_module
from gateway.errors import MeshConfigError
from gateway.mesh import load_mesh
from gateway.planner.route import EngineView, choose_route


def _mesh(root: Path, text: str) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "mesh.yaml").write_text(text)
    return root


def test_route_doctests():
    assert doctest.testmod(route_module).failed == 0


def test_routing_to_trino_without_an_engine_is_refused_with_the_fix(tmp_path):
    root = _mesh(
        tmp_path / "m",
        "name: m\nstores:\n  s: {kind: sqlite, path: x.sqlite}\n"
        "gateway:\n  routing: {mode: auto}\n",
    )
    with pytest.raises(
        MeshConfigError, match=r"routing.mode.*needs a Trino cluster under `engines:`"
    ):
        load_mesh(root)


def test_an_engine_named_like_a_store_and_a_second_engine_are_refused(tmp_path):
    root = _mesh(
        tmp_path / "m",
        "name: m\nstores:\n  s: {kind: sqlite, path: x.sqlite}\n"
        "engines:\n  s: {kind: trino, host: h, user: u}\n",
    )
    with pytest.raises(MeshConfigError, match=r"`engines.s`: a store has that name too"):
        load_mesh(root)
    two = _mesh(
        tmp_path / "two",
        "name: m\nstores:\n  s: {kind: sqlite, path: x.sqlite}\nengines:\n"
        "  a: {kind: trino, host: h, user: u}\n  b: {kind: trino, host: h, user: u}\n",
    )
    with pytest.raises(MeshConfigError, match="engines"):
        load_mesh(two)


def test_an_engine_missing_a_setting_is_refused_naming_the_engines_field(tmp_path):
    from gateway.service import Gateway

    root = _mesh(
        tmp_path / "m",
        "name: m\nstores:\n  s: {kind: sqlite, path: x.sqlite}\n"
        "engines:\n  cluster: {kind: trino, user: u}\n",
    )
    (root / "principals.yaml").write_text("principals: {}\n")
    with pytest.raises(
        MeshConfigError, match=r"`engines\.cluster\.host`: required field is missing; add it"
    ):
        Gateway.open(root)


def test_a_misspelt_reach_field_is_refused(tmp_path):
    root = _mesh(
        tmp_path / "m",
        "name: m\nstores:\n  s: {kind: postgres, trino: {catalogue: postgresql}}\n",
    )
    with pytest.raises(MeshConfigError, match=r"stores.s.trino.catalogue.*unknown field"):
        load_mesh(root)


def test_each_connector_names_its_products_in_trinos_terms(tmp_path):
    def name(kind: str, settings: dict, table: str | None, sql: str | None = None, **reach):
        connector = connectors.open_connector("s", {"kind": kind, **settings}, base_dir=tmp_path)
        try:
            relation = connector.trino_name(table, sql, **{"schema": None, **reach})
        finally:
            connector.close()
        return None if relation is None else relation.sql("trino")

    assert name("postgres", {}, "sales.orders", catalog="pg") == '"pg"."sales"."orders"'
    assert name("postgres", {}, "orders", catalog="pg") == '"pg"."public"."orders"'
    assert name("postgres", {}, None, "SELECT 1", catalog="pg") is None
    assert name("mysql", {"database": "supply"}, "part", catalog="my") == '"my"."supply"."part"'
    assert name("mysql", {"database": "supply"}, "other.part", catalog="my") == (
        '"my"."other"."part"'
    )
    files = {"root": str(tmp_path)}
    assert name("files", files, "lineitem/*.parquet", catalog="lake", schema="s") == (
        '"lake"."s"."lineitem"'
    )
    assert name("files", files, "rates.csv", catalog="lake", schema="s") is None
    assert name("files", files, "lineitem/*.parquet", catalog="lake") is None
    assert name("sqlite", {"path": str(tmp_path / "x.sqlite")}, "nation", catalog="c") is None


def test_auto_routes_by_the_counted_rows_and_never_when_the_engine_is_down():
    names = {"a.x": exp.to_table("c.s.x"), "b.y": exp.to_table("c.s.y")}
    homes = {"a.x": "pg", "b.y": "my", "c.z": "lite"}
    view = EngineView("trino", "auto", 1_000, names, rows={"a.x": 600, "b.y": 500})
    chosen = choose_route({"a.x", "b.y"}, homes=homes, engine=view)
    assert chosen.engine == "trino" and chosen.placement == {"a.x": "trino", "b.y": "trino"}
    small = EngineView("trino", "auto", 1_000, names, rows={"a.x": 600, "b.y": 300})
    assert "below min_rows 1,000" in choose_route({"a.x", "b.y"}, homes=homes, engine=small).reason
    down = EngineView("trino", "auto", 0, names, available=False)
    assert choose_route({"a.x", "b.y"}, homes=homes, engine=down).engine == "local"
    mixed = choose_route(
        {"a.x", "b.y", "c.z"}, homes=homes, engine=EngineView("trino", "trino", 0, names)
    )
    assert mixed.engine == "trino" and "c.z" not in mixed.placement
    assert "lite not reachable there, read locally" in mixed.reason
    one = choose_route({"a.x", "c.z"}, homes=homes, engine=EngineView("trino", "trino", 0, names))
    assert one.engine == "local" and "lite not reachable" in one.reason

"""The federated TPC-H mesh with the real Trino as its engine (issue 17's tests and benchmark).

:func:`trino_tpch_mesh` writes, next to a mesh built by :func:`tests.support.tpch_mesh.
build_tpch_mesh`, a variant whose ``mesh.yaml`` names the Trino of ``tests.support.stores``
under ``engines:`` and says how it reaches each store: PostgreSQL through its ``postgresql``
catalog, MariaDB through ``mysql``, the Parquet lake through ``lake`` (a Hive schema of this
run whose ``lineitem`` is an external table over the mesh's own files). SQLite is out of Trino's
reach: with ``reference="sqlite"`` nation and region stay there and are read locally; with
``reference="postgres"`` they are copied into a PostgreSQL schema of this run, so that every
product is reachable and whole queries run on Trino. Everything created is dropped on exit.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import duckdb
import yaml

from demo import TABLES, tpch_file
from tests.support.stores import postgres_admin, trino_admin, trino_settings

ENGINE = "trino"


def _hive_type(contract_type: str) -> str:
    return "varchar" if contract_type == "varchar" else contract_type


@contextlib.contextmanager
def trino_tpch_mesh(
    base: Path,
    target: Path,
    *,
    mode: Literal["local", "trino", "auto"] = "trino",
    reference: Literal["sqlite", "postgres"] = "sqlite",
    min_rows: int = 0,
    engine_overrides: dict[str, Any] | None = None,
    audit: bool = False,
    gateway: dict[str, Any] | None = None,
) -> Iterator[Path]:
    """A copy of the TPC-H mesh ``base`` in ``target`` routed through Trino (see the module)."""
    unique = f"meshgate_scaleout_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    config = yaml.safe_load((base / "mesh.yaml").read_text())
    stores = config["stores"]
    lake_root = (base / stores["fulfillment_lake"]["root"]).resolve()
    stores["fulfillment_lake"]["root"] = str(lake_root)
    stores["sales_pg"]["trino"] = {"catalog": "postgresql"}
    stores["supply_mysql"]["trino"] = {"catalog": "mysql"}
    stores["fulfillment_lake"]["trino"] = {"catalog": "lake", "schema": unique}
    stores["reference_db"]["path"] = str((base / stores["reference_db"]["path"]).resolve())
    engine = {k: v for k, v in trino_settings().items() if k not in ("catalog", "schema")}
    config["engines"] = {ENGINE: engine | (engine_overrides or {})}
    config.setdefault("gateway", {})["routing"] = {"mode": mode, "min_rows": min_rows}
    if not audit:
        config["gateway"]["audit_log"] = None
    config["gateway"].update(gateway or {})
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(base, target, ignore=shutil.ignore_patterns("tpch", "stores", "audit"))
    trino = trino_admin()
    cursor = trino.cursor()
    created_pg = False
    try:
        cursor.execute(f"CREATE SCHEMA lake.{unique}")
        cursor.fetchall()
        (lineitem,) = (t for t in TABLES if t.name == "lineitem")
        columns = ", ".join(f"{n} {_hive_type(t)}" for n, t, _, _ in lineitem.columns)
        location = f"local://{lake_root / 'lineitem'}"
        cursor.execute(
            f"CREATE TABLE lake.{unique}.lineitem ({columns}) "
            f"WITH (external_location = '{location}', format = 'PARQUET')"
        )
        cursor.fetchall()
        if reference == "postgres":
            _copy_reference_to_postgres(base / "tpch", unique)
            created_pg = True
            stores["reference_db"] = {
                "kind": "postgres",
                "dsn": stores["sales_pg"]["dsn"],
                "trino": {"catalog": "postgresql"},
            }
            for table in ("nation", "region"):
                path = target / "reference" / f"{table}.yaml"
                descriptor = yaml.safe_load(path.read_text())
                descriptor["table"] = f"{unique}.{table}"
                path.write_text(yaml.safe_dump(descriptor, sort_keys=False))
        (target / "mesh.yaml").write_text(yaml.safe_dump(config, sort_keys=False, width=100))
        yield target
    finally:
        for statement in (
            f"DROP TABLE IF EXISTS lake.{unique}.lineitem",
            f"DROP SCHEMA IF EXISTS lake.{unique}",
        ):
            with contextlib.suppress(Exception):
                cursor.execute(statement)
                cursor.fetchall()
        trino.close()
        if created_pg:
            with postgres_admin() as con:
                con.execute(f'DROP SCHEMA IF EXISTS "{unique}" CASCADE')


def _copy_reference_to_postgres(parquet_dir: Path, schema: str) -> None:
    """nation and region into a fresh PostgreSQL schema, with the contract types."""
    with postgres_admin() as con:
        con.execute(f'CREATE SCHEMA "{schema}"')
        for table in ("nation", "region"):
            (found,) = (t for t in TABLES if t.name == table)
            columns = ", ".join(f"{n} {t} NOT NULL" for n, t, _, _ in found.columns)
            con.execute(f'CREATE TABLE "{schema}"."{table}" ({columns})')
            names = ", ".join(n for n, *_ in found.columns)
            source = f"read_parquet('{tpch_file(parquet_dir, table)}')"
            rows = duckdb.connect().execute(f"SELECT {names} FROM {source}").fetchall()
            marks = ", ".join("%s" for _ in found.columns)
            with con.cursor() as cur:
                cur.executemany(
                    f'INSERT INTO "{schema}"."{table}" ({names}) VALUES ({marks})', rows
                )

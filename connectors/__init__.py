"""Connectors: one module per store kind, all behind :class:`connectors.base.Connector`.

Drivers are heavy, so a connector module is imported only when a mesh uses its kind.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from connectors.base import Capabilities, Connector

_REGISTRY: dict[str, str] = {
    "duckdb": "connectors.duckdb:DuckDBConnector",
    "sqlite": "connectors.sqlite:SQLiteConnector",
    "files": "connectors.files:FilesConnector",
    "postgres": "connectors.postgres:PostgresConnector",
    "mysql": "connectors.mysql:MySQLConnector",
    "trino": "connectors.trino:TrinoConnector",
}

KINDS = frozenset(_REGISTRY)


def connector_class(kind: str) -> type[Connector]:
    module_name, _, class_name = _REGISTRY[kind].partition(":")
    return getattr(importlib.import_module(module_name), class_name)


def open_connector(name: str, settings: dict[str, Any], *, base_dir: Path) -> Connector:
    """The connector for one store entry of mesh.yaml (``settings`` includes ``kind``)."""
    return connector_class(settings["kind"])(name, settings, base_dir=base_dir)


__all__ = ["KINDS", "Capabilities", "Connector", "connector_class", "open_connector"]

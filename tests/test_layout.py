"""The layout promises: serving a mesh never loads the demo builder, and test modules share
helpers through tests/support, never by importing one another."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

TESTS = Path(__file__).parent


def test_the_serving_path_does_not_import_the_demo_builder():
    probe = (
        "import sys, gateway.cli, gateway.service, gateway.flightsql.server, gateway.http.app\n"
        "print(sorted(m for m in sys.modules if m == 'demo' or m.startswith('demo.')))"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True
    )
    assert result.stdout.strip() == "[]"


def test_the_demo_tables_are_the_tpch_tables_in_order():
    from demo import TABLES, TPCH_TABLES

    assert tuple(t.name for t in TABLES) == TPCH_TABLES


def _imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


def test_no_test_module_imports_another_test_module():
    offenders = {
        str(path.relative_to(TESTS)): sorted(
            m for m in _imported_modules(path) if m.rpartition(".")[2].startswith("test_")
        )
        for path in TESTS.rglob("*.py")
        if ".venv" not in path.parts
    }
    assert {path: modules for path, modules in offenders.items() if modules} == {}

"""Run a benchmark: ``python -m benchmarks <name> [options]``; with no name, list them.

A benchmark is any module of this package that defines a top-level ``main``: ``main(argv)``
gets the remaining arguments, a ``main()`` without parameters reads them from ``sys.argv``.
Modules are found without importing them, so one broken benchmark does not hide the others.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent


def available() -> dict[str, str]:
    """Benchmark name -> the first line of its module docstring."""
    found = {}
    for path in sorted(PACKAGE.glob("*.py")):
        if path.name.startswith("_"):
            continue
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        except (OSError, SyntaxError, UnicodeDecodeError) as exc:
            found[path.stem] = f"(cannot be read: {exc})"
            continue
        if any(isinstance(n, ast.FunctionDef) and n.name == "main" for n in tree.body):
            lines = (ast.get_docstring(tree) or "").strip().splitlines()
            found[path.stem] = lines[0] if lines else ""
    return found


def run(name: str, argv: list[str]) -> int:
    module = importlib.import_module(f"{PACKAGE.name}.{name}")
    if inspect.signature(module.main).parameters:
        result = module.main(argv)
    else:
        sys.argv = [f"python -m {PACKAGE.name} {name}", *argv]
        result = module.main()
    return result if isinstance(result, int) else 0


def usage(benchmarks: dict[str, str]) -> str:
    width = max((len(name) for name in benchmarks), default=0)
    listing = "\n".join(f"  {name:<{width}}  {doc}" for name, doc in benchmarks.items())
    return (
        f"usage: python -m {PACKAGE.name} <benchmark> [options]   "
        f"(python -m {PACKAGE.name} <benchmark> --help for its options)\n\n"
        f"benchmarks:\n{listing or '  (none found)'}"
    )


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    benchmarks = available()
    if not argv or argv[0] in {"-h", "--help", "list"}:
        print(usage(benchmarks))
        return 0
    name = argv[0].replace("-", "_")
    if name not in benchmarks:
        print(f"no benchmark {argv[0]!r}\n\n{usage(benchmarks)}", file=sys.stderr)
        return 2
    return run(name, argv[1:])


if __name__ == "__main__":
    sys.exit(main())

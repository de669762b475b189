"""``python -m tests.fuzz [--statements N] [--seed S] [--mesh DIR]``: a fuzzing campaign.

Builds the demo mesh (TPC-H SF 0.01) unless given one, serves it in a process of its own with
the fault handler on, sends N generated and mutated statements through ADBC, then checks that
the server is still up and answers a known query exactly. Exits 1 on any INTERNAL, UNKNOWN,
crash or wrong answer, after printing every failing statement.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from tests.fuzz.generator import products_of, statements
from tests.fuzz.runner import _connect, known_answer, run_concurrently
from tests.support.server_process import served


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.fuzz", description=__doc__)
    parser.add_argument("--statements", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--mesh", type=Path, help="a demo mesh directory (built when omitted)")
    parser.add_argument("--timeout", type=float, default=20.0, help="seconds per statement")
    parser.add_argument("--verbose", action="store_true", help="print every statement's outcome")
    parser.add_argument("--clients", type=int, default=1, help="concurrent client connections")
    args = parser.parse_args(argv)

    import duckdb

    from connectors import KINDS
    from demo import build_demo_mesh, load_tpch_reference, tpch_dir
    from gateway.mesh import load_mesh

    with tempfile.TemporaryDirectory(prefix="meshgate-fuzz-") as scratch:
        mesh_dir = args.mesh or build_demo_mesh(
            Path(scratch) / "mesh", scale_factor=0.01, progress=lambda message: None
        )
        mesh = load_mesh(mesh_dir, known_store_kinds=set(KINDS))
        reference = duckdb.connect()
        load_tpch_reference(reference, tpch_dir(mesh_dir))
        expected = reference.execute("SELECT count(*) FROM orders").fetchone()[0]
        logs = Path(tempfile.mkdtemp(prefix="meshgate-fuzz-log-"))
        print(f"server log in {logs}", flush=True)
        with served(mesh_dir, log_dir=logs) as server:
            report = run_concurrently(
                server.uri,
                list(statements(products_of(mesh), seed=args.seed, count=args.statements)),
                clients=args.clients,
                timeout_seconds=args.timeout,
                alive=server.alive,
                progress=_print_progress if args.verbose else None,
            )
            print(report.summary())
            answered = None
            if server.alive():
                with _connect(server.uri, "analyst", args.timeout) as conn:
                    answered = known_answer(conn)
            fatal = server.fatal_errors()
            internal = [line for line in server.output().splitlines() if "internal error" in line]
        print(
            f"server alive afterwards: {answered is not None}; known query: {answered} "
            f"(expected {expected}); fatal errors in its log: {len(fatal)}; internal: "
            f"{len(internal)}"
        )
        for line in fatal[:5]:
            print("  ", line)
        ok = not report.failures and answered == expected and not fatal
        return 0 if ok else 1


def _print_progress(number: int, statement, outcome: str, seconds: float, message: str) -> None:
    line = f"{number:6} {outcome:16} {seconds:6.2f}s {statement.origin:12} {statement.sql[:120]!r}"
    if outcome not in ("ok", "InvalidArgument", "PermissionDenied"):
        line += f"\n         {message[:300]!r}"
    print(line, file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())

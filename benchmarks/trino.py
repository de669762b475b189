"""TPC-H through meshgate's local engine, through meshgate to Trino, and on Trino directly.

    python -m benchmarks trino [--scale-factor 1] [--runs 3] [--queries 1-22]

Builds (or reuses) the federated TPC-H mesh (tests/support/tpch_mesh.py) and routes it through
the Trino of ``tests.support.stores`` (tests/support/trino_mesh.py, the reference domain copied
into PostgreSQL so that Trino reaches every table). In one run, taking turns per query (median
of ``--runs`` after a warm-up), it times:

- local: ``meshgate serve`` with ``routing.mode: local`` (the embedded DuckDB joins the stores'
  fragments), through the ADBC Flight SQL client;
- via_trino: ``meshgate serve`` with ``routing.mode: trino``, through the same client: meshgate
  resolves, governs and transpiles, Trino runs the query, meshgate streams its answer as Arrow;
- trino: the same TPC-H query on Trino directly, with its own client (``trino.dbapi``, every row
  fetched), over the same catalogs.

Every answer is checked against DuckDB over the same data in memory (the direct Trino answer by
value, in Trino's own types: benchmarks/peers.py). It reports meshgate's overhead on top of
Trino (via_trino / trino; the goal is at most 1.1x), via_trino / local per query, and the
crossover: the ``min_rows`` for ``routing.mode: auto`` (rows the query's products hold) that
would have sent each query to the faster engine most often. Writes benchmarks/results/trino.json,
trino.md and trino.png.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import sqlglot
from sqlglot import exp

from benchmarks.harness import RESULTS, GatewayProcess, connect, median, progress
from benchmarks.peers import memory_baseline, output_names, trino_runner, trino_sql
from benchmarks.tpch import (
    _difference,
    _gateway_runner,
    _peer_difference,
    _query_numbers,
    federated_mesh,
    measure,
)
from gateway.demo import tpch_row_counts
from tests.support.stores import trino_admin
from tests.support.tpch_mesh import (
    PRINCIPAL,
    to_addresses,
    tpch_query_texts,
)
from tests.support.trino_mesh import trino_tpch_mesh

NAME = "trino"
SYSTEMS = ("local", "via_trino", "trino")
OVERHEAD_GOAL = 1.1


@dataclass
class QueryResult:
    query: int
    rows_read: int
    """Rows the query's products hold: the estimate ``routing.mode: auto`` compares."""
    engine: str = ""
    """Where meshgate with ``routing.mode: trino`` runs it (``local`` when one store answers)."""
    rows: int = 0
    times: dict[str, list[float]] = field(default_factory=dict)
    problems: dict[str, str] = field(default_factory=dict)

    def median(self, system: str) -> float | None:
        values = self.times.get(system)
        return median(values) if values else None

    def ratio(self, system: str, baseline: str) -> float | None:
        top, bottom = self.median(system), self.median(baseline)
        return top / bottom if top and bottom else None


def rows_read(sql: str, counts: dict[str, int]) -> int:
    """The rows of every distinct TPC-H table ``sql`` reads (what auto routing estimates)."""
    tables = {t.name for t in sqlglot.parse_one(sql, read="duckdb").find_all(exp.Table)}
    return sum(counts.get(table, 0) for table in tables)


def crossover(results: list[QueryResult]) -> dict[str, Any]:
    """The ``min_rows`` that routes the most queries to their faster engine (ties: the larger),
    among the queries' own row counts and "never" (every query local)."""
    timed = [
        r
        for r in results
        if r.engine != "local"
        and r.median("local") is not None
        and r.median("via_trino") is not None
    ]
    if not timed:
        return {"min_rows": None, "right": 0, "of": 0}
    candidates = sorted({r.rows_read for r in timed}) + [math.inf]
    best = None
    for threshold in candidates:
        right = sum(
            (r.rows_read >= threshold) == (r.median("via_trino") < r.median("local")) for r in timed
        )
        if best is None or right >= best[1]:
            best = (threshold, right)
    threshold, right = best
    return {
        "min_rows": None if threshold == math.inf else int(threshold),
        "right": right,
        "of": len(timed),
    }


def geomean(values: list[float]) -> float | None:
    values = [v for v in values if v]
    return math.exp(sum(map(math.log, values)) / len(values)) if values else None


def summary(results: list[QueryResult]) -> dict[str, Any]:
    routed = [r for r in results if r.engine != "local"]
    overhead = geomean([r.ratio("via_trino", "trino") for r in routed])
    return {
        "queries": len(results),
        "correct": sum(not r.problems for r in results),
        "overhead_via_trino_over_trino": overhead,
        "overhead_goal": OVERHEAD_GOAL,
        "via_trino_over_local": geomean([r.ratio("via_trino", "local") for r in routed]),
        "routed_to_trino": len(routed),
        "crossover": crossover(results),
    }


def _seconds(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}"


def _ratio(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}x"


def markdown(settings: dict[str, Any], results: list[QueryResult], totals: dict) -> str:
    cross = totals["crossover"]
    where = (
        "never (local was faster for every query)"
        if cross["min_rows"] is None
        else f"{cross['min_rows']:,} rows"
    )
    lines = [
        f"# TPC-H SF {settings['scale_factor']:g}: local engine, meshgate→Trino, Trino directly",
        "",
        f"Machine: {settings['machine']}; load average {settings['load_average_at_start']:.1f} at "
        f"start, {settings['load_average_at_end']:.1f} at end. Medians of {settings['runs']} "
        "run(s). **On a loaded shared machine these ratios are indicative only.**",
        "",
        f"- queries meshgate sent to Trino: {totals['routed_to_trino']} of {totals['queries']} "
        "(the others read one store, which answers them whole); the ratios below are over those",
        f"- meshgate's overhead on top of Trino (geomean via_trino / trino): "
        f"{_ratio(totals['overhead_via_trino_over_trino'])} (goal ≤ {OVERHEAD_GOAL}x)",
        f"- via_trino / local (geomean): {_ratio(totals['via_trino_over_local'])}",
        f"- crossover for `routing.mode: auto`: min_rows = {where} "
        f"({cross['right']} of {cross['of']} queries routed to their faster engine)",
        f"- correct: {totals['correct']} of {totals['queries']}",
        "",
        "| query | rows read | via_trino runs on | local s | via_trino s | trino s | "
        "via_trino/trino | via_trino/local | problem |",
        "|---|---:|---|---:|---:|---:|---:|---:|---|",
    ]
    for r in results:
        lines.append(
            f"| Q{r.query} | {r.rows_read:,} | {r.engine} | {_seconds(r.median('local'))} | "
            f"{_seconds(r.median('via_trino'))} | {_seconds(r.median('trino'))} | "
            f"{_ratio(r.ratio('via_trino', 'trino'))} | {_ratio(r.ratio('via_trino', 'local'))} | "
            f"{'; '.join(f'{k}: {v}' for k, v in r.problems.items())} |"
        )
    return "\n".join(lines) + "\n"


COLOURS = {"local": "#d95f02", "via_trino": "#66a61e", "trino": "#e7298a"}


def plot(results: list[QueryResult], totals: dict, path: Path) -> None:
    """Each query's medians through the three paths, with meshgate's overhead over Trino."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(14, 5.5))
    width = 0.8 / len(SYSTEMS)
    for offset, system in enumerate(SYSTEMS):
        xs = [i + (offset - (len(SYSTEMS) - 1) / 2) * width for i in range(len(results))]
        axis.bar(xs, [r.median(system) or 0 for r in results], width, label=system,
                 color=COLOURS[system])  # fmt: skip
    axis.set_yscale("log")
    axis.set_xticks(
        range(len(results)), [f"Q{r.query}" + ("" if r.engine != "local" else "*") for r in results]
    )
    axis.set_ylabel("median seconds (log scale)")
    axis.set_title(
        "TPC-H: meshgate's local engine, meshgate→Trino, Trino directly; overhead over Trino "
        f"{_ratio(totals['overhead_via_trino_over_trino'])} (* one store answers it whole)"
    )
    for index, r in enumerate(results):
        if r.problems:
            axis.annotate("wrong", (index, r.median("via_trino") or 1), ha="center", color="red")
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks trino", description=__doc__)
    parser.add_argument("--scale-factor", type=float, default=1.0)
    parser.add_argument("--runs", type=int, default=3, help="timed runs per query (default 3)")
    parser.add_argument("--queries", default="1-22", help="e.g. 1-22 or 3,5,10 (default 1-22)")
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    args.selected = _query_numbers(args.queries, parser)
    return args


def run_queries(
    args: argparse.Namespace, base: Path, local_mesh: Path, trino_mesh: Path
) -> list[QueryResult]:
    from gateway.service import Gateway

    texts = tpch_query_texts()
    counts = tpch_row_counts(base / "tpch")
    memory = memory_baseline(base / "tpch")
    planner = Gateway.open(trino_mesh)  # in this process for Trino's names and the routes
    names = dict(planner.engine.names)
    principal = planner.principals.get(PRINCIPAL)
    results = [
        QueryResult(
            query=n,
            rows_read=rows_read(texts[n], counts),
            engine=planner.plan(to_addresses(texts[n]), principal).engine,
        )
        for n in args.selected
    ]
    planner.close()
    trino_cursor = trino_admin().cursor()
    with (
        GatewayProcess(local_mesh, log_path=RESULTS / f"{NAME}-local.log") as local,
        GatewayProcess(trino_mesh, log_path=RESULTS / f"{NAME}-via-trino.log") as via,
    ):
        local_client = connect(local.uri, user=PRINCIPAL)
        via_client = connect(via.uri, user=PRINCIPAL)
        try:
            for result in results:
                text = texts[result.query]
                addressed = to_addresses(text)
                times, answers = measure(
                    {
                        "local": _gateway_runner(local_client, addressed),
                        "via_trino": _gateway_runner(via_client, addressed),
                        "trino": trino_runner(
                            trino_cursor, trino_sql(text, names, output=output_names(memory, text))
                        ),
                    },
                    args.runs,
                )
                result.times = times
                expected = memory.execute(text).to_arrow_table()
                result.rows = expected.num_rows
                for system in ("local", "via_trino"):
                    problem = _difference(answers[system], expected)
                    if problem:
                        result.problems[system] = problem
                problem = _peer_difference(answers["trino"], expected)
                if problem:
                    result.problems["trino"] = problem
                progress(
                    f"Q{result.query} ({result.engine}): "
                    f"local {_seconds(result.median('local'))} s, "
                    f"via_trino {_seconds(result.median('via_trino'))} s, "
                    f"trino {_seconds(result.median('trino'))} s"
                    + (f" — {result.problems}" if result.problems else "")
                )
        finally:
            local_client.close()
            via_client.close()
    return results


def main(argv: list[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    base = federated_mesh(args.scale_factor)
    settings = {
        "scale_factor": args.scale_factor,
        "runs": args.runs,
        "machine": f"{os.cpu_count()} cores, {platform.system()} {platform.release()}, "
        f"Python {platform.python_version()}",
        "load_average_at_start": os.getloadavg()[0],
    }
    with (
        tempfile.TemporaryDirectory(prefix="meshgate-trino-bench-") as scratch,
        trino_tpch_mesh(base, Path(scratch) / "local", mode="local", reference="postgres") as lm,
        trino_tpch_mesh(base, Path(scratch) / "trino", mode="trino", reference="postgres") as tm,
    ):
        results = run_queries(args, base, lm, tm)
    settings["load_average_at_end"] = os.getloadavg()[0]
    totals = summary(results)
    RESULTS.mkdir(parents=True, exist_ok=True)
    document = {"settings": settings, "summary": totals, "queries": [asdict(r) for r in results]}
    (RESULTS / f"{NAME}.json").write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    report = markdown(settings, results, totals)
    (RESULTS / f"{NAME}.md").write_text(report, encoding="utf-8")
    plot(results, totals, RESULTS / f"{NAME}.png")
    print(report)
    print(f"results in {RESULTS}/{NAME}.{{json,md,png}}", file=sys.stderr)
    return 0 if totals["correct"] == totals["queries"] else 1


if __name__ == "__main__":
    sys.exit(main())

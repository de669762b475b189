"""TPC-H across four stores: the gateway against DuckDB with the stores ATTACHed, and in memory.

    python -m benchmarks tpch [--scale-factor 1] [--runs 3] [--queries 1,3,5]

Builds the federated TPC-H mesh of issue 4 (tests/support/tpch_mesh.py: sales in PostgreSQL,
supply in MariaDB, fulfillment as Parquet, reference in SQLite; cached in PostgreSQL, MariaDB and
benchmarks/data/) and times each query, median of ``--runs`` runs after one warm-up, in one run:

- gateway: ``python -m gateway.cli serve`` as its own process, queried through the ADBC Flight SQL
  client (prepare, execute, fetch the Arrow table);
- attach: DuckDB in this process with the postgres, mysql and sqlite scanners ATTACHed to the
  same stores and the same Parquet files, the tables as views (the baseline issue 4 names);
- memory: DuckDB in this process with all 8 tables loaded in memory.

Every gateway answer is checked against the in-memory answer (integers, strings, dates and
decimals exactly, floats within 1e-9). Then, in this process, each query's plan is run once to
record the queries it sends (narrowed by dynamic filters), and each of those is run alone to show
where the time goes: which store runs what, and how many rows and bytes it sends to the gateway.
Writes benchmarks/results/tpch.json, tpch.md and tpch.png.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

from benchmarks.harness import DATA, RESULTS, GatewayProcess, connect, median, progress
from gateway.planner.dynamic_filters import NARROWED, abbreviated
from tests.support.stores import MARIADB, POSTGRES
from tests.support.tpch_mesh import (
    PRINCIPAL,
    TABLE_DOMAIN,
    answer_difference,
    build_tpch_mesh,
    store_namespace,
    to_addresses,
    tpch_query_texts,
)

NAME = "tpch"
SLOWEST_EXPLAINED = 6


@dataclass
class Fragment:
    store: str
    sql: str
    rows: int
    megabytes: float
    seconds: float


@dataclass
class QueryResult:
    query: int
    rows: int = 0
    gateway: list[float] = field(default_factory=list)
    attach: list[float] = field(default_factory=list)
    memory: list[float] = field(default_factory=list)
    correct: bool = False
    attach_correct: bool = False
    problem: str | None = None
    fragments: list[Fragment] = field(default_factory=list)
    local_sql: str | None = None

    def median(self, system: str) -> float | None:
        times = getattr(self, system)
        return median(times) if times else None

    def ratio(self, system: str, baseline: str) -> float | None:
        mine, theirs = self.median(system), self.median(baseline)
        return mine / theirs if mine and theirs else None


# --- the three systems ------------------------------------------------------------------------


def memory_baseline(parquet_dir: Path):
    """DuckDB with every TPC-H table in memory."""
    import duckdb

    from demo import load_tpch_reference

    con = duckdb.connect()
    load_tpch_reference(con, parquet_dir)
    return con


def attach_baseline(mesh: Path, scale_factor: float):
    """DuckDB with the mesh's stores ATTACHed read-only; each TPC-H table is a view over its
    store, so the queries run unchanged and DuckDB pushes filters and projections into the
    scanners as it does for the tables themselves."""
    import duckdb
    import duckdb_extensions

    os.environ.setdefault("HOME", tempfile.gettempdir())  # the extension loader needs one
    namespace = store_namespace(scale_factor)
    con = duckdb.connect()
    for extension in ("postgres_scanner", "mysql_scanner", "sqlite_scanner"):
        duckdb_extensions.import_extension(extension, con=con)
    pg, my = POSTGRES, MARIADB
    con.execute(
        f"ATTACH 'host={pg.host} port={pg.port} user={pg.user} dbname={pg.database}' AS pg "
        "(TYPE postgres, READ_ONLY)"
    )
    con.execute(
        f"ATTACH 'host={my.host} port={my.port} user={my.user} database={namespace}' AS my "
        "(TYPE mysql, READ_ONLY)"
    )
    con.execute(f"ATTACH '{mesh / 'stores' / 'reference.sqlite'}' AS lite (TYPE sqlite, READ_ONLY)")
    sources = {
        "sales": lambda table: f"pg.{namespace}.{table}",
        "supply": lambda table: f"my.{namespace}.{table}",
        "reference": lambda table: f"lite.{table}",
        "fulfillment": lambda table: (
            f"read_parquet('{mesh / 'stores' / 'lake' / table}/*.parquet')"
        ),
    }
    for table, domain in TABLE_DOMAIN.items():
        con.execute(f"CREATE VIEW {table} AS SELECT * FROM {sources[domain](table)}")
    return con


def measure(
    runners: dict[str, Callable[[], pa.Table]], runs: int
) -> tuple[dict[str, list[float]], dict[str, pa.Table | Exception]]:
    """One warm-up of each system, then ``runs`` rounds that run each system in turn.

    Taking turns spreads whatever else the machine is doing over the three systems alike, so the
    ratios of medians stay fair on a shared machine. A system that fails is dropped; its
    exception stands in for its answer.
    """
    answers: dict[str, pa.Table | Exception] = {}
    for name, run in runners.items():
        try:
            answers[name] = run()
        except Exception as exc:  # noqa: BLE001 - a failed query is reported, not fatal
            answers[name] = exc
    working = {name: run for name, run in runners.items() if isinstance(answers[name], pa.Table)}
    times: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(runs):
        for name, run in working.items():
            started = time.perf_counter()
            answers[name] = run()
            times[name].append(time.perf_counter() - started)
    return times, answers


def _difference(answer: pa.Table | Exception, expected: pa.Table) -> str | None:
    if isinstance(answer, Exception):
        return f"failed: {str(answer).splitlines()[0][:200]}"
    return answer_difference(answer, expected, ordered=True)


def _duckdb_runner(con, sql: str) -> Callable[[], pa.Table]:
    return lambda: con.execute(sql).to_arrow_reader().read_all()


def _gateway_runner(conn, sql: str) -> Callable[[], pa.Table]:
    def run() -> pa.Table:
        with conn.cursor() as cursor:
            cursor.execute(sql)
            return cursor.fetch_arrow_table()

    return run


# --- where the time goes ----------------------------------------------------------------------


def explain_fragments(mesh: Path, queries: dict[int, str], results: list[QueryResult]) -> None:
    """Run each plan once, recording every query its fragments sent (narrowed by dynamic filters,
    with any key tables), then run each of those alone in this process: rows, bytes, seconds."""
    from gateway.service import Gateway

    gateway = Gateway.open(mesh)
    try:
        principal = gateway.principals.get(PRINCIPAL)
        for result in results:
            plan = gateway.plan(to_addresses(queries[result.query]), principal)
            result.local_sql = plan.local_sql
            for store, sql, tables in _sent_queries(gateway, plan):
                connector = gateway.connectors[store]
                started = time.perf_counter()
                if tables:
                    table = connector.execute_with_tables(sql, tables=tables).read_all()
                else:
                    table = connector.execute(sql).read_all()
                result.fragments.append(
                    Fragment(
                        store=store,
                        sql=sql,
                        rows=table.num_rows,
                        megabytes=round(table.nbytes / 1e6, 2),
                        seconds=round(time.perf_counter() - started, 4),
                    )
                )
            progress(
                f"Q{result.query}: {len(result.fragments)} fragment(s), "
                f"{sum(f.rows for f in result.fragments):,} rows to the gateway"
            )
    finally:
        gateway.close()


def _sent_queries(gateway, plan) -> list[tuple[str, str, dict[str, pa.Table]]]:
    """(store, SQL, key tables) of each query ``plan`` sends when it runs."""
    sent: list[tuple[str, str, dict[str, pa.Table]]] = []
    connectors = gateway.connectors.values()
    for connector in connectors:
        execute, with_tables = connector.execute, connector.execute_with_tables

        def recorded(sql, *, parameters=None, _store=connector.name, _run=execute):
            sent.append((_store, sql, {}))
            return _run(sql, parameters=parameters)

        def recorded_with_tables(sql, *, tables, _store=connector.name, _run=with_tables):
            sent.append((_store, sql, dict(tables)))
            return _run(sql, tables=tables)

        connector.execute, connector.execute_with_tables = recorded, recorded_with_tables
    try:
        gateway.execute(plan).read_all()
    finally:
        for connector in connectors:
            del connector.execute, connector.execute_with_tables
    return sent


# --- reporting --------------------------------------------------------------------------------


def geomean(values: list[float]) -> float | None:
    return math.exp(sum(map(math.log, values)) / len(values)) if values else None


def summary(results: list[QueryResult]) -> dict[str, Any]:
    timed = [r for r in results if r.gateway and r.attach and r.memory]
    return {
        "queries": len(results),
        "correct": sum(r.correct for r in results),
        "geomean_gateway_over_attach": geomean([r.ratio("gateway", "attach") for r in timed]),
        "geomean_gateway_over_memory": geomean([r.ratio("gateway", "memory") for r in timed]),
        "geomean_attach_over_memory": geomean([r.ratio("attach", "memory") for r in timed]),
        "total_seconds": {
            system: sum(r.median(system) or 0 for r in timed)
            for system in ("gateway", "attach", "memory")
        },
    }


def _seconds(value: float | None) -> str:
    return "—" if value is None else f"{value:.3f}"


def _ratio(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}"


def markdown(settings: dict[str, Any], results: list[QueryResult], totals: dict) -> str:
    lines = [
        f"# TPC-H SF {settings['scale_factor']:g} across four stores",
        "",
        f"{settings['machine']} (load average {settings['load_average_at_start']:.1f} at the "
        f"start, {settings['load_average_at_end']:.1f} at the end: the machine is shared); "
        f"median of {settings['runs']} runs after one warm-up, the three systems taking turns. "
        "gateway: "
        "separate process, ADBC Flight SQL client; attach: DuckDB "
        f"{settings['duckdb']} with the postgres, mysql and sqlite scanners ATTACHed + the "
        "same Parquet; memory: all tables in DuckDB memory.",
        "",
        "| query | gateway s | attach s | memory s | gateway/attach | gateway/memory | rows "
        "| correct |",
        "|---:|---:|---:|---:|---:|---:|---:|:---:|",
    ]
    for r in results:
        mark = "yes" if r.correct else f"**no**: {r.problem}"
        lines.append(
            f"| Q{r.query} | {_seconds(r.median('gateway'))} | {_seconds(r.median('attach'))} | "
            f"{_seconds(r.median('memory'))} | {_ratio(r.ratio('gateway', 'attach'))} | "
            f"{_ratio(r.ratio('gateway', 'memory'))} | {r.rows} | {mark} |"
        )
    seconds = totals["total_seconds"]
    lines += [
        f"| **total / geomean** | {seconds['gateway']:.2f} | {seconds['attach']:.2f} | "
        f"{seconds['memory']:.2f} | **{_ratio(totals['geomean_gateway_over_attach'])}** | "
        f"**{_ratio(totals['geomean_gateway_over_memory'])}** | | "
        f"{totals['correct']}/{totals['queries']} |",
        "",
        "Goal (issue 4): geomean gateway/attach ≤ 0.8 with every query correct.",
        "",
        "## Where the time goes in the slowest queries",
        "",
        "Each query a plan sends (with its dynamic filters' keys: an IN list, a range, or a key "
        "table the store joins), run alone in the benchmark's process: the store it runs on, the "
        "rows and bytes it sends to the gateway and how long that takes.",
    ]
    slowest = sorted(results, key=lambda r: r.median("gateway") or 0, reverse=True)
    for r in slowest[:SLOWEST_EXPLAINED]:
        if not r.fragments:
            continue
        lines += ["", f"### Q{r.query}: {_seconds(r.median('gateway'))} s through the gateway", ""]
        lines += ["| store | rows | MB | s | SQL |", "|---|---:|---:|---:|---|"]
        for f in r.fragments:
            sql = _shortened(f.sql)
            lines.append(
                f"| {f.store} | {f.rows:,} | {f.megabytes} | {f.seconds:.3f} | "
                f"`` {sql.replace('|', '/')} `` |"  # double backticks: MySQL quotes with `
            )
        where = "one store answers the whole query" if r.local_sql is None else "local DuckDB"
        lines.append(f"\nThe rest runs in: {where}.")
    return "\n".join(lines) + "\n"


def _shortened(sql: str, width: int = 220) -> str:
    """``sql`` cut to ``width``, keeping a dynamic filter's predicate with its keys counted."""
    query, marker, narrowing = abbreviated(sql).partition(NARROWED)
    if marker:
        head = max(60, width - len(narrowing) - 25)
        query = query if len(query) <= head else query[: head - 3] + "..."
        return f"{query}{marker}{narrowing}"
    return sql if len(sql) <= width else sql[: width - 3] + "..."


def plot(results: list[QueryResult], totals: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    systems = (("gateway", "#d95f02"), ("attach", "#7570b3"), ("memory", "#1b9e77"))
    width = 0.27
    figure, axis = plt.subplots(figsize=(14, 5.5))
    for offset, (system, colour) in enumerate(systems):
        xs = [i + (offset - 1) * width for i in range(len(results))]
        ys = [r.median(system) or 0 for r in results]
        axis.bar(xs, ys, width, label=system, color=colour)
    axis.set_yscale("log")
    axis.set_xticks(range(len(results)), [f"Q{r.query}" for r in results])
    axis.set_ylabel("median seconds (log scale)")
    axis.set_title(
        "TPC-H across PostgreSQL, MariaDB, Parquet and SQLite: geomean gateway/attach "
        f"{_ratio(totals['geomean_gateway_over_attach'])}, gateway/memory "
        f"{_ratio(totals['geomean_gateway_over_memory'])}"
    )
    for index, r in enumerate(results):
        if not r.correct:
            axis.annotate("wrong", (index, r.median("gateway") or 1), ha="center", color="red")
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


# --- main -------------------------------------------------------------------------------------


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks tpch", description=__doc__)
    parser.add_argument("--scale-factor", type=float, default=1.0)
    parser.add_argument("--runs", type=int, default=3, help="timed runs per query (default 3)")
    parser.add_argument(
        "--queries", default="1-22", help="which queries, e.g. 1-22 or 3,5,10 (default 1-22)"
    )
    parser.add_argument(
        "--no-breakdown",
        action="store_true",
        help="skip running each query a plan sends on its own",
    )
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    args.selected = _query_numbers(args.queries, parser)
    return args


def _query_numbers(text: str, parser: argparse.ArgumentParser) -> list[int]:
    numbers: set[int] = set()
    for part in filter(None, text.split(",")):
        low, _, high = part.partition("-")
        try:
            numbers.update(range(int(low), int(high or low) + 1))
        except ValueError:
            parser.error(f"--queries: {part!r} is not a number or a range like 3-7")
    if not numbers or not numbers <= set(range(1, 23)):
        parser.error("--queries must name TPC-H queries between 1 and 22")
    return sorted(numbers)


def federated_mesh(scale_factor: float) -> Path:
    """The federated TPC-H mesh at ``scale_factor``, built once under benchmarks/data and shared
    by every benchmark that reads it."""
    progress(f"TPC-H SF {scale_factor:g}: building or reusing the federated mesh…")
    return build_tpch_mesh(
        DATA / f"tpch-federated-sf{scale_factor:g}", scale_factor=scale_factor, progress=progress
    )


def main(argv: list[str] | None = None) -> int:
    import duckdb

    args = parse(sys.argv[1:] if argv is None else argv)
    mesh = federated_mesh(args.scale_factor)
    texts = tpch_query_texts()
    settings = {
        "scale_factor": args.scale_factor,
        "runs": args.runs,
        "machine": f"{os.cpu_count()} cores, {platform.system()} {platform.release()}, "
        f"Python {platform.python_version()}",
        "duckdb": duckdb.__version__,
        "load_average_at_start": os.getloadavg()[0],
    }
    progress("loading the in-memory baseline and attaching the stores…")
    memory = memory_baseline(mesh / "tpch")
    attach = attach_baseline(mesh, args.scale_factor)
    results = [QueryResult(query=number) for number in args.selected]
    with GatewayProcess(mesh, log_path=RESULTS / f"{NAME}-gateway.log") as gateway:
        client = connect(gateway.uri, user=PRINCIPAL)
        try:
            for result in results:
                text = texts[result.query]
                times, answers = measure(
                    {
                        "memory": _duckdb_runner(memory, text),
                        "attach": _duckdb_runner(attach, text),
                        "gateway": _gateway_runner(client, to_addresses(text)),
                    },
                    args.runs,
                )
                result.memory, result.attach, result.gateway = (
                    times["memory"],
                    times["attach"],
                    times["gateway"],
                )
                expected = answers["memory"]
                result.rows = expected.num_rows
                result.attach_correct = _difference(answers["attach"], expected) is None
                result.problem = _difference(answers["gateway"], expected)
                result.correct = result.problem is None
                progress(
                    f"Q{result.query}: gateway {_seconds(result.median('gateway'))} s, "
                    f"attach {_seconds(result.median('attach'))} s, "
                    f"memory {_seconds(result.median('memory'))} s"
                    + ("" if result.correct else f" — WRONG: {result.problem}")
                )
        finally:
            client.close()
    if not args.no_breakdown:
        progress("running each query the plans send on its own…")
        explain_fragments(mesh, texts, results)
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

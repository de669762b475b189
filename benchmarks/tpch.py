"""TPC-H across four stores: meshgate against DuckDB with the stores ATTACHed and the real Trino.

    python -m benchmarks tpch [--scale-factors 0.1,1,3] [--runs 3] [--queries 1,3,5]
                              [--systems gateway,attach,trino]

For each scale factor, builds (or reuses) the federated TPC-H mesh of issue 4
(tests/support/tpch_mesh.py: sales in PostgreSQL, supply in MariaDB, fulfillment as Parquet,
reference in SQLite; cached in PostgreSQL, MariaDB and benchmarks/data/, loaded with progress
after checking the disk) and times each query, median of ``--runs`` runs after one warm-up, the
systems taking turns, in one run:

- gateway: ``python -m gateway.cli serve`` as its own process (local engine), queried through
  the ADBC Flight SQL client (prepare, execute, fetch the Arrow table); its resident memory is
  sampled while the queries run (peak and the kernel's high-water mark, per scale factor);
- attach: DuckDB in this process with the postgres, mysql and sqlite scanners ATTACHed to the
  same stores and the same Parquet files, the tables as views (the baseline issue 4 names);
- trino: the real Trino single node of ``scripts/test-services`` with its own client, over its
  ``postgresql``, ``mysql`` and ``lake`` (Hive over the same Parquet files) catalogs; nation and
  region are copied into PostgreSQL for it, as Trino has no SQLite catalog;
- memory: DuckDB in this process with all 8 tables loaded in memory (the reference answer).

Every answer is checked against the in-memory answer: the gateway's and attach's exactly
(names, types, integers, strings, dates and decimals; floats within 1e-9), Trino's by value (it
answers in its own types; benchmarks/peers.py). Then, for the largest scale factor, each
query's plan is run once in this process to record the queries it sends (narrowed by dynamic
filters), and each of those is run alone to show where the time goes: which store runs what,
and how many rows and bytes it sends to the gateway.
Writes benchmarks/results/tpch.json, tpch.md and tpch.png.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

from benchmarks.harness import (
    DATA,
    RESULTS,
    GatewayProcess,
    RssSampler,
    connect,
    median,
    progress,
    status_kb,
)
from benchmarks.peers import (
    attach_baseline,
    duckdb_runner,
    memory_baseline,
    output_names,
    peer_difference,
    trino_direct,
)
from gateway.audit import abbreviated
from gateway.demo import tpch_row_counts
from gateway.narrowing import NARROWED
from tests.support.stores import TRINO
from tests.support.tpch_mesh import (
    PRINCIPAL,
    answer_difference,
    build_tpch_mesh,
    to_addresses,
    tpch_query_texts,
)

NAME = "tpch"
SLOWEST_EXPLAINED = 6
SYSTEMS = ("gateway", "attach", "trino", "memory")
"""Every system the benchmark can time; ``memory`` always runs, as the reference answer."""
PEERS = ("attach", "trino")
GOALS = {"attach": 0.6, "trino": 0.5}
"""Issue 18: geomean gateway / peer at most this."""
WORST_OVER_ATTACH = 1.5
"""Issue 18: no query slower than this times DuckDB-attach."""
DISK_PER_SCALE_FACTOR = 2.0e9
"""Bytes one scale factor takes on disk, with room to spare: generated and lake Parquet, SQLite,
the PostgreSQL and MariaDB tables, and the tab-separated copies loading goes through (SF 1 took
0.54 GB of files, 0.31 GB in PostgreSQL and 0.23 GB in MariaDB here)."""


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
    times: dict[str, list[float]] = field(default_factory=dict)
    problems: dict[str, str] = field(default_factory=dict)
    """System -> how its answer differs from the reference (or how it failed)."""
    fragments: list[Fragment] = field(default_factory=list)
    local_sql: str | None = None

    @property
    def correct(self) -> bool:
        """Whether the gateway answered, and answered what the reference did."""
        return bool(self.times.get("gateway")) and "gateway" not in self.problems

    def median(self, system: str) -> float | None:
        times = self.times.get(system)
        return median(times) if times else None

    def ratio(self, system: str, baseline: str) -> float | None:
        mine, theirs = self.median(system), self.median(baseline)
        return mine / theirs if mine and theirs else None


@dataclass
class ScaleRun:
    """One scale factor's run: what it read, how long loading took, the gateway's memory."""

    scale_factor: float
    table_rows: dict[str, int]
    load_seconds: float
    gateway_idle_mb: float = 0.0
    """The gateway's resident memory once it serves, before the first query."""
    gateway_peak_mb: float = 0.0
    """The highest resident memory sampled (every 50 ms) while the queries ran."""
    gateway_high_water_mb: float = 0.0
    """The kernel's high-water mark of the gateway's resident memory (VmHWM), start to end."""
    load_average_at_start: float = 0.0
    load_average_at_end: float = 0.0
    results: list[QueryResult] = field(default_factory=list)

    @property
    def rows(self) -> int:
        return sum(self.table_rows.values())


# --- running the systems ----------------------------------------------------------------------


def measure(
    runners: dict[str, Callable[[], pa.Table]], runs: int
) -> tuple[dict[str, list[float]], dict[str, pa.Table | Exception]]:
    """One warm-up of each system, then ``runs`` rounds that run each system in turn.

    Taking turns spreads whatever else the machine is doing over the systems alike, so the
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


def _peer_difference(answer: pa.Table | Exception, expected: pa.Table) -> str | None:
    if isinstance(answer, Exception):
        return f"failed: {str(answer).splitlines()[0][:200]}"
    return peer_difference(answer, expected)


def _gateway_runner(conn, sql: str) -> Callable[[], pa.Table]:
    def run() -> pa.Table:
        with conn.cursor() as cursor:
            cursor.execute(sql)
            return cursor.fetch_arrow_table()

    return run


def check_disk(scale_factors: list[float], directory: Path = DATA) -> None:
    """Refuse to start when the disk that holds ``directory`` cannot take the scale factors not
    built there yet, rather than fail half way through loading one."""
    missing = [sf for sf in scale_factors if not (mesh_directory(sf) / "mesh.yaml").exists()]
    needed = sum(missing) * DISK_PER_SCALE_FACTOR
    directory.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(directory).free
    progress(
        f"disk: {free / 1e9:.1f} GB free under {directory}; SF {', '.join(map(_sf, missing))} "
        f"to build need about {needed / 1e9:.1f} GB"
        if missing
        else f"disk: {free / 1e9:.1f} GB free; every scale factor is built already"
    )
    if needed > free:
        raise SystemExit(
            f"not enough disk for SF {', '.join(map(_sf, missing))}: about {needed / 1e9:.1f} GB "
            f"needed, {free / 1e9:.1f} GB free under {directory}; free some or pass smaller "
            "--scale-factors"
        )


def _sf(scale_factor: float) -> str:
    return f"{scale_factor:g}"


def run_scale(
    scale_factor: float, args: argparse.Namespace, texts: dict[int, str], scratch: Path
) -> ScaleRun:
    """Every selected query at one scale factor, the systems taking turns (see the module)."""
    load_average = os.getloadavg()[0]
    started = time.perf_counter()
    mesh = federated_mesh(scale_factor)
    run = ScaleRun(
        scale_factor=scale_factor,
        table_rows=tpch_row_counts(mesh / "tpch"),
        load_seconds=round(time.perf_counter() - started, 1),
        load_average_at_start=load_average,
    )
    progress(f"SF {_sf(scale_factor)}: loading the in-memory reference, attaching the stores…")
    with contextlib.ExitStack() as stack:  # each scale factor's tables freed before the next
        memory = memory_baseline(mesh / "tpch")
        stack.callback(memory.close)
        attach = attach_baseline(mesh) if "attach" in args.systems else None
        if attach is not None:
            stack.callback(attach.close)
        trino = None
        if "trino" in args.systems:
            progress(f"SF {_sf(scale_factor)}: giving Trino the lake's files and the reference…")
            trino = stack.enter_context(trino_direct(mesh, scratch / f"sf{_sf(scale_factor)}"))
        log = RESULTS / f"{NAME}-gateway-sf{_sf(scale_factor)}.log"
        gateway = stack.enter_context(GatewayProcess(mesh, log_path=log))
        client = connect(gateway.uri, user=PRINCIPAL)
        stack.callback(client.close)
        run.gateway_idle_mb = gateway.rss_kb() / 1024
        with RssSampler(gateway.pid, interval=0.05) as sampler:
            for number in args.selected:
                text = texts[number]
                runners = {"memory": duckdb_runner(memory, text)}
                if attach is not None:
                    runners["attach"] = duckdb_runner(attach, text)
                if trino is not None:
                    runners["trino"] = trino.runner(text, output=output_names(memory, text))
                runners["gateway"] = _gateway_runner(client, to_addresses(text))
                result = QueryResult(query=number)
                result.times, answers = measure(runners, args.runs)
                _check(result, answers)
                run.results.append(result)
                _report(scale_factor, result)
        run.gateway_peak_mb = sampler.peak_kb / 1024
        run.gateway_high_water_mb = status_kb(gateway.pid, "VmHWM") / 1024
    run.load_average_at_end = os.getloadavg()[0]
    progress(
        f"SF {_sf(scale_factor)}: gateway resident memory {run.gateway_idle_mb:.0f} MB idle, "
        f"{run.gateway_peak_mb:.0f} MB at its peak"
    )
    return run


def _check(result: QueryResult, answers: dict[str, pa.Table | Exception]) -> None:
    """Each system's answer against the in-memory reference: exactly for the gateway and
    attach (same engine family, same types), by value for Trino."""
    expected = answers["memory"]
    if isinstance(expected, Exception):
        raise RuntimeError(f"Q{result.query}: the in-memory reference failed: {expected}")
    result.rows = expected.num_rows
    for system, answer in answers.items():
        if system == "memory":
            continue
        compare = _peer_difference if system == "trino" else _difference
        problem = compare(answer, expected)
        if problem:
            result.problems[system] = problem


def _report(scale_factor: float, result: QueryResult) -> None:
    timings = ", ".join(
        f"{system} {_seconds(result.median(system))} s"
        for system in SYSTEMS
        if system in result.times
    )
    wrong = "; ".join(f"{system} WRONG: {problem}" for system, problem in result.problems.items())
    progress(
        f"SF {_sf(scale_factor)} Q{result.query}: {timings}" + (f" — {wrong}" if wrong else "")
    )


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


def geomean(values: list[float | None]) -> float | None:
    values = [v for v in values if v]
    return math.exp(sum(map(math.log, values)) / len(values)) if values else None


def summary(run: ScaleRun) -> dict[str, Any]:
    """One scale factor's totals, geomeans and goals (ratios over the queries both systems
    answered; a system that failed a query leaves it out of its ratios and counts as wrong)."""
    results = run.results
    systems = [s for s in SYSTEMS if any(s in r.times for r in results)]
    over = {
        peer: geomean([r.ratio("gateway", peer) for r in results])
        for peer in (*PEERS, "memory")
        if peer in systems
    }
    slow = [
        {"query": r.query, "over_attach": round(ratio, 2)}
        for r in results
        if (ratio := r.ratio("gateway", "attach")) is not None and ratio > WORST_OVER_ATTACH
    ]
    return {
        "scale_factor": run.scale_factor,
        "rows": run.rows,
        "queries": len(results),
        "correct": {
            s: sum(bool(r.times.get(s)) and s not in r.problems for r in results)
            for s in systems
            if s != "memory"
        },
        "geomean_gateway_over": over,
        "geomean_attach_over_memory": geomean([r.ratio("attach", "memory") for r in results]),
        "geomean_trino_over_attach": geomean([r.ratio("trino", "attach") for r in results]),
        "slower_than_worst_over_attach": slow,
        "goals_met": {
            **{
                f"geomean_over_{p}": (over.get(p) or math.inf) <= GOALS[p]
                for p in over
                if p in GOALS
            },
            "none_slower_than_1.5x_attach": not slow,
            "every_query_correct": all(r.correct for r in results),
        },
        "total_seconds": {s: sum(r.median(s) or 0 for r in results) for s in systems},
        "gateway_idle_mb": round(run.gateway_idle_mb, 1),
        "gateway_peak_mb": round(run.gateway_peak_mb, 1),
        "gateway_high_water_mb": round(run.gateway_high_water_mb, 1),
        "load_seconds": run.load_seconds,
    }


def scaling(totals: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per scale factor, how time and memory grew from the smallest: ``growth_over_data`` is the
    gateway's total time's growth divided by the data's (at most 1: no faster than the data)."""
    if not totals:
        return []
    first = totals[0]
    rows = []
    for t in totals:
        data = t["rows"] / first["rows"]
        time_growth = {
            s: (t["total_seconds"][s] / first["total_seconds"][s])
            if first["total_seconds"].get(s)
            else None
            for s in t["total_seconds"]
        }
        rows.append(
            {
                "scale_factor": t["scale_factor"],
                "data_growth": round(data, 2),
                "time_growth": {s: v and round(v, 2) for s, v in time_growth.items()},
                "growth_over_data": time_growth.get("gateway") and time_growth["gateway"] / data,
                "gateway_peak_mb": t["gateway_peak_mb"],
            }
        )
    return rows


def _seconds(value: float | None) -> str:
    return "—" if value is None else f"{value:.3f}"


def _ratio(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}"


def markdown(settings: dict[str, Any], runs: list[ScaleRun], totals: list[dict]) -> str:
    lines = [
        f"# TPC-H SF {', '.join(_sf(r.scale_factor) for r in runs)}: meshgate against its peers",
        "",
        f"{settings['machine']}, {settings['date']}; median of {settings['runs']} runs after one "
        "warm-up, the systems taking turns query by query (the machine is shared: only ratios "
        "taken in one run mean anything). gateway: meshgate's local engine, separate process, "
        f"ADBC Flight SQL client; attach: DuckDB {settings['duckdb']} with the postgres, mysql "
        "and sqlite scanners ATTACHed + the same Parquet; trino: Trino "
        f"{settings.get('trino', '?')} single node over the same PostgreSQL, MariaDB and "
        "Parquet, its own client; memory: all tables in DuckDB memory (the reference answer).",
        "",
        "## Scaling and goals",
        "",
        "| SF | rows | load s | gateway s | attach s | trino s | gateway/attach | gateway/trino "
        "| slower than 1.5x attach | correct (gw/attach/trino) | time growth / data growth "
        "| gateway RSS idle → peak MB |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---|---|---:|---:|",
    ]
    for t, grown in zip(totals, scaling(totals), strict=True):
        seconds, over, correct = t["total_seconds"], t["geomean_gateway_over"], t["correct"]
        slow = ", ".join(
            f"Q{s['query']} {s['over_attach']:.2f}" for s in t["slower_than_worst_over_attach"]
        )
        marks = "/".join(
            f"{correct[s]}" if s in correct else "—" for s in ("gateway", "attach", "trino")
        )
        lines.append(
            f"| {_sf(t['scale_factor'])} | {t['rows']:,} | {t['load_seconds']:.0f} | "
            f"{seconds.get('gateway', 0):.2f} | {seconds.get('attach', 0):.2f} | "
            f"{seconds.get('trino', 0):.2f} | **{_ratio(over.get('attach'))}** | "
            f"**{_ratio(over.get('trino'))}** | {slow or 'none'} | {marks} of {t['queries']} | "
            f"{_ratio(grown['growth_over_data'])} | {t['gateway_idle_mb']:.0f} → "
            f"{t['gateway_peak_mb']:.0f} |"
        )
    lines += [
        "",
        f"Goals (issue 18): geomean gateway/attach ≤ {GOALS['attach']}, gateway/trino ≤ "
        f"{GOALS['trino']}, no query slower than {WORST_OVER_ATTACH}x attach, every answer "
        "correct; time growing no faster than the data (growth ratio ≤ 1 against the smallest "
        "scale factor), peak memory bounded.",
    ]
    for run, t in zip(runs, totals, strict=True):
        lines += _query_table(run, t)
    lines += _breakdown(runs[-1])
    return "\n".join(lines) + "\n"


def _query_table(run: ScaleRun, totals: dict[str, Any]) -> list[str]:
    lines = [
        "",
        f"## SF {_sf(run.scale_factor)}, per query",
        "",
        "| query | gateway s | attach s | trino s | memory s | gateway/attach | gateway/trino "
        "| gateway/memory | rows | correct |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|:---|",
    ]
    for r in run.results:
        mark = (
            "yes"
            if not r.problems
            else "; ".join(f"**{s} no**: {p.splitlines()[0][:120]}" for s, p in r.problems.items())
        )
        lines.append(
            f"| Q{r.query} | {_seconds(r.median('gateway'))} | {_seconds(r.median('attach'))} | "
            f"{_seconds(r.median('trino'))} | {_seconds(r.median('memory'))} | "
            f"{_ratio(r.ratio('gateway', 'attach'))} | {_ratio(r.ratio('gateway', 'trino'))} | "
            f"{_ratio(r.ratio('gateway', 'memory'))} | {r.rows} | {mark} |"
        )
    seconds, over = totals["total_seconds"], totals["geomean_gateway_over"]
    lines.append(
        f"| **total / geomean** | {seconds.get('gateway', 0):.2f} | {seconds.get('attach', 0):.2f} "
        f"| {seconds.get('trino', 0):.2f} | {seconds.get('memory', 0):.2f} | "
        f"**{_ratio(over.get('attach'))}** | **{_ratio(over.get('trino'))}** | "
        f"**{_ratio(over.get('memory'))}** | | |"
    )
    return lines


def _breakdown(run: ScaleRun) -> list[str]:
    explained = [r for r in run.results if r.fragments]
    if not explained:
        return []
    lines = [
        "",
        "## Where the time goes in the slowest queries against attach "
        f"(SF {_sf(run.scale_factor)})",
        "",
        "Each query a plan sends (with its dynamic filters' keys: an IN list, a range, or a key "
        "table the store joins), run alone in the benchmark's process: the store it runs on, the "
        "rows and bytes it sends to the gateway and how long that takes.",
    ]
    for r in explained:
        lines += [
            "",
            f"### Q{r.query}: {_seconds(r.median('gateway'))} s through the gateway, "
            f"{_ratio(r.ratio('gateway', 'attach'))}x attach",
            "",
            "| store | rows | MB | s | SQL |",
            "|---|---:|---:|---:|---|",
        ]
        for f in r.fragments:
            sql = _shortened(f.sql)
            lines.append(
                f"| {f.store} | {f.rows:,} | {f.megabytes} | {f.seconds:.3f} | "
                f"`` {sql.replace('|', '/')} `` |"  # double backticks: MySQL quotes with `
            )
        where = "one store answers the whole query" if r.local_sql is None else "local DuckDB"
        lines.append(f"\nThe rest runs in: {where}.")
    return lines


def _shortened(sql: str, width: int = 220) -> str:
    """``sql`` cut to ``width``, keeping a dynamic filter's predicate with its keys counted."""
    query, marker, narrowing = abbreviated(sql).partition(NARROWED)
    if marker:
        head = max(60, width - len(narrowing) - 25)
        query = query if len(query) <= head else query[: head - 3] + "..."
        return f"{query}{marker}{narrowing}"
    return sql if len(sql) <= width else sql[: width - 3] + "..."


COLOURS = {"gateway": "#d95f02", "attach": "#7570b3", "trino": "#e7298a", "memory": "#1b9e77"}


def plot(runs: list[ScaleRun], totals: list[dict], path: Path) -> None:
    """Per-query medians at the largest scale factor; total time and gateway peak memory
    against the scale factor."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (queries, growth, memory) = plt.subplots(
        1, 3, figsize=(20, 5.5), gridspec_kw={"width_ratios": [3, 1, 1]}
    )
    last, last_totals = runs[-1], totals[-1]
    systems = [s for s in SYSTEMS if s in last_totals["total_seconds"]]
    width = 0.8 / len(systems)
    for offset, system in enumerate(systems):
        xs = [i + (offset - (len(systems) - 1) / 2) * width for i in range(len(last.results))]
        ys = [r.median(system) or 0 for r in last.results]
        queries.bar(xs, ys, width, label=system, color=COLOURS[system])
    queries.set_yscale("log")
    queries.set_xticks(range(len(last.results)), [f"Q{r.query}" for r in last.results])
    queries.set_ylabel("median seconds (log scale)")
    over = last_totals["geomean_gateway_over"]
    queries.set_title(
        f"TPC-H SF {_sf(last.scale_factor)}: geomean gateway/attach {_ratio(over.get('attach'))}, "
        f"gateway/trino {_ratio(over.get('trino'))}"
    )
    for index, r in enumerate(last.results):
        if not r.correct:
            queries.annotate("wrong", (index, r.median("gateway") or 1), ha="center", color="red")
    queries.legend()
    factors = [r.scale_factor for r in runs]
    for system in systems:
        growth.plot(
            factors, [t["total_seconds"].get(system) for t in totals], "o-",
            label=system, color=COLOURS[system],
        )  # fmt: skip
    growth.set_xscale("log")
    growth.set_yscale("log")
    growth.set_xlabel("scale factor")
    growth.set_ylabel("total seconds, all queries")
    growth.set_title("time against data")
    growth.legend()
    memory.plot(factors, [t["gateway_peak_mb"] for t in totals], "o-", color=COLOURS["gateway"])
    memory.plot(factors, [t["gateway_idle_mb"] for t in totals], "o--", color="grey")
    memory.set_xscale("log")
    memory.set_xlabel("scale factor")
    memory.set_ylabel("gateway resident MB (peak; dashed: idle)")
    memory.set_title("gateway memory against data")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


# --- main -------------------------------------------------------------------------------------


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks tpch",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sizes = parser.add_mutually_exclusive_group()
    sizes.add_argument("--scale-factor", type=float, help="one scale factor (default 1)")
    sizes.add_argument(
        "--scale-factors", help="several, smallest first, e.g. 0.1,1,3 (the same run at each)"
    )
    parser.add_argument("--runs", type=int, default=3, help="timed runs per query (default 3)")
    parser.add_argument(
        "--queries", default="1-22", help="which queries, e.g. 1-22 or 3,5,10 (default 1-22)"
    )
    parser.add_argument(
        "--systems",
        default="gateway,attach,trino",
        help="which of gateway, attach, trino to time besides the in-memory reference "
        "(default all three)",
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
    args.scale_factors = _scale_factors(args, parser)
    args.systems = _systems(args.systems, parser)
    return args


def _scale_factors(args: argparse.Namespace, parser: argparse.ArgumentParser) -> list[float]:
    if args.scale_factors is None:
        return [1.0 if args.scale_factor is None else args.scale_factor]
    try:
        factors = [float(part) for part in args.scale_factors.split(",") if part.strip()]
    except ValueError:
        parser.error(f"--scale-factors: {args.scale_factors!r} is not a list like 0.1,1,3")
    if not factors or any(f <= 0 for f in factors) or factors != sorted(set(factors)):
        parser.error("--scale-factors must be positive, distinct and smallest first, e.g. 0.1,1,3")
    return factors


def _systems(text: str, parser: argparse.ArgumentParser) -> tuple[str, ...]:
    chosen = tuple(part.strip() for part in text.split(",") if part.strip())
    unknown = [s for s in chosen if s not in SYSTEMS[:-1]]
    if unknown or "gateway" not in chosen:
        parser.error(
            f"--systems: {', '.join(unknown) or text!r}: name gateway and any of attach, trino"
        )
    return chosen


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


def mesh_directory(scale_factor: float) -> Path:
    return DATA / f"tpch-federated-sf{scale_factor:g}"


def federated_mesh(scale_factor: float) -> Path:
    """The federated TPC-H mesh at ``scale_factor``, built once under benchmarks/data and shared
    by every benchmark that reads it."""
    progress(f"TPC-H SF {scale_factor:g}: building or reusing the federated mesh…")
    return build_tpch_mesh(
        mesh_directory(scale_factor), scale_factor=scale_factor, progress=progress
    )


def trino_version() -> str | None:
    """The version the Trino coordinator reports, or None when it does not answer."""
    import urllib.request

    try:
        url = f"http://{TRINO.host}:{TRINO.port}/v1/info"
        with urllib.request.urlopen(url, timeout=5) as answer:
            return str(json.load(answer)["nodeVersion"]["version"])
    except (OSError, ValueError, KeyError):
        return None


def main(argv: list[str] | None = None) -> int:
    import duckdb

    args = parse(sys.argv[1:] if argv is None else argv)
    settings: dict[str, Any] = {
        "scale_factors": args.scale_factors,
        "runs": args.runs,
        "systems": list(args.systems),
        "machine": f"{os.cpu_count()} cores, "
        f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB, "
        f"{platform.system()} {platform.release()}, Python {platform.python_version()}",
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "duckdb": duckdb.__version__,
    }
    if "trino" in args.systems:
        settings["trino"] = trino_version()
        if settings["trino"] is None:
            raise SystemExit(
                f"Trino does not answer at {TRINO.host}:{TRINO.port}: start it with "
                "scripts/test-services, or pass --systems gateway,attach"
            )
    check_disk(args.scale_factors)
    texts = tpch_query_texts()
    runs = []
    with tempfile.TemporaryDirectory(prefix="meshgate-tpch-bench-") as scratch:
        for scale_factor in args.scale_factors:
            runs.append(run_scale(scale_factor, args, texts, Path(scratch)))
    last = runs[-1]
    if not args.no_breakdown:
        progress("running each query the plans send on its own…")
        slowest = sorted(
            last.results, key=lambda r: r.ratio("gateway", "attach") or r.median("gateway") or 0
        )[-SLOWEST_EXPLAINED:]
        explain_fragments(mesh_directory(last.scale_factor), texts, slowest)
    totals = [summary(run) for run in runs]
    RESULTS.mkdir(parents=True, exist_ok=True)
    document = {
        "settings": settings,
        "summary": totals,
        "scaling": scaling(totals),
        "runs": [asdict(run) for run in runs],
    }
    (RESULTS / f"{NAME}.json").write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    report = markdown(settings, runs, totals)
    (RESULTS / f"{NAME}.md").write_text(report, encoding="utf-8")
    plot(runs, totals, RESULTS / f"{NAME}.png")
    print(report)
    print(f"results in {RESULTS}/{NAME}.{{json,md,png}}", file=sys.stderr)
    return 0 if all(r.correct for run in runs for r in run.results) else 1


if __name__ == "__main__":
    sys.exit(main())

"""Serving path: streaming, point-query latency, concurrency and memory against same-run baselines.

    python -m benchmarks serving [--scale-factor 1] [--quick]

Builds the demo mesh once (TPC-H at the scale factor, cached under benchmarks/data/), starts the
gateway as its own process (``python -m gateway.cli serve``) and measures, each figure a ratio
to a baseline taken in the same run, medians of several runs:

- streaming: ``SELECT * FROM fulfillment.lineitem`` through the ADBC Flight SQL client vs DuckDB
  streaming the same Parquet files in this process; total and first-batch time; then eight
  client processes streaming it at once vs eight processes streaming the files with DuckDB
  (aggregate MB/s until the last ends, and the gateway's peak RSS above idle);
- latency: a point query, a new key each time, both ways clients call it (a new cursor and
  ``execute(sql, params)`` per query; one prepared statement re-executed), against the gateway
  and against a Flight SQL server that does nothing (benchmarks/null_server.py: the floor ADBC,
  gRPC and pyarrow.flight set), interleaved in rounds; p50/p99 and the server process's CPU
  per query (/proc/<pid>/stat), also less the store's own lookup (the same query in DuckDB
  in-process: the demo's sales store is an embedded DuckDB, so its lookup runs in the
  gateway's process); and where the time goes, from the planner's steps run in-process;
- concurrency: 1, 8 and 32 clients running a mix of point, scan and join queries for a fixed time;
  each client is its own process with its own connection, so the client side has no shared GIL
  and what is measured is the gateway (on 2 cores the clients still take CPU from it):
  throughput, errors, point-query p99 against the one-client p50, gateway CPU per query,
  threads and the share of time the GIL is held (py-spy, when installed);
- memory: the gateway process's peak RSS above its idle RSS while one client streams lineitem
  (VmHWM after resetting it through /proc/<pid>/clear_refs, and VmRSS sampled every 20 ms).

Writes benchmarks/results/serving.json, serving.md and serving.png.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import os
import platform
import random
import subprocess
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.harness import (
    DATA,
    MASK_KEY,
    RESULTS,
    ROOT,
    GatewayProcess,
    GilSampler,
    RssSampler,
    ThreadStarts,
    connect,
    cpu_seconds,
    machine_busy_seconds,
    median,
    percentile,
    progress,
    reset_peak,
    status_kb,
)

USER = "analyst"
STREAM_SQL = "SELECT * FROM fulfillment.lineitem"
POINT_SQL = "SELECT * FROM sales.orders WHERE o_orderkey = ?"
DIRECT_POINT_SQL = "SELECT * FROM main.orders WHERE o_orderkey = ?"
SCAN_SQL = "SELECT * FROM fulfillment.lineitem WHERE l_orderkey BETWEEN ? AND ?"
SCAN_KEYS = 4_000  # about 1,000 orders, 4,000 lines
JOIN_SQL = (
    "SELECT s.s_suppkey, s.s_name, n.n_name AS nation FROM supply.supplier s "
    "JOIN reference.nation n ON n.n_nationkey = s.s_nationkey "
    "WHERE s.s_suppkey BETWEEN ? AND ?"
)
JOIN_KEYS = 200
MIX = ("point", "scan", "join")
REPEATED = 20  # value sets per kind in the repeated-statements workload
WORKLOADS = {
    "new_values": "a new value in every query: every query is planned",
    "repeated": f"{REPEATED} value sets per kind: plans come from the plan cache",
}
SLOW_PAUSE, SLOW_BATCHES = 0.1, 60  # a client reading 6 s behind the gateway's pace
BASELINE_BATCH_ROWS = 122_880  # DuckDB's row group size; FACTS.md: the best in-process stream

GOALS = {
    "stream_ratio": 1.1,
    "point_p50_vs_null": 1.25,  # both client ways, against the no-op server in the same run
    "point_cpu_vs_null": 1.5,  # gateway CPU per point query / the no-op server's
    "concurrency_ratio": 1.0,  # 32 clients' throughput / one client's
    "point_p99_vs_single_p50": 10.0,  # at every level, while scans run
    "memory_mb": 300.0,
    "parallel_memory_mb": 400.0,  # eight clients streaming at once
    "parallel_throughput_ratio": 0.9,  # eight streams vs eight DuckDB in-process streams
}


@dataclass(frozen=True)
class Settings:
    scale_factor: float
    stream_runs: int
    latency_runs: int
    latency_warmup: int
    breakdown_runs: int
    concurrency_levels: tuple[int, ...]
    concurrency_seconds: float
    concurrency_rounds: int
    parallel_runs: int

    @classmethod
    def of(cls, args: argparse.Namespace) -> Settings:
        quick = args.quick
        return cls(
            scale_factor=args.scale_factor,
            stream_runs=2 if quick else 5,
            latency_runs=60 if quick else 200,
            latency_warmup=10 if quick else 30,
            breakdown_runs=30 if quick else 100,
            concurrency_levels=(1, 8, 32),
            concurrency_seconds=4.0 if quick else 15.0,
            concurrency_rounds=1 if quick else 3,
            parallel_runs=1 if quick else 3,
        )


def _mb(kb: float) -> float:
    return round(kb / 1024, 1)


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 3)


def _sql_string(value: object) -> str:
    return "'" + str(value).replace("'", "''") + "'"


# --- streaming and memory ---------------------------------------------------------------------


def _consume(reader, started: float) -> dict[str, Any]:
    """Read every batch, keeping none; first-batch and total time from ``started``."""
    first = None
    rows = nbytes = batches = 0
    for batch in reader:
        if first is None:
            first = time.perf_counter() - started
        rows += batch.num_rows
        nbytes += batch.nbytes
        batches += 1
    total = time.perf_counter() - started
    return {"seconds": total, "first_batch_seconds": first, "rows": rows, "bytes": nbytes,
            "batches": batches}  # fmt: skip


def _stream_in_process(lake_glob: str) -> dict[str, Any]:
    import duckdb

    con = duckdb.connect()
    con.execute("SET enable_progress_bar = false")  # it would draw over the report
    try:
        idle = status_kb("self", "VmRSS")
        peak_reset = reset_peak("self")
        cpu = time.process_time()
        started = time.perf_counter()
        reader = con.execute(f"SELECT * FROM read_parquet({_sql_string(lake_glob)})")
        run = _consume(reader.to_arrow_reader(BASELINE_BATCH_ROWS), started)
        run["cpu_seconds"] = time.process_time() - cpu
        if peak_reset:
            run["growth_kb"] = status_kb("self", "VmHWM") - idle
    finally:
        con.close()
    return run


def _peak_kb(gateway: GatewayProcess, sampler: RssSampler, peak_reset: bool) -> int:
    peak = sampler.peak_kb
    return max(peak, status_kb(gateway.pid, "VmHWM")) if peak_reset else peak


def _stream_gateway(conn, gateway: GatewayProcess, idle_kb: int) -> dict[str, Any]:
    """One stream through ADBC; the gateway's RSS above ``idle_kb`` (its RSS when fresh) and
    its growth during the run (above its RSS just before)."""
    before = gateway.rss_kb()
    peak_reset = reset_peak(gateway.pid)
    with RssSampler(gateway.pid) as sampler:
        server_cpu, client_cpu = cpu_seconds(gateway.pid), time.process_time()
        cursor = conn.cursor()
        started = time.perf_counter()
        cursor.execute(STREAM_SQL)
        run = _consume(cursor.fetch_record_batch(), started)
        cursor.close()
        run["cpu_seconds"] = cpu_seconds(gateway.pid) - server_cpu
        run["client_cpu_seconds"] = time.process_time() - client_cpu
    peak = _peak_kb(gateway, sampler, peak_reset)
    run["peak_above_idle_kb"] = peak - idle_kb
    run["growth_kb"] = peak - before
    run["rss_timeline"] = [(round(t, 3), kb - idle_kb) for t, kb in sampler.samples]
    return run


def _stream_gateway_slowly(
    conn, gateway: GatewayProcess, idle_kb: int, *, pause: float, batches: int
) -> int:
    """Peak RSS above ``idle_kb`` while a client takes ``pause`` s per batch, then hangs up.

    Without backpressure the gateway would read ahead of the client and hold what it read.
    """
    peak_reset = reset_peak(gateway.pid)
    with RssSampler(gateway.pid) as sampler:
        cursor = conn.cursor()
        cursor.execute(STREAM_SQL)
        reader = cursor.fetch_record_batch()
        for _, _batch in zip(range(batches), reader, strict=False):  # small scale factors
            time.sleep(pause)  # have fewer batches than that
        cursor.close()
    return _peak_kb(gateway, sampler, peak_reset) - idle_kb


def _stream_worker(pipe, uri: str | None, lake_glob: str, threads: int = 1) -> None:
    """A streaming client process: one ADBC stream through the gateway at ``uri``; with no
    ``uri``, ``threads`` DuckDB streams of the files at once in this process, each on its own
    cursor of one DuckDB (as the gateway's one DuckDB serves its clients). On each command
    every stream reads lineitem once; the process reports when each ended."""
    import duckdb

    conn = connect(uri, USER) if uri else None
    database = duckdb.connect() if conn is None else None
    sql = f"SELECT * FROM read_parquet({_sql_string(lake_glob)})"

    def in_process(results: list) -> None:
        cursor = database.cursor()
        try:
            cursor.execute("SET enable_progress_bar = false")
            reader = cursor.execute(sql).to_arrow_reader(BASELINE_BATCH_ROWS)
            run = _consume(reader, time.perf_counter())
        finally:
            cursor.close()
        results.append({"rows": run["rows"], "bytes": run["bytes"], "ended": time.monotonic()})

    pipe.send("ready")
    try:
        while (start_at := pipe.recv()) is not None:
            time.sleep(max(0.0, start_at - time.monotonic()))
            results: list[dict[str, Any]] = []
            if conn is None:
                workers = [
                    threading.Thread(target=in_process, args=(results,)) for _ in range(threads)
                ]
                for worker in workers:
                    worker.start()
                for worker in workers:
                    worker.join()
                if len(results) != threads:
                    raise RuntimeError("an in-process DuckDB stream failed")
            else:
                cursor = conn.cursor()
                cursor.execute(STREAM_SQL)
                run = _consume(cursor.fetch_record_batch(), time.perf_counter())
                cursor.close()
                results.append(
                    {"rows": run["rows"], "bytes": run["bytes"], "ended": time.monotonic()}
                )
            pipe.send(results)
    finally:
        if conn is not None:
            conn.close()
        if database is not None:
            database.close()


@contextlib.contextmanager
def _stream_clients(count: int, uri: str | None, lake_glob: str, *, threads: int = 1):
    """``count`` streaming client processes (of ``threads`` streams each), connected, waiting."""
    context = multiprocessing.get_context("spawn")  # the parent runs Go (ADBC): never fork it
    clients = []
    try:
        for _ in range(count):
            ours, theirs = context.Pipe()
            process = context.Process(
                target=_stream_worker, args=(theirs, uri, lake_glob, threads), daemon=True
            )
            process.start()
            clients.append((process, ours))
        for _, pipe in clients:
            if not pipe.poll(120) or pipe.recv() != "ready":
                raise RuntimeError("a streaming client process did not start")
        yield clients
    finally:
        for _, pipe in clients:
            with contextlib.suppress(OSError):
                pipe.send(None)
        for process, _ in clients:
            process.join(timeout=30)
            if process.is_alive():
                process.kill()


def _parallel_round(clients: list, gateway: GatewayProcess | None, idle_kb: int) -> dict:
    """Every client streams lineitem once, all starting together: aggregate MB/s until the
    last one ends, and (through the gateway) its peak RSS above ``idle_kb``."""
    start_at = time.monotonic() + 0.5
    sampler = RssSampler(gateway.pid) if gateway is not None else contextlib.nullcontext()
    peak_reset = gateway is not None and reset_peak(gateway.pid)
    with sampler:
        for _, pipe in clients:
            pipe.send(start_at)
        answers = [a for _, pipe in clients for a in pipe.recv()]
    seconds = max(a["ended"] for a in answers) - start_at
    total = sum(a["bytes"] for a in answers)
    run = {"seconds": seconds, "bytes": total, "rows": sum(a["rows"] for a in answers)}
    run["mb_per_second"] = total / seconds / 1e6
    if gateway is not None:
        run["peak_above_idle_kb"] = _peak_kb(gateway, sampler, peak_reset) - idle_kb
    return run


def parallel_streaming(
    gateway: GatewayProcess, mesh: Path, settings: Settings, idle_kb: int
) -> dict[str, Any]:
    """``PARALLEL_STREAMS`` client processes streaming lineitem at once through the gateway vs
    as many DuckDB streams of the files at once in one process; an untimed round of each
    first, then timed rounds interleaved."""
    lake_glob = str(mesh / "stores" / "lake" / "lineitem" / "*.parquet")
    served, baseline = [], []
    with (
        _stream_clients(PARALLEL_STREAMS, gateway.uri, lake_glob) as through_gateway,
        _stream_clients(1, None, lake_glob, threads=PARALLEL_STREAMS) as in_process,
    ):
        _parallel_round(in_process, None, 0)
        _parallel_round(through_gateway, gateway, idle_kb)
        for index in range(settings.parallel_runs):
            baseline.append(_parallel_round(in_process, None, 0))
            served.append(_parallel_round(through_gateway, gateway, idle_kb))
            progress(
                f"{PARALLEL_STREAMS} streams at once, run {index + 1}/{settings.parallel_runs}: "
                f"in-process {baseline[-1]['mb_per_second']:.0f} MB/s, gateway "
                f"{served[-1]['mb_per_second']:.0f} MB/s, gateway RSS peak "
                f"+{_mb(served[-1]['peak_above_idle_kb'])} MB above idle"
            )
    if {r["rows"] for r in baseline} != {r["rows"] for r in served}:
        raise RuntimeError(f"row counts differ: in-process {baseline}, gateway {served}")
    gateway_mbs = median([r["mb_per_second"] for r in served])
    baseline_mbs = median([r["mb_per_second"] for r in baseline])
    return {
        "clients": PARALLEL_STREAMS,
        "runs": settings.parallel_runs,
        "gateway_mb_per_second": round(gateway_mbs, 1),
        "in_process_mb_per_second": round(baseline_mbs, 1),
        "throughput_ratio": round(gateway_mbs / baseline_mbs, 3),
        "gateway_seconds": [round(r["seconds"], 2) for r in served],
        "in_process_seconds": [round(r["seconds"], 2) for r in baseline],
        "gateway_peak_above_idle_mb": _mb(max(r["peak_above_idle_kb"] for r in served)),
    }


PARALLEL_STREAMS = 8


def streaming(gateway: GatewayProcess, mesh: Path, settings: Settings) -> dict[str, Any]:
    lake_glob = str(mesh / "stores" / "lake" / "lineitem" / "*.parquet")
    conn = connect(gateway.uri, USER)
    try:
        cursor = conn.cursor()  # a first small query loads what every query needs
        cursor.execute("SELECT count(*) AS n FROM reference.region")
        cursor.fetch_arrow_table()
        cursor.close()
        idle = gateway.rss_kb()
        progress(f"streaming: gateway idle at {_mb(idle)} MB RSS; one untimed run each…")
        _stream_in_process(lake_glob)
        warmup = _stream_gateway(conn, gateway, idle)  # its memory counts, its time does not
        baseline, served = [], []
        for run in range(settings.stream_runs):
            baseline.append(_stream_in_process(lake_glob))
            served.append(_stream_gateway(conn, gateway, idle))
            progress(
                f"streaming run {run + 1}/{settings.stream_runs}: in-process "
                f"{baseline[-1]['seconds']:.2f} s, gateway {served[-1]['seconds']:.2f} s, "
                f"gateway RSS peak +{_mb(served[-1]['peak_above_idle_kb'])} MB above idle"
            )
        progress(f"streaming: a slow client ({SLOW_PAUSE} s per batch) reads {SLOW_BATCHES}…")
        slow_peak = _stream_gateway_slowly(
            conn, gateway, idle, pause=SLOW_PAUSE, batches=SLOW_BATCHES
        )
    finally:
        conn.close()
    progress(f"streaming: {PARALLEL_STREAMS} clients at once vs {PARALLEL_STREAMS} in-process…")
    parallel = parallel_streaming(gateway, mesh, settings, idle)
    if {r["rows"] for r in baseline} != {r["rows"] for r in served}:
        raise RuntimeError(f"row counts differ: in-process {baseline}, gateway {served}")

    def summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
        seconds = median([r["seconds"] for r in runs])
        return {
            "seconds": round(seconds, 3),
            "first_batch_ms": _ms(median([r["first_batch_seconds"] for r in runs])),
            "rows": runs[0]["rows"],
            "bytes": runs[0]["bytes"],
            "batches": median([r["batches"] for r in runs]),
            "mb_per_second": round(runs[0]["bytes"] / seconds / 1e6, 1),
            "runs_seconds": [round(r["seconds"], 3) for r in runs],
            "cpu_seconds": round(median([r["cpu_seconds"] for r in runs]), 2),
        }

    result = {
        "sql": STREAM_SQL,
        "in_process": {**summary(baseline), "batch_rows": BASELINE_BATCH_ROWS},
        "gateway": summary(served),
        "parallel": parallel,
    }
    result["ratio"] = round(result["gateway"]["seconds"] / result["in_process"]["seconds"], 3)
    result["gateway"]["client_cpu_seconds"] = round(
        median([r["client_cpu_seconds"] for r in served]), 2
    )
    result["cpu_ratio"] = round(
        result["gateway"]["cpu_seconds"] / result["in_process"]["cpu_seconds"], 2
    )
    result["first_batch_ratio"] = round(
        result["gateway"]["first_batch_ms"] / result["in_process"]["first_batch_ms"], 2
    )
    peaks = [r["peak_above_idle_kb"] for r in (warmup, *served)]
    growth = [r["growth_kb"] for r in served]
    baseline_growth = [r["growth_kb"] for r in baseline if "growth_kb" in r]
    result["memory"] = {
        "gateway_idle_mb": _mb(idle),
        "gateway_peak_above_idle_mb": _mb(max(peaks)),
        "gateway_growth_per_run_mb": _mb(median(growth)),
        "in_process_growth_per_run_mb": _mb(median(baseline_growth)) if baseline_growth else None,
        "gateway_slow_client_peak_above_idle_mb": _mb(slow_peak),
        "slow_client": {"pause_seconds": SLOW_PAUSE, "batches": SLOW_BATCHES},
        "rss_timeline_mb": [(t, _mb(kb)) for t, kb in warmup["rss_timeline"]],
    }
    if baseline_growth:
        result["memory"]["growth_ratio"] = round(
            median(growth) / max(1, median(baseline_growth)), 2
        )
    return result


# --- latency ----------------------------------------------------------------------------------


def _order_keys(mesh: Path, count: int) -> list[int]:
    """``count`` distinct order keys sampled from the store, so every lookup is a new statement."""
    import duckdb

    con = duckdb.connect(str(mesh / "stores" / "sales.duckdb"), read_only=True)
    try:
        keys = [k for (k,) in con.execute("SELECT o_orderkey FROM main.orders").fetchall()]
    finally:
        con.close()
    return random.Random(6).sample(keys, count)


def _point_direct(mesh: Path, keys: list[int]) -> list[float]:
    import duckdb

    con = duckdb.connect(str(mesh / "stores" / "sales.duckdb"), read_only=True)
    try:
        times = []
        for key in keys:
            started = time.perf_counter()
            table = con.execute(DIRECT_POINT_SQL, [key]).to_arrow_table()
            times.append(time.perf_counter() - started)
            assert table.num_rows == 1, (key, table.num_rows)
    finally:
        con.close()
    return times


def _point_gateway(conn, keys: list[int], sql: str = POINT_SQL) -> list[float]:
    """A new cursor and ``execute(sql, params)`` per query, as DB-API code and BI tools call:
    prepare, bind, GetFlightInfo, DoGet and close each time."""
    times = []
    for key in keys:
        started = time.perf_counter()
        cursor = conn.cursor()
        cursor.execute(sql, parameters=(key,))
        table = cursor.fetch_arrow_table()
        cursor.close()
        times.append(time.perf_counter() - started)
        assert table.num_rows == 1, (key, table.num_rows)
    return times


def _point_prepared(conn, keys: list[int], sql: str = POINT_SQL) -> list[float]:
    """One cursor reused: the statement is prepared once, then each query binds (DoPut),
    GetFlightInfo and DoGet on the same handle (FACTS.md)."""
    times = []
    cursor = conn.cursor()
    try:
        for key in keys:
            started = time.perf_counter()
            cursor.execute(sql, parameters=(key,))
            table = cursor.fetch_arrow_table()
            times.append(time.perf_counter() - started)
            assert table.num_rows == 1, (key, table.num_rows)
    finally:
        cursor.close()
    return times


CLIENT_WAYS = {
    "new_cursor": (_point_gateway, "a new cursor + execute(sql, params) per query"),
    "prepared": (_point_prepared, "one prepared statement re-executed with new values"),
}
NULL_SQL = "SELECT ?"


@contextlib.contextmanager
def _null_server():
    """A Flight SQL server that does nothing (null_server.py), in its own process: (uri, pid)."""
    context = multiprocessing.get_context("spawn")  # the parent runs Go (ADBC): never fork it
    receiver, sender = context.Pipe(duplex=False)
    from benchmarks import null_server

    process = context.Process(target=null_server.serve, args=(sender,), daemon=True)
    process.start()
    try:
        if not receiver.poll(60):
            raise RuntimeError("the no-op Flight SQL server did not start within 60 s")
        yield receiver.recv(), process.pid
    finally:
        process.terminate()
        process.join(15)


def _timed_block(run, conn, keys: list[int], sql: str, pid: int) -> tuple[list[float], float]:
    """``run``'s per-query times and the server process's CPU seconds over the block."""
    cpu = cpu_seconds(pid)
    times = run(conn, keys, sql)
    return times, cpu_seconds(pid) - cpu


def _point_ways(
    gateway: GatewayProcess, keys: list[int], settings: Settings
) -> dict[str, dict[str, Any]]:
    """Both client ways against the gateway and the no-op server, interleaved in rounds so a
    change in the machine's load hits both alike; p50/p99 and server CPU per query."""
    import adbc_driver_flightsql.dbapi as flightsql

    warmup, rounds = settings.latency_warmup, LATENCY_ROUNDS
    per_round = max(1, settings.latency_runs // rounds)
    samples = {f"{w}/{t}": [] for w in CLIENT_WAYS for t in ("gateway", "null_server")}
    cpu = dict.fromkeys(samples, 0.0)
    with _null_server() as (null_uri, null_pid):
        served, floor = connect(gateway.uri, USER), flightsql.connect(null_uri, autocommit=True)
        targets = {
            "gateway": (served, POINT_SQL, gateway.pid),
            "null_server": (floor, NULL_SQL, null_pid),
        }
        try:
            for run, _ in CLIENT_WAYS.values():
                for conn, sql, _ in targets.values():
                    run(conn, keys[:warmup], sql)
            for index in range(rounds):
                chunk = keys[warmup + index * per_round : warmup + (index + 1) * per_round]
                for way, (run, _) in CLIENT_WAYS.items():
                    for target, (conn, sql, pid) in targets.items():
                        times, seconds = _timed_block(run, conn, chunk, sql, pid)
                        samples[f"{way}/{target}"].extend(times)
                        cpu[f"{way}/{target}"] += seconds
        finally:
            served.close()
            floor.close()
    result: dict[str, dict[str, Any]] = {}
    for way, (_, description) in CLIENT_WAYS.items():
        entry: dict[str, Any] = {"client": description}
        for target in ("gateway", "null_server"):
            times = samples[f"{way}/{target}"]
            entry[target] = {
                "p50_ms": _ms(median(times)),
                "p99_ms": _ms(percentile(times, 99)),
                "server_cpu_ms_per_query": _ms(cpu[f"{way}/{target}"] / len(times)),
                "samples_ms": [_ms(t) for t in times],
            }
        gw, null = entry["gateway"], entry["null_server"]
        entry["p50_ratio"] = round(gw["p50_ms"] / null["p50_ms"], 2)
        entry["cpu_ratio"] = round(
            gw["server_cpu_ms_per_query"] / max(1e-3, null["server_cpu_ms_per_query"]), 2
        )
        result[way] = entry
    return result


LATENCY_ROUNDS = 3


def _breakdown(mesh: Path, keys: list[int]) -> dict[str, float]:
    """Where a point query's server time goes: the planner's steps one by one (no caches), the
    store, and the whole sequence the Flight handlers run for one ADBC query (with caches).

    The sequence follows FACTS.md: CreatePreparedStatement plans with the parameters unbound,
    DoPut and GetFlightInfo plan with them bound, DoGet runs the query.
    """
    import gateway.planner as planner
    from gateway.planner.state import PlanState
    from gateway.service import Gateway

    os.environ.setdefault("MESHGATE_MASK_KEY", MASK_KEY)
    service = Gateway.open(mesh)
    principal = service.principals.get(USER)
    phases: dict[str, list[float]] = defaultdict(list)
    try:
        for key in keys:
            context = service.context(principal)
            mark = time.perf_counter()

            def lap(name: str) -> None:
                nonlocal mark
                now = time.perf_counter()
                phases[name].append(now - mark)
                mark = now

            state = PlanState(sql=POINT_SQL, context=context, parameters=(key,))
            for _, steps in planner.PIPELINE:
                for step in steps:
                    state = step(state)
                    lap(f"plan: {step.__name__}")
            plan = service.plan(POINT_SQL, principal, [key])
            lap("Gateway.plan (all of the above, as served)")
            service.execute(plan).read_all()
            lap("store: execute and read the answer")
            service.schema(POINT_SQL, principal, [None])
            service.schema(POINT_SQL, principal, [key + 1])
            service.schema(POINT_SQL, principal, [key + 1])
            service.run(POINT_SQL, principal, [key + 1]).read_all()
            lap("server work per ADBC query (prepare, bind, info, get; in-process)")
    finally:
        service.close()
    return {name: _ms(median(times)) for name, times in phases.items()}


def latency(gateway: GatewayProcess, mesh: Path, settings: Settings) -> dict[str, Any]:
    warmup, runs = settings.latency_warmup, settings.latency_runs
    keys = _order_keys(mesh, warmup + runs + settings.breakdown_runs)
    progress(f"latency: {runs} point queries directly in DuckDB (the store's own lookup)…")
    _point_direct(mesh, keys[:warmup])
    store_cpu = time.process_time()
    direct = _point_direct(mesh, keys[warmup : warmup + runs])
    store_cpu = (time.process_time() - store_cpu) / len(direct)
    progress(
        f"latency: {runs} point queries each way ({', '.join(CLIENT_WAYS)}) through the "
        "gateway and a Flight SQL server that does nothing, interleaved…"
    )
    ways = _point_ways(gateway, keys[: warmup + runs], settings)
    conn = connect(gateway.uri, USER)
    try:
        repeated_cpu = cpu_seconds(gateway.pid)
        repeated = _point_gateway(conn, [keys[0]] * runs)
        repeated_cpu = cpu_seconds(gateway.pid) - repeated_cpu
    finally:
        conn.close()
    progress("latency: breaking the server's time down in-process…")
    breakdown = _breakdown(mesh, keys[warmup + runs :])
    new_cursor = ways["new_cursor"]
    p50 = new_cursor["gateway"]["p50_ms"]
    server = breakdown["server work per ADBC query (prepare, bind, info, get; in-process)"]
    breakdown["Flight and client (gateway p50 minus server work)"] = round(p50 - server, 3)
    breakdown["ADBC client, gRPC and pyarrow.flight alone (no-op server p50)"] = new_cursor[
        "null_server"
    ]["p50_ms"]
    for entry in ways.values():  # the store's lookup runs in the gateway's process
        gw = entry["gateway"]
        gw["server_cpu_ms_less_store"] = round(gw["server_cpu_ms_per_query"] - _ms(store_cpu), 3)
        entry["cpu_ratio_less_store"] = round(
            gw["server_cpu_ms_less_store"]
            / max(1e-3, entry["null_server"]["server_cpu_ms_per_query"]),
            2,
        )
    return {
        "sql": POINT_SQL,
        "runs": runs,
        "direct": {
            "p50_ms": _ms(median(direct)),
            "p99_ms": _ms(percentile(direct, 99)),
            "cpu_ms_per_query": _ms(store_cpu),
        },
        "ways": ways,
        "null_server": new_cursor["null_server"],
        "gateway": {**new_cursor["gateway"], "client": new_cursor["client"]},
        "gateway_same_key": {
            "p50_ms": _ms(median(repeated)),
            "p99_ms": _ms(percentile(repeated, 99)),
            "server_cpu_ms_per_query": _ms(repeated_cpu / runs),
        },
        "ratio": round(p50 / _ms(median(direct)), 2),
        "breakdown_ms": breakdown,
        "samples_ms": {
            "direct": [_ms(t) for t in direct],
            "gateway": new_cursor["gateway"]["samples_ms"],
        },
    }


# --- concurrency ------------------------------------------------------------------------------


def _query(
    kind: str, rng: random.Random, space: dict[str, int], *, repeated: bool
) -> tuple[str, tuple[int, ...]]:
    """A query of ``kind`` with random values, or (``repeated``) one of a few value sets."""

    def pick(count: int) -> int:
        return rng.randrange(REPEATED) * (count // REPEATED) if repeated else rng.randrange(count)

    if kind == "point":
        return POINT_SQL, (_order_key(pick(space["orders"])),)
    if kind == "scan":
        low = 1 + pick(max(1, space["max_orderkey"] - SCAN_KEYS))
        return SCAN_SQL, (low, low + SCAN_KEYS)
    low = 1 + pick(max(1, space["suppliers"] - JOIN_KEYS))
    return JOIN_SQL, (low, low + JOIN_KEYS)


def _client(pipe, uri: str, seed: int) -> None:
    """One client process: one connection, runs the mix on command until told to stop."""
    conn = connect(uri, USER)
    rng = random.Random(seed)
    pipe.send("ready")
    while (command := pipe.recv()) is not None:
        start_at, end_at, space, repeated = command
        time.sleep(max(0.0, start_at - time.monotonic()))
        records: list[tuple[str, float]] = []
        errors: list[str] = []
        while time.monotonic() < end_at:
            kind = rng.choice(MIX)
            sql, parameters = _query(kind, rng, space, repeated=repeated)
            started = time.perf_counter()
            try:
                cursor = conn.cursor()
                try:
                    cursor.execute(sql, parameters=parameters)
                    rows = cursor.fetch_arrow_table().num_rows
                finally:
                    cursor.close()
                if kind == "point" and rows != 1:
                    raise AssertionError(f"point query {parameters} returned {rows} rows")
            except Exception as exc:  # noqa: BLE001 - every failure is counted and reported
                errors.append(f"{kind}: {type(exc).__name__}: {str(exc)[:300]}")
                continue
            elapsed = time.perf_counter() - started
            if time.monotonic() <= end_at:
                records.append((kind, elapsed))
        pipe.send({"records": records, "errors": errors})
    conn.close()


def _order_key(index: int) -> int:
    """The ``index``-th TPC-H order key: keys are sparse, 8 used of every 32 (1-7, 32-39, ...)."""
    return (index + 1) // 8 * 32 + (index + 1) % 8


def _key_space(mesh: Path) -> dict[str, int]:
    rows = json.loads((mesh / ".meshgate-demo.json").read_text(encoding="utf-8"))["rows"]
    return {
        "orders": rows["orders"],
        "max_orderkey": _order_key(rows["orders"] - 1),
        "suppliers": rows["supplier"],
    }


def concurrency(gateway: GatewayProcess, mesh: Path, settings: Settings) -> dict[str, Any]:
    space = _key_space(mesh)
    runs: dict[str, dict[int, list[dict[str, Any]]]] = {w: defaultdict(list) for w in WORKLOADS}
    with _client_processes(gateway, max(settings.concurrency_levels)) as clients:
        for round_ in range(settings.concurrency_rounds):
            for workload in WORKLOADS:
                for level in settings.concurrency_levels:
                    run = _concurrent_run(clients[:level], gateway, space, settings, workload)
                    runs[workload][level].append(run)
                    progress(
                        f"concurrency round {round_ + 1}/{settings.concurrency_rounds}, "
                        f"{workload}, {level:>2} clients: {_described(run, settings)}"
                    )
    result: dict[str, Any] = {
        "mix": list(MIX),
        "seconds": settings.concurrency_seconds,
        "rounds": settings.concurrency_rounds,
    }
    for workload, levels in runs.items():
        result[workload] = _concurrency_summary(levels, settings)
        result[workload]["workload"] = WORKLOADS[workload]
    return result


@contextlib.contextmanager
def _client_processes(gateway: GatewayProcess, count: int) -> Iterator[list]:
    """``count`` client processes, each connected to the gateway, as (process, pipe) pairs."""
    context = multiprocessing.get_context("spawn")  # the parent runs Go (ADBC): never fork it
    progress(f"concurrency: starting {count} client processes…")
    clients = []
    try:
        for index in range(count):
            ours, theirs = context.Pipe()
            process = context.Process(
                target=_client,
                args=(theirs, gateway.uri, index),
                daemon=True,
                name=f"client-{index}",
            )
            process.start()
            clients.append((process, ours))
        for _, pipe in clients:
            if pipe.recv() != "ready":
                raise RuntimeError("a client process failed to connect")
        yield clients
    finally:
        for _, pipe in clients:
            with contextlib.suppress(OSError):
                pipe.send(None)
        for process, _ in clients:
            process.join(timeout=10)
            if process.is_alive():
                process.kill()


def _described(run: dict[str, Any], settings: Settings) -> str:
    gil = "" if run["gil_held"] is None else f", GIL held {run['gil_held']:.0%}"
    return (
        f"{run['queries'] / settings.concurrency_seconds:6.1f} q/s, "
        f"cores busy: gateway {run['server_cores']:.2f}, clients "
        f"{run['client_cores']:.2f}, machine {run['machine_cores']:.2f}{gil}, "
        f"{len(run['errors'])} errors"
    )


def _concurrent_run(
    clients: list, gateway: GatewayProcess, space: dict[str, int], settings: Settings, workload: str
) -> dict[str, Any]:
    """The clients run the mix together for ``concurrency_seconds``; what each finished."""
    start_at = time.monotonic() + 0.5
    end_at = start_at + settings.concurrency_seconds
    for _, pipe in clients:
        pipe.send((start_at, end_at, space, workload == "repeated"))
    time.sleep(max(0.0, start_at - time.monotonic()))
    server_cpu, machine = cpu_seconds(gateway.pid), machine_busy_seconds()
    client_cpu = sum(cpu_seconds(process.pid) for process, _ in clients)
    with (
        GilSampler(gateway.pid, settings.concurrency_seconds - 1) as gil,
        ThreadStarts(gateway.pid) as thread_starts,
    ):
        time.sleep(max(0.0, end_at - time.monotonic()))
        server_cpu = cpu_seconds(gateway.pid) - server_cpu
        client_cpu = sum(cpu_seconds(process.pid) for process, _ in clients) - client_cpu
        machine = machine_busy_seconds() - machine
    threads = status_kb(gateway.pid, "Threads")  # a count, read like the kB fields
    answers = [pipe.recv() for _, pipe in clients]
    records = [r for a in answers for r in a["records"]]
    return {
        "queries": len(records),
        "server_cpu_ms_per_query": _ms(server_cpu / max(1, len(records))),
        "server_threads": threads,
        "threads_started_per_query": round(thread_starts.started / max(1, len(records)), 2),
        "records": records,
        "errors": [e for a in answers for e in a["errors"]],
        "server_cores": server_cpu / settings.concurrency_seconds,
        "client_cores": client_cpu / settings.concurrency_seconds,
        "machine_cores": machine / settings.concurrency_seconds,
        "gil_held": gil.fraction,
    }


def _concurrency_summary(
    levels: dict[int, list[dict[str, Any]]], settings: Settings
) -> dict[str, Any]:
    summary: dict[str, Any] = {"levels": {}}
    for level, rounds in levels.items():
        latencies = [t for r in rounds for _, t in r["records"]]
        by_kind = defaultdict(list)
        for r in rounds:
            for kind, t in r["records"]:
                by_kind[kind].append(t)
        errors = [e for r in rounds for e in r["errors"]]
        summary["levels"][level] = {
            "queries_per_second": round(
                median([r["queries"] for r in rounds]) / settings.concurrency_seconds, 1
            ),
            "p50_ms": _ms(median(latencies)),
            "p99_ms": _ms(percentile(latencies, 99)),
            "by_kind_p50_ms": {k: _ms(median(v)) for k, v in sorted(by_kind.items())},
            "server_cores_busy": round(median([r["server_cores"] for r in rounds]), 2),
            "client_cores_busy": round(median([r["client_cores"] for r in rounds]), 2),
            "machine_cores_busy": round(median([r["machine_cores"] for r in rounds]), 2),
            "gil_held": (
                round(median([r["gil_held"] for r in rounds]), 2)
                if all(r["gil_held"] is not None for r in rounds)
                else None
            ),
            "errors": len(errors),
            "error_samples": sorted(set(errors))[:5],
            "server_cpu_ms_per_query": round(
                median([r["server_cpu_ms_per_query"] for r in rounds]), 2
            ),
            "server_threads": max(r["server_threads"] for r in rounds),
            "threads_started_per_query": median([r["threads_started_per_query"] for r in rounds]),
            "point_p99_ms": _ms(percentile(by_kind["point"], 99)) if by_kind["point"] else None,
        }
    lowest, highest = min(levels), max(levels)
    single_point_p50 = summary["levels"][lowest]["by_kind_p50_ms"].get("point")
    for level in summary["levels"].values():
        level["point_p99_vs_single_p50"] = (
            round(level["point_p99_ms"] / single_point_p50, 2)
            if single_point_p50 and level["point_p99_ms"] is not None
            else None
        )
    summary["ratio"] = round(
        summary["levels"][highest]["queries_per_second"]
        / summary["levels"][lowest]["queries_per_second"],
        2,
    )
    return summary


# --- report -----------------------------------------------------------------------------------


def _environment(settings: Settings) -> dict[str, Any]:
    import adbc_driver_flightsql
    import duckdb
    import pyarrow

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True)
        return done.stdout.strip()

    return {
        "commit": git("rev-parse", "--short", "HEAD"),
        "uncommitted_changes": bool(git("status", "--porcelain", "--untracked-files=no")),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "pyarrow": pyarrow.__version__,
        "duckdb": duckdb.__version__,
        "adbc_driver_flightsql": adbc_driver_flightsql.__version__,
        "scale_factor": settings.scale_factor,
        "settings": settings.__dict__ | {"concurrency_levels": list(settings.concurrency_levels)},
        "when": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "load_average_at_start": os.getloadavg(),
    }


def _met(ok: bool) -> str:
    return "met" if ok else "**not met**"


def markdown(results: dict[str, Any]) -> str:
    s, lat = results["streaming"], results["latency"]
    con, cached = results["concurrency"]["new_values"], results["concurrency"]["repeated"]
    mem = s["memory"]
    env = results["environment"]
    low, high = min(con["levels"]), max(con["levels"])
    errors = sum(level["errors"] for w in (con, cached) for level in w["levels"].values())
    rows = [
        ("measure", "gateway", "baseline (same run)", "ratio", "goal", ""),
        (
            f"stream lineitem SF {env['scale_factor']:g} ({s['gateway']['rows']:,} rows, "
            f"{s['gateway']['bytes'] / 1e9:.2f} GB), median s",
            f"{s['gateway']['seconds']:.2f}",
            f"{s['in_process']['seconds']:.2f} (DuckDB in-process)",
            f"{s['ratio']:.2f}x",
            f"<= {GOALS['stream_ratio']}x",
            _met(s["ratio"] <= GOALS["stream_ratio"]),
        ),
        (
            "CPU seconds per stream: gateway process (+ ADBC client)",
            f"{s['gateway']['cpu_seconds']:.2f} (+ {s['gateway']['client_cpu_seconds']:.2f})",
            f"{s['in_process']['cpu_seconds']:.2f}",
            f"{s['cpu_ratio']:.2f}x",
            "reported",
            "",
        ),
        (
            "first batch, ms",
            f"{s['gateway']['first_batch_ms']:.0f}",
            f"{s['in_process']['first_batch_ms']:.0f}",
            f"{s['first_batch_ratio']:.1f}x",
            "reported",
            "",
        ),
        *_point_rows(lat),
        (
            "point query p99, ms",
            f"{lat['gateway']['p99_ms']:.2f}",
            f"{lat['direct']['p99_ms']:.2f}",
            "",
            "reported",
            "",
        ),
        (
            f"throughput {high} vs {low} clients (point/scan/join mix, new values), q/s",
            f"{con['levels'][high]['queries_per_second']:.1f}",
            f"{con['levels'][low]['queries_per_second']:.1f} (1 client)",
            f"{con['ratio']:.2f}x",
            f">= {GOALS['concurrency_ratio']}x",
            _met(con["ratio"] >= GOALS["concurrency_ratio"]),
        ),
        (
            f"the same mix, {REPEATED} value sets per query (plans cached), q/s",
            f"{cached['levels'][high]['queries_per_second']:.1f}",
            f"{cached['levels'][low]['queries_per_second']:.1f} (1 client)",
            f"{cached['ratio']:.2f}x",
            f">= {GOALS['concurrency_ratio']}x",
            _met(cached["ratio"] >= GOALS["concurrency_ratio"]),
        ),
        (
            f"point-query p99 at {high} clients / its p50 at {low}, ms",
            f"{con['levels'][high]['point_p99_ms']:.1f}",
            f"{con['levels'][low]['by_kind_p50_ms']['point']:.1f}",
            f"{con['levels'][high]['point_p99_vs_single_p50']:.1f}x",
            f"<= {GOALS['point_p99_vs_single_p50']:g}x",
            _met(
                con["levels"][high]["point_p99_vs_single_p50"] <= GOALS["point_p99_vs_single_p50"]
            ),
        ),
        (
            "gateway CPU per query of the mix, ms, by clients",
            " / ".join(
                f"{con['levels'][n]['server_cpu_ms_per_query']:.1f}" for n in sorted(con["levels"])
            ),
            " / ".join(str(n) for n in sorted(con["levels"])) + " clients",
            "",
            "reported",
            "",
        ),
        ("errors under concurrency", str(errors), "", "", "0", _met(errors == 0)),
        (
            f"{s['parallel']['clients']} clients streaming lineitem at once, aggregate MB/s",
            f"{s['parallel']['gateway_mb_per_second']:.0f}",
            f"{s['parallel']['in_process_mb_per_second']:.0f} "
            f"({s['parallel']['clients']} DuckDB streams at once in-process)",
            f"{s['parallel']['throughput_ratio']:.2f}x",
            f">= {GOALS['parallel_throughput_ratio']}x",
            _met(s["parallel"]["throughput_ratio"] >= GOALS["parallel_throughput_ratio"]),
        ),
        (
            f"gateway peak RSS above idle, {s['parallel']['clients']} streams at once, MB",
            f"{s['parallel']['gateway_peak_above_idle_mb']:.0f}",
            "",
            "",
            f"<= {GOALS['parallel_memory_mb']:g} MB",
            _met(s["parallel"]["gateway_peak_above_idle_mb"] <= GOALS["parallel_memory_mb"]),
        ),
        (
            f"gateway peak RSS above its idle {mem['gateway_idle_mb']:.0f} MB, streaming "
            f"(max of {1 + len(s['gateway']['runs_seconds'])} runs), MB",
            f"{mem['gateway_peak_above_idle_mb']:.0f}",
            "",
            "",
            f"<= {GOALS['memory_mb']:g} MB",
            _met(mem["gateway_peak_above_idle_mb"] <= GOALS["memory_mb"]),
        ),
        (
            "RSS growth during one stream (median), MB",
            f"{mem['gateway_growth_per_run_mb']:.0f}",
            (
                f"{mem['in_process_growth_per_run_mb']:.0f} (DuckDB in-process)"
                if mem.get("in_process_growth_per_run_mb") is not None
                else "n/a"
            ),
            f"{mem['growth_ratio']:.2f}x" if "growth_ratio" in mem else "",
            "reported",
            "",
        ),
        (
            f"peak above idle, a slow client ({SLOW_PAUSE} s per batch, then hangs up), MB",
            f"{mem['gateway_slow_client_peak_above_idle_mb']:.0f}",
            "",
            "",
            f"<= {GOALS['memory_mb']:g} MB",
            _met(mem["gateway_slow_client_peak_above_idle_mb"] <= GOALS["memory_mb"]),
        ),
    ]
    lines = [
        f"# Serving benchmark (commit {env['commit']}"
        f"{' + uncommitted changes' if env['uncommitted_changes'] else ''}, "
        f"{env['cpus']} CPUs, {env['when']})",
        "",
        *_table(rows),
        "",
        "Load average (1, 5, 15 min) at start "
        + ", ".join(f"{x:.1f}" for x in env["load_average_at_start"])
        + ", at end "
        + ", ".join(f"{x:.1f}" for x in results["load_average_at_end"])
        + f" on {env['cpus']} CPUs: above about 1, other work shared the machine.",
        "",
        "## Where a point query's time goes (medians, ms)",
        "",
        *_table([("step", "ms"), *((k, f"{v:.3f}") for k, v in lat["breakdown_ms"].items())]),
        "",
        "Planner steps are timed one by one without caches (a new key each time); "
        "`Gateway.plan` is what the server pays, with its caches.",
        "",
        "## Concurrency (client processes, one connection each)",
        "",
        *(
            line
            for workload in WORKLOADS
            for line in (
                f"{workload}: {WORKLOADS[workload]}",
                "",
                *_concurrency_table(results["concurrency"][workload]),
                "",
            )
        ),
        f"Reproduce: `{results['command']}`",
    ]
    for workload in WORKLOADS:
        for n, level in sorted(results["concurrency"][workload]["levels"].items()):
            for sample in level["error_samples"]:
                lines.append(f"- error ({workload}, {n} clients): {sample}")
    return "\n".join(lines) + "\n"


def _point_rows(lat: dict[str, Any]) -> list[tuple[str, ...]]:
    """The point-query rows: each client way against the no-op server, latency and CPU."""
    rows: list[tuple[str, ...]] = [
        (
            f"point query p50 vs the store's own lookup, ms ({lat['runs']} runs, new key each)",
            f"{lat['gateway']['p50_ms']:.2f}",
            f"{lat['direct']['p50_ms']:.2f} (DuckDB in-process; CPU "
            f"{lat['direct']['cpu_ms_per_query']:.2f} ms)",
            f"{lat['ratio']:.1f}x",
            "reported",
            "",
        )
    ]
    for way, entry in lat["ways"].items():
        gw, null = entry["gateway"], entry["null_server"]
        rows += [
            (
                f"point query p50, {entry['client']}, ms",
                f"{gw['p50_ms']:.2f}",
                f"{null['p50_ms']:.2f} (no-op Flight SQL server)",
                f"{entry['p50_ratio']:.2f}x",
                f"<= {GOALS['point_p50_vs_null']}x",
                _met(entry["p50_ratio"] <= GOALS["point_p50_vs_null"]),
            ),
            (
                f"server CPU per point query ({way}), ms",
                f"{gw['server_cpu_ms_per_query']:.2f} (less the store's lookup: "
                f"{gw['server_cpu_ms_less_store']:.2f}, {entry['cpu_ratio_less_store']:.2f}x)",
                f"{null['server_cpu_ms_per_query']:.2f} (no-op server)",
                f"{entry['cpu_ratio']:.2f}x",
                f"<= {GOALS['point_cpu_vs_null']}x",
                _met(entry["cpu_ratio"] <= GOALS["point_cpu_vs_null"]),
            ),
        ]
    rows.append(
        (
            "point query p50, same key every time (plan cached), ms",
            f"{lat['gateway_same_key']['p50_ms']:.2f}",
            f"{lat['direct']['p50_ms']:.2f}",
            f"{lat['gateway_same_key']['p50_ms'] / lat['direct']['p50_ms']:.1f}x",
            "reported",
            "",
        )
    )
    return rows


def _concurrency_table(workload: dict[str, Any]) -> list[str]:
    header = ("clients", "queries/s", "p50 ms", "p99 ms", "p50 by kind, ms",
              "point p99 / 1-client point p50", "gateway CPU ms per query",
              "gateway threads (started per query, at least)",
              "cores busy: gateway / clients / machine", "GIL held", "errors")  # fmt: skip
    return _table(
        [
            header,
            *(
                (
                    str(n),
                    f"{v['queries_per_second']:.1f}",
                    f"{v['p50_ms']:.1f}",
                    f"{v['p99_ms']:.1f}",
                    ", ".join(f"{k} {t:.1f}" for k, t in v["by_kind_p50_ms"].items()),
                    "n/a"
                    if v["point_p99_vs_single_p50"] is None
                    else f"{v['point_p99_vs_single_p50']:.1f}x",
                    f"{v['server_cpu_ms_per_query']:.1f}",
                    f"{v['server_threads']} ({v['threads_started_per_query']:.1f})",
                    f"{v['server_cores_busy']:.2f} / {v['client_cores_busy']:.2f} / "
                    f"{v['machine_cores_busy']:.2f}",
                    "n/a" if v["gil_held"] is None else f"{v['gil_held']:.0%}",
                    str(v["errors"]),
                )
                for n, v in sorted(workload["levels"].items())
            ),
        ]
    )


def _table(rows: list[tuple[str, ...]]) -> list[str]:
    header, *body = rows
    return [
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---" for _ in header) + "|",
        *("| " + " | ".join(row) + " |" for row in body),
    ]


def _without_samples(section: dict[str, Any]) -> dict[str, Any]:
    """A section without its long sample lists, for printing."""
    return {
        k: _without_samples(v) if isinstance(v, dict) else v
        for k, v in section.items()
        if k not in {"samples_ms", "rss_timeline_mb", "records"}
    }


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s, lat, con = results["streaming"], results["latency"], results["concurrency"]
    figure, ((stream_ax, latency_ax, cpu_ax), (concurrency_ax, memory_ax, parallel_ax)) = (
        plt.subplots(2, 3, figsize=(18, 9))
    )
    names = ["DuckDB in-process", "gateway (ADBC)"]
    seconds = [s["in_process"]["seconds"], s["gateway"]["seconds"]]
    bars = stream_ax.bar(names, seconds, color=["#999999", "#1f77b4"])
    stream_ax.bar_label(bars, labels=[f"{v:.2f} s" for v in seconds])
    stream_ax.set_title(
        f"stream lineitem: {s['ratio']:.2f}x in-process (goal <= {GOALS['stream_ratio']}x)"
    )
    stream_ax.set_ylabel("seconds (median)")

    for way, entry in lat["ways"].items():
        for target, style in (("gateway", "-"), ("null_server", ":")):
            values = sorted(entry[target]["samples_ms"])
            fractions = [(i + 1) / len(values) for i in range(len(values))]
            latency_ax.plot(values, fractions, linestyle=style, label=f"{way}: {target}")
    latency_ax.set_xscale("log")
    latency_ax.set_xlabel("ms")
    latency_ax.set_ylabel("fraction of queries")
    latency_ax.set_title(
        "point query vs the no-op server: p50 "
        + ", ".join(f"{w} {e['p50_ratio']:.2f}x" for w, e in lat["ways"].items())
        + f" (goal <= {GOALS['point_p50_vs_null']}x)"
    )
    latency_ax.legend(fontsize=8)

    labels = [f"{w}\n{t}" for w in lat["ways"] for t in ("gateway", "no-op")]
    values = [
        lat["ways"][w][t]["server_cpu_ms_per_query"]
        for w in lat["ways"]
        for t in ("gateway", "null_server")
    ]
    bars = cpu_ax.bar(labels, values, color=["#1f77b4", "#999999"] * len(lat["ways"]))
    cpu_ax.bar_label(bars, labels=[f"{v:.2f}" for v in values])
    cpu_ax.axhline(lat["direct"]["cpu_ms_per_query"], color="green", linestyle=":",
                   label="the store's own lookup (DuckDB in-process)")  # fmt: skip
    cpu_ax.set_ylabel("server CPU ms per point query")
    cpu_ax.set_title(
        "server CPU per point query: "
        + ", ".join(f"{w} {e['cpu_ratio']:.2f}x" for w, e in lat["ways"].items())
        + f" (goal <= {GOALS['point_cpu_vs_null']}x)"
    )
    cpu_ax.legend(fontsize=8)

    parallel = s["parallel"]
    rates = [parallel["in_process_mb_per_second"], parallel["gateway_mb_per_second"]]
    bars = parallel_ax.bar(names, rates, color=["#999999", "#1f77b4"])
    parallel_ax.bar_label(bars, labels=[f"{v:.0f} MB/s" for v in rates])
    parallel_ax.set_ylabel("aggregate MB/s (median)")
    parallel_ax.set_title(
        f"{parallel['clients']} streams at once: {parallel['throughput_ratio']:.2f}x "
        f"(goal >= {GOALS['parallel_throughput_ratio']}x), gateway RSS "
        f"+{parallel['gateway_peak_above_idle_mb']:.0f} MB (goal <= "
        f"{GOALS['parallel_memory_mb']:g})"
    )

    for workload, label in (("new_values", "new values"), ("repeated", "plans cached")):
        levels = sorted(con[workload]["levels"])
        throughput = [con[workload]["levels"][n]["queries_per_second"] for n in levels]
        concurrency_ax.plot(
            levels, throughput, marker="o", label=f"{label}: {con[workload]['ratio']:.2f}x"
        )
        for n, q in zip(levels, throughput, strict=True):
            p99 = con[workload]["levels"][n]["p99_ms"]
            concurrency_ax.annotate(f"{q:.0f} q/s, p99 {p99:.0f} ms", (n, q), fontsize=8)
    concurrency_ax.set_xscale("log", base=2)
    concurrency_ax.set_xlabel("clients")
    concurrency_ax.set_ylabel("queries per second (median)")
    concurrency_ax.set_title(
        f"point/scan/join mix: throughput by clients (goal 32 vs 1 >= "
        f"{GOALS['concurrency_ratio']}x)"
    )
    concurrency_ax.legend()

    timeline = s["memory"]["rss_timeline_mb"]
    memory_ax.plot([t for t, _ in timeline], [mb for _, mb in timeline])
    memory_ax.axhline(GOALS["memory_mb"], color="red", linestyle=":", label="goal")
    memory_ax.set_xlabel("seconds into the stream")
    memory_ax.set_ylabel("gateway RSS above idle, MB")
    memory_ax.set_title(
        f"gateway memory while streaming: peak +{s['memory']['gateway_peak_above_idle_mb']:.0f} MB"
    )
    memory_ax.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


# --- main -------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks serving", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "--scale-factor", type=float, default=1.0, help="TPC-H scale factor (default 1)"
    )
    parser.add_argument(
        "--quick", action="store_true", help="fewer and shorter runs (a smoke run, noisier)"
    )
    parser.add_argument(
        "--only",
        choices=("streaming", "latency", "concurrency"),
        action="append",
        help="run only these sections (repeatable); the report needs all three",
    )
    parser.add_argument(
        "--observability",
        action="store_true",
        help="instead: streaming and point-query figures with observability on vs off, same run",
    )
    argv = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(argv)
    settings = Settings.of(args)
    from demo import build_demo_mesh

    mesh = build_demo_mesh(
        DATA / f"mesh-sf{settings.scale_factor:g}",
        scale_factor=settings.scale_factor,
        progress=progress,
    )
    RESULTS.mkdir(parents=True, exist_ok=True)
    if args.observability:
        from benchmarks import observability

        command = " ".join(["python -m benchmarks serving", *argv])
        result = {"command": command, "environment": _environment(settings)}
        result.update(observability.overhead(mesh, settings, RESULTS))
        (RESULTS / "serving-observability.json").write_text(json.dumps(result, indent=1) + "\n")
        report = observability.markdown(result, command)
        (RESULTS / "serving-observability.md").write_text(report, encoding="utf-8")
        print(report)
        return 0
    sections = args.only or ["streaming", "latency", "concurrency"]
    results: dict[str, Any] = {
        "command": " ".join(["python -m benchmarks serving", *argv]),
        "environment": _environment(settings),
        "goals": GOALS,
    }
    with GatewayProcess(mesh, log_path=RESULTS / "serving-gateway.log") as gateway:
        progress(f"gateway pid {gateway.pid} serving {mesh} at {gateway.uri}")
        if "streaming" in sections:
            results["streaming"] = streaming(gateway, mesh, settings)
        if "latency" in sections:
            results["latency"] = latency(gateway, mesh, settings)
        if "concurrency" in sections:
            results["concurrency"] = concurrency(gateway, mesh, settings)
    results["load_average_at_end"] = os.getloadavg()
    name = "serving" if not args.only else "serving-" + "-".join(sections)
    (RESULTS / f"{name}.json").write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    if args.only:
        print(json.dumps({k: _without_samples(results[k]) for k in sections}, indent=1))
        return 0
    report = markdown(results)
    (RESULTS / f"{name}.md").write_text(report, encoding="utf-8")
    plot(results, RESULTS / f"{name}.png")
    print(report)
    print(f"results in {RESULTS}/{name}.{{json,md,png}}", file=sys.stderr)
    return 0

"""Remote read: a 1M+ row product through the gateway vs the store's best direct Arrow path.

    python -m benchmarks remote_read [--rows 1500000] [--repeat 5] [--stores postgres,mysql]

Loads connector_paths.py's mixed-type ``lineitem`` (bigint, integer, decimal(15,2), double, date,
varchar, timestamptz) into PostgreSQL and MariaDB (once: later runs reuse it), writes a mesh under
benchmarks/data/remote-read/ with one product per store over that table (checked against the
stores with ``meshgate contracts``), starts the gateway as its own process and, per store, after
one untimed round, runs each repetition as a pair:

- direct: in this process, the library and call the connector uses: DuckDB's ``postgres_query()``
  read with ``to_arrow_reader``; connectorx's ``arrow_stream`` for MariaDB;
- gateway: ``SELECT * FROM <product>`` through the ADBC Flight SQL client.

Both read every batch and keep none. The table shows medians; the throughput ratio
(gateway / direct, goal >= 0.9) is the median of the per-pair ratios, so load that comes and goes
on the machine touches both sides alike. Also reported: first-batch latency of both, the CPU
seconds each read costs the processes that read (this one, and the gateway), and the gateway's
peak RSS above its idle RSS (taken after a small query on every store loaded its driver). The
gateway path does the direct path's work plus a Flight hop (IPC out, loopback gRPC, the client's
decode): with a spare core that hop overlaps the store's stream; when other work keeps every core
busy, elapsed time follows CPU time and the ratio drops towards the ratio of CPU seconds.

Writes benchmarks/results/remote_read.json, remote_read.md and remote_read.png.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from benchmarks.connector_paths import (
    MY_HOST,
    MY_PORT,
    MY_USER,
    PG_DSN,
    SCAN,
    SCHEMA,
    duckdb_with,
    load_tables,
    pg_libpq,
)
from benchmarks.harness import (
    DATA,
    RESULTS,
    ROOT,
    GatewayProcess,
    RssSampler,
    connect,
    cpu_seconds,
    median,
    progress,
    reset_peak,
    status_kb,
)
from gateway.types import arrow_type

GOAL = 0.9
USER = "reader"
DOMAIN = "bench"
MESH = DATA / "remote-read"
CONTRACT = (
    ("l_orderkey", "bigint"),
    ("l_partkey", "bigint"),
    ("l_quantity", "integer"),
    ("l_extendedprice", "decimal(15,2)"),
    ("l_discount", "double"),
    ("l_shipdate", "date"),
    ("l_comment", "varchar"),
    ("l_commit_ts", "timestamptz"),
)
"""The product's columns: the types connector_paths.py declares for lineitem in both stores."""
CONTRACT_SCHEMA = pa.schema([(name, arrow_type(kind)) for name, kind in CONTRACT])
MYSQL_BATCH_ROWS = 16_384  # the batch size connectors/mysql.py asks connectorx for

Reader = Iterable[pa.RecordBatch]


@dataclass(frozen=True)
class Store:
    """One store kind under test: its mesh.yaml entry and how to read lineitem from it directly."""

    kind: str
    settings: str
    """The store's entry in mesh.yaml (YAML flow mapping)."""
    direct_path: str
    open_direct: Callable[[], tuple[Callable[[], Reader], Callable[[], None]]]
    """Opens a direct connection: (a function starting one full read, a function closing it)."""

    @property
    def address(self) -> str:
        return f"{DOMAIN}.lineitem_{self.kind}"


def _sql_string(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _postgres_direct() -> tuple[Callable[[], Reader], Callable[[], None]]:
    """DuckDB's postgres scanner with the store ATTACHed, read as connectors/postgres.py does."""
    from connectors.embedded import ROWS_PER_BATCH

    con = duckdb_with("postgres_scanner")
    con.execute("SET TimeZone = 'UTC'")
    con.execute(f"ATTACH {_sql_string(pg_libpq())} AS pg (TYPE postgres, READ_ONLY)")
    query = f"SELECT * FROM postgres_query('pg', {_sql_string(SCAN)})"
    return lambda: con.sql(query).to_arrow_reader(ROWS_PER_BATCH), con.close


def _mysql_direct() -> tuple[Callable[[], Reader], Callable[[], None]]:
    """connectorx's Arrow stream, as connectors/mysql.py reads (without its casts)."""
    import connectorx

    uri = f"mysql://{MY_USER}@{MY_HOST}:{MY_PORT}/{SCHEMA}"

    def read() -> Reader:
        return connectorx.read_sql(
            uri, SCAN, return_type="arrow_stream", batch_size=MYSQL_BATCH_ROWS
        )

    return read, lambda: None


STORES = {
    "postgres": Store(
        kind="postgres",
        settings=f"{{kind: postgres, dsn: {json.dumps(PG_DSN)}}}",
        direct_path="DuckDB postgres_query() in-process",
        open_direct=_postgres_direct,
    ),
    "mysql": Store(
        kind="mysql",
        settings=(
            f"{{kind: mysql, host: {json.dumps(MY_HOST)}, port: {MY_PORT}, "
            f"user: {json.dumps(MY_USER)}, database: {SCHEMA}}}"
        ),
        direct_path="connectorx arrow_stream in-process",
        open_direct=_mysql_direct,
    ),
}


# --- the mesh ---------------------------------------------------------------------------------


def write_mesh(stores: list[Store]) -> Path:
    """A mesh with one product per store over lineitem; its contracts checked against the stores."""
    from tests.support.mesh import grant_everything

    MESH.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(MESH / DOMAIN, ignore_errors=True)
    (MESH / DOMAIN).mkdir()
    entries = "".join(f"  {s.kind}: {s.settings}\n" for s in stores)
    (MESH / "mesh.yaml").write_text(f"name: remote-read\nstores:\n{entries}", encoding="utf-8")
    columns = "".join(
        f"  - {{name: {name}, type: '{kind}', classification: public}}\n" for name, kind in CONTRACT
    )
    for store in stores:
        (MESH / DOMAIN / f"lineitem_{store.kind}.yaml").write_text(
            f"product: lineitem_{store.kind}\nversion: 1\nowner: bench@example.com\n"
            f"description: connector_paths.py's lineitem, read from {store.kind}\n"
            f"store: {store.kind}\ntable: {SCHEMA}.lineitem\ncolumns:\n{columns}",
            encoding="utf-8",
        )
    grant_everything(MESH, principal=USER)
    check = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "--log-level", "WARNING", "contracts",
         "--mesh", str(MESH)],
        cwd=ROOT, capture_output=True, text=True,
    )  # fmt: skip
    if check.returncode != 0:
        raise RuntimeError(
            f"the descriptors do not match the stores:\n{check.stdout}{check.stderr}"
        )
    for line in check.stdout.splitlines():
        progress(f"contract {line}")
    return MESH


# --- reading ----------------------------------------------------------------------------------


def _consume(start_read: Callable[[], Reader], *, pids: tuple[int | str, ...]) -> dict[str, Any]:
    """Start a read and take every batch, keeping none; first-batch and total seconds, and the
    CPU seconds the processes ``pids`` spent meanwhile (load on the machine does not move it)."""
    cpu = sum(cpu_seconds(pid) for pid in pids)
    started = time.perf_counter()
    reader = start_read()
    first = None
    rows = nbytes = batches = 0
    for batch in reader:
        if first is None:
            first = time.perf_counter() - started
        rows += batch.num_rows
        nbytes += batch.nbytes
        batches += 1
    return {"seconds": time.perf_counter() - started, "first_batch_seconds": first, "rows": rows,
            "bytes": nbytes, "batches": batches,
            "cpu_seconds": sum(cpu_seconds(pid) for pid in pids) - cpu}  # fmt: skip


def _contract_types(schema: pa.Schema) -> list[tuple[str, pa.DataType]]:
    """Names and types, UTC by either of its names (the gateway serves timestamptz as Etc/UTC
    when its host's time zone is Etc/UTC: gateway/local_engine.py takes DuckDB's)."""
    return [
        (f.name, pa.timestamp(f.type.unit, tz="UTC"))
        if pa.types.is_timestamp(f.type) and f.type.tz in ("UTC", "Etc/UTC")
        else (f.name, f.type)
        for f in schema
    ]


def _read_gateway(conn, gateway: GatewayProcess, address: str, idle_kb: int) -> dict[str, Any]:
    """``SELECT *`` of the product through ADBC, with the gateway's RSS above ``idle_kb``."""
    peak_reset = reset_peak(gateway.pid)
    with RssSampler(gateway.pid) as sampler, conn.cursor() as cursor:

        def start_read() -> Reader:
            cursor.execute(f"SELECT * FROM {address}")
            reader = cursor.fetch_record_batch()
            if _contract_types(reader.schema) != _contract_types(CONTRACT_SCHEMA):
                raise RuntimeError(
                    f"{address} is served as\n{reader.schema}\nnot\n{CONTRACT_SCHEMA}"
                )
            return reader

        run = _consume(start_read, pids=("self", gateway.pid))
    peak = sampler.peak_kb
    if peak_reset:
        peak = max(peak, status_kb(gateway.pid, "VmHWM"))
    run["peak_above_idle_kb"] = peak - idle_kb
    run["rss_timeline"] = [(round(t, 3), kb - idle_kb) for t, kb in sampler.samples]
    return run


def _summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    seconds = median([r["seconds"] for r in runs])
    return {
        "seconds": round(seconds, 3),
        "first_batch_ms": round(median([r["first_batch_seconds"] for r in runs]) * 1000, 1),
        "rows": runs[0]["rows"],
        "bytes": runs[0]["bytes"],
        "batches": median([r["batches"] for r in runs]),
        "cpu_seconds": round(median([r["cpu_seconds"] for r in runs]), 3),
        "mb_per_second": round(runs[0]["bytes"] / seconds / 1e6, 1),
        "runs_seconds": [round(r["seconds"], 3) for r in runs],
    }


def measure(
    store: Store, conn, gateway: GatewayProcess, idle_kb: int, *, rows: int, repeat: int
) -> dict[str, Any]:
    """Pairs of full reads, direct and through the gateway, after one untimed pair."""
    start_direct, close_direct = store.open_direct()
    try:
        direct, served = [], []
        for run in range(repeat + 1):
            reads = [
                lambda: direct.append(_consume(start_direct, pids=("self",))),
                lambda: served.append(_read_gateway(conn, gateway, store.address, idle_kb)),
            ]
            for read in reads if run % 2 else reversed(reads):  # neither side always goes first
                read()
            progress(
                f"{store.kind} {'warm-up' if run == 0 else f'run {run}/{repeat}'}: direct "
                f"{direct[-1]['seconds']:.2f} s, gateway {served[-1]['seconds']:.2f} s, gateway "
                f"RSS +{served[-1]['peak_above_idle_kb'] / 1024:.0f} MB above idle"
            )
    finally:
        close_direct()
    for r in (*direct, *served):
        if r["rows"] != rows:
            raise RuntimeError(f"{store.kind}: a read returned {r['rows']:,} rows, not {rows:,}")
    warmup = served[0]
    peaks = [r["peak_above_idle_kb"] for r in served]  # the warm-up's memory counts, its time not
    direct, served = direct[1:], served[1:]
    ratios = [d["seconds"] / s["seconds"] for d, s in zip(direct, served, strict=True)]
    return {
        "address": store.address,
        "direct_path": store.direct_path,
        "direct": _summary(direct),
        "gateway": _summary(served),
        "throughput_ratio": round(median(ratios), 3),
        "pair_ratios": [round(r, 3) for r in ratios],
        "gateway_peak_rss_above_idle_mb": round(max(peaks) / 1024, 1),
        "rss_timeline_mb": [(t, round(kb / 1024, 1)) for t, kb in warmup["rss_timeline"]],
    }


# --- report -----------------------------------------------------------------------------------


def _environment() -> dict[str, Any]:
    import adbc_driver_flightsql
    import connectorx
    import duckdb

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True).stdout

    return {
        "commit": git("rev-parse", "--short", "HEAD").strip(),
        "uncommitted_changes": bool(git("status", "--porcelain", "--untracked-files=no").strip()),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "pyarrow": pa.__version__,
        "duckdb": duckdb.__version__,
        "connectorx": connectorx.__version__,
        "adbc_driver_flightsql": adbc_driver_flightsql.__version__,
        "when": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "load_average_at_start": os.getloadavg(),
    }


def markdown(results: dict[str, Any]) -> str:
    env = results["environment"]
    header = ("product (store)", "direct path", "direct s", "direct MB/s", "gateway s",
              "gateway MB/s", "throughput gateway/direct", "goal",
              "first batch ms direct / gateway", "CPU s direct / gateway + client",
              "gateway peak RSS above idle, MB")  # fmt: skip
    lines = [
        f"# Remote read benchmark (commit {env['commit']}"
        f"{' + uncommitted changes' if env['uncommitted_changes'] else ''}, "
        f"{env['cpus']} CPUs, {env['when']})",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---" for _ in header) + "|",
    ]
    for kind, r in results["stores"].items():
        d, g = r["direct"], r["gateway"]
        row = (
            f"`{r['address']}` ({kind}, {g['rows']:,} rows, {g['bytes'] / 1e6:.0f} MB)",
            r["direct_path"],
            f"{d['seconds']:.2f}",
            f"{d['mb_per_second']:.0f}",
            f"{g['seconds']:.2f}",
            f"{g['mb_per_second']:.0f}",
            f"{r['throughput_ratio']:.2f}x",
            f">= {GOAL}x " + ("met" if r["throughput_ratio"] >= GOAL else "**not met**"),
            f"{d['first_batch_ms']:.0f} / {g['first_batch_ms']:.0f}",
            f"{d['cpu_seconds']:.2f} / {g['cpu_seconds']:.2f}",
            f"{r['gateway_peak_rss_above_idle_mb']:.0f}",
        )
        lines.append("| " + " | ".join(row) + " |")
    load_start = ", ".join(f"{x:.1f}" for x in env["load_average_at_start"])
    load_end = ", ".join(f"{x:.1f}" for x in results["load_average_at_end"])
    lines += [
        "",
        f"Medians of {results['repeat']} pairs after one untimed pair; the throughput ratio is "
        "the median of the per-pair ratios (direct seconds / gateway seconds, the same rows). "
        "MB/s counts each path's own Arrow batches (the gateway serves the contract types). "
        "CPU counts this process (direct: the whole read; gateway: the ADBC client) and the "
        "gateway process, not the store's server. "
        f"The gateway's idle RSS was {results['gateway_idle_mb']:.0f} MB.",
        "",
        f"Load average (1, 5, 15 min) at start {load_start}, at end {load_end} on "
        f"{env['cpus']} CPUs: above about 2, other work shared the machine.",
        "",
        f"Reproduce: `{results['command']}`",
    ]
    return "\n".join(lines) + "\n"


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stores = results["stores"]
    figure, (speed_ax, first_ax, memory_ax) = plt.subplots(1, 3, figsize=(16, 5))
    positions = range(len(stores))
    width = 0.38
    for offset, side, color in (
        (-width / 2, "direct", "#999999"),
        (width / 2, "gateway", "#1f77b4"),
    ):
        values = [r[side]["mb_per_second"] for r in stores.values()]
        bars = speed_ax.bar([p + offset for p in positions], values, width, label=side, color=color)
        speed_ax.bar_label(bars, labels=[f"{v:.0f}" for v in values])
        firsts = [r[side]["first_batch_ms"] for r in stores.values()]
        bars = first_ax.bar([p + offset for p in positions], firsts, width, label=side, color=color)
        first_ax.bar_label(bars, labels=[f"{v:.0f}" for v in firsts])
    labels = [f"{kind}\n{r['throughput_ratio']:.2f}x" for kind, r in stores.items()]
    for ax in (speed_ax, first_ax):
        ax.set_xticks(list(positions), labels)
        ax.legend()
    speed_ax.set_ylabel("MB/s (median)")
    speed_ax.set_title(f"full read of lineitem: gateway / direct (goal >= {GOAL}x)")
    first_ax.set_ylabel("ms (median)")
    first_ax.set_title("first batch")
    for kind, r in stores.items():
        timeline = r["rss_timeline_mb"]
        memory_ax.plot([t for t, _ in timeline], [mb for _, mb in timeline], label=kind)
    memory_ax.set_xlabel("seconds into the read")
    memory_ax.set_ylabel("gateway RSS above idle, MB")
    memory_ax.set_title("gateway memory while serving (warm-up read)")
    memory_ax.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


# --- main -------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks remote_read", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--rows", type=int, default=1_500_000, help="rows in lineitem")
    parser.add_argument("--repeat", type=int, default=5, help="timed pairs per store")
    parser.add_argument("--stores", default="postgres,mysql", help="of: postgres, mysql")
    argv = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(argv)
    kinds = args.stores.split(",")
    unknown = set(kinds) - set(STORES)
    if unknown:
        parser.error(f"unknown stores {sorted(unknown)}; choose from {', '.join(STORES)}")
    stores = [STORES[kind] for kind in kinds]
    results: dict[str, Any] = {
        "command": " ".join(["python -m benchmarks remote_read", *argv]),
        "environment": _environment(),
        "rows": args.rows,
        "repeat": args.repeat,
        "goal": GOAL,
        "stores": {},
    }
    progress(f"loading lineitem ({args.rows:,} rows) where it is not loaded yet…")
    load_tables(kinds, args.rows)
    mesh = write_mesh(stores)
    RESULTS.mkdir(parents=True, exist_ok=True)
    with GatewayProcess(mesh, log_path=RESULTS / "remote_read-gateway.log") as gateway:
        conn = connect(gateway.uri, USER)
        try:
            for store in stores:  # load every store's driver before taking the idle RSS
                with conn.cursor() as cursor:
                    cursor.execute(f"SELECT * FROM {store.address} LIMIT 1")
                    cursor.fetch_arrow_table()
            idle = gateway.rss_kb()
            results["gateway_idle_mb"] = round(idle / 1024, 1)
            progress(f"gateway pid {gateway.pid} at {gateway.uri}, idle at {idle / 1024:.0f} MB")
            for store in stores:
                results["stores"][store.kind] = measure(
                    store, conn, gateway, idle, rows=args.rows, repeat=args.repeat
                )
        finally:
            conn.close()
    results["load_average_at_end"] = os.getloadavg()
    (RESULTS / "remote_read.json").write_text(json.dumps(results, indent=1) + "\n", "utf-8")
    report = markdown(results)
    (RESULTS / "remote_read.md").write_text(report, encoding="utf-8")
    plot(results, RESULTS / "remote_read.png")
    print(report)
    print(f"results in {RESULTS}/remote_read.{{json,md,png}}", file=sys.stderr)
    return 0

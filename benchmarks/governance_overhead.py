"""Governance overhead: the same queries governed and ungoverned, through the gateway, in one run.

    python -m benchmarks governance_overhead [--scale-factor 0.1] [--repeat 15]

Builds the demo mesh (TPC-H at the scale factor, cached under benchmarks/data/), starts the
gateway as its own process and runs four queries over ``sales.customer`` and ``sales.orders`` (a
scan, a filter, a join and an aggregate, each reading the ``pii`` columns) through the ADBC Flight
SQL client, as:

- ``admin``: the ungoverned baseline (the run first checks that the admin policy applies no mask
  and no row filter to any product);
- ``analyst``: every ``pii`` column masked; the same rows as admin, so ``analyst / admin`` is what
  governance costs (goal: at most 1.05);
- ``admin, masks by hand``: the analyst's masks written into the query, so ``analyst / that`` is
  the cost of the mechanism rather than of computing the masks;
- ``eu_analyst``: masks and a row filter (European customers and their orders), which changes the
  rows, so it is compared with admin running the same queries with the filter (and then also the
  masks) written by hand, over the same rows.

Each repetition runs every variant once, in turn, after one warm-up round; the table shows
medians, and each ratio is the median of the per-repetition ratios (paired runs, so load that
comes and goes on the machine touches both sides alike). The gateway caches plans, so those runs
do not plan again; planning alone (parse, govern, pushdown, split: no store, no Flight), which a
new statement pays once and governance makes larger, is timed in this process too. So are the
rows the stores return for each variant (``meshgate_store_rows_read``): unlike times, a count the
machine's load cannot move, it shows where a governed query still makes the stores return more
than the same filter written by hand. Writes benchmarks/results/governance_overhead.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.harness import DATA, RESULTS, GatewayProcess, connect, median, progress

GOAL = 1.05

MASKED_CUSTOMER = (
    "(SELECT c_custkey, '****' || right(c_name, 4) AS c_name, "
    "'****' || right(c_address, 4) AS c_address, c_nationkey, "
    "'****' || right(c_phone, 4) AS c_phone, c_acctbal, c_mktsegment, c_comment "
    "FROM sales.customer)"
)
EUROPEAN_NATIONS = (
    "SELECT n_nationkey FROM reference.nation JOIN reference.region "
    "ON n_regionkey = r_regionkey WHERE r_name = 'EUROPE'"
)
EUROPEAN_CUSTOMERS = (
    f"SELECT c_custkey FROM sales.customer WHERE c_nationkey IN ({EUROPEAN_NATIONS})"
)

QUERIES = {
    "scan": "SELECT * FROM {customer} AS c",
    "filter": (
        "SELECT c_custkey, c_name, c_phone, c_acctbal FROM {customer} AS c "
        "WHERE c_mktsegment = 'BUILDING' AND c_acctbal > 0"
    ),
    "join": (
        "SELECT o.o_orderkey, o.o_orderdate, o.o_totalprice, c.c_name, c.c_phone "
        "FROM {orders} AS o JOIN {customer} AS c ON c.c_custkey = o.o_custkey "
        "WHERE o.o_orderdate >= DATE '1995-01-01'"
    ),
    "aggregate": (
        "SELECT c.c_mktsegment, count(*) AS orders, sum(o.o_totalprice) AS revenue, "
        "count(DISTINCT c.c_phone) AS phones "
        "FROM {orders} AS o JOIN {customer} AS c ON c.c_custkey = o.o_custkey "
        "GROUP BY c.c_mktsegment"
    ),
}
"""Each query names its products through ``{customer}`` and ``{orders}``, so every variant runs
the same query over the relation it stands for."""

VARIANTS: dict[str, tuple[str, dict[str, str]]] = {
    "admin": ("admin", {}),
    "admin, masks by hand": ("admin", {"customer": MASKED_CUSTOMER}),
    "analyst": ("analyst", {}),
    "admin, filter by hand": (
        "admin",
        {
            "customer": f"(SELECT * FROM sales.customer WHERE c_nationkey IN ({EUROPEAN_NATIONS}))",
            "orders": f"(SELECT * FROM sales.orders WHERE o_custkey IN ({EUROPEAN_CUSTOMERS}))",
        },
    ),
    "admin, masks and filter by hand": (
        "admin",
        {
            "customer": (
                f"(SELECT * FROM {MASKED_CUSTOMER} WHERE c_nationkey IN ({EUROPEAN_NATIONS}))"
            ),
            "orders": f"(SELECT * FROM sales.orders WHERE o_custkey IN ({EUROPEAN_CUSTOMERS}))",
        },
    ),
    "eu_analyst": ("eu_analyst", {}),
}
"""Variant -> (principal, relations written by hand in place of the products)."""

COMPARISONS = (
    ("analyst", "admin", "masks: governed vs ungoverned (goal)"),
    ("analyst", "admin, masks by hand", "masks: governed vs the same masks by hand"),
    ("eu_analyst", "admin, filter by hand", "masks + row filter vs the filter by hand"),
    ("eu_analyst", "admin, masks and filter by hand", "masks + row filter vs both by hand"),
)
"""(governed, baseline, what it measures): pairs that return the same rows."""


def sql_for(query: str, variant: str) -> str:
    _, relations = VARIANTS[variant]
    return QUERIES[query].format(
        customer=relations.get("customer", "sales.customer"),
        orders=relations.get("orders", "sales.orders"),
    )


def check_admin_is_ungoverned(mesh_dir: Path) -> dict[str, Any]:
    """The baseline must be ungoverned: no mask and no row filter on any product for admin.

    Also records what the governed principals get, so the report says what was measured.
    """
    from gateway.mesh import load_mesh
    from gateway.principals import PrincipalDirectory
    from policies import PolicyEngine

    mesh = load_mesh(mesh_dir)
    engine = PolicyEngine.load(mesh)
    principals = PrincipalDirectory.load(mesh.root)
    decisions: dict[str, Any] = {}
    for name in ("admin", "analyst", "eu_analyst"):
        principal = principals.get(name)
        for address in ("sales.customer", "sales.orders"):
            decision = engine.decide(principal, mesh.products[address])
            decisions[f"{name} {address}"] = {
                "masks": sorted(decision.masks),
                "row_filter": decision.row_filter is not None,
            }
        if name == "admin":
            governed = [
                address
                for address, product in mesh.products.items()
                if (d := engine.decide(principal, product)).masks or d.row_filter is not None
            ]
            if governed:
                raise SystemExit(
                    f"admin is not an ungoverned baseline: masks or filters apply to {governed}"
                )
    return decisions


def measure(uri: str, *, repeat: int) -> dict[str, dict[str, dict[str, Any]]]:
    """Seconds per run and rows of every (query, variant): execute and fetch as Arrow."""
    connections = {principal: connect(uri, principal) for principal, _ in VARIANTS.values()}
    runs: dict[str, dict[str, dict[str, Any]]] = {
        q: {v: {"seconds": [], "rows": None} for v in VARIANTS} for q in QUERIES
    }
    try:
        for round_number in range(repeat + 1):  # round 0 warms up plans, caches and pages
            for query in QUERIES:
                for variant, (principal, _) in VARIANTS.items():
                    with connections[principal].cursor() as cursor:
                        started = time.perf_counter()
                        cursor.execute(sql_for(query, variant))
                        table = cursor.fetch_arrow_table()
                        seconds = time.perf_counter() - started
                    cell = runs[query][variant]
                    if round_number == 0:
                        cell["rows"] = table.num_rows
                        if variant.startswith("admin") and "c_name" in table.column_names:
                            masked = "masks" in variant
                            first = table.column("c_name")[0].as_py()
                            assert first.startswith("****") == masked, (variant, first)
                    else:
                        cell["seconds"].append(seconds)
            progress(f"round {round_number}/{repeat} done")
    finally:
        for connection in connections.values():
            connection.close()
    for query, cells in runs.items():
        for governed, baseline, _ in COMPARISONS:
            rows = (cells[governed]["rows"], cells[baseline]["rows"])
            if rows[0] != rows[1]:
                raise SystemExit(f"{query}: {governed} and {baseline} return {rows} rows")
    return runs


def measure_planning(mesh_dir: Path, *, repeat: int) -> dict[str, dict[str, list[float]]]:
    """Seconds to plan every (query, variant) in this process, without any plan cache."""
    from gateway.planner import plan_query
    from gateway.service import Gateway

    gateway = Gateway.open(mesh_dir)
    try:
        contexts = {p: gateway.context(gateway.principals.get(p)) for p, _ in VARIANTS.values()}
        seconds: dict[str, dict[str, list[float]]] = {q: {v: [] for v in VARIANTS} for q in QUERIES}
        for _ in range(repeat):
            for query in QUERIES:
                for variant, (principal, _) in VARIANTS.items():
                    started = time.perf_counter()
                    plan_query(sql_for(query, variant), context=contexts[principal])
                    seconds[query][variant].append(time.perf_counter() - started)
    finally:
        gateway.close()
    return seconds


def measure_store_rows(mesh_dir: Path) -> dict[str, dict[str, int]]:
    """Rows the stores return for every (query, variant), run once in this process."""
    from gateway.planner import plan_query
    from gateway.service import Gateway

    gateway = Gateway.open(mesh_dir)
    metrics = gateway.observe.metrics
    if metrics is None:
        gateway.close()
        return {}

    def read_so_far() -> float:
        samples = (s for m in metrics.store_rows.collect() for s in m.samples)
        return sum(s.value for s in samples if s.name.endswith("_total"))

    rows: dict[str, dict[str, int]] = {q: {} for q in QUERIES}
    try:
        for query in QUERIES:
            for variant, (name, _) in VARIANTS.items():
                principal = gateway.principals.get(name)
                sql = sql_for(query, variant)
                plan = plan_query(sql, context=gateway.context(principal))
                before = read_so_far()
                observed = gateway.observe.query(sql, principal)
                gateway.execute(plan, query=observed).read_all()
                rows[query][variant] = int(read_so_far() - before)
    finally:
        gateway.close()
    return rows


def paired_ratio(governed: list[float], baseline: list[float]) -> float:
    """The median of the ratios of runs made in the same repetition."""
    return round(median([g / b for g, b in zip(governed, baseline, strict=True)]), 3)


def summarise(
    runs: dict[str, dict[str, dict[str, Any]]],
    planning: dict[str, dict[str, list[float]]],
    store_rows: dict[str, dict[str, int]] | None = None,
) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    for query, cells in runs.items():
        medians = {v: median(cell["seconds"]) for v, cell in cells.items()}
        plans = {v: median(s) for v, s in planning[query].items()}
        summary[query] = {
            "rows": {v: cell["rows"] for v, cell in cells.items()},
            "median_ms": {v: round(s * 1000, 2) for v, s in medians.items()},
            "ratios": {
                f"{governed} / {baseline}": paired_ratio(
                    cells[governed]["seconds"], cells[baseline]["seconds"]
                )
                for governed, baseline, _ in COMPARISONS
            },
            "planning_median_ms": {v: round(s * 1000, 2) for v, s in plans.items()},
            "planning_ratios": {
                f"{governed} / {baseline}": round(plans[governed] / plans[baseline], 3)
                for governed, baseline, _ in COMPARISONS
            },
        }
        read = (store_rows or {}).get(query)
        if read:
            summary[query]["store_rows"] = read
            summary[query]["store_rows_ratios"] = {
                f"{governed} / {baseline}": round(read[governed] / max(read[baseline], 1), 3)
                for governed, baseline, _ in COMPARISONS
            }
    return summary


def markdown(summary: dict[str, Any], settings: dict[str, Any]) -> str:
    variants = list(VARIANTS)
    lines = [
        f"TPC-H SF {settings['scale_factor']:g}, medians of {settings['repeat']} runs, ms "
        "(rows in brackets):",
        "",
        "| query | " + " | ".join(variants) + " |",
        "|---|" + "---:|" * len(variants),
    ]
    for query, result in summary.items():
        cells = [f"{result['median_ms'][v]:.1f} ({result['rows'][v]:,})" for v in variants]
        lines.append(f"| {query} | " + " | ".join(cells) + " |")
    lines += ["", "| ratio | " + " | ".join(summary) + " |", "|---|" + "---:|" * len(summary)]
    for governed, baseline, meaning in COMPARISONS:
        key = f"{governed} / {baseline}"
        ratios = [summary[q]["ratios"][key] for q in summary]
        cells = [f"**{r:.3f}**" if r > GOAL else f"{r:.3f}" for r in ratios]
        lines.append(f"| {key} ({meaning}) | " + " | ".join(cells) + " |")
    lines += ["", "Planning alone, in process (ms):", ""]
    lines += ["| query | " + " | ".join(variants) + " |", "|---|" + "---:|" * len(variants)]
    for query, result in summary.items():
        cells = [f"{result['planning_median_ms'][v]:.1f}" for v in variants]
        lines.append(f"| {query} | " + " | ".join(cells) + " |")
    if all("store_rows" in result for result in summary.values()):
        lines += ["", "Rows the stores returned, and governed / baseline of them:", ""]
        lines += ["| query | " + " | ".join(variants) + " |", "|---|" + "---:|" * len(variants)]
        for query, result in summary.items():
            cells = [f"{result['store_rows'][v]:,}" for v in variants]
            lines.append(f"| {query} | " + " | ".join(cells) + " |")
        lines += ["", "| rows ratio | " + " | ".join(summary) + " |"]
        lines += ["|---|" + "---:|" * len(summary)]
        for governed, baseline, _ in COMPARISONS:
            key = f"{governed} / {baseline}"
            cells = [f"{summary[q]['store_rows_ratios'][key]:.2f}" for q in summary]
            lines.append(f"| {key} | " + " | ".join(cells) + " |")
    lines += ["", f"Goal: governed / ungoverned <= {GOAL} (bold: above it)."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks governance_overhead", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "--scale-factor", type=float, default=0.1, help="TPC-H scale factor (default 0.1)"
    )
    parser.add_argument(
        "--repeat", type=int, default=15, help="measured runs per query and variant (default 15)"
    )
    argv = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(argv)
    from gateway.demo import build_demo_mesh

    mesh = build_demo_mesh(
        DATA / f"mesh-sf{args.scale_factor:g}", scale_factor=args.scale_factor, progress=progress
    )
    decisions = check_admin_is_ungoverned(mesh)
    RESULTS.mkdir(parents=True, exist_ok=True)
    with GatewayProcess(mesh, log_path=RESULTS / "governance_overhead-gateway.log") as gateway:
        progress(f"gateway pid {gateway.pid} serving {mesh} at {gateway.uri}")
        runs = measure(gateway.uri, repeat=args.repeat)
    progress("timing the planner in this process…")
    planning = measure_planning(mesh, repeat=args.repeat)
    progress("counting the rows the stores return…")
    store_rows = measure_store_rows(mesh)
    settings = {"scale_factor": args.scale_factor, "repeat": args.repeat}
    summary = summarise(runs, planning, store_rows)
    results = {
        "command": " ".join(["python -m benchmarks governance_overhead", *argv]),
        "settings": settings,
        "environment": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "load_average_at_end": os.getloadavg(),
        },
        "policy_decisions": decisions,
        "queries": {q: sql_for(q, "admin") for q in QUERIES},
        "summary": summary,
        "runs_seconds": {
            q: {v: c["seconds"] for v, c in cells.items()} for q, cells in runs.items()
        },
    }
    path = RESULTS / "governance_overhead.json"
    path.write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    print(markdown(summary, settings))
    print(f"results in {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

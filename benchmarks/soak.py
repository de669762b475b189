"""Soak: N clients for T seconds of point, scan and join queries and early disconnects.

``python -m benchmarks soak [--clients 32] [--seconds 300] [--scale-factor 0.01]``

The gateway serves the demo mesh in its own process (``PYTHONFAULTHANDLER=1``, so a crash
leaves its stack in the log); the clients run here on threads, each with its own ADBC connection,
choosing at random: a prepared point query with a new key, a scan of lineitem read to its end, a
three-domain join, or a scan read for one batch and then dropped with its connection (an early
disconnect). Every 2 s the gateway's RSS, open file descriptors and threads are sampled.

Passes when no query failed, the gateway is still serving, its RSS over the last fifth of the
run is within 10% of the second fifth (for a 5-minute run: the last minute against the second),
and its descriptors and threads did not grow (a small slack for gRPC's pool). Writes JSON and
markdown under ``benchmarks/results/``; exits 1 on failure.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.harness import DATA, RESULTS, GatewayProcess, connect, progress

POINT = "SELECT c_name, c_acctbal FROM sales.customer WHERE c_custkey = ?"
SCAN = (
    "SELECT l_orderkey, l_extendedprice, l_shipdate FROM fulfillment.lineitem "
    "WHERE l_shipdate >= DATE '1996-01-01'"
)
JOIN = """SELECT n.n_name AS nation, count(*) AS orders, sum(o.o_totalprice) AS revenue
          FROM sales.orders o
          JOIN sales.customer c ON c.c_custkey = o.o_custkey
          JOIN reference.nation n ON n.n_nationkey = c.c_nationkey
          GROUP BY n.n_name ORDER BY revenue DESC"""
KINDS = ("point", "point", "point", "scan", "join", "disconnect")
"""Half point queries, as a serving mix has; the rest scans, joins and early disconnects."""
FD_SLACK = 16
THREAD_SLACK = 8
RSS_TOLERANCE = 0.10


@dataclass
class Tally:
    """What the clients did, shared between their threads."""

    done: Counter = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def count(self, kind: str) -> None:
        with self.lock:
            self.done[kind] += 1

    def fail(self, kind: str, error: BaseException) -> None:
        with self.lock:
            self.errors.append(f"{kind}: {type(error).__name__}: {error}")


def _one(kind: str, uri: str, conn, rng: random.Random, customers: int) -> None:
    """One query of ``kind``; an early disconnect opens and drops a connection of its own."""
    if kind == "disconnect":
        own = connect(uri)
        cur = own.cursor()
        cur.execute(SCAN)
        cur.fetch_record_batch().read_next_batch()
        own.close()  # mid-stream: the server must stop the scan and keep no trace of it
        return
    with conn.cursor() as cur:
        if kind == "point":
            cur.execute(POINT, parameters=(rng.randint(1, customers),))
            cur.fetch_arrow_table()
        elif kind == "scan":
            cur.execute(SCAN)
            if cur.fetch_arrow_table().num_rows == 0:
                raise AssertionError("the scan returned no rows")
        else:
            cur.execute(JOIN)
            if cur.fetch_arrow_table().num_rows != 25:
                raise AssertionError("the join did not return one row per nation")


def _client(uri: str, until: float, seed: int, customers: int, tally: Tally) -> None:
    rng = random.Random(seed)
    conn = connect(uri)
    try:
        while time.monotonic() < until:
            kind = rng.choice(KINDS)
            try:
                _one(kind, uri, conn, rng, customers)
                tally.count(kind)
            except Exception as exc:  # noqa: BLE001 - every failure is a finding of the soak
                tally.fail(kind, exc)
                conn.close()
                conn = connect(uri)
    finally:
        conn.close()


def _sample(pid: int) -> dict[str, float]:
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        fields = dict(line.split(":", 1) for line in status if ":" in line)
    return {
        "time": time.monotonic(),
        "rss_mb": int(fields["VmRSS"].split()[0]) / 1024,
        "threads": int(fields["Threads"]),
        "fds": len(os.listdir(f"/proc/{pid}/fd")),
    }


def verdict(samples: list[dict[str, float]], errors: int, serving: bool) -> dict[str, object]:
    """The soak's checks over its samples: second fifth against last fifth of the run."""
    start, end = samples[0]["time"], samples[-1]["time"]
    fifth = (end - start) / 5

    def window(low: float, high: float) -> list[dict[str, float]]:
        return [s for s in samples if start + low <= s["time"] <= start + high] or samples[-1:]

    second, last = window(fifth, 2 * fifth), window(4 * fifth, 5 * fifth)
    rss_second = statistics.mean(s["rss_mb"] for s in second)
    rss_last = statistics.mean(s["rss_mb"] for s in last)
    checks = {
        "no errors": errors == 0,
        "still serving": serving,
        "rss flat (last fifth within 10% of the second)": rss_last
        <= rss_second * (1 + RSS_TOLERANCE),
        "no fd growth": max(s["fds"] for s in last) <= max(s["fds"] for s in second) + FD_SLACK,
        "no thread growth": (
            max(s["threads"] for s in last) <= max(s["threads"] for s in second) + THREAD_SLACK
        ),
    }
    return {
        "checks": checks,
        "passed": all(checks.values()),
        "rss_mb_second_fifth": round(rss_second, 1),
        "rss_mb_last_fifth": round(rss_last, 1),
        "fds_second_fifth_max": max(s["fds"] for s in second),
        "fds_last_fifth_max": max(s["fds"] for s in last),
        "threads_second_fifth_max": max(s["threads"] for s in second),
        "threads_last_fifth_max": max(s["threads"] for s in last),
    }


def soak(*, clients: int, seconds: float, scale_factor: float, log: Path) -> dict[str, object]:
    """Run the soak and return its figures and verdict."""
    from demo import build_demo_mesh

    mesh = build_demo_mesh(
        DATA / f"soak-demo-sf{scale_factor:g}", scale_factor=scale_factor, progress=progress
    )
    customers = int(150_000 * scale_factor)
    os.environ["PYTHONFAULTHANDLER"] = "1"
    tally = Tally()
    samples: list[dict[str, float]] = []
    with GatewayProcess(mesh, log_path=log) as gateway:
        progress(f"{clients} clients for {seconds:g} s against {gateway.uri} (log: {log})")
        until = time.monotonic() + seconds
        threads = [
            threading.Thread(
                target=_client, args=(gateway.uri, until, seed, customers, tally), daemon=True
            )
            for seed in range(clients)
        ]
        for thread in threads:
            thread.start()
        while any(t.is_alive() for t in threads):
            samples.append(_sample(gateway.pid))
            time.sleep(2)
        for thread in threads:
            thread.join()
        samples.append(_sample(gateway.pid))
        try:
            with connect(gateway.uri) as conn, conn.cursor() as cur:
                cur.execute(POINT, parameters=(1,))
                serving = cur.fetch_arrow_table().num_rows == 1
        except Exception:  # noqa: BLE001 - reported as a failed check
            serving = False
        crashed = gateway.process.poll() is not None
    result = {
        "clients": clients,
        "seconds": seconds,
        "scale_factor": scale_factor,
        "queries": dict(tally.done),
        "queries_per_second": round(sum(tally.done.values()) / seconds, 1),
        "errors": len(tally.errors),
        "first_errors": tally.errors[:10],
        "gateway_crashed": crashed,
        **verdict(samples, len(tally.errors), serving and not crashed),
        "samples": samples,
    }
    return result


def markdown(result: dict[str, object]) -> str:
    rows = [
        f"soak: {result['clients']} clients, {result['seconds']:g} s, "
        f"SF {result['scale_factor']:g}",
        "",
        "| measure | value |",
        "|---|---|",
        f"| queries (by kind) | {result['queries']} |",
        f"| queries per second | {result['queries_per_second']} |",
        f"| errors | {result['errors']} |",
        f"| RSS MB, second fifth / last fifth | {result['rss_mb_second_fifth']} / "
        f"{result['rss_mb_last_fifth']} |",
        f"| fds max, second / last fifth | {result['fds_second_fifth_max']} / "
        f"{result['fds_last_fifth_max']} |",
        f"| threads max, second / last fifth | {result['threads_second_fifth_max']} / "
        f"{result['threads_last_fifth_max']} |",
    ]
    rows += [f"| {name} | {'pass' if ok else 'FAIL'} |" for name, ok in result["checks"].items()]
    return "\n".join(rows) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks soak", description=__doc__)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=300)
    parser.add_argument("--scale-factor", type=float, default=0.01)
    args = parser.parse_args(argv)
    RESULTS.mkdir(parents=True, exist_ok=True)
    result = soak(
        clients=args.clients,
        seconds=args.seconds,
        scale_factor=args.scale_factor,
        log=RESULTS / "soak-gateway.log",
    )
    (RESULTS / "soak.json").write_text(json.dumps(result, indent=2, default=str))
    table = markdown(result)
    (RESULTS / "soak.md").write_text(table)
    print(table)
    for error in result["first_errors"]:
        print(f"  {error}")
    return 0 if result["passed"] else 1

"""Observability overhead: the serving benchmark's streaming and point-query figures with every
observability part on vs off, measured in the same run.

Two gateway processes serve the same demo mesh: one with observability off (no metrics, no
tracing, no lineage), one with all of it on (metrics; every span exported over OTLP/HTTP and every
OpenLineage event POSTed to a local sink standing in for a collector and a lineage backend; JSON
logs). The client alternates between them run by run, so both see the same machine load.

Goals (issue 16): streaming at most 3% slower, point query p50 at most 0.2 ms slower.

``python -m benchmarks serving --observability [--quick] [--scale-factor SF]``
"""

from __future__ import annotations

import http.server
import json
import os
import threading
import time
from pathlib import Path
from typing import Any

import yaml

from benchmarks.harness import GatewayProcess, cpu_seconds, median, progress

GOALS = {"stream_ratio": 1.03, "point_p50_extra_ms": 0.2}
BATCH_SETTLE_SECONDS = 2.0
"""Longer than the lineage and span batch interval (1 s): their batches are sent meanwhile."""


class Sink:
    """A loopback HTTP server that accepts every POST (OTLP traces, OpenLineage events) and
    counts them, as a collector would, without keeping them."""

    def __init__(self) -> None:
        counts: dict[str, int] = {}
        self.counts = counts

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as collectors and Marquez serve

            def do_POST(self) -> None:  # noqa: N802 - the http.server API
                self.rfile.read(int(self.headers.get("content-length", 0)))
                counts[self.path] = counts.get(self.path, 0) + 1
                self.send_response(200)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> Sink:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._server.shutdown()
        self._server.server_close()


def mesh_variant(mesh: Path, target: Path, observability: dict[str, Any]) -> Path:
    """``mesh`` seen through ``target``: the same descriptors, policies and store files
    (symlinked, nothing copied) under a mesh.yaml with ``observability`` set; its own audit."""
    target.mkdir(parents=True, exist_ok=True)
    for entry in mesh.iterdir():
        link = target / entry.name
        if entry.name in {"mesh.yaml", "audit"} or link.exists() or link.is_symlink():
            continue
        link.symlink_to(entry.resolve())
    config = yaml.safe_load((mesh / "mesh.yaml").read_text())
    config.setdefault("gateway", {})["observability"] = observability
    (target / "mesh.yaml").write_text(yaml.safe_dump(config))
    return target


def overhead(mesh: Path, settings: Any, results_dir: Path) -> dict[str, Any]:
    """Streaming and point-query figures, observability off vs on, interleaved in one run."""
    from benchmarks import serving

    off_settings = {"metrics": False}
    with Sink() as sink:
        on_settings = {
            "metrics": True,
            "tracing": {"otlp_endpoint": f"{sink.url}/v1/traces"},
            "lineage": {"transport": "http", "url": sink.url},
            "log_format": "json",
        }
        variants = mesh.parent / f"{mesh.name}-observability"
        off_mesh = mesh_variant(mesh, variants / "off", off_settings)
        on_mesh = mesh_variant(mesh, variants / "on", on_settings)
        with (
            GatewayProcess(off_mesh, log_path=results_dir / "observability-off.log") as off,
            GatewayProcess(on_mesh, log_path=results_dir / "observability-on.log") as on,
        ):
            gateways = {"off": off, "on": on}
            conns = {name: serving.connect(g.uri, serving.USER) for name, g in gateways.items()}
            try:
                load_before = os.getloadavg()
                streams = _streams(gateways, conns, settings)
                points = _points(mesh, gateways, conns, settings)
                load_after = os.getloadavg()
            finally:
                for conn in conns.values():
                    conn.close()
        exported = dict(sink.counts)
    stream_ratio = streams["on"]["seconds"] / streams["off"]["seconds"]
    extra_ms = points["on"]["p50_ms"] - points["off"]["p50_ms"]
    extra_cpu = points["on"]["gateway_cpu_ms"] - points["off"]["gateway_cpu_ms"]
    return {
        "goals": GOALS,
        "streaming": {**streams, "ratio": round(stream_ratio, 3)},
        "point_query": {
            **points,
            "p50_extra_ms": round(extra_ms, 3),
            "gateway_cpu_extra_ms": round(extra_cpu, 3),
        },
        "exported_posts": exported,
        "load_average": {"before": load_before, "after": load_after, "cores": os.cpu_count()},
        "met": {
            "streaming": stream_ratio <= GOALS["stream_ratio"],
            "point_query": extra_ms <= GOALS["point_p50_extra_ms"],
        },
    }


def _streams(gateways, conns, settings) -> dict[str, Any]:
    from benchmarks import serving

    runs: dict[str, list[dict]] = {"off": [], "on": []}
    for name in ("off", "on"):  # one untimed run each
        serving._stream_gateway(conns[name], gateways[name], gateways[name].rss_kb())
    for run in range(settings.stream_runs):
        order = ("off", "on") if run % 2 == 0 else ("on", "off")
        for name in order:
            g = gateways[name]
            runs[name].append(serving._stream_gateway(conns[name], g, g.rss_kb()))
        progress(
            f"observability streaming run {run + 1}/{settings.stream_runs}: "
            + ", ".join(f"{n} {runs[n][-1]['seconds']:.2f} s" for n in ("off", "on"))
        )
    return {
        name: {
            "seconds": median([r["seconds"] for r in values]),
            "first_batch_seconds": median([r["first_batch_seconds"] for r in values]),
            "gateway_cpu_seconds": median([r["cpu_seconds"] for r in values]),
            "rows": values[0]["rows"],
        }
        for name, values in runs.items()
    }


def _points(mesh: Path, gateways, conns, settings) -> dict[str, Any]:
    """Point-query latency of each gateway, alternating in blocks, and each gateway process's
    CPU time per query (all its threads: the background senders' batches included, as the
    count runs until they have had time to go out)."""
    from benchmarks import serving

    warmup, runs = settings.latency_warmup, settings.latency_runs
    keys = serving._order_keys(mesh, 2 * (warmup + runs))
    samples: dict[str, list[float]] = {"off": [], "on": []}
    for index, name in enumerate(("off", "on")):
        serving._point_gateway(conns[name], keys[index * warmup : (index + 1) * warmup])
    rest = keys[2 * warmup :]
    time.sleep(BATCH_SETTLE_SECONDS)  # the warm-up's batches go out before CPU is counted
    cpu = {name: cpu_seconds(g.pid) for name, g in gateways.items()}
    block = 10  # alternate in blocks of ten queries, so load changes hit both alike
    for start in range(0, runs, block):
        for index, name in enumerate(("off", "on") if start % 20 == 0 else ("on", "off")):
            chunk = rest[2 * start + index * block : 2 * start + (index + 1) * block]
            samples[name].extend(serving._point_gateway(conns[name], chunk))
    time.sleep(BATCH_SETTLE_SECONDS)
    cpu = {name: cpu_seconds(g.pid) - cpu[name] for name, g in gateways.items()}
    progress(
        "observability point queries: "
        + ", ".join(f"{n} p50 {median(samples[n]) * 1000:.2f} ms" for n in ("off", "on"))
    )
    return {
        name: {
            "p50_ms": round(median(values) * 1000, 3),
            "gateway_cpu_ms": round(cpu[name] / len(values) * 1000, 3),
            "runs": len(values),
        }
        for name, values in samples.items()
    }


def _load(load: dict[str, Any]) -> str:
    return " / ".join(f"{value[0]:.1f}" for value in (load["before"], load["after"]))


def markdown(result: dict[str, Any], command: str) -> str:
    s, p = result["streaming"], result["point_query"]
    lines = [
        "# Observability overhead (all on vs off, same run)",
        "",
        "| measure | off | on | overhead | goal |",
        "|---|---|---|---|---|",
        f"| stream lineitem ({s['off']['rows']:,} rows), s | {s['off']['seconds']:.3f} | "
        f"{s['on']['seconds']:.3f} | {s['ratio']:.3f}x | <= {GOALS['stream_ratio']}x |",
        f"| point query p50, ms ({p['off']['runs']} runs each) | {p['off']['p50_ms']:.3f} | "
        f"{p['on']['p50_ms']:.3f} | {p['p50_extra_ms']:+.3f} ms | "
        f"<= {GOALS['point_p50_extra_ms']} ms |",
        f"| gateway CPU per point query, ms (all threads) | {p['off']['gateway_cpu_ms']:.3f} | "
        f"{p['on']['gateway_cpu_ms']:.3f} | {p['gateway_cpu_extra_ms']:+.3f} ms | |",
        "",
        "Goals met: "
        + ", ".join(f"{k} {'yes' if v else 'NO'}" for k, v in result["met"].items())
        + f". Load average before/after: {_load(result['load_average'])} on "
        f"{result['load_average']['cores']} cores (figures from a busy machine are noise).",
        "",
        f"Exported while on (POSTs to the local sink): {json.dumps(result['exported_posts'])}",
        "",
        f"Reproduce: `{command}`",
    ]
    return "\n".join(lines) + "\n"

"""A lineage backend or trace collector that is slow or down never delays or fails a query.

Events and spans are sent by background threads from bounded queues; these tests serve the
demo mesh with both pointed at a real HTTP server that holds every POST for seconds, or at a
closed port, run real queries through ADBC and check they are answered at their usual pace
while the gateway counts what it dropped or could not send.
"""

from __future__ import annotations

import http.server
import socket
import threading
import time

import pytest

from tests.support.discovery import serving
from tests.support.observed import observed_mesh, samples, value
from tests.support.server import connect

HOLD_SECONDS = 8.0
"""How long the slow sink holds each POST: far longer than the queries below take."""
QUERIES = 6


class SlowSink:
    """A loopback HTTP server answering each POST only after ``HOLD_SECONDS`` (or at exit)."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.posts: list[str] = []
        sink = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # noqa: N802 - the http.server API
                self.rfile.read(int(self.headers.get("content-length", 0)))
                sink.posts.append(self.path)
                sink.release.wait(HOLD_SECONDS)
                self.send_response(200)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> SlowSink:
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release.set()
        self._server.shutdown()
        self._server.server_close()


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then closed)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def scrape(http_url: str) -> dict:
    import httpx

    return samples(httpx.get(f"{http_url}/metrics", timeout=10).text)


def timed_queries(uri: str) -> list[float]:
    """``QUERIES`` small queries through ADBC, each on a new cursor; their wall times."""
    times = []
    with connect(uri, "analyst") as conn:
        for index in range(QUERIES):
            started = time.perf_counter()
            with conn.cursor() as cur:
                cur.execute(f"SELECT r_name FROM reference.region WHERE r_regionkey >= {index % 3}")
                assert cur.fetch_arrow_table().num_rows == 5 - index % 3
            times.append(time.perf_counter() - started)
    return times


def sent(found: dict, metric: str, result: str, **labels: str) -> float:
    return sum(
        v for (name, got), v in found.items() if name == metric and ("result", result) in got
    )


def test_a_slow_sink_never_delays_a_query_and_a_full_queue_drops_and_counts(demo_mesh, tmp_path):
    with SlowSink() as sink:
        mesh = observed_mesh(
            demo_mesh,
            tmp_path / "mesh",
            tracing={"otlp_endpoint": f"{sink.url}/v1/traces", "batch_seconds": 0,
                     "queue_size": 1, "timeout_seconds": 30},
            lineage={"transport": "http", "url": sink.url, "batch_seconds": 0,
                     "queue_size": 2, "timeout_seconds": 30},
        )  # fmt: skip
        with serving(mesh) as served:
            timed_queries(served.flight_uri)  # a first run loads what every query needs
            started = time.perf_counter()
            times = timed_queries(served.flight_uri)
            elapsed = time.perf_counter() - started
            found = scrape(served.http_url)
            # the sink holds the first POST of each kind all along: no query waited for one
            assert elapsed < HOLD_SECONDS, times
            assert len(sink.posts) >= 1
            assert sent(found, "meshgate_lineage_events_total", "dropped") > 0
            assert value(found, "meshgate_trace_exports_total", result="dropped") > 0
            assert value(
                found, "meshgate_queries_total", outcome="ok", code="OK", role="analyst"
            ) >= (2 * QUERIES)
            sink.release.set()  # let the senders finish so the gateway stops promptly


@pytest.mark.parametrize("batch_seconds", [0, 0.2])
def test_a_sink_that_is_down_never_fails_a_query_and_is_counted(demo_mesh, tmp_path, batch_seconds):
    down = f"http://127.0.0.1:{closed_port()}"
    mesh = observed_mesh(
        demo_mesh,
        tmp_path / "mesh",
        tracing={"otlp_endpoint": f"{down}/v1/traces", "batch_seconds": batch_seconds,
                 "timeout_seconds": 2},
        lineage={"transport": "http", "url": down, "batch_seconds": batch_seconds,
                 "timeout_seconds": 2},
    )  # fmt: skip
    with serving(mesh) as served:
        times = timed_queries(served.flight_uri)
        assert len(times) == QUERIES
        assert served.gateway.observe.flush(timeout=60)
        found = scrape(served.http_url)
    assert sent(found, "meshgate_lineage_events_total", "failed") == 2 * QUERIES
    assert sent(found, "meshgate_lineage_events_total", "sent") == 0
    assert value(found, "meshgate_trace_exports_total", result="failed") >= 1
    assert value(found, "meshgate_trace_exports_total", result="sent") == 0

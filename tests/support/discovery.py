"""A real gateway serving Flight SQL and its HTTP discovery port, each in a thread."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from gateway.flightsql.server import MeshFlightServer
from gateway.service import Gateway


@dataclass
class Served:
    """Where a test reaches the running gateway."""

    flight_uri: str
    http_url: str
    gateway: Gateway
    server: MeshFlightServer


@contextlib.contextmanager
def serving(
    mesh_dir: Path, *, monitor_interval: float | None = 0, **gateway_options
) -> Iterator[Served]:
    """Serve ``mesh_dir`` over Flight SQL and HTTP on free loopback ports, as ``meshgate serve``.

    The monitor's schedule runs every ``monitor_interval`` seconds (None: mesh.yaml's setting,
    0: off, so tests measure with ``gateway.monitor.check_now()`` when they choose)."""
    from gateway.http.app import create_app
    from gateway.http.server import HttpServer

    gateway = Gateway.open(mesh_dir, **gateway_options)
    server = MeshFlightServer(gateway, "grpc://127.0.0.1:0")
    thread = threading.Thread(target=server.serve, daemon=True, name="meshgate-test-flight")
    thread.start()
    flight_uri = f"grpc://127.0.0.1:{server.port}"
    gateway.monitor.start(monitor_interval)
    app = create_app(gateway, signer=server.signer, flight_uri=flight_uri)
    http = HttpServer(app, host="127.0.0.1", port=0).start()
    try:
        yield Served(flight_uri, f"http://127.0.0.1:{http.port}", gateway, server)
    finally:
        http.stop()
        server.shutdown()
        thread.join(timeout=10)
        gateway.close()

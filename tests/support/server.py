"""A real meshgate Flight SQL server on a free loopback port, and real ADBC clients for it."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from pathlib import Path

from gateway.flightsql.server import MeshFlightServer
from gateway.service import Gateway


@contextlib.contextmanager
def running_server(
    mesh_dir: Path, *, server_options: dict | None = None, **gateway_options
) -> Iterator[tuple[str, Gateway]]:
    """Serve ``mesh_dir`` in a background thread; yield its URI and the Gateway behind it.

    ``server_options`` go to MeshFlightServer (e.g. ``tls_certificates``)."""
    gateway = Gateway.open(mesh_dir, **gateway_options)
    server = MeshFlightServer(gateway, "grpc://127.0.0.1:0", **(server_options or {}))
    thread = threading.Thread(target=server.serve, daemon=True, name="meshgate-test-server")
    thread.start()
    scheme = server.listen_location.partition("://")[0]
    try:
        yield f"{scheme}://127.0.0.1:{server.port}", gateway
    finally:
        server.shutdown()
        thread.join(timeout=10)
        gateway.close()


def connect(uri: str, user: str = "admin", password: str | None = None, **db_kwargs: str):
    """An ADBC Flight SQL DB-API connection, authenticated as ``user`` (password = user name);
    ``db_kwargs`` add driver options (TLS roots, client certificates, headers)."""
    import adbc_driver_flightsql.dbapi as flightsql

    credentials = {"username": user, "password": password if password is not None else user}
    return flightsql.connect(uri, db_kwargs={**credentials, **db_kwargs}, autocommit=True)

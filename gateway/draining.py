"""Graceful shutdown and a health check a load balancer can use.

On SIGTERM the gateway stops taking new queries (UNAVAILABLE: "shutting down", so clients go to
another replica), lets the running streams finish for up to ``gateway.shutdown_grace_seconds``,
then stops. The health check answers over plain HTTP (``--health-port`` /
``gateway.health_port``), which load balancers speak without Flight credentials::

    GET /healthz   200 {"status": "serving", "running_queries": 3}
                   503 {"status": "draining", ...} once SIGTERM arrived

and, for Flight clients, as the action ``HealthCheck`` with the same JSON.
"""

from __future__ import annotations

import json
import logging
import signal
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

log = logging.getLogger(__name__)

LINGER_SECONDS = 1.0
"""After the last stream ends, how long a draining gateway still answers the calls that close
a query (ClosePreparedStatement, CloseSession) before it stops."""


class Lifecycle:
    """Whether the gateway takes new queries, and how to drain it."""

    def __init__(self) -> None:
        self.draining = threading.Event()
        self.stopped = threading.Event()
        self._finishing = threading.Lock()

    def status(self, running_queries: int) -> dict[str, Any]:
        state = "draining" if self.draining.is_set() else "serving"
        return {"status": state, "running_queries": running_queries}

    def drain(self, server: Any, *, running: Any, grace_seconds: float) -> None:
        """Refuse new queries, wait for ``running()`` to reach 0 (at most ``grace_seconds``),
        then shut ``server`` down."""
        self.draining.set()
        self.finish_draining(server, running=running, grace_seconds=grace_seconds)

    def finish_draining(self, server: Any, *, running: Any, grace_seconds: float) -> None:
        """The second half of :meth:`drain`, once ``draining`` is set; runs once."""
        with self._finishing:
            if self.stopped.is_set():
                return
            self._finish(server, running=running, grace_seconds=grace_seconds)

    def _finish(self, server: Any, *, running: Any, grace_seconds: float) -> None:
        log.info("draining: no new queries; %d running, up to %g s", running(), grace_seconds)
        deadline = time.monotonic() + grace_seconds
        while running() > 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        left = running()
        if left:
            log.warning("shutting down with %d queries still running (grace period over)", left)
        else:  # the clients' last calls of a query (ClosePreparedStatement) still arrive
            time.sleep(min(LINGER_SECONDS, max(0.0, deadline - time.monotonic())))
        server.shutdown()
        self.stopped.set()


def drain_on_sigterm(server: Any, *, running: Any, grace_seconds: float) -> None:
    """SIGTERM (what orchestrators send) drains ``server`` in a thread of its own."""

    def on_sigterm(signum, frame) -> None:
        server.lifecycle.draining.set()  # before serve() can return: nothing new starts
        threading.Thread(
            target=server.lifecycle.finish_draining,
            args=(server,),
            kwargs={"running": running, "grace_seconds": grace_seconds},
            name="meshgate-drain",
            daemon=True,
        ).start()

    signal.signal(signal.SIGTERM, on_sigterm)


def serve_health(
    lifecycle: Lifecycle, *, running: Any, host: str, port: int
) -> ThreadingHTTPServer:
    """An HTTP server answering ``GET /healthz`` (and ``/readyz``) in a daemon thread."""

    class Health(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the http.server API
            if self.path.split("?")[0] not in ("/healthz", "/readyz", "/"):
                self.send_error(404, "use /healthz")
                return
            body = json.dumps(lifecycle.status(running())).encode()
            self.send_response(503 if lifecycle.draining.is_set() else 200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args) -> None:  # noqa: A002 - the http.server API
            log.debug("health check: " + format, *args)

    http = ThreadingHTTPServer((host, port), Health)
    http.daemon_threads = True
    threading.Thread(target=http.serve_forever, name="meshgate-health", daemon=True).start()
    return http

"""Run the HTTP app in a background thread beside the Flight server.

uvicorn serves it from its own event loop in a daemon thread; :meth:`HttpServer.stop` asks it to
finish and waits. With ``port=0`` a free port is chosen; ``HttpServer.port`` says which.
"""

from __future__ import annotations

import logging
import threading
import time

log = logging.getLogger(__name__)

DEFAULT_HTTP_PORT = 8816
START_TIMEOUT_SECONDS = 30.0


class HttpServer:
    """uvicorn serving one ASGI ``app`` on ``host:port`` in a thread."""

    def __init__(self, app, *, host: str = "127.0.0.1", port: int = DEFAULT_HTTP_PORT):
        import uvicorn

        config = uvicorn.Config(
            app,
            host=host,
            port=port,
            log_level="warning",
            access_log=False,
            lifespan="off",
            log_config=None,  # through meshgate's logging (and its JSON lines when configured)
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True, name="meshgate-http")
        self.host = host

    def start(self) -> HttpServer:
        """Start serving; returns once the socket listens (or raises if it could not)."""
        self._thread.start()
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise OSError(
                    f"the HTTP port could not start on {self.host}:{self._server.config.port}; "
                    "is it in use? choose another with --http-port"
                )
            time.sleep(0.01)
        return self

    @property
    def port(self) -> int:
        for server in self._server.servers:
            for sock in server.sockets:
                return sock.getsockname()[1]
        return self._server.config.port

    @property
    def url(self) -> str:
        host = "localhost" if self.host in ("0.0.0.0", "127.0.0.1") else self.host
        return f"http://{host}:{self.port}"

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)

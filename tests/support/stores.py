"""The PostgreSQL, MariaDB and Trino services tests talk to, and a TCP proxy to take them "down".

``scripts/test-services`` brings all three up on loopback. Tests that need a service call
:func:`require`: it skips the test with a clear reason when the service does not answer, and
fails it instead when ``MESHGATE_REQUIRE_STORES=1`` (CI), so a missing service can never turn a
red suite green. Addresses can be moved with ``MESHGATE_PG_HOST``/``_PORT``,
``MESHGATE_MYSQL_HOST``/``_PORT`` and ``MESHGATE_TRINO_URL``
(``http://user@host:port/catalog/schema``; a password in the URL needs ``https``).
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import urllib.parse
from dataclasses import dataclass
from typing import Any

import pytest


@dataclass(frozen=True)
class Service:
    """A database service the tests expect on this machine."""

    name: str
    host: str
    port: int
    user: str
    database: str

    def reachable(self, timeout: float = 1.0) -> bool:
        try:
            socket.create_connection((self.host, self.port), timeout=timeout).close()
        except OSError:
            return False
        return True


POSTGRES = Service(
    "PostgreSQL",
    os.environ.get("MESHGATE_PG_HOST", "127.0.0.1"),
    int(os.environ.get("MESHGATE_PG_PORT", "5432")),
    user="postgres",
    database="test",
)
MARIADB = Service(
    "MariaDB",
    os.environ.get("MESHGATE_MYSQL_HOST", "127.0.0.1"),
    int(os.environ.get("MESHGATE_MYSQL_PORT", "3306")),
    user="root",
    database="test",
)


TRINO_URL = os.environ.get("MESHGATE_TRINO_URL", "http://meshgate@127.0.0.1:8080/postgresql/public")
"""The coordinator the Trino tests use; its catalog and schema must take CREATE TABLE."""
_trino = urllib.parse.urlsplit(TRINO_URL)
TRINO = Service(
    "Trino",
    _trino.hostname or "127.0.0.1",
    _trino.port or (443 if _trino.scheme == "https" else 8080),
    user=_trino.username or "meshgate",
    database=_trino.path.strip("/").replace("/", ".") or "memory.default",
)
TRINO_PASSWORD_ENV = "MESHGATE_TEST_TRINO_PASSWORD"


def trino_settings(**overrides: Any) -> dict[str, Any]:
    """Trino store settings for ``TRINO_URL`` (its password, if any, in ``TRINO_PASSWORD_ENV``)."""
    catalog, _, schema = TRINO.database.partition(".")
    settings = {
        "kind": "trino",
        "host": TRINO.host,
        "port": TRINO.port,
        "http_scheme": _trino.scheme or "http",
        "user": TRINO.user,
        "catalog": catalog,
        "schema": schema or "default",
        "connect_timeout_seconds": 5,
    }
    if _trino.password:
        os.environ[TRINO_PASSWORD_ENV] = urllib.parse.unquote(_trino.password)
        settings["password_env"] = TRINO_PASSWORD_ENV
    return settings | overrides


def trino_admin(**session: Any) -> Any:
    """A ``trino.dbapi`` connection to ``TRINO_URL`` (for setting up and checking)."""
    import trino.auth
    import trino.dbapi

    service = require(TRINO)
    settings = trino_settings()
    auth = None
    if "password_env" in settings:
        auth = trino.auth.BasicAuthentication(service.user, os.environ[TRINO_PASSWORD_ENV])
    return trino.dbapi.connect(
        host=service.host,
        port=service.port,
        user=service.user,
        catalog=settings["catalog"],
        schema=settings["schema"],
        http_scheme=settings["http_scheme"],
        auth=auth,
        **session,
    )


def stores_required() -> bool:
    return os.environ.get("MESHGATE_REQUIRE_STORES") == "1"


def require(service: Service) -> Service:
    """``service`` if it answers; otherwise skip (or fail under MESHGATE_REQUIRE_STORES=1)."""
    if service.reachable():
        return service
    reason = (
        f"{service.name} is not reachable at {service.host}:{service.port}; start it "
        f"(user {service.user}, database {service.database}) to run this test: "
        "scripts/test-services brings up every service the suite uses"
    )
    if stores_required():
        pytest.fail(f"MESHGATE_REQUIRE_STORES=1 but {reason}", pytrace=False)
    pytest.skip(reason)


def postgres_store(port: int, **settings: Any) -> str:
    """A store of the test PostgreSQL reached at ``port`` on this machine (a ``TcpProxy``), as
    the YAML flow mapping a test's mesh.yaml names it with; ``settings`` add to or override it."""
    values = {
        "kind": "postgres",
        "host": "127.0.0.1",
        "port": port,
        "user": POSTGRES.user,
        "database": POSTGRES.database,
        "connect_timeout_seconds": 3,
    } | settings
    return "{" + ", ".join(f"{key}: {value}" for key, value in values.items()) + "}"


def postgres_admin() -> Any:
    """An autocommit psycopg connection to the test database (for setting up and checking)."""
    import psycopg

    service = require(POSTGRES)
    return psycopg.connect(
        host=service.host,
        port=service.port,
        user=service.user,
        dbname=service.database,
        autocommit=True,
    )


def mysql_admin() -> Any:
    """An autocommit PyMySQL connection to the test database, in UTC."""
    import pymysql

    service = require(MARIADB)
    return pymysql.connect(
        host=service.host,
        port=service.port,
        user=service.user,
        database=service.database,
        autocommit=True,
        init_command="SET time_zone = '+00:00'",
    )


def free_port() -> int:
    """A local TCP port nothing listens on (closed as soon as it is found)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class TcpProxy:
    """Forwards a local port to a real server; ``stop()`` is the server going down.

    Stopping closes the listening socket and every connection through it, as a crashed or
    restarted server would; ``start()`` brings it back on the same port.
    """

    def __init__(self, target_host: str, target_port: int):
        self.target = (target_host, target_port)
        self.port = free_port()
        self._listener: socket.socket | None = None
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()

    def start(self) -> TcpProxy:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(16)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()
        return self

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # stopped
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                self._sockets += [client, upstream]
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for end in (source, sink):
                with contextlib.suppress(OSError):
                    end.shutdown(socket.SHUT_RDWR)

    def stop(self) -> None:
        if self._listener is not None:
            # shutdown wakes the thread blocked in accept(); close() alone leaves it listening
            with contextlib.suppress(OSError):
                self._listener.shutdown(socket.SHUT_RDWR)
            self._listener.close()
            self._listener = None
        with self._lock:
            sockets, self._sockets = self._sockets, []
        for end in sockets:
            with contextlib.suppress(OSError):
                end.shutdown(socket.SHUT_RDWR)
            end.close()

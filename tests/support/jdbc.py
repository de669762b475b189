"""The real Arrow Flight SQL JDBC driver, driven from pytest through one JVM per test module.

``JdbcProbe.java`` (beside this file) is compiled with ``javac`` into a temporary directory and
run with the driver jar on its class path; :class:`Jdbc` sends it requests and returns what the
driver answered, or raises :class:`JdbcError` with the ``SQLException`` a JDBC user would see.

The jar comes from ``MESHGATE_JDBC_JAR``, else Maven's cache, where ``scripts/test-services``
puts it. Without a jar or a JDK the tests skip with the reason (fail under
``MESHGATE_REQUIRE_STORES=1``).
"""

from __future__ import annotations

import base64
import json
import os
import queue
import shutil
import subprocess
import threading
from pathlib import Path
from typing import Any

import pytest

from tests.support.stores import stores_required

DRIVER_VERSION = "18.3.0"
DEFAULT_JAR = (
    Path.home()
    / ".m2/repository/org/apache/arrow/flight-sql-jdbc-driver"
    / DRIVER_VERSION
    / f"flight-sql-jdbc-driver-{DRIVER_VERSION}.jar"
)
PROBE_SOURCE = Path(__file__).with_name("JdbcProbe.java")
REPLY_TIMEOUT_SECONDS = 240.0


class JdbcError(Exception):
    """What the driver raised: ``java_class``, ``message``, ``causes`` and the Java ``trace``."""

    def __init__(self, error: dict[str, Any]):
        self.java_class: str = error["class"]
        self.message: str = error.get("message") or ""
        self.sql_state: str | None = error.get("sql_state")
        self.causes: list[dict[str, Any]] = error.get("causes", [])
        self.trace: str = error.get("trace", "")
        super().__init__(f"{self.java_class}: {self.message}")

    @property
    def everything_shown(self) -> str:
        """The message and every cause's message: what a BI tool's error dialog may show."""
        return "\n".join([self.message] + [c.get("message") or "" for c in self.causes])


def _unavailable(reason: str) -> None:
    if stores_required():
        pytest.fail(f"MESHGATE_REQUIRE_STORES=1 but {reason}", pytrace=False)
    pytest.skip(reason)


def driver_jar() -> Path:
    """The driver jar, or skip (fail under MESHGATE_REQUIRE_STORES=1) saying how to get it."""
    jar = Path(os.environ.get("MESHGATE_JDBC_JAR") or DEFAULT_JAR)
    if not jar.is_file():
        _unavailable(
            f"the Arrow Flight SQL JDBC driver jar is not at {jar}; run scripts/test-services "
            "(it fetches org.apache.arrow:flight-sql-jdbc-driver) or set MESHGATE_JDBC_JAR"
        )
    for tool in ("java", "javac"):
        if shutil.which(tool) is None:
            _unavailable(f"`{tool}` is not on PATH; install a JDK 11+ to run the JDBC tests")
    return jar


def compile_probe(jar: Path, directory: Path) -> Path:
    """``JdbcProbe.class`` compiled into ``directory`` (the directory is returned)."""
    completed = subprocess.run(
        ["javac", "-d", str(directory), "-cp", str(jar), str(PROBE_SOURCE)],
        capture_output=True,
        text=True,
        check=False,
    )
    if completed.returncode != 0:
        raise RuntimeError(f"javac failed on {PROBE_SOURCE.name}:\n{completed.stderr}")
    return directory


def _word(value: str | None) -> str:
    return "~" if value is None else base64.b64encode(value.encode()).decode()


class Jdbc:
    """One JVM running the probe; each call is a request answered before the next is sent."""

    def __init__(self, jar: Path, classes: Path, *, log_path: Path):
        self._log = log_path.open("w")
        self._process = subprocess.Popen(
            [
                "java",
                "--add-opens=java.base/java.nio=ALL-UNNAMED",
                "-Duser.timezone=UTC",
                "-Xmx512m",
                "-cp",
                os.pathsep.join([str(classes), str(jar)]),
                "JdbcProbe",
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
            encoding="utf-8",
        )
        self.log_path = log_path
        self._replies: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True, name="jdbc-probe-reader").start()
        self._lock = threading.Lock()
        self._ids = 0

    def _read(self) -> None:
        assert self._process.stdout is not None
        for line in self._process.stdout:
            self._replies.put(line)
        self._replies.put(None)

    def call(self, *words: str | None) -> Any:
        """Send one request; its answer, or JdbcError with what the driver raised."""
        assert self._process.stdin is not None
        with self._lock:
            self._process.stdin.write(" ".join(_word(w) for w in words) + "\n")
            self._process.stdin.flush()
            try:
                line = self._replies.get(timeout=REPLY_TIMEOUT_SECONDS)
            except queue.Empty:
                raise TimeoutError(f"the JDBC probe did not answer {words[0]!r}") from None
        if line is None:
            raise RuntimeError(f"the JDBC probe exited; see {self.log_path}")
        reply = json.loads(line)
        if "error" in reply:
            raise JdbcError(reply["error"])
        return reply["ok"]

    def _next_id(self, prefix: str) -> str:
        self._ids += 1
        return f"{prefix}{self._ids}"

    def connect(self, url: str, **properties: str) -> Connection:
        """A JDBC connection opened with ``DriverManager.getConnection(url, properties)``."""
        cid = self._next_id("c")
        words: list[str] = []
        for key, value in properties.items():
            words += [key, value]
        self.call("connect", cid, url, *words)
        return Connection(self, cid)

    def close(self) -> None:
        if self._process.poll() is None:
            assert self._process.stdin is not None
            self._process.stdin.close()
            try:
                self._process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._log.close()


class Connection:
    """A ``java.sql.Connection`` living in the probe's JVM."""

    def __init__(self, jdbc: Jdbc, cid: str):
        self.jdbc, self.cid = jdbc, cid

    def meta(self, method: str, *args: str | None) -> Any:
        """``DatabaseMetaData.<method>(*args)``: a value, or a result set as ``rows``."""
        return self.jdbc.call("meta", self.cid, method, *args)

    def every_meta(self) -> dict[str, dict[str, Any]]:
        """Every argument-free DatabaseMetaData method: ``values`` and ``errors`` by name."""
        return self.jdbc.call("metaall", self.cid)

    def query(self, sql: str) -> dict[str, Any]:
        """``Statement.executeQuery(sql)``: ``columns`` (ResultSetMetaData) and ``rows``."""
        return self.jdbc.call("query", self.cid, sql)

    def scan(self, sql: str) -> dict[str, Any]:
        """Every row of ``sql`` read in the JVM: ``rows``, ``nulls`` and per-column ``sums``."""
        return self.jdbc.call("scan", self.cid, sql)

    def prepare(self, sql: str) -> PreparedStatement:
        pid = self.jdbc._next_id("p")
        described = self.jdbc.call("prepare", self.cid, pid, sql)
        return PreparedStatement(self.jdbc, pid, described)

    def call(self, method: str, *args: str | None) -> Any:
        """A ``Connection`` method: setCatalog, getCatalog, getSchema, isReadOnly, ..."""
        return self.jdbc.call("connection", self.cid, method, *args)

    def close(self) -> None:
        self.jdbc.call("close", self.cid)

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class PreparedStatement:
    """A ``java.sql.PreparedStatement``; ``parameters`` and ``columns`` as the driver sees them."""

    def __init__(self, jdbc: Jdbc, pid: str, described: dict[str, Any]):
        self.jdbc, self.pid = jdbc, pid
        self.parameters: list[dict[str, Any]] = described["parameters"]
        self.columns: list[dict[str, Any]] | None = described["columns"]

    def execute(self, *bindings: str) -> dict[str, Any]:
        """Bind ``type:value`` words (int, long, string, date, decimal, double, bool, timestamp,
        null:<java.sql.Types code>) and run the statement."""
        return self.jdbc.call("execute", self.pid, *bindings)

    def close(self) -> None:
        """Close it before its connection: the 18.3.0 driver closing a connection does not free
        the parameter buffers of statements still open and reports them as leaked."""
        self.jdbc.call("unprepare", self.pid)

    def __enter__(self) -> PreparedStatement:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def rows(result: dict[str, Any]) -> list[list[str | None]]:
    """A result set's values as the text the probe rendered (None for SQL NULL)."""
    return [[None if v is None else v["text"] for v in row] for row in result["rows"]]


def by_name(result: dict[str, Any]) -> list[dict[str, str | None]]:
    """A result set's rows as dicts keyed by column label."""
    labels = [c["label"] for c in result["columns"]]
    return [dict(zip(labels, row, strict=True)) for row in rows(result)]

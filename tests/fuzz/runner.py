"""Send fuzzed statements through a real meshgate server and sort what comes back.

Every answer is one of: rows, a clean refusal (a Flight status a client can act on), a client
timeout, or a failure: INTERNAL or UNKNOWN (the gateway did not know what went wrong), or a lost
server (the process died or stopped answering). Only failures are bugs; each is kept with its
statement so it can be replayed.
"""

from __future__ import annotations

import contextlib
import re
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

from tests.fuzz.generator import Statement

CLEAN = {
    "InvalidArgument",
    "NotFound",
    "PermissionDenied",
    "Unimplemented",
    "Unauthenticated",
    "Unavailable",
    "DeadlineExceeded",
    "Canceled",
    "ResourceExhausted",
    "FailedPrecondition",
    "OutOfRange",
}
FAILURES = {"Internal", "Unknown"}
STATUS = re.compile(r"\((\w+); \w+")
KNOWN_QUERY = "SELECT count(*) AS n FROM sales.orders"


@dataclass
class Report:
    outcomes: Counter = field(default_factory=Counter)
    by_origin: Counter = field(default_factory=Counter)
    failures: list[tuple[str, Statement, str]] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def statements(self) -> int:
        return sum(self.outcomes.values())

    def summary(self) -> str:
        lines = [
            f"{self.statements} statements in {self.seconds:.1f} s "
            f"({self.statements / max(self.seconds, 1e-9):.1f}/s)",
            "outcomes: " + ", ".join(f"{k} {v}" for k, v in sorted(self.outcomes.items())),
            "failures by origin: "
            + (", ".join(f"{k} {v}" for k, v in sorted(self.by_origin.items())) or "none"),
        ]
        for status, statement, message in self.failures[:20]:
            lines.append(f"  {status}: {statement.sql[:300]!r} {statement.parameters!r}")
            lines.append(f"      -> {message[:400]}")
        return "\n".join(lines)


def status_of(error: BaseException) -> str:
    """The gRPC status name the ADBC driver reports (``(InvalidArgument; Prepare)``), else the
    status its message starts with (``INVALID_ARGUMENT: ...``), else the exception's class."""
    text = str(error)
    match = STATUS.search(text)
    if match:
        return match.group(1)
    prefix = text.split(":", 1)[0]
    if prefix.isupper() and prefix.replace("_", "").isalpha():
        return "".join(part.title() for part in prefix.split("_"))
    return type(error).__name__


def _connect(uri: str, user: str, timeout_seconds: float):
    import adbc_driver_flightsql.dbapi as flightsql
    from adbc_driver_flightsql import DatabaseOptions

    return flightsql.connect(
        uri,
        db_kwargs={
            "username": user,
            "password": user,
            DatabaseOptions.TIMEOUT_QUERY.value: str(timeout_seconds),
            DatabaseOptions.TIMEOUT_FETCH.value: str(timeout_seconds),
        },
        autocommit=True,
    )


def run_statements(
    uri: str,
    statements: Iterable[Statement],
    *,
    user: str = "analyst",
    timeout_seconds: float = 20.0,
    alive=lambda: True,
    progress=None,
) -> Report:
    """Run each statement once over one connection (a new one after a lost connection)."""
    report = Report()
    started = time.perf_counter()
    try:
        conn = _connect(uri, user, timeout_seconds)
    except Exception as exc:  # noqa: BLE001 - a server that refuses connections is lost
        report.failures.append(("lost", Statement("(connect)"), str(exc)))
        report.outcomes["lost"] += 1
        return report
    try:
        for number, statement in enumerate(statements, 1):
            began = time.perf_counter()
            outcome, message = _run_one(conn, statement)
            if progress is not None:
                progress(number, statement, outcome, time.perf_counter() - began, message)
            if outcome in FAILURES or outcome == "lost":
                report.failures.append((outcome, statement, message))
                report.by_origin[statement.origin] += 1
            if outcome not in CLEAN | FAILURES | {"ok"}:
                # the connection may be broken: a fresh one tells a dead server from a bad call
                with contextlib.suppress(Exception):
                    conn.close()
                try:
                    conn = _connect(uri, user, timeout_seconds)
                    answering = alive() and _answers(conn)
                except Exception:  # noqa: BLE001 - no connection: the server is gone
                    answering = False
                if not answering:
                    outcome = "lost"
                    report.failures.append((outcome, statement, message))
                    report.outcomes[outcome] += 1
                    break
            report.outcomes[outcome] += 1
    finally:
        report.seconds = time.perf_counter() - started
        with contextlib.suppress(Exception):
            conn.close()
    return report


def run_concurrently(
    uri: str, statements: list[Statement], *, clients: int = 1, **options
) -> Report:
    """``statements`` dealt round-robin to ``clients`` connections running at once, as several
    consumers share one gateway; one report for all."""
    import threading

    if clients <= 1:
        return run_statements(uri, statements, **options)
    reports: list[Report] = []
    started = time.perf_counter()

    def client(share: list[Statement]) -> None:
        reports.append(run_statements(uri, share, **options))

    threads = [
        threading.Thread(target=client, args=(statements[i::clients],)) for i in range(clients)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    merged = Report(seconds=time.perf_counter() - started)
    for report in reports:
        merged.outcomes.update(report.outcomes)
        merged.by_origin.update(report.by_origin)
        merged.failures.extend(report.failures)
    return merged


def _run_one(conn, statement: Statement) -> tuple[str, str]:
    cursor = conn.cursor()
    try:
        cursor.execute(statement.sql, parameters=statement.parameters or None)
        cursor.fetch_arrow_table()
        return "ok", ""
    except Exception as exc:  # noqa: BLE001 - sorted by status below
        return status_of(exc), str(exc)
    finally:
        with contextlib.suppress(Exception):  # a failed statement may leave nothing to close
            cursor.close()


def _answers(conn) -> bool:
    try:
        known_answer(conn)
    except Exception:  # noqa: BLE001 - any failure means the server is not answering
        return False
    return True


def known_answer(conn) -> int:
    """The number of orders, through ``conn``: the query that shows the server still answers."""
    with conn.cursor() as cursor:
        cursor.execute(KNOWN_QUERY)
        return cursor.fetch_arrow_table()["n"][0].as_py()

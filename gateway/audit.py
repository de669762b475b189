"""The audit trail: one JSON object per line per query, appended, never rewritten.

Every query — answered, denied or failed — leaves one event: who asked what, which products and
columns it touched, the masks and row filters applied (as SQL), the SQL each store was sent, what
came back and how long it took. The file is JSON lines, so the governance group can read it with
any tool (``SELECT * FROM read_json('audit.jsonl')``) or publish it as a product of the mesh.

Each event is written with one ``write()`` on a file opened in append mode (``O_APPEND``), so
lines from several threads, or several gateway processes sharing the file, never interleave and
earlier lines are never touched.

::

    log = AuditLog(mesh_dir / "audit.jsonl")
    log.record(AuditEvent(principal="analyst", statement="SELECT 1", outcome="ok", rows=1))
"""

from __future__ import annotations

import json
import os
import re
import socket
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from gateway.narrowing import NARROWED

Outcome = Literal["ok", "denied", "error"]
OUTCOMES = ("ok", "denied", "error")


def replica_id() -> str:
    """This gateway process's name in the events it writes: ``MESHGATE_REPLICA`` when set, else
    ``<host>:<pid>``, so events of several replicas sharing one log can be told apart."""
    return os.environ.get("MESHGATE_REPLICA") or f"{socket.gethostname()}:{os.getpid()}"


def utc_now() -> str:
    """The current time as an ISO 8601 UTC timestamp with milliseconds."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class SentQuery:
    """One query sent to one store, in that store's dialect, as it was sent (a planned
    fragment, narrowed by its dynamic filters)."""

    store: str
    sql: str


_KEY_LIST = re.compile(r"IN \(((?:'(?:[^']|'')*'|[^()'])+)\)")
_KEY = re.compile(r"'(?:[^']|'')*'|[^,\s][^,]*")
ABBREVIATE_KEYS_OVER = 20


def abbreviated(sql: str) -> str:
    """``sql`` with each IN list of more than ABBREVIATE_KEYS_OVER keys a dynamic filter added
    written as ``IN (<n keys>)``: for the audit log and reports, where thousands of keys read
    from another store say no more than their number."""
    query, marker, narrowing = sql.partition(NARROWED)
    if not marker:
        return sql

    def counted(match: re.Match) -> str:
        keys = len(_KEY.findall(match.group(1)))
        return f"IN (<{keys} keys>)" if keys > ABBREVIATE_KEYS_OVER else match.group(0)

    return query + marker + _KEY_LIST.sub(counted, narrowing)


@dataclass
class AuditEvent:
    """What one query did. SQL here must never carry secrets: hide the mask key first."""

    principal: str
    statement: str
    outcome: Outcome
    time: str = field(default_factory=utc_now)
    products: list[str] = field(default_factory=list)
    """Product addresses the statement read."""
    columns: list[str] = field(default_factory=list)
    """``<domain>.<product>.<column>`` of every column read."""
    masks: dict[str, str] = field(default_factory=dict)
    """``<domain>.<product>.<column>`` -> the masked expression, as SQL."""
    filters: dict[str, str] = field(default_factory=dict)
    """Product address -> the row filter applied, as SQL."""
    fragments: list[SentQuery] = field(default_factory=list)
    rows: int = 0
    bytes: int = 0
    duration_ms: float = 0.0
    error: str | None = None
    warnings: list[str] = field(default_factory=list)
    """What the client was warned of, e.g. that a product version it read is deprecated."""
    engine: str = "local"
    """Where the cross-store part ran: ``local`` or the engine's name (gateway.routing)."""
    replica: str = field(default_factory=replica_id)
    """The gateway process that served the query."""
    query_id: str | None = None
    """The query's id: its OpenLineage run id and the ``query_id`` of its log lines."""
    trace_id: str | None = None
    """The query's OpenTelemetry trace id, when tracing is on."""

    def __post_init__(self) -> None:
        if self.outcome not in OUTCOMES:
            raise ValueError(f"outcome {self.outcome!r} is not one of {', '.join(OUTCOMES)}")

    def to_json(self) -> str:
        """The event as one line of JSON (no newline inside, non-ASCII kept readable)."""
        fields = {**vars(self), "fragments": [vars(fragment) for fragment in self.fragments]}
        return json.dumps(fields, ensure_ascii=False, separators=(",", ":"))


class AuditLog:
    """An append-only JSON-lines file of audit events, safe to share between threads."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._fd: int | None = os.open(
            self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o640
        )

    def record(self, event: AuditEvent) -> None:
        """Append ``event`` as one line; it is in the file (the OS's) when this returns."""
        data = (event.to_json() + "\n").encode("utf-8")
        with self._lock:
            if self._fd is None:
                raise ValueError(f"the audit log {self.path} is closed")
            written = os.write(self._fd, data)
            while written < len(data):  # a short write (full disk, signal): finish the line
                written += os.write(self._fd, data[written:])

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None

    def __enter__(self) -> AuditLog:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

"""The audit log: one complete JSON line per event, appended, from many threads at once."""

from __future__ import annotations

import json
import os
import socket
import threading
from datetime import datetime

import duckdb
import pytest

from gateway.audit import AuditEvent, AuditLog, SentQuery


def event(n: int, **changes) -> AuditEvent:
    fields = dict(
        principal="eu_analyst",
        statement=f"SELECT c_name FROM sales.customer WHERE c_custkey = {n} -- café",
        outcome="ok",
        products=["sales.customer"],
        columns=["sales.customer.c_name"],
        masks={"sales.customer.c_name": "'****' || RIGHT(c_name, 4)"},
        filters={"sales.customer": "c_nationkey IN (SELECT n_nationkey FROM reference.nation)"},
        fragments=[SentQuery("sales_db", f'SELECT "c_name" FROM "customer" WHERE c_custkey = {n}')],
        rows=n,
        bytes=n * 10,
        duration_ms=1.5,
    )
    fields.update(changes)
    return AuditEvent(**fields)


def read_lines(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_each_event_is_one_json_line_with_every_field(tmp_path):
    path = tmp_path / "audit" / "audit.jsonl"
    with AuditLog(path) as log:
        log.record(event(1))
        # written through to the file at once, not when the log closes
        (first,) = read_lines(path)
        log.record(event(2, outcome="denied", rows=0, bytes=0, error="may not read sales.orders"))
    assert first == {
        "principal": "eu_analyst",
        "statement": "SELECT c_name FROM sales.customer WHERE c_custkey = 1 -- café",
        "outcome": "ok",
        "time": first["time"],
        "products": ["sales.customer"],
        "columns": ["sales.customer.c_name"],
        "masks": {"sales.customer.c_name": "'****' || RIGHT(c_name, 4)"},
        "filters": {"sales.customer": "c_nationkey IN (SELECT n_nationkey FROM reference.nation)"},
        "fragments": [
            {"store": "sales_db", "sql": 'SELECT "c_name" FROM "customer" WHERE c_custkey = 1'}
        ],
        "rows": 1,
        "bytes": 10,
        "duration_ms": 1.5,
        "error": None,
        "warnings": [],
        "engine": "local",
        "replica": first["replica"],
        "query_id": None,
        "trace_id": None,
    }
    assert first["replica"] == os.environ.get(
        "MESHGATE_REPLICA", f"{socket.gethostname()}:{os.getpid()}"
    )
    assert first["time"].endswith("Z")
    assert datetime.fromisoformat(first["time"]).utcoffset().total_seconds() == 0
    denied = read_lines(path)[1]
    assert (denied["outcome"], denied["error"]) == ("denied", "may not read sales.orders")


def test_reopening_appends_and_never_rewrites_earlier_lines(tmp_path):
    path = tmp_path / "audit.jsonl"
    with AuditLog(path) as log:
        log.record(event(1))
    before = path.read_bytes()
    with AuditLog(path) as log:
        log.record(event(2))
    after = path.read_bytes()
    assert after.startswith(before) and len(after) > len(before)
    assert [e["rows"] for e in read_lines(path)] == [1, 2]


def test_concurrent_events_never_interleave(tmp_path):
    path = tmp_path / "audit.jsonl"
    log = AuditLog(path)
    threads, per_thread = 8, 100
    big = "x" * 20_000  # events larger than a pipe buffer stay whole too

    def write(t: int) -> None:
        for i in range(per_thread):
            log.record(event(t * per_thread + i, statement=f"{big} {t} {i}"))

    workers = [threading.Thread(target=write, args=(t,)) for t in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    log.close()
    events = read_lines(path)
    assert sorted(e["rows"] for e in events) == list(range(threads * per_thread))
    assert all(e["statement"].startswith(big) for e in events)


def test_the_governance_group_can_query_the_log(tmp_path):
    path = tmp_path / "audit.jsonl"
    with AuditLog(path) as log:
        for n in range(3):
            log.record(event(n, outcome="denied" if n == 2 else "ok"))
    with duckdb.connect() as con:
        counts = con.execute(
            f"SELECT outcome, count(*), sum(rows) FROM read_json('{path}') GROUP BY 1 ORDER BY 1"
        ).fetchall()
    assert counts == [("denied", 1, 2), ("ok", 2, 1)]


def test_unknown_outcomes_and_closed_logs_are_refused(tmp_path):
    with pytest.raises(ValueError, match="outcome 'maybe'"):
        event(1, outcome="maybe")
    log = AuditLog(tmp_path / "audit.jsonl")
    log.close()
    log.close()
    with pytest.raises(ValueError, match="is closed"):
        log.record(event(1))


def test_the_demo_audit_product_shows_the_engine_and_the_replica(demo_mesh, tmp_path, monkeypatch):
    import shutil

    from gateway.service import Gateway

    mesh = tmp_path / "demo"
    shutil.copytree(demo_mesh, mesh)
    (mesh / "audit" / "events.jsonl").unlink(missing_ok=True)
    monkeypatch.setenv("MESHGATE_REPLICA", "replica-7")
    gateway = Gateway.open(mesh)
    try:
        admin = gateway.principals.get("admin")
        statement = "SELECT count(*) AS n FROM reference.nation"
        assert gateway.run(statement, admin).read_all()["n"][0].as_py() == 25
        answer = gateway.run(
            "SELECT engine, replica FROM audit.events WHERE statement = ?", admin, [statement]
        ).read_all()
    finally:
        gateway.close()
    assert answer.to_pylist() == [{"engine": "local", "replica": "replica-7"}]

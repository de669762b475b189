"""Metrics, traces, lineage events and logs of real queries through a real Flight SQL server.

The demo mesh (DuckDB, Parquet, SQLite) is served with observability switched on; ADBC clients
run known queries, then the tests read what the gateway reported: the Prometheus exposition,
the spans an in-memory exporter received, the OpenLineage events the file transport wrote and
the audit trail, and check that each moved as the queries say it must.
"""

from __future__ import annotations

import logging

import pytest

from tests.support.discovery import serving
from tests.support.observed import observed_mesh, read_jsonl, samples, value
from tests.support.server import connect

JOIN = """SELECT c.c_custkey, c.c_name, n.n_name AS nation, upper(n.n_name) AS shout
          FROM sales.customer c JOIN reference.nation n ON n.n_nationkey = c.c_nationkey
          WHERE c.c_custkey <= 10 ORDER BY c.c_custkey"""
"""A federated query: customers in DuckDB, nations in SQLite; c_name is pii, masked for analysts."""


@pytest.fixture(scope="module")
def observed(demo_mesh, tmp_path_factory):
    """The demo mesh served with metrics, lineage to a file and spans to memory."""
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    mesh = observed_mesh(
        demo_mesh,
        tmp_path_factory.mktemp("observed") / "mesh",
        lineage={"transport": "file", "path": "lineage/events.jsonl"},
    )
    spans = InMemorySpanExporter()
    with serving(mesh, span_exporter=spans) as served:
        yield served.flight_uri, served.gateway, spans, served.http_url


def scrape(http_url: str) -> dict:
    """``GET /metrics`` on the HTTP port, as Prometheus scrapes it (no credentials)."""
    import httpx

    answer = httpx.get(f"{http_url}/metrics", timeout=10)
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/plain; version=0.0.4")
    return samples(answer.text)


def test_counters_and_histograms_move_with_known_queries(observed):
    uri, gateway, _, http_url = observed
    before = scrape(http_url)
    with connect(uri, "analyst") as conn, conn.cursor() as cur:
        cur.execute(JOIN)
        assert cur.fetch_arrow_table().num_rows == 10
        cur.execute("SELECT n_name FROM reference.nation WHERE n_nationkey = ?", parameters=(3,))
        assert cur.fetch_arrow_table().num_rows == 1
        cur.execute("SELECT n_name FROM reference.nation WHERE n_nationkey = ?", parameters=(4,))
        assert cur.fetch_arrow_table().num_rows == 1
    with (
        connect(uri, "guest") as conn,
        conn.cursor() as cur,
        pytest.raises(Exception, match="may not read sales.customer"),
    ):
        cur.execute("SELECT c_name FROM sales.customer")
    after = scrape(http_url)

    def moved(name, **labels):
        return value(after, name, **labels) - value(before, name, **labels)

    assert moved("meshgate_queries_total", outcome="ok", code="OK", role="analyst") == 3
    denied = {"outcome": "denied", "code": "PERMISSION_DENIED", "role": "guest"}
    assert moved("meshgate_queries_total", **denied) == 1
    assert moved("meshgate_policy_denials_total", product="sales.customer", role="guest") == 1
    ok = {"outcome": "ok", "code": "OK", "role": "analyst"}
    assert moved("meshgate_product_queries_total", product="sales.customer", **ok) == 1
    assert moved("meshgate_product_queries_total", product="reference.nation", **ok) == 3
    assert moved("meshgate_product_rows_served_total", product="reference.nation") == 12
    assert moved("meshgate_product_rows_served_total", product="sales.customer") == 10
    assert moved("meshgate_product_bytes_served_total", product="sales.customer") > 0
    # the join read both stores; the point queries only SQLite, once each
    assert moved("meshgate_store_fragments_total", store="sales_db", kind="duckdb") == 1
    assert moved("meshgate_store_fragments_total", store="reference_db", kind="sqlite") == 3
    assert moved("meshgate_store_rows_read_total", store="sales_db", kind="duckdb") == 10
    assert moved("meshgate_store_rows_read_total", store="reference_db", kind="sqlite") >= 2
    assert moved("meshgate_store_bytes_read_total", store="sales_db", kind="duckdb") > 0
    assert value(after, "meshgate_store_up", store="sales_db", kind="duckdb") == 1
    assert value(after, "meshgate_store_connections_in_use", store="sales_db", kind="duckdb") == 0
    assert value(after, "meshgate_store_pool_size", store="reference_db", kind="sqlite") == 4
    assert value(after, "meshgate_active_streams") == 0
    statuses = {
        dict(labels)["check"]
        for (name, labels), _ in after.items()
        if name == "meshgate_product_status" and dict(labels)["product"] == "sales.customer_v1"
    }
    assert "contract" in statuses  # the discovery monitor's statuses, one gauge per check
    # every answered query observed each phase once; the second point query was a cache hit
    for phase in ("plan", "first_batch", "total"):
        assert moved("meshgate_query_duration_seconds_count", phase=phase) >= 3
    assert moved("meshgate_query_duration_seconds_bucket", phase="total", le="+Inf") >= 3
    assert moved("meshgate_plan_cache_lookups_total", result="hit") >= 3
    assert moved("meshgate_plan_cache_lookups_total", result="miss") >= 2
    # no SQL in any label, and no principal label unless configured
    assert not any("SELECT" in label for _, labels in after for _, label in labels)
    assert not any(key == "principal" for _, labels in after for key, _ in labels)


def test_principal_labels_and_scrape_credentials_only_when_configured(demo_mesh, tmp_path):
    import httpx

    mesh = observed_mesh(
        demo_mesh, tmp_path / "mesh", metrics_principal_labels=True, metrics_require_auth=True
    )
    with serving(mesh) as served:
        with connect(served.flight_uri, "eu_analyst") as conn, conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM reference.region")
            cur.fetch_arrow_table()
        assert httpx.get(f"{served.http_url}/metrics").status_code == 401
        answer = httpx.get(f"{served.http_url}/metrics", auth=("guest", "guest"))
        found = samples(answer.text)
    labels = {"outcome": "ok", "code": "OK", "role": "analyst", "principal": "eu_analyst"}
    assert value(found, "meshgate_queries_total", **labels) == 1


def _tree(spans) -> dict:
    by_id = {span.context.span_id: span for span in spans}
    children: dict[int | None, list] = {}
    for span in spans:
        parent = span.parent.span_id if span.parent is not None else None
        children.setdefault(parent if parent in by_id else None, []).append(span)
    return children


def test_span_tree_of_a_federated_query(observed):
    uri, gateway, spans, _ = observed
    gateway.observe.flush()  # spans export in batches: an earlier test's must not land in ours
    spans.clear()
    with connect(uri, "analyst") as conn, conn.cursor() as cur:
        cur.execute(JOIN + " LIMIT 9")  # a statement planned for the first time
        assert cur.fetch_arrow_table().num_rows == 9
    gateway.observe.flush()
    finished = spans.get_finished_spans()
    (query,) = [s for s in finished if s.name == "meshgate.query"]
    in_trace = [s for s in finished if s.context.trace_id == query.context.trace_id]
    children = _tree(in_trace)
    names = lambda parent: sorted(s.name for s in children.get(parent.context.span_id, []))  # noqa: E731
    assert names(query) == ["meshgate.execute", "meshgate.plan", "meshgate.stream"]
    (execute,) = [s for s in in_trace if s.name == "meshgate.execute"]
    fragments = [s for s in in_trace if s.name == "meshgate.fragment"]
    assert {s.parent.span_id for s in fragments} == {execute.context.span_id}
    assert names(execute) == ["meshgate.fragment"] * 2 + ["meshgate.local_engine"]
    kinds = {s.attributes["meshgate.store"]: s.attributes["meshgate.store.kind"] for s in fragments}
    assert kinds == {"sales_db": "duckdb", "reference_db": "sqlite"}
    rows = {s.attributes["meshgate.store"]: s.attributes["meshgate.rows"] for s in fragments}
    assert 0 < rows["reference_db"] <= 25 and 9 <= rows["sales_db"] <= 10
    assert query.attributes["meshgate.rows"] == 9
    assert query.attributes["meshgate.outcome"] == "ok"
    assert query.attributes["meshgate.products"] == ("reference.nation", "sales.customer")
    # the statement was planned when the client prepared it: parse, resolve, govern, optimize
    # (a prepare answered from the plan cache leaves no span)
    prepare = max(
        (s for s in finished if s.name == "meshgate.prepare" and s.start_time < query.start_time),
        key=lambda s: s.start_time,
    )
    steps = [s.name for s in sorted(finished, key=lambda s: s.start_time)
             if s.parent and s.parent.span_id == prepare.context.span_id]  # fmt: skip
    assert steps == ["parse", "resolve", "govern", "optimize"]
    audit = read_jsonl(gateway.mesh.root / "audit" / "events.jsonl")[-1]
    assert audit["trace_id"] == format(query.context.trace_id, "032x")
    assert audit["query_id"] == query.attributes["meshgate.query_id"]


def test_an_incoming_traceparent_is_continued(observed):
    import adbc_driver_flightsql.dbapi as flightsql

    uri, gateway, spans, _ = observed
    gateway.observe.flush()  # spans export in batches: an earlier test's must not land in ours
    spans.clear()
    trace_id, parent_id = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    header = "adbc.flight.sql.rpc.call_header.traceparent"
    with (
        flightsql.connect(
            uri,
            db_kwargs={
                "username": "analyst",
                "password": "analyst",
                header: f"00-{trace_id}-{parent_id}-01",
            },
            autocommit=True,
        ) as conn,
        conn.cursor() as cur,
    ):
        cur.execute("SELECT count(*) FROM reference.region")
        cur.fetch_arrow_table()
    with connect(uri, "analyst") as conn, conn.cursor() as cur:  # and one without: a new trace
        cur.execute("SELECT count(*) FROM reference.region")
        cur.fetch_arrow_table()
    gateway.observe.flush()
    roots = [s for s in spans.get_finished_spans() if s.name == "meshgate.query"]
    assert len(roots) == 2
    continued, fresh = roots
    assert format(continued.context.trace_id, "032x") == trace_id
    assert format(continued.parent.span_id, "016x") == parent_id and continued.parent.is_remote
    assert format(fresh.context.trace_id, "032x") != trace_id and fresh.parent is None
    prepares = [s for s in spans.get_finished_spans() if s.name == "meshgate.prepare"]
    assert any(format(s.context.trace_id, "032x") == trace_id for s in prepares)


def test_json_logs_carry_the_query_ids(observed):
    import json

    from gateway.observability.logs import JsonFormatter

    uri, gateway, _, _ = observed
    records: list[str] = []

    class Capture(logging.Handler):
        def emit(self, record):
            records.append(JsonFormatter().format(record))

    handler = Capture(level=logging.DEBUG)
    logging.getLogger("gateway").addHandler(handler)
    previous = logging.getLogger("gateway").level
    logging.getLogger("gateway").setLevel(logging.DEBUG)
    try:
        with connect(uri, "analyst") as conn, conn.cursor() as cur:
            cur.execute("SELECT n_name FROM reference.nation WHERE n_nationkey = 2")
            cur.fetch_arrow_table()
    finally:
        logging.getLogger("gateway").removeHandler(handler)
        logging.getLogger("gateway").setLevel(previous)
    lines = [json.loads(r) for r in records]
    with_ids = [line for line in lines if line.get("query_id")]
    assert with_ids, lines
    audit = read_jsonl(gateway.mesh.root / "audit" / "events.jsonl")[-1]
    assert any(line["query_id"] == audit["query_id"] for line in with_ids)
    assert all(line["principal"] == "analyst" for line in with_ids)
    assert all(line["trace_id"] == audit["trace_id"] for line in with_ids
               if line["query_id"] == audit["query_id"])  # fmt: skip


def _lineage_of(gateway, run_id: str) -> list[dict]:
    gateway.observe.flush()
    events = read_jsonl(gateway.mesh.root / "lineage" / "events.jsonl")
    return [e for e in events if e["run"]["runId"] == run_id]


def test_one_start_and_one_complete_per_query_with_inputs_and_masked_lineage(observed):
    from tests.support.openlineage_schema import validate

    uri, gateway, _, _ = observed
    with connect(uri, "analyst") as conn, conn.cursor() as cur:
        cur.execute(JOIN)
        assert cur.fetch_arrow_table().num_rows == 10
    audit = read_jsonl(gateway.mesh.root / "audit" / "events.jsonl")[-1]
    start, complete = _lineage_of(gateway, audit["query_id"])
    for event in (start, complete):
        validate(event)
    assert (start["eventType"], complete["eventType"]) == ("START", "COMPLETE")
    assert start["job"] == complete["job"] and start["job"]["namespace"] == "meshgate://acme"
    assert complete["job"]["facets"]["sql"]["query"] == JOIN
    assert complete["job"]["facets"]["jobType"]["jobType"] == "QUERY"
    meshgate = complete["run"]["facets"]["meshgate"]
    assert meshgate["traceId"] == audit["trace_id"] and meshgate["roles"] == ["analyst"]
    assert "principal" not in meshgate  # not configured: the principal is not named
    inputs = {(d["namespace"], d["name"]) for d in complete["inputs"]}
    root = gateway.mesh.root.resolve()
    host = next(ns for ns, _ in inputs if ns.startswith("file://"))
    assert inputs == {
        ("meshgate://acme", "sales.customer"),
        ("meshgate://acme", "reference.nation"),
        (host, f"{root}/stores/sales.duckdb/main.customer"),
        (host, f"{root}/stores/reference.sqlite/nation"),
    }
    customer = next(d for d in complete["inputs"] if d["name"] == "sales.customer")
    assert customer["facets"]["symlinks"]["identifiers"] == [
        {"namespace": host, "name": f"{root}/stores/sales.duckdb/main.customer", "type": "TABLE"}
    ]
    assert [f["name"] for f in customer["facets"]["schema"]["fields"]][:2] == [
        "c_custkey",
        "c_name",
    ]
    (output,) = complete["outputs"]
    assert [f["name"] for f in output["facets"]["schema"]["fields"]] == [
        "c_custkey", "c_name", "nation", "shout"
    ]  # fmt: skip
    assert output["outputFacets"]["outputStatistics"]["rowCount"] == 10
    lineage = output["facets"]["columnLineage"]["fields"]

    def source(column):
        found = []
        for field in lineage[column]["inputFields"]:
            (how,) = field["transformations"]
            found.append((field["name"], field["field"], how["subtype"], how["masking"]))
        return found

    assert source("c_custkey") == [("sales.customer", "c_custkey", "IDENTITY", False)]
    assert source("c_name") == [("sales.customer", "c_name", "IDENTITY", True)]
    assert lineage["c_name"]["transformationType"] == "MASKED"
    assert source("nation") == [("reference.nation", "n_name", "IDENTITY", False)]
    assert lineage["nation"]["transformationType"] == "IDENTITY"
    assert source("shout") == [("reference.nation", "n_name", "TRANSFORMATION", False)]
    # what shapes the whole answer: the join keys, the filter, the ordering (INDIRECT)
    indirect = {
        (f["name"], f["field"], f["transformations"][0]["subtype"])
        for f in output["facets"]["columnLineage"]["dataset"]
        if f["transformations"][0]["type"] == "INDIRECT"
    }
    assert indirect == {
        ("reference.nation", "n_nationkey", "JOIN"),
        ("sales.customer", "c_nationkey", "JOIN"),
        ("sales.customer", "c_custkey", "FILTER"),
        ("sales.customer", "c_custkey", "SORT"),
    }


def test_an_admin_reads_unmasked_and_a_refusal_is_a_failed_run(observed):
    from tests.support.openlineage_schema import validate

    uri, gateway, _, _ = observed
    with connect(uri, "admin") as conn, conn.cursor() as cur:
        cur.execute(JOIN)
        cur.fetch_arrow_table()
    admin_run = read_jsonl(gateway.mesh.root / "audit" / "events.jsonl")[-1]["query_id"]
    with (
        connect(uri, "guest") as conn,
        conn.cursor() as cur,
        pytest.raises(Exception, match="may not read"),
    ):
        cur.execute("SELECT c_name FROM sales.customer")
    refused = read_jsonl(gateway.mesh.root / "audit" / "events.jsonl")[-1]
    assert refused["outcome"] == "denied" and refused["query_id"]
    (_, complete) = _lineage_of(gateway, admin_run)
    fields = complete["outputs"][0]["facets"]["columnLineage"]["fields"]
    assert "transformationType" in fields["c_name"]
    assert fields["c_name"]["transformationType"] == "IDENTITY"  # admin holds unmask:pii
    start, fail = _lineage_of(gateway, refused["query_id"])
    for event in (start, fail):
        validate(event)
    assert (start["eventType"], fail["eventType"]) == ("START", "FAIL")
    assert "may not read sales.customer" in fail["run"]["facets"]["errorMessage"]["message"]
    assert fail["run"]["facets"]["meshgate"]["outcome"] == "denied"


def test_http_transport_posts_each_event_to_the_lineage_api(demo_mesh, tmp_path):
    import http.server
    import json
    import threading

    from tests.support.openlineage_schema import validate

    received: list[tuple[str, dict]] = []

    class Backend(http.server.BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - the http.server API
            body = self.rfile.read(int(self.headers["content-length"]))
            received.append((self.path, json.loads(body)))
            self.send_response(201)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    backend = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Backend)
    threading.Thread(target=backend.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{backend.server_address[1]}"
    mesh = observed_mesh(demo_mesh, tmp_path / "mesh", lineage={"transport": "http", "url": url})
    try:
        with serving(mesh) as served:
            with connect(served.flight_uri, "analyst") as conn, conn.cursor() as cur:
                cur.execute("SELECT r_name FROM reference.region ORDER BY r_name")
                assert cur.fetch_arrow_table().num_rows == 5
            served.gateway.observe.flush()
    finally:
        backend.shutdown()
        backend.server_close()
    assert [path for path, _ in received] == ["/api/v1/lineage"] * 2
    for _, event in received:
        validate(event)
    assert [e["eventType"] for _, e in received] == ["START", "COMPLETE"]
    (output,) = received[1][1]["outputs"]
    assert output["outputFacets"]["outputStatistics"]["rowCount"] == 5


def test_meshgate_serve_with_everything_on_then_sigterm_sends_what_is_queued(demo_mesh, tmp_path):
    """The real command: JSON logs on stderr carry the query id; `GET /metrics` on its HTTP
    port counts the query; SIGTERM stops it like Ctrl-C, so the run's lineage events are in
    the file when it exits."""
    import json
    import signal
    import socket
    import subprocess
    import sys

    import httpx

    mesh = observed_mesh(
        demo_mesh,
        tmp_path / "mesh",
        lineage={"transport": "file", "path": "lineage/events.jsonl"},
        log_format="json",
    )
    ports = []
    for _ in range(2):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            ports.append(probe.getsockname()[1])
    command = [sys.executable, "-m", "gateway.cli", "--log-level", "DEBUG", "serve"]
    command += ["--mesh", str(mesh), "--port", str(ports[0]), "--http-port", str(ports[1])]
    stderr = tmp_path / "stderr.log"
    with stderr.open("w") as errors:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=errors, text=True)
    try:
        banner = process.stdout.readline()
        assert "serving mesh" in banner, stderr.read_text()[-2000:]
        with connect(f"grpc://127.0.0.1:{ports[0]}", "analyst") as conn, conn.cursor() as cur:
            cur.execute("SELECT count(*) AS n FROM reference.nation")
            assert cur.fetch_arrow_table().column("n").to_pylist() == [25]
        found = samples(httpx.get(f"http://127.0.0.1:{ports[1]}/metrics", timeout=10).text)
        ok = {"outcome": "ok", "code": "OK", "role": "analyst"}
        assert value(found, "meshgate_queries_total", **ok) == 1
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0
    finally:
        if process.poll() is None:
            process.kill()
        process.stdout.close()
    (audit,) = [e for e in read_jsonl(mesh / "audit" / "events.jsonl") if e["outcome"] == "ok"]
    events = [e for e in read_jsonl(mesh / "lineage" / "events.jsonl")]
    assert [e["eventType"] for e in events if e["run"]["runId"] == audit["query_id"]] == [
        "START",
        "COMPLETE",
    ]
    logged = [json.loads(line) for line in stderr.read_text().splitlines() if line.strip()]
    assert any(line.get("query_id") == audit["query_id"] for line in logged)

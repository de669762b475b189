"""Several gateway processes behind one address serve the same clients (issue 17).

Three real ``meshgate serve`` processes on loopback share ``MESHGATE_SECRET`` and one mesh
directory. A client whose Flight SQL calls alternate between them — handshake on one, prepare on
another, bind, describe and fetch on the others — gets the same answer as from one process;
the real ADBC driver uses a bearer token another replica minted; a policy change reaches every
replica; and the audit events all three append to the one log say which replica wrote them.
The Flight SQL RPCs are driven with ``pyarrow.flight`` so the test chooses the replica per call.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.flight as flight
import pytest

from gateway.flightsql import flight_sql_pb2 as sql_pb2
from gateway.flightsql.server import _pack, _unpack
from tests.support.mesh import grant_everything
from tests.support.stores import TcpProxy, free_port

REPLICAS = ("r1", "r2", "r3")
SECRET = "replicas-test-shared-secret-0123456789"
PRINCIPAL = "tester"


def _write_mesh(root: Path) -> None:
    """One DuckDB store with 1,000 rows of ``crm.people``; ``tester`` reads every product."""
    (root / "crm").mkdir(parents=True)
    con = duckdb.connect(str(root / "crm.duckdb"))
    con.execute(
        "CREATE TABLE people AS SELECT range AS k, 'name ' || range AS name FROM range(1000)"
    )
    con.close()
    (root / "mesh.yaml").write_text(
        "name: replicas\nstores:\n  crm_db: {kind: duckdb, path: crm.duckdb}\n"
    )
    (root / "crm" / "people.yaml").write_text(
        "product: people\nversion: 1\nowner: crm@example.org\ndescription: People.\n"
        "store: crm_db\ntable: people\ncolumns:\n"
        "  - {name: k, type: bigint, classification: public}\n"
        "  - {name: name, type: varchar, classification: public}\n"
    )
    grant_everything(root, principal=PRINCIPAL)


def _start(mesh: Path, name: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = os.environ | {
        "MESHGATE_SECRET": SECRET,
        "MESHGATE_MASK_KEY": "replicas-test-mask-key",
        "MESHGATE_REPLICA": name,
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "serve", "--mesh", str(mesh), "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    return process, f"grpc://127.0.0.1:{port}"


def _wait_serving(process: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    output = []
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line and process.poll() is not None:
            break
        output.append(line)
        if "meshgate serving" in line:
            return
    raise AssertionError("a replica did not start:\n" + "".join(output))


@pytest.fixture(scope="module")
def replicas(tmp_path_factory) -> Iterator[tuple[Path, dict[str, str]]]:
    mesh = tmp_path_factory.mktemp("replicas") / "mesh"
    _write_mesh(mesh)
    started = {name: _start(mesh, name) for name in REPLICAS}
    try:
        for process, _ in started.values():
            _wait_serving(process)
        yield mesh, {name: uri for name, (_, uri) in started.items()}
    finally:
        for process, _ in started.values():
            process.terminate()
        for process, _ in started.values():
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()


def _clients(uris: dict[str, str]) -> dict[str, flight.FlightClient]:
    return {name: flight.FlightClient(uri) for name, uri in uris.items()}


def _bearer(client: flight.FlightClient) -> flight.FlightCallOptions:
    """A basic-auth handshake with ``client``'s replica; the bearer token it answers with."""
    header = client.authenticate_basic_token(PRINCIPAL, PRINCIPAL)
    return flight.FlightCallOptions(headers=[header])


def _prepare(client, options, sql: str) -> bytes:
    request = sql_pb2.ActionCreatePreparedStatementRequest(query=sql)
    (result,) = client.do_action(flight.Action("CreatePreparedStatement", _pack(request)), options)
    return _unpack(result.body.to_pybytes()).prepared_statement_handle


def _bind(client, options, handle: bytes, values: pa.RecordBatch) -> bytes:
    command = sql_pb2.CommandPreparedStatementQuery(prepared_statement_handle=handle)
    descriptor = flight.FlightDescriptor.for_command(_pack(command))
    writer, metadata = client.do_put(descriptor, values.schema, options)
    writer.write_batch(values)
    writer.done_writing()
    answer = metadata.read()
    writer.close()
    result = sql_pb2.DoPutPreparedStatementResult()
    result.ParseFromString(answer.to_pybytes())
    return result.prepared_statement_handle


def _ticket(client, options, handle: bytes) -> flight.Ticket:
    command = sql_pb2.CommandPreparedStatementQuery(prepared_statement_handle=handle)
    info = client.get_flight_info(flight.FlightDescriptor.for_command(_pack(command)), options)
    (endpoint,) = info.endpoints
    return endpoint.ticket


def test_prepare_bind_describe_and_fetch_each_on_another_replica(replicas):
    _, uris = replicas
    clients = _clients(uris)
    options = _bearer(clients["r1"])  # a token minted by r1 is honoured by r2 and r3
    sql = "SELECT k, name FROM crm.people WHERE k BETWEEN ? AND ? ORDER BY k"
    handle = _prepare(clients["r2"], options, sql)
    values = pa.record_batch(
        {"low": pa.array([10], pa.int64()), "high": pa.array([14], pa.int64())}
    )
    bound = _bind(clients["r3"], options, handle, values)
    ticket = _ticket(clients["r1"], options, bound)
    answer = clients["r2"].do_get(ticket, options).read_all()
    assert answer.column("k").to_pylist() == [10, 11, 12, 13, 14]
    assert answer.column("name").to_pylist()[0] == "name 10"
    # the same ticket again, on the third replica
    assert clients["r3"].do_get(ticket, options).read_all().equals(answer)
    # re-bound with other values (DoPut on r1) and fetched from r3: the new values, not the old
    other = pa.record_batch(
        {"low": pa.array([998], pa.int64()), "high": pa.array([2000], pa.int64())}
    )
    rebound = _bind(clients["r1"], options, bound, other)
    again = clients["r3"].do_get(_ticket(clients["r2"], options, rebound), options).read_all()
    assert again.column("k").to_pylist() == [998, 999]


def test_a_handle_altered_on_the_way_is_refused_by_every_replica(replicas):
    _, uris = replicas
    clients = _clients(uris)
    options = _bearer(clients["r2"])
    handle = _prepare(clients["r2"], options, "SELECT count(*) AS n FROM crm.people")
    body, _, mac = handle.partition(b".")
    forged = body[:-2] + (b"AA" if body[-2:] != b"AA" else b"BB") + b"." + mac
    for name in REPLICAS:
        with pytest.raises(pa.ArrowKeyError, match="unknown or altered prepared statement"):
            _ticket(clients[name], options, forged)


def test_the_adbc_driver_uses_a_token_another_replica_minted(replicas):
    import adbc_driver_flightsql.dbapi as flightsql

    _, uris = replicas
    _, bearer = flight.FlightClient(uris["r3"]).authenticate_basic_token(PRINCIPAL, PRINCIPAL)
    with (
        flightsql.connect(
            uris["r1"],
            db_kwargs={"adbc.flight.sql.authorization_header": bearer.decode()},
            autocommit=True,
        ) as conn,
        conn.cursor() as cursor,
    ):
        cursor.execute("SELECT count(*) AS n FROM crm.people WHERE k < ?", parameters=(100,))
        assert cursor.fetchall() == [(100,)]


def test_audit_events_of_all_replicas_can_be_told_apart_and_merged(replicas):
    mesh, uris = replicas
    clients = _clients(uris)
    marker = f"m{time.time_ns()}"
    sql = f"SELECT count(*) AS {marker} FROM crm.people"
    for name in REPLICAS:
        options = _bearer(clients[name])
        clients[name].do_get(
            _ticket(clients[name], options, _prepare(clients[name], options, sql)), options
        ).read_all()
    events = [
        json.loads(line) for line in (mesh / "audit" / "events.jsonl").read_text().splitlines()
    ]
    mine = sorted((e for e in events if e["statement"] == sql), key=lambda e: e["time"])
    assert [e["replica"] for e in mine] == list(REPLICAS), "one event per replica, in time order"
    assert all(e["outcome"] == "ok" and e["rows"] == 1 for e in mine)


def test_a_policy_change_reaches_every_replica(replicas):
    mesh, uris = replicas
    clients = _clients(uris)
    options = {name: _bearer(client) for name, client in clients.items()}
    sql = "SELECT count(*) AS n FROM crm.people"

    def count(name: str) -> int:
        command = sql_pb2.CommandStatementQuery(query=sql)
        info = clients[name].get_flight_info(
            flight.FlightDescriptor.for_command(_pack(command)), options[name]
        )
        return (
            clients[name].do_get(info.endpoints[0].ticket, options[name]).read_all()[0][0].as_py()
        )

    assert [count(name) for name in REPLICAS] == [1000] * 3
    policy = mesh / "policies" / "global.yaml"
    original = policy.read_text()
    policy.write_text(
        original + "row_filters:\n  - {role: reader, products: crm.people, filter: 'k < 10'}\n"
    )
    try:
        deadline = time.monotonic() + 30
        seen = {}
        while time.monotonic() < deadline:
            seen = {name: count(name) for name in REPLICAS}
            if set(seen.values()) == {10}:
                break
            time.sleep(0.5)
        assert seen == dict.fromkeys(REPLICAS, 10), "every replica enforces the new row filter"
    finally:
        policy.write_text(original)
        deadline = time.monotonic() + 30  # the next tests need every replica back on it
        while time.monotonic() < deadline and {count(name) for name in REPLICAS} != {1000}:
            time.sleep(0.5)
    assert [count(name) for name in REPLICAS] == [1000] * 3, "every replica lifts it again"


def test_the_handle_from_before_a_bind_is_refused_elsewhere_never_answered_wrongly(replicas):
    """Values bound with DoPut travel in the handle DoPut answers with (the ADBC driver sends
    that one on); a replica given the handle from before the bind does not know them and says
    so, where answering with other values would be wrong. The replica that took the DoPut
    still answers the old handle with the values (clients that ignore DoPut's result)."""
    _, uris = replicas
    clients = _clients(uris)
    options = _bearer(clients["r1"])
    handle = _prepare(clients["r1"], options, "SELECT count(*) AS n FROM crm.people WHERE k < ?")
    _bind(clients["r2"], options, handle, pa.record_batch({"v": pa.array([5], pa.int64())}))
    with pytest.raises(pa.ArrowInvalid, match="0 value"):
        _ticket(clients["r3"], options, handle)
    ticket = _ticket(clients["r2"], options, handle)
    assert clients["r2"].do_get(ticket, options).read_all().column("n").to_pylist() == [5]


class RoundRobinBalancer(TcpProxy):
    """An L4 balancer on one loopback port: each new TCP connection goes to the next replica."""

    def __init__(self, uris: list[str]):
        self._targets = itertools.cycle([("127.0.0.1", int(uri.rsplit(":", 1)[1])) for uri in uris])
        super().__init__("127.0.0.1", 0)

    @property
    def target(self) -> tuple[str, int]:
        return next(self._targets)

    @target.setter
    def target(self, _value: tuple[str, int]) -> None:
        pass  # the cycle decides


def test_clients_of_one_address_are_served_by_every_replica_behind_it(replicas):
    """Three ADBC connections to one balancer address land on the three replicas; each logs in,
    prepares with a bound value and fetches, and the audit log shows all three serving."""
    import adbc_driver_flightsql.dbapi as flightsql

    mesh, uris = replicas
    balancer = RoundRobinBalancer([uris[name] for name in REPLICAS]).start()
    marker = f"b{time.time_ns()}"
    sql = f"SELECT count(*) AS {marker} FROM crm.people WHERE k < ?"
    try:
        for limit in (10, 20, 30):
            with (
                flightsql.connect(
                    f"grpc://127.0.0.1:{balancer.port}",
                    db_kwargs={"username": PRINCIPAL, "password": PRINCIPAL},
                    autocommit=True,
                ) as conn,
                conn.cursor() as cursor,
            ):
                cursor.execute(sql, parameters=(limit,))
                assert cursor.fetchall() == [(limit,)]
    finally:
        balancer.stop()
    lines = (mesh / "audit" / "events.jsonl").read_text().splitlines()
    served = [json.loads(line) for line in lines]
    ran = sorted((e for e in served if e["statement"] == sql), key=lambda e: e["time"])
    assert [(e["replica"], e["rows"], e["outcome"]) for e in ran] == [
        (name, 1, "ok") for name in REPLICAS
    ]

"""Connections that stay up, logins that stay secret: token renewal, revocation and login timing,
through the real ADBC Flight SQL driver against a real server thread."""

from __future__ import annotations

import gc
import os
import shutil
import statistics
import subprocess
import textwrap
import time
from pathlib import Path

import adbc_driver_manager
import pyarrow.flight as flight
import pytest
import yaml

from gateway.principals import PrincipalDirectory, hash_password
from tests.support.server import connect, running_server


def small_mesh(root: Path, *, ttl: int | None = None, principals: dict[str, str]) -> Path:
    """A one-product mesh over a CSV file; every principal (name -> password) reads it."""
    (root / "data").mkdir(parents=True)
    (root / "data" / "cities.csv").write_text("city,people\nLyon,522000\nGhent,265000\n")
    gateway = f"gateway: {{token_ttl_seconds: {ttl}}}\n" if ttl else ""
    (root / "mesh.yaml").write_text(
        f"name: t\nstores:\n  lake: {{kind: files, root: ./data}}\n{gateway}"
    )
    (root / "geo").mkdir()
    (root / "geo" / "cities.yaml").write_text(
        textwrap.dedent(
            """
            product: cities
            version: 1
            owner: geo@example.com
            description: Cities and how many people live there.
            store: lake
            table: cities.csv
            columns:
              - {name: city, type: varchar}
              - {name: people, type: bigint}
            """
        )
    )
    (root / "policies").mkdir()
    (root / "policies" / "global.yaml").write_text(
        "roles: {reader: []}\ngrants:\n  - {role: reader, products: '*'}\n"
    )
    write_principals(root, principals)
    return root


def write_principals(root: Path, principals: dict[str, str], *, rounds: int = 4) -> None:
    entries = "".join(
        f"  {name}:\n    password_hash: '{hash_password(password, rounds=rounds)}'\n"
        "    roles: [reader]\n"
        for name, password in principals.items()
    )
    (root / "principals.yaml").write_text(f"principals:\n{entries}")


def count(conn) -> int:
    with conn.cursor() as cur:
        cur.execute("SELECT count(*) AS n FROM geo.cities")
        return cur.fetchone()[0]


def refused(conn) -> str:
    """The message of the error a query on ``conn`` now fails with."""
    with pytest.raises(adbc_driver_manager.Error) as caught:
        count(conn)
    return str(caught.value)


def test_a_connection_in_use_outlives_the_token_lifetime(tmp_path):
    """With 6 s tokens, a connection querying every 1.5 s keeps working for 3 lifetimes, because
    the driver adopts the renewed token the server sends; an idle one expires and says what to
    do."""
    ttl = 6
    mesh = small_mesh(tmp_path / "mesh", ttl=ttl, principals={"ann": "ann", "bob": "bob"})
    with running_server(mesh) as (uri, _), connect(uri, "ann") as busy, connect(uri, "bob") as idle:
        assert count(busy) == 2 and count(idle) == 2
        started = time.monotonic()
        while time.monotonic() - started < 3 * ttl:
            time.sleep(1.5)
            assert count(busy) == 2
        message = refused(idle)
        assert "UNAUTHENTICATED" in message
        assert "idle longer than the mesh's token_ttl_seconds; connect again" in message
        assert count(busy) == 2  # the server keeps serving the others
        with connect(uri, "bob") as again:
            assert count(again) == 2


JDBC_JAR = Path(
    os.environ.get(
        "MESHGATE_JDBC_JAR",
        Path.home()
        / ".m2/repository/org/apache/arrow/flight-sql-jdbc-driver/18.3.0"
        / "flight-sql-jdbc-driver-18.3.0.jar",
    )
)
JDBC_PROBE = """
import java.sql.*;
public class RenewalProbe {
  public static void main(String[] a) throws Exception {
    String url = "jdbc:arrow-flight-sql://127.0.0.1:" + a[0]
        + "/?useEncryption=false&user=ann&password=ann";
    try (Connection c = DriverManager.getConnection(url)) {
      for (int i = 0; i < Integer.parseInt(a[1]); i++) {
        try (Statement s = c.createStatement();
             ResultSet r = s.executeQuery("SELECT count(*) AS n FROM geo.cities")) {
          r.next();
          System.out.println("ok " + r.getLong(1));
        } catch (SQLException e) {
          System.out.println("error " + e.getMessage().split("\\n")[0]);
        }
        Thread.sleep(2000);
      }
    }
  }
}
"""


def test_a_jdbc_connection_in_use_outlives_the_token_lifetime(tmp_path):
    """The Flight SQL JDBC driver keeps its first bearer token, but sends back the session cookie
    the server renews: with 12 s tokens a connection querying every 2 s works for 2.5 lifetimes."""
    if shutil.which("javac") is None or not JDBC_JAR.is_file():
        pytest.skip(f"needs a JDK and the Flight SQL JDBC driver at {JDBC_JAR} (MESHGATE_JDBC_JAR)")
    (tmp_path / "RenewalProbe.java").write_text(JDBC_PROBE)
    subprocess.run(
        ["javac", "-cp", str(JDBC_JAR), "RenewalProbe.java"], cwd=tmp_path, check=True, timeout=120
    )
    ttl = 12
    mesh = small_mesh(tmp_path / "mesh", ttl=ttl, principals={"ann": "ann"})
    with running_server(mesh) as (uri, _):
        port = uri.rsplit(":", 1)[1]
        result = subprocess.run(
            [
                "java",
                "--add-opens=java.base/java.nio=ALL-UNNAMED",
                "-cp",
                f"{JDBC_JAR}{os.pathsep}.",
                "RenewalProbe",
                port,
                "16",
            ],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=180,
        )
    answers = [line for line in result.stdout.splitlines() if line.startswith(("ok", "error"))]
    assert answers == ["ok 2"] * 16, result.stdout + result.stderr[-2000:]


def test_a_principal_removed_from_principals_yaml_loses_access_on_open_connections(tmp_path):
    mesh = small_mesh(tmp_path / "mesh", principals={"ann": "ann", "bob": "bob"})
    with running_server(mesh) as (uri, _), connect(uri, "ann") as ann, connect(uri, "bob") as bob:
        assert count(ann) == 2 and count(bob) == 2
        entries = yaml.safe_load((mesh / "principals.yaml").read_text())
        del entries["principals"]["bob"]
        (mesh / "principals.yaml").write_text(yaml.safe_dump(entries))
        removed = time.monotonic()
        while True:
            try:
                count(bob)
            except adbc_driver_manager.Error as exc:
                assert "UNAUTHENTICATED" in str(exc) and "'bob' no longer exists" in str(exc)
                break
            assert time.monotonic() - removed < 60, "bob still reads a minute after removal"
            time.sleep(0.2)
        assert time.monotonic() - removed < 10
        assert count(ann) == 2


def test_a_changed_password_ends_the_sessions_opened_with_the_old_one(tmp_path):
    mesh = small_mesh(tmp_path / "mesh", principals={"ann": "old"})
    with running_server(mesh) as (uri, _), connect(uri, "ann", "old") as before:
        assert count(before) == 2
        write_principals(mesh, {"ann": "new"})
        deadline = time.monotonic() + 30
        while True:
            try:
                count(before)
            except adbc_driver_manager.Error as exc:
                assert "password of 'ann' changed; connect again" in str(exc)
                break
            assert time.monotonic() < deadline
            time.sleep(0.2)
        with connect(uri, "ann", "new") as after:
            assert count(after) == 2
        gc.collect()  # the refused cursor, held by its traceback, closes before its connection


def _seconds(check, clock) -> float:
    started = clock()
    check()
    return clock() - started


def _timing_ratio(unknown, wrong, *, clock=time.perf_counter, rounds: int = 15) -> float:
    """Median time refusing an unknown name over that refusing a wrong password, the two taking
    turns call by call so that load on the machine hits both alike."""
    unknown_times, wrong_times = [], []
    for _ in range(rounds):
        unknown_times.append(_seconds(unknown, clock))
        wrong_times.append(_seconds(wrong, clock))
    return statistics.median(unknown_times) / statistics.median(wrong_times)


@pytest.mark.parametrize("rounds", [8, 10])
def test_an_unknown_name_is_refused_as_slowly_as_a_wrong_password(tmp_path, rounds):
    """The dummy check an unknown name gets has the cost of the directory's real hashes (the
    demo's are cost 10; the old fixed cost-12 dummy took 4x as long there)."""
    write_principals(tmp_path, {"ann": "secret", "bob": "secret"}, rounds=rounds)
    directory = PrincipalDirectory.load(tmp_path)
    assert directory.authenticate("ann", "secret") is not None
    ratio = _timing_ratio(
        lambda: directory.authenticate("nobody", "secret"),
        lambda: directory.authenticate("ann", "wrong"),
        clock=time.thread_time,  # bcrypt's cost is CPU, on this thread: load adds no waits to it
    )
    assert 0.6 < ratio < 1.6, f"unknown / wrong-password time = {ratio:.2f}"


def test_login_timing_through_the_flight_handshake(tmp_path):
    """The same through a real Flight client's Basic handshake."""
    mesh = small_mesh(tmp_path / "mesh", principals={"ann": "secret"})
    write_principals(mesh, {"ann": "secret", "bob": "secret"}, rounds=10)
    with running_server(mesh) as (uri, _):
        client = flight.FlightClient(uri)

        def login(name: str, password: str) -> None:
            with pytest.raises(flight.FlightUnauthenticatedError):
                client.authenticate_basic_token(name, password)

        ratio = _timing_ratio(lambda: login("nobody", "x"), lambda: login("ann", "x"))
        client.close()
    assert 0.6 < ratio < 1.6, f"unknown / wrong-password time = {ratio:.2f}"

"""Graceful shutdown and the health check, against the real ``meshgate serve`` process.

SIGTERM while a query streams: that query finishes, new ones are refused (UNAVAILABLE, "shutting
down"), the health check turns 503, and the process exits once the stream is done.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import adbc_driver_manager
import pyarrow.flight as flight
import pytest

from tests.support.server import connect, running_server
from tests.support.slow_mesh import SLOW_SECONDS, slow_mesh
from tests.support.stores import free_port


def _health(port: int) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def _wait_for(check, what: str, seconds: float = 60):
    deadline = time.monotonic() + seconds
    while True:
        try:
            result = check()
            if result:
                return result
        except (OSError, adbc_driver_manager.Error):
            pass
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def _count(uri: str, sql: str) -> int:
    with connect(uri, "alice") as conn, conn.cursor() as cur:
        cur.execute(sql)
        return len(cur.fetchall())


def test_sigterm_drains_running_streams_and_refuses_new_ones(tmp_path):
    root = slow_mesh(tmp_path / "m")
    port, health_port = free_port(), free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gateway.cli",
            "serve",
            "--mesh",
            str(root),
            "--port",
            str(port),
            "--health-port",
            str(health_port),
            "--http-port",
            "0",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    uri = f"grpc://127.0.0.1:{port}"
    try:
        _wait_for(lambda: _count(uri, "SELECT * FROM lake.events") == 100, "the server")
        assert _health(health_port) == (200, {"status": "serving", "running_queries": 0})
        answers: list = []
        slow = threading.Thread(
            target=lambda: answers.append(_count(uri, "SELECT * FROM crm.slow")), daemon=True
        )
        slow.start()
        _wait_for(lambda: _health(health_port)[1]["running_queries"] == 1, "the slow query")
        process.send_signal(signal.SIGTERM)
        _wait_for(lambda: _health(health_port)[0] == 503, "draining")
        with pytest.raises(adbc_driver_manager.Error) as refused:
            _count(uri, "SELECT * FROM lake.events")
        assert "(Unavailable;" in str(refused.value) and "shutting down" in str(refused.value)
        slow.join(timeout=SLOW_SECONDS * 10)
        assert answers == [1], "the stream running at SIGTERM finished"
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_the_health_action_answers_flight_clients(tmp_path):
    root = slow_mesh(tmp_path / "m")
    with running_server(root) as (uri, _):
        client = flight.connect(uri)
        options = flight.FlightCallOptions(
            headers=[client.authenticate_basic_token("alice", "alice")]
        )
        (result,) = client.do_action(flight.Action("HealthCheck", b""), options)
        assert json.loads(result.body.to_pybytes()) == {
            "status": "serving",
            "running_queries": 0,
        }

"""``meshgate serve``/``demo`` start the discovery port beside Flight SQL, as a user runs them."""

from __future__ import annotations

import shutil
import socket
import subprocess

import httpx

from tests.support.cli import MESHGATE, free_port, wait_for_output


def test_demo_serves_the_discovery_port_and_prints_its_url(demo_mesh, tmp_path):
    mesh = tmp_path / "demo"
    shutil.copytree(demo_mesh, mesh)
    port, http_port = free_port(), free_port()
    process = subprocess.Popen(
        [*MESHGATE, "demo", "--dir", str(mesh), "--port", str(port), "--http-port", str(http_port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        banner = wait_for_output(process, "Press Ctrl-C")
        assert f"http://localhost:{http_port}" in banner
        response = httpx.get(
            f"http://127.0.0.1:{http_port}/api/products", auth=("guest", "guest"), timeout=30
        )
        assert [p["address"] for p in response.json()["products"] if p["readable"]] == [
            "reference.nation",
            "reference.region",
        ]
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_serve_with_the_discovery_port_off_and_a_busy_port_refused(demo_mesh, tmp_path):
    mesh = tmp_path / "demo"
    shutil.copytree(demo_mesh, mesh)
    port = free_port()
    process = subprocess.Popen(
        [*MESHGATE, "serve", "--mesh", str(mesh), "--port", str(port), "--http-port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        line = wait_for_output(process, "meshgate serving")
        assert "discovery at" not in line
    finally:
        process.terminate()
        process.wait(timeout=30)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        taken = busy.getsockname()[1]
        result = subprocess.run(
            [
                *MESHGATE,
                "serve",
                "--mesh",
                str(mesh),
                "--port",
                str(free_port()),
                "--http-port",
                str(taken),
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert result.returncode != 0
    assert "--http-port" in result.stderr and str(taken) in result.stderr


def _products(mesh, *args) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*MESHGATE, "products", "--mesh", str(mesh), *args],
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_products_lists_what_each_principal_may_read_with_versions_and_statuses(demo_mesh):
    guest = _products(demo_mesh, "--principal", "guest")
    assert guest.returncode == 0, guest.stderr
    lines = guest.stdout.splitlines()
    assert lines[0].split() == ["product", "versions", "owner", "SLOs", "contract", "deprecation"]
    readable = [line.split()[0] for line in lines[1:] if "(no access)" not in line]
    assert readable == ["reference.nation", "reference.region"]
    analyst = _products(demo_mesh, "--principal", "analyst")
    orders = next(line for line in analyst.stdout.splitlines() if line.startswith("sales.orders"))
    assert "v1 (deprecated), v2" in orders and "sales-data@acme.example" in orders
    assert "freshness broken" in orders  # TPC-H's last order is from 1998
    assert "-> sales.orders_v2" in orders and "sunset" in orders
    assert "audit.events" not in analyst.stdout
    everyone = _products(demo_mesh)
    assert "audit.events" in everyone.stdout
    unknown = _products(demo_mesh, "--principal", "nobody")
    assert unknown.returncode != 0 and "no principal 'nobody'" in unknown.stderr

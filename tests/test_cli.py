"""The command line as a user runs it: real processes, real ports."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.support.cli import MESHGATE, free_port, pasted_snippet, run_pasted, wait_for_output


def test_demo_prints_a_snippet_that_runs_verbatim_in_a_shell(demo_mesh, tmp_path):
    """The banner's snippet, pasted into a plain shell whose PATH lacks the venv (no bare
    ``python`` there), in another directory, prints the answer."""
    mesh = tmp_path / "demo"
    shutil.copytree(demo_mesh, mesh)
    port = free_port()
    process = subprocess.Popen(
        [*MESHGATE, "demo", "--dir", str(mesh), "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        banner = wait_for_output(process, "Press Ctrl-C")
        assert f"grpc://localhost:{port}" in banner
        assert "analyst/analyst" in banner
        snippet = pasted_snippet(banner)
        assert not snippet.startswith((" ", "python ")), snippet
        result = run_pasted(snippet, tmp_path / "elsewhere")
        assert result.returncode == 0, result.stderr
        assert "GERMANY" in result.stdout and "revenue" in result.stdout
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_serve_refuses_a_broken_mesh_with_every_problem(demo_mesh, tmp_path):
    mesh = tmp_path / "broken"
    shutil.copytree(demo_mesh, mesh)
    orders = mesh / "sales" / "customer.yaml"
    orders.write_text(orders.read_text().replace("store: sales_db", "store: sales_dbb"))
    (mesh / "reference" / "region.yaml").write_text("product: region\nversion: zero\n")
    result = subprocess.run(
        [*MESHGATE, "serve", "--mesh", str(mesh), "--port", str(free_port())],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "customer.yaml: field `store`: unknown store 'sales_dbb'; did you mean 'sales_db'?" in (
        result.stderr
    )
    assert "region.yaml: field `version`" in result.stderr
    assert "Traceback" not in result.stderr


def test_explain_shows_the_sql_each_store_receives(demo_mesh):
    result = subprocess.run(
        [
            *MESHGATE,
            "explain",
            "--mesh",
            str(demo_mesh),
            "--principal",
            "admin",
            "SELECT count(*) FROM supply.part p "
            "JOIN supply.partsupp ps ON ps.ps_partkey = p.p_partkey",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "fragment the answer runs on store 'supply_db'" in result.stdout
    assert "JOIN" in result.stdout


@pytest.mark.parametrize("password", ["s3cret", "with:colon and spaces"])
def test_hash_password_output_authenticates(password, tmp_path):
    result = subprocess.run(
        [*MESHGATE, "hash-password", "--password", password], capture_output=True, text=True
    )
    assert result.returncode == 0
    from gateway.principals import PrincipalDirectory

    (tmp_path / "principals.yaml").write_text(
        f'principals:\n  someone:\n    password_hash: "{result.stdout.strip()}"\n'
    )
    directory = PrincipalDirectory.load(Path(tmp_path))
    assert directory.authenticate("someone", password) is not None
    assert directory.authenticate("someone", password + "x") is None


def test_contracts_on_demand_report_drift_per_product(demo_mesh, tmp_path):
    mesh = tmp_path / "drifted"
    shutil.copytree(demo_mesh, mesh)
    result = subprocess.run(
        [*MESHGATE, "contracts", "--mesh", str(mesh)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "sales.customer_v1" in result.stdout and "DRIFT" not in result.stdout
    import duckdb

    con = duckdb.connect(str(mesh / "stores" / "sales.duckdb"))
    con.execute("ALTER TABLE main.customer DROP COLUMN c_comment")
    con.close()
    result = subprocess.run(
        [*MESHGATE, "contracts", "--mesh", str(mesh)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 1
    drifted = [line for line in result.stdout.splitlines() if "DRIFT" in line]
    assert len(drifted) == 1 and drifted[0].startswith("sales.customer_v1")
    assert "column 'c_comment' is not in the store" in result.stdout

"""``meshgate init`` and the README's "Your own mesh" walk-through, run as a user runs them:
the README's commands literally (only the port moved off 8815, which another server may hold),
in a fresh directory, and the lines init prints pasted into a plain shell."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.scaffold import write_scaffold
from gateway.validate import validate_mesh
from tests.support.cli import pasted_snippet, run_pasted, wait_for_output
from tests.support.stores import free_port

README = Path(__file__).resolve().parent.parent / "README.md"


def readme_block(heading: str) -> list[str]:
    """The commands of the first ``bash`` block after ``heading``, comments dropped."""
    text = README.read_text()
    section = text[text.index(heading) :]
    block = re.search(r"```bash\n(.*?)```", section, re.DOTALL).group(1)
    return [line.split("  #")[0].strip() for line in block.splitlines() if line.strip()]


def test_the_scaffold_validates_and_refuses_to_overwrite(tmp_path):
    mesh = tmp_path / "my-mesh"
    password = write_scaffold(mesh, user="admin", password=None)
    assert len(password) >= 12
    validation = validate_mesh(mesh)
    assert validation.ok, validation.report()
    assert [c.address for c in validation.contracts] == ["geo.cities_v1"]
    assert oct((mesh / "principals.yaml").stat().st_mode & 0o777) == "0o600"
    with pytest.raises(Exception, match="already exists and is not empty"):
        write_scaffold(mesh, user="admin", password="x")


def test_the_readme_walk_through_serves_a_new_mesh(tmp_path):
    commands = readme_block("### Your own mesh")
    assert [c.split()[1] for c in commands] == ["init", "validate", "serve"]
    (tmp_path / ".venv").symlink_to(sys.prefix)  # the checkout's venv, as in the quick start
    env = {**os.environ, "MESHGATE_MASK_KEY": "walk-through-key-0123456789"}
    init = subprocess.run(
        commands[0], shell=True, cwd=tmp_path, capture_output=True, text=True, timeout=120, env=env
    )
    assert init.returncode == 0, init.stderr
    assert "principal   admin / " in init.stdout
    validate = subprocess.run(
        commands[1], shell=True, cwd=tmp_path, capture_output=True, text=True, timeout=120, env=env
    )
    assert validate.returncode == 0, validate.stdout + validate.stderr
    port = free_port()
    server = subprocess.Popen(
        f"exec {commands[2]} --port {port}",
        shell=True,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    try:
        wait_for_output(server, "meshgate serving")
        snippet = pasted_snippet(init.stdout).replace("localhost:8815", f"localhost:{port}")
        result = run_pasted(snippet, tmp_path / "another-shell")
        assert result.returncode == 0, result.stderr
        assert "Lyon" in result.stdout and "mayor@lyon.example" in result.stdout  # owner: unmasked
    finally:
        server.terminate()
        server.wait(timeout=30)

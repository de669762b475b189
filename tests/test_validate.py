"""``meshgate validate`` finds in one run everything ``serve`` refuses, and the command line's
messages say what to do: real processes, real files, a real (stopped) PostgreSQL address."""

from __future__ import annotations

import os
import socket
import subprocess
import textwrap
from pathlib import Path

import pytest

from gateway.principals import hash_password
from gateway.validate import validate_mesh
from tests.support.cli import MESHGATE
from tests.support.stores import free_port


def run(*args: str, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if k != "MESHGATE_MASK_KEY"}
    return subprocess.run(
        [*MESHGATE, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**environment, **(env or {})},
    )


def descriptor(name: str, *, store: str = "lake", table: str = "cities.csv", columns: str) -> str:
    return textwrap.dedent(
        f"""\
        product: {name}
        version: 1
        owner: geo@example.com
        description: Cities and how many people live there.
        store: {store}
        table: {table}
        columns:
        """
    ) + textwrap.indent(textwrap.dedent(columns), "  ")


def good_mesh(root: Path) -> Path:
    """A mesh ``serve`` accepts: one CSV product, a grant, a principal."""
    (root / "data").mkdir(parents=True)
    (root / "data" / "cities.csv").write_text("city,people\nLyon,522000\nGhent,265000\n")
    (root / "mesh.yaml").write_text("name: t\nstores:\n  lake: {kind: files, root: ./data}\n")
    (root / "geo").mkdir()
    (root / "geo" / "cities.yaml").write_text(
        descriptor(
            "cities",
            columns="""\
            - {name: city, type: varchar}
            - {name: people, type: bigint}
            """,
        )
    )
    (root / "policies").mkdir()
    (root / "policies" / "global.yaml").write_text(
        "roles: {reader: []}\ngrants:\n  - {role: reader, products: '*'}\n"
    )
    (root / "principals.yaml").write_text(
        f"principals:\n  ann:\n    password_hash: '{hash_password('ann', rounds=4)}'\n"
        "    roles: [reader]\n"
    )
    return root


def broken_mesh(root: Path) -> Path:
    """Five problems in five files, of five kinds."""
    good_mesh(root)
    geo = root / "geo"
    (geo / "towns.yaml").write_text(
        descriptor("towns", store="lakee", columns="- {name: city, type: varchar}\n")
    )
    (geo / "villages.yaml").write_text(
        descriptor(
            "villages",
            columns="""\
            - {name: city, type: varchar}
            - {name: mayor, type: varchar}
            """,
        )
    )
    (geo / "hamlets.yaml").write_text(descriptor("hamlets", columns="- {name: city, type: str}\n"))
    (root / "policies" / "geo.yaml").write_text(
        "grants:\n  - {role: reader, products: geo.citties}\n"
    )
    (root / "principals.yaml").write_text("principals: {}\n")
    return root


EXPECTED = [
    "towns.yaml: field `store`: unknown store 'lakee'; did you mean 'lake'?",
    "villages.yaml: field `columns`: column 'mayor' is not in the store (it has: city, people)",
    "hamlets.yaml: field `columns.0.type`: unknown type 'str'; use one of boolean",
    "string = varchar",
    "policies/geo.yaml:2",
    "'geo.citties' matches no product",
    "principals.yaml: lists no principals, so nobody could log in",
]


def test_validate_reports_every_problem_of_every_kind_in_one_run(tmp_path):
    mesh = broken_mesh(tmp_path / "mesh")
    result = run("validate", "--mesh", str(mesh))
    assert result.returncode == 1, result.stdout + result.stderr
    for expected in EXPECTED:
        assert expected in result.stderr, expected
    assert "has 5 problem(s)" in result.stderr
    assert "Traceback" not in result.stderr


def test_serve_refuses_the_same_mesh_with_the_same_problems(tmp_path):
    mesh = broken_mesh(tmp_path / "mesh")
    result = run("serve", "--mesh", str(mesh), "--port", str(free_port()))
    assert result.returncode == 2
    for expected in EXPECTED:
        assert expected in result.stderr, expected
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    "break_it",
    [
        lambda root: (root / "principals.yaml").unlink(),
        lambda root: (root / "principals.yaml").write_text(""),
        lambda root: (root / "policies" / "global.yaml").write_text("grants: [{role: x}]\n"),
        lambda root: (root / "data" / "cities.csv").write_text("town,people\nLyon,1\n"),
    ],
    ids=["no principals.yaml", "empty principals.yaml", "bad policy", "drifted contract"],
)
def test_contracts_and_validate_fail_whenever_serve_refuses(tmp_path, break_it):
    mesh = good_mesh(tmp_path / "mesh")
    assert run("validate", "--mesh", str(mesh)).returncode == 0
    assert run("contracts", "--mesh", str(mesh)).returncode == 0
    break_it(mesh)
    assert not validate_mesh(mesh, unreachable_is_problem=False).ok  # what serve checks
    validated = run("validate", "--mesh", str(mesh))
    assert validated.returncode == 1
    assert run("contracts", "--mesh", str(mesh)).returncode == 1
    served = run("serve", "--mesh", str(mesh), "--port", str(free_port()))
    assert served.returncode == 2
    first_problem = validated.stderr.splitlines()[1]
    assert first_problem in served.stderr


def test_a_store_nobody_answers_on_is_a_problem_for_validate_and_a_warning_for_serve(tmp_path):
    mesh = good_mesh(tmp_path / "mesh")
    port = free_port()  # nothing listens there: a PostgreSQL that is down
    with (mesh / "mesh.yaml").open("a") as mesh_yaml:
        mesh_yaml.write(
            f"  crm_pg: {{kind: postgres, host: 127.0.0.1, port: {port}, user: postgres, "
            "database: test, connect_timeout_seconds: 2}\n"
        )
    (mesh / "crm").mkdir()
    (mesh / "crm" / "people.yaml").write_text(
        descriptor(
            "people", store="crm_pg", table="public.people", columns="- {name: k, type: integer}\n"
        )
    )
    validation = validate_mesh(mesh)
    assert len(validation.problems) == 1
    assert "field `stores.crm_pg`" in validation.problems[0]
    assert "every query over it fails with UNAVAILABLE" in validation.problems[0]
    relaxed = validate_mesh(mesh, unreachable_is_problem=False)
    assert relaxed.ok and relaxed.warnings == validation.problems


def test_a_valid_mesh_validates_quietly(tmp_path):
    mesh = good_mesh(tmp_path / "mesh")
    result = run("validate", "--mesh", str(mesh))
    assert result.returncode == 0, result.stderr
    assert "ok (1 product version(s), 1 contract(s) checked" in result.stdout
    assert "MESHGATE_MASK_KEY" not in result.stderr  # the warning belongs to serve only
    explained = run("explain", "--mesh", str(mesh), "--principal", "ann", "SELECT 1 AS x")
    assert explained.returncode == 0, explained.stderr
    assert "MESHGATE_MASK_KEY" not in explained.stderr


def test_a_port_in_use_is_one_line_naming_the_port_and_the_flag(tmp_path):
    mesh = good_mesh(tmp_path / "mesh")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run("serve", "--mesh", str(mesh), "--port", str(port))
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if "WARNING" not in line]
    assert errors == [
        f"meshgate: port {port} on 127.0.0.1 is already in use (another meshgate?); stop it or "
        "choose another port with --port"
    ]


def test_version_and_help_on_every_option():
    version = run("--version")
    assert version.returncode == 0 and version.stdout.startswith("meshgate 0.")
    from gateway.cli import build_parser

    parser = build_parser()
    undocumented = []
    parsers = [("meshgate", parser)]
    while parsers:
        name, current = parsers.pop()
        for action in current._actions:
            if action.choices and isinstance(action.choices, dict):
                parsers += [(f"{name} {n}", p) for n, p in action.choices.items()]
            elif not action.help:
                undocumented.append(f"{name} {'/'.join(action.option_strings) or action.dest}")
    assert undocumented == []


def test_hash_password_asks_twice_and_refuses_a_mismatch(tmp_path):
    """Through a real terminal, since getpass reads /dev/tty."""
    import fcntl
    import pty
    import select
    import termios
    import time

    def ask(first: str, second: str) -> tuple[int, str]:
        controller, terminal = pty.openpty()
        process = subprocess.Popen(
            [*MESHGATE, "hash-password"],
            stdin=terminal,
            stdout=terminal,
            stderr=terminal,
            start_new_session=True,
            preexec_fn=lambda: fcntl.ioctl(0, termios.TIOCSCTTY, 0),
        )
        os.close(terminal)
        output = b""
        answers = [first, second]
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            ready, _, _ = select.select([controller], [], [], 0.5)
            if not ready:
                if process.poll() is not None:
                    break
                continue
            try:
                chunk = os.read(controller, 1024)
            except OSError:  # EIO: the terminal's other end closed
                break
            output += chunk
            prompts = output.count(b"password: ") + output.count(b"again: ")
            if answers and prompts > 2 - len(answers):
                time.sleep(0.5)  # getpass turns echo off and flushes input after prompting
                os.write(controller, answers.pop(0).encode() + b"\n")
        process.wait(timeout=60)
        os.close(controller)
        return process.returncode, output.decode(errors="replace")

    code, output = ask("s3cret", "s3cret")
    assert code == 0, output
    assert "the same password again:" in output and "$2b$12$" in output
    code, output = ask("s3cret", "s3cre7")
    assert code == 2
    assert "the two passwords differ" in output and "$2b$" not in output

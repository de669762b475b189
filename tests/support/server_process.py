"""A real meshgate server in a process of its own, for tests that must survive its crash.

A test that drives the gateway towards a crash cannot run it in the test's own process: a
segfault there would end the whole suite. ``served`` runs ``meshgate serve`` as a child with
Python's fault handler on and keeps its output in a file, so a test can assert that the process
is still up and that it never printed a fatal error.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.support.stores import free_port

FATAL_MARKERS = ("Fatal Python error", "pure virtual method called", "Segmentation fault")


@dataclass
class ServerProcess:
    uri: str
    process: subprocess.Popen
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def alive(self) -> bool:
        return self.process.poll() is None

    def fatal_errors(self) -> list[str]:
        """Lines of the server's output that report a crash (fault handler, C++ runtime)."""
        return [
            line for line in self.output().splitlines() if any(m in line for m in FATAL_MARKERS)
        ]


@contextlib.contextmanager
def served(mesh_dir: Path, *, log_dir: Path, timeout: float = 120) -> Iterator[ServerProcess]:
    """``meshgate serve --mesh mesh_dir`` on a free port until the block ends."""
    port = free_port()
    log = log_dir / f"meshgate-{port}.log"
    environment = {**os.environ, "PYTHONFAULTHANDLER": "1"}
    with log.open("w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "gateway.cli", "serve", "--mesh", str(mesh_dir)]
            + ["--host", "127.0.0.1", "--port", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=environment,
            cwd=Path(__file__).resolve().parents[2],
        )
    server = ServerProcess(f"grpc://127.0.0.1:{port}", process, log)
    try:
        deadline = time.monotonic() + timeout
        while "meshgate serving" not in server.output():
            if not server.alive() or time.monotonic() > deadline:
                raise AssertionError(f"the server did not start:\n{server.output()}")
            time.sleep(0.1)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=30)


def cpu_seconds(pid: int) -> float:
    """CPU time (user and system) the process ``pid`` has used so far, from /proc."""
    import os

    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def busy_cores(pid: int, seconds: float = 1.0) -> float:
    """How many cores the process ``pid`` kept busy over the next ``seconds``."""
    import time

    before = cpu_seconds(pid)
    time.sleep(seconds)
    return (cpu_seconds(pid) - before) / seconds

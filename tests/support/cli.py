"""The command line as tests run it: a ``meshgate`` process, its output, a pasted snippet.

Shared by the tests that start ``meshgate demo`` / ``serve`` / ``init`` as a user would and wait for
what it prints, or paste the snippet it prints into a plain shell.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from tests.support.stores import free_port

__all__ = ["MESHGATE", "free_port", "pasted_snippet", "run_pasted", "wait_for_output"]

MESHGATE = [sys.executable, "-m", "gateway.cli"]
"""The ``meshgate`` command, run by this interpreter (the venv's) whatever PATH says."""


def wait_for_output(process: subprocess.Popen, marker: str, timeout: float = 120) -> str:
    """Everything the process printed until ``marker`` appeared; kills it and fails otherwise."""
    output = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            if process.poll() is not None:
                break
            continue
        output.append(line)
        if marker in line:
            return "".join(output)
    process.kill()
    raise AssertionError(f"{marker!r} never appeared; the process printed:\n{''.join(output)}")


def pasted_snippet(banner: str) -> str:
    """The lines of the banner a user selects and pastes: from the command to the heredoc's end."""
    lines = banner.splitlines()
    start = next(i for i, line in enumerate(lines) if line.endswith("- <<'PY'"))
    end = lines.index("PY", start)
    return "\n".join(lines[start : end + 1]) + "\n"


def run_pasted(snippet: str, directory: Path) -> subprocess.CompletedProcess:
    """``snippet`` pasted into a plain shell in ``directory``, whose PATH lacks the venv (no bare
    ``python`` there), as a user in another terminal would run it."""
    directory.mkdir()
    return subprocess.run(
        ["bash", "--noprofile", "--norc"],
        input=snippet,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=directory,
        env={"PATH": "/usr/bin:/bin", "HOME": str(directory), "LANG": "C.UTF-8"},
    )

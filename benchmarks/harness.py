"""What every benchmark needs: the gateway in its own process, its memory, clients and medians.

The gateway runs as ``python -m gateway.cli serve`` in a child process, as in production: its
resident memory can be read from ``/proc`` and the benchmark's clients do not share its GIL.
"""

from __future__ import annotations

import os
import re
import shutil
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "benchmarks" / "data"
RESULTS = ROOT / "benchmarks" / "results"
MASK_KEY = "benchmark-mask-key-0123456789abcdef"
"""A fixed hash-mask key, so the gateway starts without warning (any value of 16+ characters)."""


def progress(message: str) -> None:
    print(f"  {message}", file=sys.stderr, flush=True)


# --- statistics -------------------------------------------------------------------------------


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100), interpolated between the nearest ranks."""
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    position = (len(ordered) - 1) * q / 100
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


# --- memory of a process ----------------------------------------------------------------------


def status_kb(pid: int | str, field: str) -> int:
    """A ``kB`` field of ``/proc/<pid>/status`` (VmRSS, VmHWM, ...)."""
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith(f"{field}:"):
                return int(line.split()[1])
    raise KeyError(f"{field} is not in /proc/{pid}/status")


def cpu_seconds(pid: int | str) -> float:
    """User plus system CPU time the process has used, in seconds (all its threads)."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
        fields = stat.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_busy_seconds() -> float:
    """CPU seconds every core of the machine has spent on anything but idling (/proc/stat)."""
    with open("/proc/stat", encoding="ascii") as stat:
        fields = [int(v) for v in stat.readline().split()[1:]]
    idle, iowait = fields[3], fields[4]
    return (sum(fields[:8]) - idle - iowait) / os.sysconf("SC_CLK_TCK")


def reset_peak(pid: int | str) -> bool:
    """Restart the process's peak RSS (VmHWM) at its current RSS; False if the kernel refuses."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w", encoding="ascii") as clear:
            clear.write("5")
    except OSError:
        return False
    return True


class RssSampler:
    """Samples a process's VmRSS every ``interval`` seconds in a thread; peak and timeline."""

    def __init__(self, pid: int | str, *, interval: float = 0.02):
        self.pid = pid
        self.interval = interval
        self.samples: list[tuple[float, int]] = []  # (seconds since start, kB)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="rss-sampler")

    def _run(self) -> None:
        started = time.perf_counter()
        while not self._stop.is_set():
            self.samples.append((time.perf_counter() - started, status_kb(self.pid, "VmRSS")))
            self._stop.wait(self.interval)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def peak_kb(self) -> int:
        return max(kb for _, kb in self.samples)


class ThreadStarts:
    """How many threads a process starts in a window, found by listing /proc/<pid>/task every
    ``interval`` seconds: a lower bound (a thread that starts and ends between two looks is
    missed). gRPC's synchronous server starts and ends threads as calls come and go."""

    def __init__(self, pid: int | str, *, interval: float = 0.002):
        self.pid, self.interval = pid, interval
        self.started = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="thread-starts")

    def _tasks(self) -> set[str]:
        try:
            return set(os.listdir(f"/proc/{self.pid}/task"))
        except OSError:
            return set()

    def _run(self) -> None:
        seen = self._tasks()
        while not self._stop.wait(self.interval):
            now = self._tasks()
            self.started += len(now - seen)
            seen |= now

    def __enter__(self) -> ThreadStarts:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()


class GilSampler:
    """How much of a window some thread of a process holds the GIL, sampled by py-spy.

    py-spy comes with the bench extra; without it, or when the kernel
    refuses to let it attach, ``fraction`` is None.
    """

    RATE = 100  # samples per second

    def __init__(self, pid: int, seconds: float):
        self.pid, self.seconds = pid, seconds
        self.fraction: float | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._output = RESULTS / f".gil-{pid}.txt"

    def __enter__(self) -> GilSampler:
        found = shutil.which("py-spy") or shutil.which(
            "py-spy", path=str(Path(sys.executable).parent)
        )
        if found:
            self._output.parent.mkdir(parents=True, exist_ok=True)
            self._process = subprocess.Popen(
                [found, "record", "--pid", str(self.pid), "--gil", "--format", "raw",
                 "--rate", str(self.RATE), "--duration", str(max(1, int(self.seconds))),
                 "--output", str(self._output)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._process is None:
            return
        try:
            self._process.wait(timeout=self.seconds + 30)
            lines = self._output.read_text(encoding="utf-8").splitlines()
        except (subprocess.TimeoutExpired, OSError):
            self._process.kill()
            return
        finally:
            self._output.unlink(missing_ok=True)
        held = sum(int(line.rpartition(" ")[2]) for line in lines if line.strip())
        self.fraction = held / (self.RATE * max(1, int(self.seconds)))


# --- the gateway process ----------------------------------------------------------------------


class GatewayProcess:
    """``meshgate serve --mesh DIR`` on a free loopback port, stopped on exit.

    Its stderr goes to ``log_path`` so a failing benchmark can be diagnosed.
    """

    def __init__(self, mesh_dir: Path, *, log_path: Path, startup_seconds: float = 120):
        self.mesh_dir = mesh_dir
        self.log_path = log_path
        self.startup_seconds = startup_seconds
        self.process: subprocess.Popen[str] | None = None
        self.uri = ""

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def __enter__(self) -> GatewayProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("w", encoding="utf-8")
        command = [
            sys.executable, "-m", "gateway.cli", "--log-level", "WARNING",
            "serve", "--mesh", str(self.mesh_dir), "--port", "0",
        ]  # fmt: skip
        path = [str(ROOT), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
        env = {**os.environ, "MESHGATE_MASK_KEY": MASK_KEY, "PYTHONPATH": os.pathsep.join(path)}
        self.process = subprocess.Popen(
            command, cwd=ROOT, stdout=subprocess.PIPE, stderr=log, text=True, env=env
        )
        log.close()
        deadline = time.monotonic() + self.startup_seconds
        while time.monotonic() < deadline:
            line = self.process.stdout.readline()
            if "serving mesh" in line:  # "... at grpc://host:port[; discovery at http://...]"
                self.uri = re.search(r"grpc://[^\s;]+", line).group(0)
                return self
            if not line and self.process.poll() is not None:
                break
        self.__exit__()
        raise RuntimeError(
            f"the gateway did not start; its log {self.log_path} says:\n"
            f"{self.log_path.read_text(encoding='utf-8')[-3000:]}"
        )

    def __exit__(self, *exc_info: object) -> None:
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process.stdout.close()
        self.process = None

    def rss_kb(self) -> int:
        return status_kb(self.pid, "VmRSS")


def connect(uri: str, user: str = "analyst"):
    """An ADBC Flight SQL DB-API connection as a demo principal (password = user name)."""
    import adbc_driver_flightsql.dbapi as flightsql

    return flightsql.connect(uri, db_kwargs={"username": user, "password": user}, autocommit=True)

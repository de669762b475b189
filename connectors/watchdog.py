"""Deadlines for running queries, kept by one thread instead of a timer thread per query.

``threading.Timer`` starts an OS thread for every query it guards; under concurrent load that
is a thread start and a wake-up per query, in the GIL. One watchdog thread sleeps until the
earliest deadline instead.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable

log = logging.getLogger(__name__)

COMPACT_AT = 1024
"""Cancelled deadlines are dropped from the heap once this many (and half of it) pile up."""


class Watchdog:
    """Runs each callback at its deadline unless it was cancelled first."""

    def __init__(self, name: str = "meshgate-watchdog"):
        self._name = name
        self._heap: list[list] = []  # [deadline, sequence, callback or None when cancelled]
        self._cancelled = 0
        self._sequence = itertools.count()
        self._condition = threading.Condition()
        self._thread: threading.Thread | None = None

    def schedule(self, seconds: float, callback: Callable[[], object]) -> Callable[[], None]:
        """Run ``callback`` in ``seconds``; returns the function that cancels it."""
        entry = [time.monotonic() + seconds, next(self._sequence), callback]
        with self._condition:
            heapq.heappush(self._heap, entry)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
                self._thread.start()
            if self._heap[0] is entry:
                self._condition.notify()

        def cancel() -> None:
            with self._condition:
                if entry[2] is not None:
                    entry[2] = None
                    self._cancelled += 1
                    if self._cancelled >= COMPACT_AT and self._cancelled * 2 >= len(self._heap):
                        self._heap = [e for e in self._heap if e[2] is not None]
                        heapq.heapify(self._heap)
                        self._cancelled = 0

        return cancel

    def pending(self) -> int:
        """Deadlines neither reached nor cancelled."""
        with self._condition:
            return sum(1 for entry in self._heap if entry[2] is not None)

    def _run(self) -> None:
        while True:
            with self._condition:
                while True:
                    while self._heap and self._heap[0][2] is None:
                        heapq.heappop(self._heap)
                        self._cancelled -= 1
                    if not self._heap:
                        self._condition.wait()
                        continue
                    delay = self._heap[0][0] - time.monotonic()
                    if delay <= 0:
                        entry = heapq.heappop(self._heap)
                        callback, entry[2] = entry[2], None
                        break
                    self._condition.wait(delay)
            try:
                callback()
            except Exception:  # noqa: BLE001 - one failing callback must not stop the others
                log.exception("a deadline callback failed")


watchdog = Watchdog()
"""The process's one watchdog."""

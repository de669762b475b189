"""Work that reports on queries, done off their path: a bounded queue that one background thread
drains in batches.

Building and sending a lineage event or exporting spans holds the interpreter (the GIL) for a
while. Done the moment a query queues it, it would slow that very query (a lineage START is
queued mid-query) and the next. Queued items instead wait up to ``seconds`` for others and go
out together, so queries rarely meet the work; a full queue drops what comes and counts it
rather than make a query wait, and a slow or unreachable backend only ever delays this thread.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

_FLUSH = object()
"""Queued by ``flush()``: handle what is queued now."""
_STOP = object()
_NOTHING = object()


class Batches:
    """Items ``put`` from any thread, handed to ``handle(batch)`` on one background thread."""

    def __init__(
        self,
        handle: Callable[[list[Any]], None],
        *,
        name: str,
        seconds: float,
        size: int,
        capacity: int,
        on_drop: Callable[[Any], None] = lambda item: None,
    ):
        self._handle = handle
        self._seconds = seconds
        self._size = size
        self._on_drop = on_drop
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=capacity)
        self._wake = threading.Event()
        self._worker = threading.Thread(target=self._run, name=name, daemon=True)
        self._worker.start()

    def put(self, item: Any) -> bool:
        """Queue ``item``; never waits: a full queue drops it (``on_drop``) and returns False."""
        try:
            self._queue.put_nowait(item)
        except queue.Full:
            self._on_drop(item)
            return False
        return True

    def flush(self, timeout: float = 10.0) -> bool:
        """Handle every queued item now, without waiting out the batch interval (tests,
        shutdown); False if that does not finish within ``timeout``."""
        try:
            self._queue.put(_FLUSH, timeout=timeout)
        except queue.Full:
            return False
        self._wake.set()
        done = threading.Event()
        threading.Thread(target=lambda: (self._queue.join(), done.set()), daemon=True).start()
        return done.wait(timeout)

    def close(self, timeout: float = 5.0) -> None:
        """Handle what is queued, then stop the thread."""
        self.flush(timeout)
        with contextlib.suppress(queue.Full):
            self._queue.put(_STOP, timeout=1)
        self._wake.set()
        self._worker.join(timeout=timeout)

    def _run(self) -> None:
        while True:
            batch, marker = take_batch(
                self._queue, seconds=self._seconds, size=self._size, wake=self._wake
            )
            try:
                if batch:
                    self._handle(batch)
            except Exception:  # noqa: BLE001 - reporting must never stop the gateway
                log.exception("%s: could not handle %d queued items", self._worker.name, len(batch))
            finally:
                for _ in range(len(batch) + (marker is not _NOTHING)):
                    self._queue.task_done()
            if marker is _STOP:
                return


def take_batch(
    waiting: queue.Queue, *, seconds: float, size: int, wake: threading.Event | None = None
) -> tuple[list[Any], object]:
    """The next batch from ``waiting``: its first item (waiting as long as it takes), then what
    else came within ``seconds`` of it (cut short when ``wake`` is set), up to ``size`` items or
    a flush or stop marker, which is returned second (else a marker meaning none came).

    The thread sleeps out the interval rather than wait on the queue, so queueing an item wakes
    it once per batch, not once per item (each wake-up would take the GIL from a query).

    >>> q = queue.Queue()
    >>> for item in (1, 2, _FLUSH, 3):
    ...     q.put(item)
    >>> take_batch(q, seconds=0.01, size=10) == ([1, 2], _FLUSH)
    True
    """
    first = waiting.get()
    if first is _STOP or first is _FLUSH:
        return [], first
    batch = [first]
    if waiting.qsize() < size - 1:
        if wake is None:
            wake = threading.Event()
        if wake.wait(seconds):
            wake.clear()
    while len(batch) < size:
        try:
            item = waiting.get_nowait()
        except queue.Empty:
            break
        if item is _STOP or item is _FLUSH:
            return batch, item
        batch.append(item)
    return batch, _NOTHING

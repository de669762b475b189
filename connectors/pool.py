"""A small blocking connection pool for drivers whose connections serve one query at a time."""

from __future__ import annotations

import contextlib
import queue
import threading
import weakref
from collections.abc import Callable, Iterator
from typing import Any

import pyarrow as pa

from gateway.errors import SourceUnavailable
from gateway.streaming import close_stream, stream_reader


class ConnectionPool:
    """Up to ``size`` connections made by ``connect``; a query leases one for its whole stream.

    A connection that failed is discarded rather than returned, so a store that went away and
    came back is reconnected on the next query.
    """

    def __init__(self, connect: Callable[[], Any], *, size: int, store: str, wait_seconds: float):
        self._connect = connect
        self._idle: queue.LifoQueue[Any] = queue.LifoQueue()
        self._slots = threading.BoundedSemaphore(size)
        self._store = store
        self._wait_seconds = wait_seconds

    def acquire(self) -> Any:
        if not self._slots.acquire(timeout=self._wait_seconds):
            raise SourceUnavailable(
                f"store {self._store!r}: all connections stayed busy for {self._wait_seconds:g} s; "
                "retry, or raise `pool_size` in mesh.yaml"
            )
        try:
            return self._idle.get_nowait()
        except queue.Empty:
            pass
        try:
            return self._connect()
        except BaseException:
            self._slots.release()
            raise

    def release(self, connection: Any, *, broken: bool = False) -> None:
        if broken:
            with contextlib.suppress(Exception):  # a broken connection may fail to close
                connection.close()
        else:
            self._idle.put(connection)
        self._slots.release()

    def stream(
        self,
        run: Callable[[Any], tuple[pa.RecordBatchReader, Any]],
        *,
        is_broken: Callable[[BaseException], bool],
    ) -> pa.RecordBatchReader:
        """Stream ``run(connection)``'s reader, holding the connection until it is drained.

        ``run`` returns the reader and the object that owns it (a cursor), closed after the reader.
        """
        connection = self.acquire()
        try:
            reader, owner = run(connection)
        except BaseException as exc:
            self.release(connection, broken=is_broken(exc))
            raise

        open_ = True

        def finish(broken: bool = False) -> None:
            nonlocal open_
            if open_:
                open_ = False
                close_stream(reader)
                owner.close()
                self.release(connection, broken=broken)

        def batches() -> Iterator[pa.RecordBatch]:
            broken = False
            try:
                yield from reader
            except BaseException as exc:
                broken = is_broken(exc)
                raise
            finally:
                finish(broken)

        stream = batches()
        # A reader dropped before its first batch never enters the generator's `finally`.
        weakref.finalize(stream, finish)
        return stream_reader(reader.schema, stream)

    def close(self) -> None:
        while True:
            try:
                self._idle.get_nowait().close()
            except queue.Empty:
                return

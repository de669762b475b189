"""What every result stream goes through on its way out: the promised schema, bounded batches."""

from __future__ import annotations

import contextlib
import math
import queue
import threading
import weakref
from collections.abc import Callable, Iterator

import pyarrow as pa

from gateway.errors import InvalidQuery

_closers: dict[int, Callable[[], object]] = {}


def stream_reader(
    schema: pa.Schema,
    batches: Iterator[pa.RecordBatch],
    *,
    on_close: Callable[[], object] | None = None,
) -> pa.RecordBatchReader:
    """A reader over a Python iterator that :func:`close_stream` really closes.

    ``RecordBatchReader.close()`` of a reader made ``from_batches`` leaves its generator
    suspended until the reader is garbage: a stream whose client went away kept its query
    running at the store until a garbage collection. ``close_stream`` closes the generator
    (or calls ``on_close``) at once, so its ``finally`` cancels at the store.
    """
    reader = pa.RecordBatchReader.from_batches(schema, batches)
    closer = on_close if on_close is not None else getattr(batches, "close", None)
    if closer is not None:
        key = id(reader)
        _closers[key] = closer
        weakref.finalize(reader, _closers.pop, key, None)
    return reader


def close_stream(reader: pa.RecordBatchReader) -> None:
    """Close ``reader`` and, when :func:`stream_reader` made it, the iterator behind it."""
    reader.close()
    closer = _closers.pop(id(reader), None)
    if closer is not None:
        # ValueError: running in another thread, which finishes and closes it by itself
        with contextlib.suppress(ValueError):
            closer()


def conform(batch: pa.RecordBatch, schema: pa.Schema) -> pa.RecordBatch:
    """``batch`` in exactly ``schema``'s names and types (stores differ in what they return)."""
    if batch.schema.equals(schema, check_metadata=False):
        return batch
    if batch.num_columns != len(schema):
        raise ValueError(
            f"a store returned {batch.num_columns} columns where the plan expects {len(schema)}"
        )
    columns = []
    for column, target in zip(batch.columns, schema, strict=True):
        if column.type.equals(target.type):
            columns.append(column)
        elif pa.types.is_floating(column.type) and pa.types.is_decimal(target.type):
            # rounded to the contract's scale by Arrow's float-to-decimal cast, via the widest
            # decimal: the text of pc.round's result was no way (round(1664.64, 2) printed as
            # 1664.6399999999999, which no decimal(p, 2) holds)
            wide = pa.decimal128(38, target.type.scale)
            columns.append(column.cast(wide).cast(target.type))
        elif pa.types.is_integer(column.type) and pa.types.is_decimal(target.type):
            # value-checked via the widest decimal: int64 alone would need 19 + scale digits
            columns.append(column.cast(pa.decimal128(38, target.type.scale)).cast(target.type))
        else:
            columns.append(column.cast(target.type))
    return pa.RecordBatch.from_arrays(columns, schema=schema)


def arrow_bytes(batch: pa.RecordBatch) -> int:
    """About the bytes of ``batch``'s values, cheaply: the size of its buffers (a few µs less
    than ``nbytes``, which costs 20 µs even for one row), exactly ``nbytes`` when the buffers
    are large enough to be shared with other slices."""
    size = batch.get_total_buffer_size()
    return batch.nbytes if size > SHARED_BUFFER_BYTES else size


SHARED_BUFFER_BYTES = 1024 * 1024


def split_by_bytes(batch: pa.RecordBatch, max_bytes: int) -> Iterator[pa.RecordBatch]:
    """Zero-copy slices of ``batch`` of at most ``max_bytes`` each (a single row may be more).

    Flight clients refuse gRPC messages over 16 MiB by default (the ADBC Go driver among them).
    Slices of equal rows can differ in bytes (long strings bunched together), so a slice still
    over the cap is cut again.
    """
    if batch.num_rows <= 1 or arrow_bytes(batch) <= max_bytes:
        yield batch
        return
    size = batch.nbytes
    # equal slices aimed a little under the cap, so ordinary unevenness needs no second cut
    pieces = math.ceil(size / (max_bytes * SLICE_FILL))
    rows = max(1, math.ceil(batch.num_rows / pieces))
    for offset in range(0, batch.num_rows, rows):
        yield from split_by_bytes(batch.slice(offset, rows), max_bytes)


SLICE_FILL = 0.9


READ_AHEAD_BATCHES = 2
"""Batches a stream's source may be ahead of the client: the store decodes the next batch
while Flight sends this one, and memory stays bounded."""


def read_ahead(batches: Iterator[pa.RecordBatch], depth: int) -> Iterator[pa.RecordBatch]:
    """``batches``, produced by a thread up to ``depth`` batches ahead of the consumer.

    The first two batches are read in the caller's thread, so a one-batch answer (a point
    query) starts no thread. Closing the result stops the producer, which closes ``batches``
    once the batch it is reading has arrived.
    """
    producer = None
    try:
        for _ in range(2):
            batch = next(batches, None)
            if batch is None:
                return
            yield batch
        producer = _Producer(batches, depth)
        yield from producer.batches()
    finally:
        if producer is None:
            batches.close()
        else:
            producer.stop()


class _Producer:
    """A thread reading ``batches`` into a queue of ``depth`` for one consumer."""

    _END = object()

    def __init__(self, batches: Iterator[pa.RecordBatch], depth: int) -> None:
        self._source = batches
        self._ready: queue.Queue = queue.Queue(maxsize=depth)
        self._stopped = threading.Event()
        self._thread = threading.Thread(
            target=self._produce, name="meshgate-read-ahead", daemon=True
        )
        self._thread.start()

    def batches(self) -> Iterator[pa.RecordBatch]:
        """The batches as the thread reads them; the source's error is raised here."""
        while (item := self._ready.get()) is not self._END:
            if isinstance(item, BaseException):
                raise item
            yield item

    def stop(self) -> None:
        """Stop reading (the source is closed by the thread) and wait for the thread."""
        self._stopped.set()
        self._thread.join()

    def _produce(self) -> None:
        item: object = self._END
        try:
            for batch in self._source:
                if not self._hand_over(batch):
                    return
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, raised there
            item = exc
        finally:
            self._source.close()
        self._hand_over(item)

    def _hand_over(self, item: object) -> bool:
        """Queue ``item`` for the consumer; False if the consumer stopped first."""
        while not self._stopped.is_set():
            try:
                self._ready.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False


def serve_stream(
    reader: pa.RecordBatchReader, schema: pa.Schema, *, max_batch_bytes: int
) -> pa.RecordBatchReader:
    """``reader``'s batches conformed to ``schema``, capped at ``max_batch_bytes`` and read a
    little ahead of the client."""

    def batches() -> Iterator[pa.RecordBatch]:
        try:
            for batch in reader:
                try:
                    conformed = conform(batch, schema)
                except (
                    pa.ArrowInvalid,
                    pa.ArrowNotImplementedError,
                    pa.ArrowTypeError,
                    ValueError,
                ) as exc:
                    raise InvalidQuery(
                        f"a value of the answer does not fit the type promised for it ({exc}); "
                        "cast it in the query to a type that holds it"
                    ) from None
                yield from split_by_bytes(conformed, max_batch_bytes)
        finally:
            close_stream(reader)

    return stream_reader(schema, read_ahead(batches(), READ_AHEAD_BATCHES))


class OwnedStream:
    """A store's stream as the gateway owns it: one lock orders every read and the close.

    A store's native Arrow stream (DuckDB's above all) is handed to the local engine, whose
    worker threads, and the Arrow scanner DuckDB puts over a registered reader, pull from it on
    threads the gateway neither owns nor joins, and drop it whenever they finish. Given DuckDB's
    own stream, the local engine released it (and the store query behind it) on one thread while
    another still read it: "pure virtual method called" and segfaults that killed the process
    (issue 11). Through this object the native stream is read by one thread at a time, closed
    exactly once, after any read in progress, and its ``owner`` (the cursor that ran it) only
    after it; a read after the close is the end of the stream.

    A read that fails raises ``map_error(error)`` (the store's classification of its own
    errors) when that gives one, and the error raised is kept as ``failure``: a consumer that
    only sees it through another engine's wrapping (DuckDB's "arrow_scan: get_next failed")
    reports the store's error instead.
    """

    def __init__(
        self,
        reader: pa.RecordBatchReader,
        *,
        owner: Callable[[], object] | None = None,
        interrupt: Callable[[], object] | None = None,
        map_error: Callable[[Exception], Exception | None] | None = None,
    ) -> None:
        self.schema = reader.schema
        self.failure: Exception | None = None
        self._reader: pa.RecordBatchReader | None = reader
        self._owner = owner
        self._interrupt = interrupt
        self._map_error = map_error
        self._lock = threading.Lock()

    def __iter__(self) -> OwnedStream:
        return self

    def __next__(self) -> pa.RecordBatch:
        with self._lock:
            if self._reader is None:
                raise StopIteration
            try:
                return self._reader.read_next_batch()
            except StopIteration:
                raise
            except Exception as exc:
                mapped = self._map_error(exc) if self._map_error is not None else None
                self.failure = self.failure or mapped or exc
                if mapped is None:
                    raise
                raise mapped from exc

    def close(self) -> None:
        """Close the native stream, then its owner; later calls do nothing. A read in progress
        is interrupted first (``interrupt``), so closing never waits for a long query."""
        if self._interrupt is not None and self._reader is not None:
            self._interrupt()
        with self._lock:
            reader, self._reader = self._reader, None
            owner, self._owner = self._owner, None
        if reader is not None:
            with contextlib.suppress(Exception):  # it may have failed already
                reader.close()
        if owner is not None:
            owner()

    def reader(self) -> pa.RecordBatchReader:
        """A pyarrow reader over this stream for one consumer; :func:`close_stream` of it
        closes the stream (``RecordBatchReader.close`` alone would leave it open)."""
        return stream_reader(self.schema, _closing(self), on_close=self.close)

    def engine_reader(self) -> pa.RecordBatchReader:
        """A pyarrow reader over this stream for the local engine, whose threads may call it at
        once (a generator would refuse them); the executor closes the stream itself."""
        return pa.RecordBatchReader.from_batches(self.schema, self)


def _closing(stream: OwnedStream) -> Iterator[pa.RecordBatch]:
    try:
        yield from stream
    finally:
        stream.close()

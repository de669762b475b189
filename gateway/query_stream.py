"""The one owner of a running query's answer: its deadline, its limits, its errors, its end.

:class:`QueryStream` is made where a query starts executing (``Gateway.stream``) and holds
everything the query keeps open until it ends. The rules of the stream path:

- **Who closes.** The QueryStream, exactly once: at the end of the answer, on the first error,
  or when its consumer closes it early. Closing stops the deadline, closes the executor's reader
  (which closes the local engine's cursor, every fragment's stream and with them the stores'
  queries and pooled connections) and gives back the admission slot. A stream dropped before
  its first batch is closed by its finalizer (no end event: nothing was served).
- **Who audits.** The QueryStream reports the query's end once, through ``ended(error, rows,
  bytes)``; the gateway's end of a query (monitor, audit event, metrics, spans, lineage, usage
  from the audit log) subscribes to it. A query refused or failed before its stream exists is
  ended by the gateway in the same place.
- **Client cancel.** The Flight server closes the stream when its call ends; the end is reported
  with ``GeneratorExit`` as the error (outcome ``error``), and the stores' queries are cancelled
  by the readers that ran them.
- **Store error.** Connectors raise gateway errors (gateway.errors); the executor classifies the
  local engine's. The QueryStream makes the error public once (``publish``: no SQL excerpt, no
  hash key, contract drift named), ends the query with it and raises it.
- **Deadline.** :class:`QueryDeadline` calls the query's cancellers when its time is up; the next
  batch (or the error the cancel caused) then raises its QueryTimeout.

The Flight server's wrapper only maps the errors raised here to Flight errors.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable

import pyarrow as pa

from connectors.watchdog import watchdog
from gateway.errors import GatewayError, QueryTimeout
from gateway.limits import Limits, result_limit_error
from gateway.streaming import arrow_bytes, close_stream, stream_reader


class QueryDeadline:
    """The query's time limit: past it, every canceller is called (from the watchdog)."""

    def __init__(self, limits: Limits) -> None:
        self.cancellers: list[Callable[[], object]] = []
        self._limits = limits
        self._passed = threading.Event()
        self.stop = watchdog.schedule(limits.query_timeout_seconds, self._expire)
        """No cancel after this; safe to call more than once."""

    def _expire(self) -> None:
        self._passed.set()
        for cancel in self.cancellers:
            cancel()

    @property
    def passed(self) -> bool:
        return self._passed.is_set()

    def error(self) -> QueryTimeout:
        seconds = self._limits.query_timeout_seconds
        return QueryTimeout(
            f"the query ran past {seconds:g} s, the limit "
            f"`{self._limits.source['query_timeout_seconds']}` in mesh.yaml, and was cancelled; "
            "narrow it or ask the governance group to raise the limit"
        )


def _release(deadline: QueryDeadline, reader: pa.RecordBatchReader, release: Callable) -> None:
    deadline.stop()
    close_stream(reader)
    release()


class QueryStream:
    """A query's answer as its one consumer reads it: an iterator of batches and ``close()``.

    ``reader`` is the executor's answer; ``release`` gives back what admitted the query;
    ``publish`` turns any failure into the error the client sees; ``started`` is called at the
    first batch asked for and ``ended(error, rows, bytes)`` once, when the stream ends however
    it ends. Read by one thread at a time.
    """

    def __init__(
        self,
        reader: pa.RecordBatchReader,
        *,
        deadline: QueryDeadline,
        limits: Limits,
        release: Callable[[], object],
        publish: Callable[[Exception], GatewayError],
        started: Callable[[], object],
        ended: Callable[[BaseException | None, int, int], object],
    ) -> None:
        self.schema = reader.schema
        self.rows = 0
        self.bytes = 0
        self._batches = iter(reader)
        self._deadline = deadline
        self._limits = limits
        self._publish = publish
        self._started: Callable[[], object] | None = started
        self._ended: Callable[[BaseException | None, int, int], object] | None = ended
        self._release = weakref.finalize(self, _release, deadline, reader, release)

    def __iter__(self) -> QueryStream:
        return self

    def __next__(self) -> pa.RecordBatch:
        if self._ended is None:
            raise StopIteration
        if self._started is not None:
            started, self._started = self._started, None
            started()
        try:
            return self._next_within_limits()
        except StopIteration:
            self._end(None)
            raise
        except Exception as exc:  # noqa: BLE001 - every failure leaves as a public error
            error = self._publish(self._deadline.error() if self._deadline.passed else exc)
            self._end(error)
            raise error from None
        except BaseException as exc:
            self._end(exc)
            raise

    def _next_within_limits(self) -> pa.RecordBatch:
        batch = next(self._batches)
        if self._deadline.passed:
            raise self._deadline.error()
        self.rows += batch.num_rows
        self.bytes += arrow_bytes(batch)
        exceeded = result_limit_error(self._limits, rows=self.rows, size=self.bytes)
        if exceeded is not None:
            raise exceeded
        return batch

    def close(self) -> None:
        """End the stream before its end (the consumer stopped reading); later calls, and calls
        after the stream ended, do nothing."""
        self._end(GeneratorExit())

    def _end(self, error: BaseException | None) -> None:
        ended, self._ended = self._ended, None
        if ended is None:
            return
        self._release()
        ended(error, self.rows, self.bytes)

    def reader(self) -> pa.RecordBatchReader:
        """A pyarrow reader over this stream; :func:`gateway.streaming.close_stream` of it
        closes the stream."""
        return stream_reader(self.schema, self, on_close=self.close)

"""Run a plan: fragments start concurrently at their stores, the local engine joins the rest.

Nothing is materialised in Python: store readers feed DuckDB's Arrow scans (or the client
directly when one store answers the whole query), and DuckDB's result streams to the client.
Closing the returned reader closes every source reader, which stops the queries at the stores.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import threading
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor

import pyarrow as pa
import pyarrow.compute as pc

from connectors.base import Connector
from gateway.errors import GatewayError, InvalidQuery
from gateway.planner import Plan
from gateway.planner.dynamic_filters import narrowed_sql
from gateway.planner.schema import local_engine
from gateway.planner.split import Fragment
from gateway.streaming import serve_stream

log = logging.getLogger(__name__)

LOCAL_ROWS_PER_BATCH = 65_536
MAX_BUILD_ROWS = 100_000
"""A dynamic filter's build side is read whole only up to this many rows."""
MAX_KEYS = 10_000
"""At most this many distinct keys are sent to the probe's store in an IN list."""
_starter = ThreadPoolExecutor(max_workers=32, thread_name_prefix="meshgate-fragment")


_start_locks: defaultdict[str, threading.Lock] = defaultdict(threading.Lock)
_start_locks_guard = threading.Lock()


@contextlib.contextmanager
def _starting(stores: Iterable[str]) -> Iterator[None]:
    """Start a query's fragments holding the start lock of each store it reads, in name order.

    Fragments wait for connections of bounded pools. Two queries that each hold one store's
    last connection while waiting for the other's would wait on each other until the pool's
    timeout; with the locks, a query only ever waits for connections held by queries that
    have started every fragment, and those finish without waiting on anyone.
    """
    with _start_locks_guard:
        locks = [_start_locks[store] for store in sorted(set(stores))]
    with contextlib.ExitStack() as held:
        for lock in locks:
            held.enter_context(lock)
        yield


def _close_all(readers: list[pa.RecordBatchReader]) -> None:
    for reader in readers:
        try:
            reader.close()
        except Exception:  # noqa: BLE001 - closing must not hide the error being reported
            log.debug("closing a fragment reader failed", exc_info=True)


def _start_all(
    fragments: list[tuple[Fragment, str]],
    connectors: Mapping[str, Connector],
    sent: list[tuple[str, str]],
    readers: dict[str, pa.RecordBatchReader],
) -> None:
    """Start each (fragment, sql) at its store concurrently; raise the first failure."""
    futures = {f.name: _starter.submit(connectors[f.store].execute, sql) for f, sql in fragments}
    sent.extend((f.store, sql) for f, sql in fragments)
    failure: BaseException | None = None
    for name, future in futures.items():
        try:
            readers[name] = future.result()
        except BaseException as exc:  # noqa: BLE001 - collected, the first is re-raised below
            failure = failure or exc
    if failure is not None:
        raise failure


def _read_small(reader: pa.RecordBatchReader) -> tuple[pa.Table | None, pa.RecordBatchReader]:
    """The whole of ``reader`` if it has at most MAX_BUILD_ROWS rows, else None and the stream
    with what was read put back in front."""
    batches, rows = [], 0
    for batch in reader:
        batches.append(batch)
        rows += batch.num_rows
        if rows > MAX_BUILD_ROWS:
            rest = pa.RecordBatchReader.from_batches(
                reader.schema, itertools.chain(batches, reader)
            )
            return None, rest
    return pa.Table.from_batches(batches, schema=reader.schema), reader


def _keys(table: pa.Table, column: str) -> list[object] | None:
    """The distinct non-null values of ``column``, or None when there are too many to send."""
    values = pc.unique(table.column(column).drop_null())
    return values.to_pylist() if len(values) <= MAX_KEYS else None


def execute_plan(
    plan: Plan,
    connectors: Mapping[str, Connector],
    *,
    max_batch_bytes: int,
    sent: list[tuple[str, str]] | None = None,
) -> pa.RecordBatchReader:
    """The answer to ``plan`` as a stream in ``plan.schema``.

    ``sent`` collects (store, SQL) of every query sent, as it was sent (dynamic filters included).
    """
    sent = sent if sent is not None else []
    if plan.local_sql is None:
        (fragment,) = plan.fragments
        sent.append((fragment.store, fragment.sql))
        reader = connectors[fragment.store].execute(fragment.sql)
        return serve_stream(reader, plan.schema, max_batch_bytes=max_batch_bytes)

    narrowed_by = {f.probe: f for f in plan.dynamic_filters}
    readers: dict[str, pa.RecordBatchReader] = {}
    relations: dict[str, pa.RecordBatchReader | pa.Table] = {}
    try:
        with _starting(f.store for f in plan.fragments):
            first = [(f, f.sql) for f in plan.fragments if f.name not in narrowed_by]
            _start_all(first, connectors, sent, readers)
            for build in {f.build for f in plan.dynamic_filters}:
                relations[build], readers[build] = _read_small(readers[build])
            probes = []
            for fragment in plan.fragments:
                dynamic = narrowed_by.get(fragment.name)
                if dynamic is None:
                    continue
                built = relations.get(dynamic.build)
                keys = _keys(built, dynamic.build_column) if built is not None else None
                sql = fragment.sql
                if keys is not None:
                    dialect = connectors[fragment.store].capabilities.dialect
                    sql = narrowed_sql(sql, dialect=dialect, column=dynamic.probe_column, keys=keys)
                probes.append((fragment, sql))
            _start_all(probes, connectors, sent, readers)
    except BaseException:
        _close_all(list(readers.values()))
        raise

    con = local_engine()
    try:
        for fragment in plan.fragments:
            relation = relations.get(fragment.name)
            if relation is None:
                reader = readers[fragment.name]
                relation = reader.read_all() if fragment.materialize else reader
            con.register(fragment.name, relation)
        result = con.execute(plan.local_sql).to_arrow_reader(LOCAL_ROWS_PER_BATCH)
    except GatewayError:
        _close_all(list(readers.values()))
        con.close()
        raise
    except Exception as exc:
        _close_all(list(readers.values()))
        con.close()
        raise InvalidQuery(f"the local engine could not run the query: {exc}") from exc

    def batches() -> Iterator[pa.RecordBatch]:
        try:
            yield from result
        finally:
            result.close()
            _close_all(list(readers.values()))
            con.close()

    local = pa.RecordBatchReader.from_batches(result.schema, batches())
    return serve_stream(local, plan.schema, max_batch_bytes=max_batch_bytes)

"""Run a plan: fragments start concurrently at their stores, the local engine joins the rest.

A dynamic filter's probe starts once its builds are read, narrowed to their keys. What the local
engine reads whole anyway (builds, narrowed probes up to MAX_BUILD_ROWS, fragments it reads more
than once) is read as soon as it starts, while other stores answer; everything else streams:
store readers feed DuckDB's Arrow scans (or the client directly when one store answers the whole
query), and DuckDB's result streams to the client. Closing the returned reader closes every
source reader, which stops the queries at the stores.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import itertools
import logging
import threading
import time
import weakref
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait

import pyarrow as pa
import pyarrow.compute as pc

from connectors.base import Connector, query_cancelled
from connectors.watchdog import watchdog
from gateway.errors import (
    GatewayError,
    InvalidQuery,
    QueryCancelled,
    QueryTimeout,
    SourceUnavailable,
    engine_error,
    values_hidden,
)
from gateway.local_engine import local_engine
from gateway.narrowing import keys_between, keys_in, keys_in_table, narrowed_sql
from gateway.planner import Plan
from gateway.planner.dynamic_filters import DynamicFilter
from gateway.planner.transpile import Fragment
from gateway.streaming import OwnedStream, close_stream, serve_stream, stream_reader

log = logging.getLogger(__name__)

LOCAL_ROWS_PER_BATCH = 65_536
MAX_BUILD_ROWS = 1_000_000
"""A dynamic filter's build side is read whole only up to this many rows (the local engine reads
it whole anyway; past this, its probes would wait too long for it)."""
MAX_BUILD_BYTES = 128 * 2**20
"""... and this many bytes: what is read before the local engine asks for it stays in memory."""
MAX_KEYS = 50_000
"""At most this many distinct keys are sent to the probe's store in an IN list (PostgreSQL took
0.15 s for 30,000 keys against 0.34 s for the whole 1.5M-row orders; 0.57 s for 100,000)."""
KEY_TABLE_FROM = 1_000
"""A store that reads key tables gets more keys than this as a table: no long SQL text to write
and parse, and a hash semi-join at the store."""
KEY_TABLE_PREFIX = "__meshgate_keys_"
READ_PROBES_EARLY = True
"""Read a narrowed probe as it starts, up to MAX_BUILD_ROWS rows: its store works while others
answer, and the local engine scans a table in parallel where it reads a stream on one thread
(TPC-H SF 1 in process: Q7 0.31 -> 0.26 s, Q21 0.57 -> 0.49 s, none slower)."""
ENOUGH_KEYS = 1_000
"""A probe with a build of at most this many keys starts without waiting for its other builds."""
_starter = ThreadPoolExecutor(max_workers=32, thread_name_prefix="meshgate-fragment")
WATCH_SECONDS = 0.2
"""How often a running local query looks whether its client cancelled or went away."""
LOCAL_TIMEOUT_SECONDS = 300.0
"""The local engine's part of a query is interrupted after this long (a recursive CTE that
never ends must not keep the gateway's cores busy for ever)."""


class LocalWatch:
    """Interrupts the local engine's query when its client cancels or its time is up.

    The local engine works in the thread that asked for the next batch, inside DuckDB, where no
    Python code runs until it returns: closing the stream then comes too late. So a callback on
    the process's watchdog polls ``cancelled`` every WATCH_SECONDS and interrupts the query.
    """

    def __init__(
        self,
        interrupt: Callable[[], object],
        *,
        cancelled: Callable[[], bool] | None,
        timeout_seconds: float = LOCAL_TIMEOUT_SECONDS,
    ) -> None:
        self.reason: GatewayError | None = None
        self._interrupt = interrupt
        self._cancelled = cancelled or (lambda: False)
        self._deadline = time.monotonic() + timeout_seconds
        self._timeout_seconds = timeout_seconds
        self._lock = threading.Lock()
        self._stopped = False
        self._cancel_poll = watchdog.schedule(WATCH_SECONDS, self._poll)

    def _poll(self) -> None:
        if self._cancelled():
            self.reason = QueryCancelled("the client cancelled the query")
        elif time.monotonic() >= self._deadline:
            self.reason = QueryTimeout(
                f"the query ran longer than {self._timeout_seconds:g} s in the gateway and was "
                "stopped; narrow it"
            )
        with self._lock:
            if self._stopped:
                return
            if self.reason is None:
                self._cancel_poll = watchdog.schedule(WATCH_SECONDS, self._poll)
                return
            # under the lock: stop() waits for it, so the cursor is never closed while it is
            # being interrupted (DuckDB would touch a connection being destroyed)
            with contextlib.suppress(Exception):  # a query that just ended has nothing to stop
                self._interrupt()

    def interrupt(self) -> None:
        """Interrupt the query now (the query's deadline), unless it has ended: never while
        the cursor is being closed."""
        with self._lock:
            if not self._stopped:
                with contextlib.suppress(Exception):  # a query that just ended
                    self._interrupt()

    def stop(self) -> None:
        """No interrupt after this returns; call it before closing the cursor."""
        with self._lock:
            self._stopped = True
            self._cancel_poll()


class ConnectionReservations:
    """The connections of pooled stores that queries reading several fragments have reserved.

    Fragments wait for connections of bounded pools. Two queries that each hold one store's last
    connection while waiting for the other's would wait on each other until the pool's timeout.
    So a query reading several fragments first reserves, store by store in name order, as many
    connections as it has fragments there (at most the pool), and only then starts them; it
    gives a store's back once it has read everything it asked that store for, and the rest when
    its stream ends. Reserved in one order, all of a store's at once, no reservation ever waits
    in a cycle, and queries over the same stores run side by side as far as the pools allow.
    """

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._taken: defaultdict[str, int] = defaultdict(int)

    def reserve(self, plan: Plan, connectors: Mapping[str, Connector]) -> Reservation:
        """Reserve what ``plan`` needs, waiting up to each store's connect timeout."""
        reservation = Reservation(self)
        demand = Counter(f.store for f in plan.fragments)
        try:
            for store in sorted(demand):
                connector = connectors[store]
                size = connector.connection_slots
                if size is not None:
                    count = min(demand[store], size)
                    self._take(store, count, size, connector.settings.connect_timeout_seconds)
                    reservation.held[store] = count
        except BaseException:
            reservation.give_back()
            raise
        return reservation

    def _take(self, store: str, count: int, size: int, wait_seconds: float) -> None:
        with self._changed:
            if not self._changed.wait_for(
                lambda: self._taken[store] + count <= size, timeout=wait_seconds
            ):
                raise SourceUnavailable(
                    f"store {store!r}: all connections stayed busy for {wait_seconds:g} s; "
                    "retry, or raise `pool_size` in mesh.yaml"
                )
            self._taken[store] += count

    def _give(self, held: dict[str, int], stores: set[str] | None) -> None:
        with self._changed:
            for store in [s for s in held if stores is None or s in stores]:
                self._taken[store] -= held.pop(store)
            self._changed.notify_all()


class Reservation:
    """One query's reserved connections, by store."""

    def __init__(self, reservations: ConnectionReservations):
        self._reservations = reservations
        self.held: dict[str, int] = {}

    def give_back(self, stores: set[str] | None = None) -> None:
        """Give back the connections of ``stores`` (all when None); what is given back once
        is not given back again."""
        self._reservations._give(self.held, stores)


_reservations = ConnectionReservations()


def _close_all(readers: list[pa.RecordBatchReader]) -> None:
    for reader in readers:
        try:
            close_stream(reader)
        except Exception:  # noqa: BLE001 - closing must not hide the error being reported
            log.debug("closing a fragment reader failed", exc_info=True)


def _read_small(reader: pa.RecordBatchReader) -> tuple[pa.Table | None, pa.RecordBatchReader]:
    """The whole of ``reader`` if it has at most MAX_BUILD_ROWS rows and MAX_BUILD_BYTES, else
    None and the stream with what was read put back in front."""
    batches, rows, size = [], 0, 0
    for batch in reader:
        batches.append(batch)
        rows += batch.num_rows
        size += batch.nbytes
        if rows > MAX_BUILD_ROWS or size > MAX_BUILD_BYTES:
            rest = stream_reader(
                reader.schema,
                itertools.chain(batches, reader),
                on_close=functools.partial(close_stream, reader),
            )
            return None, rest
    return pa.Table.from_batches(batches, schema=reader.schema), reader


def _orderable(kind: pa.DataType) -> bool:
    """Types whose order is the same at every store: a range of them means the same thing."""
    return (
        pa.types.is_integer(kind)
        or pa.types.is_decimal(kind)
        or pa.types.is_date(kind)
        or pa.types.is_timestamp(kind)
    )


def _narrowing(
    filters: list[DynamicFilter], built: Mapping[str, pa.Table | None], connector: Connector
) -> tuple[list[str], dict[str, pa.Table]]:
    """The predicates that narrow a probe to its builds' keys, and the key tables they read.

    A store that reads key tables gets more than KEY_TABLE_FROM keys as a table; others get up
    to MAX_KEYS keys as an IN list, and more as the keys' range (a store skips what lies outside
    it: Parquet row groups, index ranges). A build too large to read narrows nothing.
    """
    dialect = connector.capabilities.dialect
    predicates: list[str] = []
    tables: dict[str, pa.Table] = {}
    for dynamic in filters:
        table = built.get(dynamic.build)
        if table is None:
            continue
        values = pc.unique(table.column(dynamic.build_column).drop_null())
        column = dynamic.probe_column
        as_table = connector.capabilities.key_tables and len(values) > KEY_TABLE_FROM
        try:
            if len(values) <= MAX_KEYS and not as_table:
                predicates.append(keys_in(column, values.to_pylist(), dialect=dialect))
                continue
            if _orderable(values.type):
                low, high = pc.min_max(values).values()
                predicates.append(keys_between(column, low.as_py(), high.as_py(), dialect=dialect))
        except ValueError:  # keys SQL has no literal for (intervals): this filter narrows nothing
            log.debug("dynamic filter keys not written as SQL", exc_info=True)
            continue
        if as_table:
            name = f"{KEY_TABLE_PREFIX}{len(tables) + 1}"
            tables[name] = pa.table({"key": values})
            predicates.append(keys_in_table(column, name, "key", dialect=dialect))
    return predicates, tables


def _open(
    connector: Connector,
    sql: str,
    tables: dict[str, pa.Table],
    *,
    early: bool,
    whole: bool,
    started: threading.Event,
) -> tuple[pa.Table | None, pa.RecordBatchReader]:
    """Start ``sql`` at its store (``started`` is set then, whatever happens) and read what is
    worth reading now rather than when the local engine gets to it, so this store works while
    others answer: builds and narrowed probes when they are small (see _read_small), and
    fragments the local engine reads ``whole`` anyway."""
    try:
        if tables:
            reader = connector.execute_with_tables(sql, tables=tables)
        else:
            reader = connector.execute(sql)
    finally:
        started.set()
    if whole:
        return reader.read_all(), reader
    return _read_small(reader) if early else (None, reader)


class _Fragments:
    """The fragments of one plan as they start at their stores and are read: who started what
    (``sent``), the reader of each started fragment (``readers``, all of which the caller closes
    however the query ends) and what has been read whole already (``relations``)."""

    def __init__(
        self, plan: Plan, connectors: Mapping[str, Connector], sent: list[tuple[str, str]]
    ) -> None:
        self.readers: dict[str, pa.RecordBatchReader] = {}
        self.relations: dict[str, pa.RecordBatchReader | pa.Table] = {}
        self._plan = plan
        self._connectors = connectors
        self._sent = sent
        self._filters_of: defaultdict[str, list[DynamicFilter]] = defaultdict(list)
        for dynamic in plan.dynamic_filters:
            self._filters_of[dynamic.probe].append(dynamic)
        self._builds = {f.build for f in plan.dynamic_filters}
        self._built: dict[str, pa.Table | None] = {}
        self._running: dict[Future, str] = {}
        self._started: list[threading.Event] = []

    def read(self) -> None:
        """Start every fragment, each probe as soon as the builds that narrow it have been read,
        and wait until each has answered (what is read early is read by then).

        Fragments start and builds are read concurrently. A probe starts once all its builds are
        read, or once one of them turned out to have at most ENOUGH_KEYS keys: those narrow it
        well, and its other builds run on at their stores meanwhile. When this raises, every
        fragment started has its reader in ``readers``.
        """
        try:
            pending = list(self._plan.fragments)
            while pending:
                ready = [f for f in pending if _may_start(self._filters_of[f.name], self._built)]
                for fragment in ready:
                    self._start(fragment)
                if ready:
                    pending = [f for f in pending if not any(f is r for r in ready)]
                else:
                    self._wait_for_a_build()
            for event in self._started:
                event.wait()
        except BaseException:
            with contextlib.suppress(BaseException):  # the error being raised is the one to report
                self._collect_all()
            raise
        self._collect_all()

    def _start(self, fragment: Fragment) -> None:
        connector = self._connectors[fragment.store]
        sql, tables = fragment.sql, {}
        filters = self._filters_of[fragment.name]
        if filters:
            predicates, tables = _narrowing(filters, self._built, connector)
            if predicates:
                sql = narrowed_sql(sql, predicates=predicates)
        self._sent.append((fragment.store, sql))
        early = fragment.name in self._builds or (READ_PROBES_EARLY and sql is not fragment.sql)
        self._started.append(threading.Event())
        future = _starter.submit(
            contextvars.copy_context().run,  # the client's cancellation, for _open
            _open,
            connector,
            sql,
            tables,
            early=early,
            whole=fragment.materialize,
            started=self._started[-1],
        )
        self._running[future] = fragment.name

    def _wait_for_a_build(self) -> None:
        reading = [future for future, name in self._running.items() if name in self._builds]
        if not reading:
            raise InvalidQuery("the plan's dynamic filters wait on each other; report this bug")
        done, _ = wait(reading, return_when=FIRST_COMPLETED)
        for future in done:
            name = self._running.pop(future)
            self._built[name] = self._collect(future, name)

    def _collect(self, future: Future, name: str) -> pa.Table | None:
        table, self.readers[name] = future.result()
        if table is not None:
            self.relations[name] = table
        return table

    def _collect_all(self) -> None:
        """Wait for every fragment still running; raise the first failure once all are in."""
        failure: BaseException | None = None
        running, self._running = self._running, {}
        for future, name in running.items():
            try:
                self._collect(future, name)
            except BaseException as exc:  # noqa: BLE001 - the first is raised below
                failure = failure or exc
        if failure is not None:
            raise failure


def _may_start(filters: list[DynamicFilter], built: Mapping[str, pa.Table | None]) -> bool:
    if all(f.build in built for f in filters):
        return True
    return any(
        built.get(f.build) is not None
        and _distinct_keys(built[f.build].column(f.build_column)) <= ENOUGH_KEYS
        for f in filters
    )


def _distinct_keys(column: pa.ChunkedArray) -> int:
    """How many distinct keys a build column holds. An empty SQLite answer comes in Arrow's
    null type (connectors.sqlite), which count_distinct has no kernel for: no keys."""
    if pa.types.is_null(column.type):
        return 0
    return pc.count_distinct(column).as_py()


def execute_plan(
    plan: Plan,
    connectors: Mapping[str, Connector],
    *,
    max_batch_bytes: int,
    sent: list[tuple[str, str]] | None = None,
    step: Callable[[str], contextlib.AbstractContextManager] = lambda _: contextlib.nullcontext(),
    cancellers: list[Callable[[], object]] | None = None,
    cancelled: Callable[[], bool] | None = None,
) -> pa.RecordBatchReader:
    """The answer to ``plan`` as a stream in ``plan.schema``.

    ``sent`` collects (store, SQL) of every query sent, as it was sent (dynamic filters included);
    ``step("meshgate.local_engine")`` wraps the start of the local engine's query (tracing);
    ``cancellers`` receives the functions that interrupt the local engine's part of the query
    (a deadline calls them from another thread); ``cancelled`` tells whether the client has
    cancelled or gone away: the local engine's query is interrupted then, as the stores' queries
    are when the stream closes.
    """
    sent = sent if sent is not None else []
    watching = query_cancelled.set(cancelled)  # for stores a closed stream cannot stop
    try:
        return _execute(
            plan,
            connectors,
            max_batch_bytes=max_batch_bytes,
            sent=sent,
            step=step,
            cancellers=cancellers,
            cancelled=cancelled,
        )
    finally:
        query_cancelled.reset(watching)


def _execute(
    plan: Plan,
    connectors: Mapping[str, Connector],
    *,
    max_batch_bytes: int,
    sent: list[tuple[str, str]],
    step: Callable[[str], contextlib.AbstractContextManager],
    cancellers: list[Callable[[], object]] | None,
    cancelled: Callable[[], bool] | None,
) -> pa.RecordBatchReader:
    if plan.local_sql is None:
        (fragment,) = plan.fragments
        sent.append((fragment.store, fragment.sql))
        reader = connectors[fragment.store].execute(fragment.sql)
        return serve_stream(reader, plan.schema, max_batch_bytes=max_batch_bytes)
    reservation = _reservations.reserve(plan, connectors)
    fragments = _Fragments(plan, connectors, sent)
    try:
        fragments.read()
    except BaseException:
        _close_all(list(fragments.readers.values()))
        reservation.give_back()
        raise
    streamed = {
        f.store for f in plan.fragments if not isinstance(fragments.relations.get(f.name), pa.Table)
    }
    reservation.give_back(
        {f.store for f in plan.fragments} - streamed
    )  # their connections are back
    local = _LocalQuery(fragments, reservation, cancelled=cancelled)
    if cancellers is not None:
        cancellers.append(local.watch.interrupt)
    result = local.start(plan, step)
    return serve_stream(result, plan.schema, max_batch_bytes=max_batch_bytes)


class _LocalQuery:
    """The local engine's query over a plan's fragments, and the one place where everything the
    query holds ends (:meth:`finish`): its cursor, the fragments' streams, their connections."""

    def __init__(
        self,
        fragments: _Fragments,
        reservation: Reservation,
        *,
        cancelled: Callable[[], bool] | None,
    ) -> None:
        self._fragments = fragments
        self._reservation = reservation
        self._con = local_engine()
        self._owned: list[OwnedStream] = []
        self.watch = LocalWatch(self._con.interrupt, cancelled=cancelled)

    def start(
        self, plan: Plan, step: Callable[[str], contextlib.AbstractContextManager]
    ) -> pa.RecordBatchReader:
        """The local query's answer, its fragments registered with the engine as tables (read
        whole) or streams."""
        try:
            for fragment in plan.fragments:
                self._con.register(fragment.name, self._relation(fragment))
            with step("meshgate.local_engine"):
                result = self._con.execute(plan.local_sql).to_arrow_reader(LOCAL_ROWS_PER_BATCH)
        except GatewayError:
            self.finish()
            raise
        except Exception as exc:
            self.finish()
            raise self._failure(exc) or InvalidQuery(
                f"the local engine could not run the query: {exc}",
                public="the local engine could not run the query: "
                + values_hidden(str(exc).splitlines()[0]),
            ) from exc
        stream = self._batches(result)
        # a stream dropped before its first batch never enters the generator's `finally`
        weakref.finalize(stream, self._reservation.give_back)
        return stream_reader(result.schema, stream)

    def _relation(self, fragment: Fragment) -> pa.RecordBatchReader | pa.Table:
        relation = self._fragments.relations.get(fragment.name)
        if relation is not None:
            return relation
        reader = self._fragments.readers[fragment.name]
        if fragment.materialize:
            return reader.read_all()
        self._owned.append(OwnedStream(reader))
        return self._owned[-1].engine_reader()

    def _batches(self, result: pa.RecordBatchReader) -> Iterator[pa.RecordBatch]:
        try:
            yield from result
        except Exception as exc:
            failure = self._failure(exc)
            if failure is None:
                raise
            raise failure from exc
        finally:
            result.close()
            self.finish()

    def _failure(self, error: Exception) -> GatewayError | None:
        """Why the local engine's query failed, the same before its first batch and while it
        streams: the watch's reason when it interrupted the query, a fragment's own error when
        the engine failed reading one (DuckDB reports it as "arrow_scan: get_next failed"),
        else DuckDB's error classified (gateway.errors.engine_error); None for an error DuckDB
        did not raise, a bug of the gateway's."""
        if self.watch.reason is not None:
            return self.watch.reason
        for stream in self._owned:
            if isinstance(stream.failure, GatewayError):
                return stream.failure
        return engine_error(error, engine="the local engine")

    def finish(self) -> None:
        """The local query's cursor first (its threads stop reading the fragments), then each
        fragment's stream, then the connections."""
        self.watch.stop()
        self._con.close()
        for stream in self._owned:
            stream.close()
        _close_all(list(self._fragments.readers.values()))
        self._reservation.give_back()

"""Run a plan: fragments start concurrently at their stores, the local engine joins the rest.

Nothing is materialised in Python: store readers feed DuckDB's Arrow scans (or the client
directly when one store answers the whole query), and DuckDB's result streams to the client.
Closing the returned reader closes every source reader, which stops the queries at the stores.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor

import pyarrow as pa

from connectors.base import Connector
from gateway.errors import GatewayError, InvalidQuery
from gateway.planner import Plan
from gateway.planner.schema import local_engine
from gateway.streaming import serve_stream

log = logging.getLogger(__name__)

LOCAL_ROWS_PER_BATCH = 65_536
_starter = ThreadPoolExecutor(max_workers=32, thread_name_prefix="meshgate-fragment")


def _close_all(readers: list[pa.RecordBatchReader]) -> None:
    for reader in readers:
        try:
            reader.close()
        except Exception:  # noqa: BLE001 - closing must not hide the error being reported
            log.debug("closing a fragment reader failed", exc_info=True)


def execute_plan(
    plan: Plan, connectors: Mapping[str, Connector], *, max_batch_bytes: int
) -> pa.RecordBatchReader:
    """The answer to ``plan`` as a stream in ``plan.schema``."""
    if plan.local_sql is None:
        (fragment,) = plan.fragments
        reader = connectors[fragment.store].execute(fragment.sql)
        return serve_stream(reader, plan.schema, max_batch_bytes=max_batch_bytes)

    futures = [_starter.submit(connectors[f.store].execute, f.sql) for f in plan.fragments]
    readers: list[pa.RecordBatchReader] = []
    failure: BaseException | None = None
    for future in futures:
        try:
            readers.append(future.result())
        except BaseException as exc:  # noqa: BLE001 - collected, the first is re-raised below
            failure = failure or exc
    if failure is not None:
        _close_all(readers)
        raise failure

    con = local_engine()
    try:
        for fragment, reader in zip(plan.fragments, readers, strict=True):
            con.register(fragment.name, reader.read_all() if fragment.materialize else reader)
        result = con.execute(plan.local_sql).to_arrow_reader(LOCAL_ROWS_PER_BATCH)
    except GatewayError:
        _close_all(readers)
        con.close()
        raise
    except Exception as exc:
        _close_all(readers)
        con.close()
        raise InvalidQuery(f"the local engine could not run the query: {exc}") from exc

    def batches() -> Iterator[pa.RecordBatch]:
        try:
            yield from result
        finally:
            result.close()
            _close_all(readers)
            con.close()

    local = pa.RecordBatchReader.from_batches(result.schema, batches())
    return serve_stream(local, plan.schema, max_batch_bytes=max_batch_bytes)

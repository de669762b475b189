"""What every result stream goes through on its way out: the promised schema, bounded batches."""

from __future__ import annotations

from collections.abc import Iterator

import pyarrow as pa
import pyarrow.compute as pc


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
            # through the shortest decimal text of the rounded float: exact where a direct
            # cast would demand more precision than the contract's decimal has
            rounded = pc.round(column, ndigits=target.type.scale)
            columns.append(rounded.cast(pa.string()).cast(target.type))
        elif pa.types.is_integer(column.type) and pa.types.is_decimal(target.type):
            # value-checked via the widest decimal: int64 alone would need 19 + scale digits
            columns.append(column.cast(pa.decimal128(38, target.type.scale)).cast(target.type))
        else:
            columns.append(column.cast(target.type))
    return pa.RecordBatch.from_arrays(columns, schema=schema)


def split_by_bytes(batch: pa.RecordBatch, max_bytes: int) -> Iterator[pa.RecordBatch]:
    """Zero-copy slices of ``batch`` of at most about ``max_bytes`` each.

    Flight clients refuse gRPC messages over 16 MiB by default (the ADBC Go driver among them).
    """
    size = batch.nbytes
    if size <= max_bytes or batch.num_rows <= 1:
        yield batch
        return
    rows = max(1, int(batch.num_rows * max_bytes / size))
    for offset in range(0, batch.num_rows, rows):
        yield batch.slice(offset, rows)


def serve_stream(
    reader: pa.RecordBatchReader, schema: pa.Schema, *, max_batch_bytes: int
) -> pa.RecordBatchReader:
    """``reader``'s batches conformed to ``schema`` and capped at ``max_batch_bytes``."""

    def batches() -> Iterator[pa.RecordBatch]:
        try:
            for batch in reader:
                yield from split_by_bytes(conform(batch, schema), max_batch_bytes)
        finally:
            reader.close()

    return pa.RecordBatchReader.from_batches(schema, batches())

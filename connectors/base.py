"""The one interface every store kind implements, and the capabilities it declares as data.

A connector knows three things about its store: how to name a product's physical relation in the
store's SQL (:meth:`Connector.relation`), how to run one read-only query and stream Arrow record
batches back (:meth:`Connector.execute`), and what the store reports a table's columns to be
(:meth:`Connector.describe`). What the planner may push down is declared in
:class:`Capabilities`; the planner reads it and never branches on a store's kind.
"""

from __future__ import annotations

import abc
import contextvars
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlglot import exp

from gateway.errors import MeshConfigError, field_problems

query_cancelled: contextvars.ContextVar[Callable[[], bool] | None] = contextvars.ContextVar(
    "query_cancelled", default=None
)
"""Whether the client of the query being started has cancelled or gone away, for a connector
whose store cannot be stopped by closing the stream while a read blocks (SQLite): the executor
sets it around ``execute``; a connector polls it for as long as the query runs."""


@dataclass(frozen=True)
class Capabilities:
    """What a store can run, as the planner sees it.

    Anything a store cannot run, or would answer differently from the gateway's semantics, stays
    in the local engine.
    """

    dialect: str
    """The sqlglot dialect the store's SQL is written in."""

    filters: bool = True
    """WHERE predicates can be pushed."""

    limits: bool = True
    """LIMIT/OFFSET can be pushed (with the ORDER BY that makes them deterministic)."""

    sorts: bool = True
    """ORDER BY can be pushed."""

    aggregates: bool = True
    """GROUP BY and aggregate functions can be pushed."""

    joins: bool = True
    """Joins between products in this store can run in the store."""

    large_joins: bool = True
    """The store joins large relations well (hash or merge joins). When False, the planner does not
    move joins of relations it can fetch separately into the store (a query the store can run
    whole still goes down whole)."""

    window_functions: bool = True
    """Window functions can be pushed."""

    set_operations: bool = True
    """UNION / INTERSECT / EXCEPT between this store's relations can be pushed."""

    subqueries: bool = True
    """Scalar, IN and EXISTS subqueries (correlated too) can be pushed. When False, a query with
    one is split: the subquery's own part and the rest are fetched apart and joined locally."""

    distinct_ordered_limits: bool = True
    """A query block with SELECT DISTINCT, ORDER BY and LIMIT together answers as written. False
    keeps such blocks local (MariaDB 10.11 ignores expression keys of that ORDER BY over a merged
    derived table and returns the wrong row)."""

    case_insensitive_text: bool = False
    """String comparison ignores case by default (MySQL collations): text predicates, joins,
    grouping and DISTINCT on text run locally to keep the gateway's case-sensitive meaning."""

    typed_columns: bool = True
    """Every value of a result column has the column's type. False for SQLite, whose values
    carry their own types: a computed column could hold integers in its first rows and reals
    later (``sum`` of a decimal column, a UNION of an integer and a real column), which the ADBC
    driver, typing the column from its first batch, failed on ("Type mismatch: expected INT64
    but got DOUBLE"). The planner casts such a store's numeric and computed text outputs to the
    types the gateway expects."""

    unsupported_functions: frozenset[type[exp.Expression]] = field(default_factory=frozenset)
    """sqlglot expression types the store lacks or computes differently; queries using them
    keep that part local."""

    unknown_functions: bool = True
    """Functions sqlglot does not know (``exp.Anonymous``: DuckDB's ``hash()``, ``product()``,
    ``now()``...) exist at this store under the same name. True where the store speaks the
    gateway's dialect (DuckDB); elsewhere such calls run in the local engine."""

    fence: exp.Expression | None = None
    """A clause that keeps the store's optimizer from moving the outer query's predicates into a
    derived table (PostgreSQL's ``OFFSET 0``, a LIMIT no table reaches elsewhere), set on each
    row-filtered relation the store receives so the row filter runs before the query's own
    predicates: else a predicate that fails on some value (a cast, a regular expression read
    from a column) could fail on a hidden row, and its error would tell the principal that the
    row exists. None where the store never evaluates a predicate that can fail before the
    filter beneath it (DuckDB: ``tests/test_governance_barrier.py`` holds it to that)."""

    key_tables: bool = False
    """The store can read Arrow tables the gateway sends along with a query
    (:meth:`Connector.execute_with_tables`): a dynamic filter of any size is a semi-join at the
    store instead of an IN list."""


class ConnectorSettings(BaseModel):
    """Settings every store kind accepts; each connector extends this model."""

    model_config = ConfigDict(extra="forbid")

    kind: str
    connect_timeout_seconds: float = Field(default=10, gt=0)
    query_timeout_seconds: float = Field(default=300, gt=0)
    pool_size: int = Field(default=4, ge=1, le=64)


def limit_fence(rows: int) -> exp.Expression:
    """A ``LIMIT rows`` as a :attr:`Capabilities.fence`: a limit above any table's row count."""
    return exp.Limit(expression=exp.Literal.number(rows))


def sql_string(value: object, *, dialect: str = "duckdb") -> str:
    """``value`` as a string literal of ``dialect``, quoted by sqlglot (paths, settings, SQL text
    handed to a function such as ``postgres_query``).

    >>> sql_string("it's")
    "'it''s'"
    """
    return exp.Literal.string(str(value)).sql(dialect=dialect)


def secret_from_env(variable: str | None, *, store: str, field_name: str) -> str | None:
    """Read a secret from the environment variable named in mesh.yaml; never from the file."""
    if variable is None:
        return None
    value = os.environ.get(variable)
    if value is None:
        raise MeshConfigError(
            [
                f"mesh.yaml: field `stores.{store}.{field_name}`: environment variable "
                f"{variable!r} is not set; export it before starting the gateway"
            ]
        )
    return value


class Connector(abc.ABC):
    """One store: a named database or file location owned by a domain."""

    kind: ClassVar[str]
    capabilities: ClassVar[Capabilities]
    role: str = "store"
    """What errors call it: a ``store``, or the ``engine`` cross-store queries may run on."""
    Settings: ClassVar[type[ConnectorSettings]] = ConnectorSettings

    def __init__(self, name: str, settings: dict[str, Any], *, base_dir: Path):
        self.name = name
        self.base_dir = base_dir
        try:
            self.settings = self.Settings.model_validate(settings)
        except ValidationError as exc:
            raise MeshConfigError(
                [
                    f"mesh.yaml: field `{'.'.join(map(str, ('stores', name, *p.location)))}`: "
                    f"{p.message}"
                    for p in field_problems(exc)
                ]
            ) from None

    def relation(
        self, table: str | None, sql: str | None, *, columns: Mapping[str, str] | None = None
    ) -> exp.Expression:
        """The store-side relation behind a product: a table or view name, or a query.

        ``columns`` are the product's contract types, for stores whose data carries no schema of
        its own (JSON lines). Returns a sqlglot expression usable in a FROM clause of this store's
        dialect.
        """
        if sql is not None:
            query = exp.maybe_parse(sql, dialect=self.capabilities.dialect)
            return query.subquery("product_source", copy=False)
        return exp.to_table(table, dialect=self.capabilities.dialect)

    @abc.abstractmethod
    def execute(
        self, sql: str, *, parameters: pa.RecordBatch | None = None
    ) -> pa.RecordBatchReader:
        """Run one read-only query written in this store's dialect and stream its result.

        Closing the reader before it is exhausted stops the query at the store and releases its
        connection. Raises SourceUnavailable when the store cannot be reached, QueryTimeout after
        ``query_timeout_seconds`` and InvalidQuery when the store rejects the SQL.
        """

    def trino_name(
        self, table: str | None, sql: str | None, *, catalog: str, schema: str | None
    ) -> exp.Table | None:
        """The product's relation as a Trino cluster names it, when that cluster reaches this
        store through ``catalog`` (and ``schema``, where the store has no schema of its own in
        the product's table name); None when it cannot be named there (stores Trino does not
        read, products defined by a query), and the part that reads it stays with the gateway.
        """
        return None

    @staticmethod
    def _trino_table(catalog: str, schema: str, name: str) -> exp.Table:
        """``"catalog"."schema"."name"`` as one quoted Trino relation."""
        return exp.Table(
            this=exp.to_identifier(name, quoted=True),
            db=exp.to_identifier(schema, quoted=True),
            catalog=exp.to_identifier(catalog, quoted=True),
        )

    def execute_with_tables(
        self, sql: str, *, tables: Mapping[str, pa.Table]
    ) -> pa.RecordBatchReader:
        """Run ``sql``, which may read each of ``tables`` by its name, in a store whose
        capabilities declare ``key_tables``."""
        raise NotImplementedError(f"store {self.name!r} cannot read tables sent with a query")

    def describe(self, relation: exp.Expression) -> pa.Schema:
        """The columns and Arrow types the store reports for a relation (for contract checks)."""
        query = exp.select("*").from_(relation.copy()).limit(0)
        reader = self.execute(query.sql(dialect=self.capabilities.dialect))
        try:
            return reader.schema
        finally:
            reader.close()

    @property
    def connection_slots(self) -> int | None:
        """How many queries the store serves at once through the gateway (its ``pool_size``);
        None where there is no such bound (stores run in-process)."""
        return self.settings.pool_size

    def close(self) -> None:  # noqa: B027 - connectors without resources need nothing
        """Release connections and pools."""

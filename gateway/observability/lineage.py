"""OpenLineage: a START and a COMPLETE or FAIL run event for every query.

The query is the job run: the job is named after the statement (``query.<hash>``, so the runs of
one statement are runs of one job), the run id is the query id the audit event and the logs
carry. Each product the query read is an input twice: as the data product (namespace
``meshgate://<mesh>``, name its address) and as the physical dataset behind it, named as
OpenLineage's naming conventions say (``postgres://host:port`` + ``db.schema.table``,
``mysql://host:port`` + ``db.table``, ``trino://host:port`` + ``catalog.schema.table``,
``file://<host>`` + the path for Parquet/CSV files and DuckDB/SQLite database files, the table
after the path: ``/data/ref.sqlite/nation``). The answer is the output, with a schema facet,
column lineage from each of its columns to the product columns it came from (``MASKED`` where the
principal reads a column masked), and its row count.

Events are built and sent by one background thread, in batches (``batches.Batches``): the
query path only queues a small record (dropped and counted if the queue is full). What is the
same for every run of a statement by a principal (job, inputs, column lineage) is built with
openlineage-python's classes and serialized once; each event splices it in. Transports: ``file``
(one JSON line per event, appended), ``http`` (one POST per event to OpenLineage's HTTP API,
e.g. Marquez's ``api/v1/lineage``) and ``console`` (the ``openlineage`` logger).
"""

from __future__ import annotations

import contextlib
import datetime
import functools
import hashlib
import json
import logging
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import attr
from openlineage.client.event_v2 import InputDataset, Job, RunEvent
from openlineage.client.facet_v2 import (
    RunFacet,
    column_lineage_dataset,
    datasource_dataset,
    documentation_dataset,
    error_message_run,
    job_type_job,
    output_statistics_output_dataset,
    ownership_dataset,
    processing_engine_run,
    schema_dataset,
    sql_job,
    symlinks_dataset,
)
from openlineage.client.serde import Serde
from sqlglot import exp

from gateway.audit import utc_now
from gateway.mesh import Mesh, Product
from gateway.observability.batches import Batches
from gateway.observability.settings import LineageSettings

log = logging.getLogger(__name__)

PRODUCER = "https://github.com/meshgate/meshgate"
VERSION = "0.1.0"


@attr.define
class MeshgateRunFacet(RunFacet):
    """meshgate's own run facet: the ids that join the run to the audit trail and the trace."""

    queryId: str  # noqa: N815 - OpenLineage's camelCase
    roles: list[str] = attr.field(factory=list)
    traceId: str | None = attr.field(default=None)  # noqa: N815
    principal: str | None = attr.field(default=None)
    outcome: str | None = attr.field(default=None)

    @staticmethod
    def _get_schema() -> str:
        return "https://github.com/meshgate/meshgate/blob/main/docs/MeshgateRunFacet.json"


@dataclass(frozen=True)
class LineageRecord:
    """What the query path hands over for one event: what it has at hand, unformatted; the
    event is built off the path."""

    event_type: str  # START, COMPLETE, FAIL
    run_id: str
    statement: str
    principal: Any  # gateway.principals.Principal
    products: tuple[str, ...]
    schema: Any = None  # the answer's pyarrow Schema
    trace_id: str | None = None
    rows: int | None = None
    bytes: int | None = None
    error: str | None = None
    outcome: str | None = None
    at: float = 0.0
    """When it happened (``time.time()``)."""

    @functools.cached_property
    def output_columns(self) -> tuple[tuple[str, str], ...]:
        """The answer's columns as (name, Arrow type)."""
        return () if self.schema is None else _columns_of(self.schema)

    @property
    def time(self) -> str:
        """``at`` as an ISO 8601 UTC timestamp with milliseconds, as the audit writes them."""
        if not self.at:
            return utc_now()
        moment = datetime.datetime.fromtimestamp(self.at, datetime.UTC)
        return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


MESHGATE_FACET_URL = MeshgateRunFacet._get_schema()
STATISTICS_FACET_URL = (
    output_statistics_output_dataset.OutputStatisticsOutputDatasetFacet._get_schema()
)


def _facet(schema_url: str, **fields: Any) -> dict[str, Any]:
    """A facet as ``Serde.to_dict`` writes it (producer, schema URL, fields without None),
    from a plain dict: the attrs classes and Serde cost ~0.1 ms per event for the facets that
    change with every run."""
    facet = {"_producer": PRODUCER, "_schemaURL": schema_url}
    facet.update((key, value) for key, value in fields.items() if value is not None)
    return facet


_COLUMNS: dict[int, tuple[Any, tuple[tuple[str, str], ...]]] = {}


def _columns_of(schema: Any) -> tuple[tuple[str, str], ...]:
    """(name, Arrow type) of each field of ``schema``, remembered per schema object (a cached
    plan's runs share one; formatting each type costs microseconds)."""
    found = _COLUMNS.get(id(schema))
    if found is None or found[0] is not schema:
        if len(_COLUMNS) > 1024:
            _COLUMNS.clear()
        found = _COLUMNS[id(schema)] = (schema, tuple((f.name, str(f.type)) for f in schema))
    return found[1]


def job_name(statement: str) -> str:
    """The job of a statement: runs of the same text are runs of one job.

    >>> job_name("SELECT 1")
    'query.e004ebd5b5532a4b'
    """
    return "query." + hashlib.sha256(statement.encode()).hexdigest()[:16]


def physical_datasets(
    product: Product, kind: str, settings: Any, *, base_dir: Path, host: str | None = None
) -> list[tuple[str, str]]:
    """The (namespace, name) of the physical datasets behind ``product`` in OpenLineage's naming:
    its table, or the tables its ``sql:`` reads."""
    descriptor = product.descriptor
    if descriptor.table is not None:
        tables = [descriptor.table]
    else:
        dialect = {"postgres": "postgres", "mysql": "mysql", "trino": "trino"}.get(kind, "duckdb")
        tables = sorted(
            {t.sql(dialect=dialect) for t in exp.maybe_parse(descriptor.sql).find_all(exp.Table)}
        )
    return [_physical(table, kind, settings, base_dir=base_dir, host=host) for table in tables]


def _physical(
    table: str, kind: str, settings: Any, *, base_dir: Path, host: str | None
) -> tuple[str, str]:
    parts = [p.strip('"`') for p in table.split(".")]
    match kind:
        case "postgres":
            schema, name = (["public", *parts] if len(parts) == 1 else parts)[-2:]
            return (
                f"postgres://{settings.host}:{settings.port}",
                f"{settings.database}.{schema}.{name}",
            )
        case "mysql":
            database, name = ([settings.database, *parts] if len(parts) == 1 else parts)[-2:]
            return f"mysql://{settings.host}:{settings.port}", f"{database}.{name}"
        case "trino":
            full = [settings.catalog, settings.schema_name][: max(0, 3 - len(parts))] + parts
            return f"trino://{settings.host}:{settings.port}", ".".join(full[-3:])
        case "files":
            path = (base_dir / settings.root / table).resolve()
            return f"file://{host or socket.gethostname()}", str(path)
        case _:  # duckdb, sqlite and any other database file: the file, then the table
            path = (base_dir / settings.path).resolve()
            return f"file://{host or socket.gethostname()}", f"{path}/{'.'.join(parts)}"


def column_lineage(
    statement: str,
    output_columns: list[str],
    products: Mapping[str, Product],
    masked: Mapping[str, set[str]],
    *,
    dialect: str,
) -> tuple[dict[str, list[tuple[str, str, bool, str]]], list[tuple[str, str, bool, str]]]:
    """Each output column -> the (product, column, masked, subtype) it came from, by sqlglot's
    column lineage over the statement as the client wrote it (product addresses as tables), and
    the columns that shape the whole answer (:func:`indirect_lineage`).

    ``subtype`` is IDENTITY (the column itself), TRANSFORMATION or AGGREGATION.
    """
    from sqlglot.lineage import lineage
    from sqlglot.optimizer.qualify import qualify

    schema: dict[str, dict[str, dict[str, str]]] = {}
    for address, product in products.items():
        domain, name = address.split(".", 1)
        schema.setdefault(domain, {})[name] = {c.name: c.type for c in product.columns}
    tree = qualify(exp.maybe_parse(statement, dialect=dialect), schema=schema, dialect=dialect)
    selects = tree.selects
    result: dict[str, list[tuple[str, str, bool, str]]] = {}
    for position, select in enumerate(selects):
        output = output_columns[position] if position < len(output_columns) else None
        if output is None:
            break
        node = lineage(select.alias_or_name, tree, schema=schema, dialect=dialect, copy=False)
        aggregated = any(isinstance(n.expression.this if isinstance(n.expression, exp.Alias)
                                    else n.expression, exp.AggFunc)
                         or (isinstance(n.expression, exp.Expression)
                             and n.expression.find(exp.AggFunc) is not None
                             and not isinstance(n.expression, exp.Table))
                         for n in node.walk())  # fmt: skip
        inputs: list[tuple[str, str, bool, str]] = []
        for leaf in node.walk():
            if not isinstance(leaf.expression, exp.Table):
                continue
            table = leaf.expression
            address = f"{table.db}.{table.name}"
            if address not in products:
                continue
            column = leaf.name.split(".")[-1].strip('"')
            subtype = "AGGREGATION" if aggregated else (
                "IDENTITY" if _is_identity(node) else "TRANSFORMATION"
            )  # fmt: skip
            entry = (address, column, column in masked.get(address, set()), subtype)
            if entry not in inputs:
                inputs.append(entry)
        result[output] = inputs
    return result, indirect_lineage(tree, products, masked)


INDIRECT_CLAUSES = (("where", "FILTER"), ("having", "FILTER"), ("group", "GROUP_BY"),
                    ("order", "SORT"))  # fmt: skip


def indirect_lineage(
    tree: exp.Expression, products: Mapping[str, Product], masked: Mapping[str, set[str]]
) -> list[tuple[str, str, bool, str]]:
    """The product columns that shape the answer as a whole rather than one of its columns:
    those its joins (JOIN), filters (FILTER), grouping (GROUP_BY) and ordering (SORT) read, as
    (product, column, masked, subtype), in each SELECT of the qualified ``tree``."""
    from sqlglot.optimizer.scope import traverse_scope

    found: list[tuple[str, str, bool, str]] = []
    for scope in traverse_scope(tree):
        select = scope.expression
        if not isinstance(select, exp.Select):
            continue
        parts = [(select.args.get(key), subtype) for key, subtype in INDIRECT_CLAUSES]
        parts += [(join.args.get("on"), "JOIN") for join in select.args.get("joins") or ()]
        for node, subtype in parts:
            for column in node.find_all(exp.Column) if node is not None else ():
                source = scope.sources.get(column.table)
                if not isinstance(source, exp.Table):
                    continue  # a derived table or CTE: its own scope names the products
                address = f"{source.db}.{source.name}"
                if address in products:
                    entry = (address, column.name, column.name in masked.get(address, ()), subtype)
                    if entry not in found:
                        found.append(entry)
    return found


def _is_identity(node) -> bool:
    """Whether every step from the output column down to its table is a bare column."""
    for step in node.walk():
        expression = step.expression
        if isinstance(expression, exp.Table):
            continue
        value = expression.this if isinstance(expression, exp.Alias) else expression
        if not isinstance(value, exp.Column):
            return False
    return True


class LineageEmitter:
    """Builds and sends a gateway's OpenLineage events from one background thread."""

    def __init__(
        self,
        settings: LineageSettings,
        *,
        mesh: Mesh,
        connectors: Mapping[str, Any],
        policy: Any,
        on_sent: Any = None,
    ):
        self.settings = settings
        self.mesh = mesh
        self.namespace = settings.namespace or f"meshgate://{mesh.name}"
        self._connectors = connectors
        self._policy = policy
        self._on_sent = on_sent or (lambda event_type, ok: None)
        self._send = _sender(settings, mesh.root)
        self._failing = False
        self._engine = Serde.to_dict(
            processing_engine_run.ProcessingEngineRunFacet(
                version=VERSION, name="meshgate", producer=PRODUCER
            )
        )
        self._static: dict[tuple, tuple] = {}
        """(statement, products, principal, policy) -> the job, inputs and output facets of its
        events: built once, as they only change with those."""
        self._batches = Batches(
            self._send_batch,
            name="meshgate-lineage",
            seconds=settings.batch_seconds,
            size=settings.batch_size,
            capacity=settings.queue_size,
            on_drop=lambda record: self._on_sent(record.event_type, "dropped"),
        )

    def emit(self, record: LineageRecord) -> None:
        """Queue ``record``; never waits (a full queue drops it and counts the drop)."""
        self._batches.put(record)

    def flush(self, timeout: float = 10.0) -> bool:
        """Send every queued event now (tests, shutdown); False on timeout."""
        return self._batches.flush(timeout)

    def close(self) -> None:
        self._batches.close()
        with contextlib.suppress(Exception):  # a transport that fails to close
            self._send.close()

    def _send_batch(self, records: list[LineageRecord]) -> None:
        for record in records:
            self._send_one(record)

    def _send_one(self, record: LineageRecord) -> None:
        try:
            self._send(self.event(record))
        except Exception as exc:  # noqa: BLE001 - lineage must never stop the gateway
            if not self._failing:  # once per outage, not once per event
                self._failing = True
                log.warning("could not send OpenLineage events (%s); retrying each", exc)
            self._on_sent(record.event_type, "failed")
            return
        self._on_sent(record.event_type, "sent")
        if self._failing:
            self._failing = False
            log.warning("OpenLineage events are sent again")

    # --- building events ------------------------------------------------------------------

    def event(self, record: LineageRecord) -> str:
        """The OpenLineage RunEvent of ``record`` as one line of JSON.

        The job, the inputs and the answer's facets are the same for every run of a statement by
        a principal under one policy: they are built with openlineage-python's classes and
        serialized once (``Serde``), and each event splices them in. Serializing each event whole
        cost about 1.3 ms of the gateway's CPU per query; splicing costs a few microseconds.
        """
        run_facets: dict[str, Any] = {
            "processing_engine": self._engine,
            "meshgate": _facet(
                MESHGATE_FACET_URL,
                queryId=record.run_id,
                roles=list(record.principal.roles),
                traceId=record.trace_id,
                principal=record.principal.name if self.settings.include_principal else None,
                outcome=record.outcome,
            ),
        }
        if record.error is not None:
            run_facets["errorMessage"] = Serde.to_dict(
                error_message_run.ErrorMessageRunFacet(
                    message=record.error, programmingLanguage="SQL", producer=PRODUCER
                )
            )
        job_name, job, inputs, output_facets = self._static_parts(record)
        outputs = "[]"
        if output_facets is not None:
            statistics = {}
            if record.rows is not None:
                statistics["outputStatistics"] = _facet(
                    STATISTICS_FACET_URL, rowCount=record.rows, size=record.bytes
                )
            outputs = (
                f'[{{"facets":{output_facets},"name":{json.dumps(job_name + ".result")},'
                f'"namespace":{json.dumps(self.namespace)},'
                f'"outputFacets":{_json(statistics)}}}]'
            )
        run = {"facets": run_facets, "runId": record.run_id}
        return (
            f'{{"eventTime":{json.dumps(record.time)},'
            f'"eventType":{json.dumps(record.event_type)},"inputs":{inputs},"job":{job},'
            f'"outputs":{outputs},"producer":{json.dumps(PRODUCER)},"run":{_json(run)},'
            f'"schemaURL":{json.dumps(RunEvent._get_schema())}}}'
        )

    def _static_parts(self, record: LineageRecord) -> tuple[str, str, str, str | None]:
        principal = record.principal
        key = (record.statement, record.products, record.output_columns, principal.cache_key())
        key += (id(self._policy_snapshot()),)
        parts = self._static.get(key)
        if parts is None:
            if len(self._static) > 1024:
                self._static.clear()
            parts = self._static[key] = self._build_static(record)
        return parts

    def _build_static(self, record: LineageRecord) -> tuple[str, str, str, str | None]:
        """The job's name, and the job, inputs and answer facets of ``record`` as JSON text."""
        job = Job(
            namespace=self.namespace,
            name=job_name(record.statement),
            facets={
                "sql": sql_job.SQLJobFacet(query=record.statement, producer=PRODUCER),
                "jobType": job_type_job.JobTypeJobFacet(
                    processingType="BATCH", integration="MESHGATE", jobType="QUERY",
                    producer=PRODUCER,
                ),
            },
        )  # fmt: skip
        products = {a: self.mesh.products[a] for a in record.products if a in self.mesh.products}
        inputs = [d for a, product in products.items() for d in self._inputs(a, product)]
        output = self._output_facets(record, products) if record.output_columns else None
        return (
            job.name,
            _json(Serde.to_dict(job)),
            _json([Serde.to_dict(dataset) for dataset in inputs]),
            None if output is None else _json({k: Serde.to_dict(v) for k, v in output.items()}),
        )

    def _inputs(self, address: str, product: Product) -> list[InputDataset]:
        store = self.mesh.config.stores[product.store]
        connector = self._connectors.get(product.store)
        settings = getattr(connector, "settings", None)
        physical = (
            physical_datasets(product, store.kind, settings, base_dir=self.mesh.root)
            if settings is not None
            else []
        )
        fields = _schema(product)
        product_dataset = InputDataset(
            namespace=self.namespace,
            name=address,
            facets={
                "schema": fields,
                "documentation": documentation_dataset.DocumentationDatasetFacet(
                    description=product.descriptor.description, producer=PRODUCER
                ),
                "ownership": ownership_dataset.OwnershipDatasetFacet(
                    owners=[ownership_dataset.Owner(name=product.descriptor.owner, type="OWNER")],
                    producer=PRODUCER,
                ),
                "symlinks": symlinks_dataset.SymlinksDatasetFacet(
                    identifiers=[
                        symlinks_dataset.Identifier(namespace=ns, name=name, type="TABLE")
                        for ns, name in physical
                    ],
                    producer=PRODUCER,
                ),
            },
        )
        physical_inputs = [
            InputDataset(
                namespace=ns,
                name=name,
                facets={
                    "schema": fields,
                    "dataSource": datasource_dataset.DatasourceDatasetFacet(
                        name=product.store, uri=ns, producer=PRODUCER
                    ),
                },
            )
            for ns, name in physical
        ]
        return [product_dataset, *physical_inputs]

    def _output_facets(
        self, record: LineageRecord, products: Mapping[str, Product]
    ) -> dict[str, Any]:
        """The answer's schema and column lineage facets."""
        fields = schema_dataset.SchemaDatasetFacet(
            fields=[
                schema_dataset.SchemaDatasetFacetFields(name=name, type=kind)
                for name, kind in record.output_columns
            ],
            producer=PRODUCER,
        )
        facets: dict[str, Any] = {"schema": fields}
        lineage = self._column_lineage(record, products)
        if lineage is not None:
            facets["columnLineage"] = lineage
        return facets

    def _column_lineage(self, record: LineageRecord, products: Mapping[str, Product]):
        principal = record.principal
        masked = {
            address: set(self._policy.decide(principal, product).masks)
            for address, product in products.items()
        }
        try:
            fields, indirect = column_lineage(
                record.statement,
                [name for name, _ in record.output_columns],
                products,
                masked,
                dialect=self.mesh.config.gateway.dialect,
            )
        except Exception:  # noqa: BLE001 - a statement sqlglot cannot trace has no facet
            log.debug("no column lineage for %s", record.statement, exc_info=True)
            fields, indirect = {}, []
        if not fields and not indirect:
            return None

        def field(address: str, column: str, masked: bool, kind: str, subtype: str):
            return column_lineage_dataset.InputField(
                namespace=self.namespace,
                name=address,
                field=column,
                transformations=[
                    column_lineage_dataset.Transformation(
                        type=kind, subtype=subtype, masking=masked
                    )
                ],
            )

        return column_lineage_dataset.ColumnLineageDatasetFacet(
            fields={
                output: column_lineage_dataset.Fields(
                    inputFields=[field(*entry[:3], "DIRECT", entry[3]) for entry in inputs],
                    transformationType=_transformation_type(inputs),
                    transformationDescription=_description(inputs),
                )
                for output, inputs in fields.items()
                if inputs
            },
            dataset=[field(*entry[:3], "INDIRECT", entry[3]) for entry in indirect],
            producer=PRODUCER,
        )

    def _policy_snapshot(self) -> object:
        """Changes when the policy files are reloaded (masks may differ then)."""
        return getattr(self._policy, "_snapshot", self._policy)


def _transformation_type(inputs: list[tuple[str, str, bool, str]]) -> str | None:
    if any(masked for _, _, masked, _ in inputs):
        return "MASKED"
    if all(subtype == "IDENTITY" for *_, subtype in inputs):
        return "IDENTITY"
    return None


def _description(inputs: list[tuple[str, str, bool, str]]) -> str | None:
    masked = [f"{a}.{c}" for a, c, m, _ in inputs if m]
    return f"masked by policy: {', '.join(masked)}" if masked else None


def _schema(product: Product) -> schema_dataset.SchemaDatasetFacet:
    return schema_dataset.SchemaDatasetFacet(
        fields=[
            schema_dataset.SchemaDatasetFacetFields(
                name=c.name, type=c.type, description=c.description or None
            )
            for c in product.columns
        ],
        producer=PRODUCER,
    )


def _json(value: object) -> str:
    """JSON as openlineage-python's Serde writes it: keys sorted."""
    return json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


class _Sender:
    """Where events go: one JSON line each (file, console) or one POST each (http)."""

    def __call__(self, line: str) -> None:
        raise NotImplementedError

    def close(self) -> None:
        pass


class _FileSender(_Sender):
    """Appends each event as one line with one ``write()`` (``O_APPEND``): lines from several
    threads or gateway processes sharing the file never interleave."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_CLOEXEC", 0)
        self._fd = os.open(path, flags, 0o640)

    def __call__(self, line: str) -> None:
        data = (line + "\n").encode()
        written = os.write(self._fd, data)
        while written < len(data):
            written += os.write(self._fd, data[written:])

    def close(self) -> None:
        os.close(self._fd)


class _ConsoleSender(_Sender):
    def __call__(self, line: str) -> None:
        logging.getLogger("openlineage").info(line)


class _HttpSender(_Sender):
    """POSTs each event to ``<url>/<endpoint>`` (OpenLineage's HTTP API, as Marquez serves it)
    over one kept-alive connection (stdlib ``http.client``: a POST through ``requests`` cost
    about 1 ms of the gateway's CPU, this a tenth of that), reconnecting when it drops."""

    def __init__(self, settings: LineageSettings):
        from urllib.parse import urlsplit

        url = urlsplit(settings.url.rstrip("/") + "/" + settings.endpoint.lstrip("/"))
        self._https = url.scheme == "https"
        self._host, self._port = url.hostname, url.port
        self._path = url.path + (f"?{url.query}" if url.query else "")
        self._headers = {"Content-Type": "application/json"}
        if settings.api_key_env:
            key = os.environ.get(settings.api_key_env, "")
            self._headers["Authorization"] = f"Bearer {key}"
        self._timeout = settings.timeout_seconds
        self._connection = None

    def _connect(self):
        import http.client

        kind = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
        return kind(self._host, self._port, timeout=self._timeout)

    def __call__(self, line: str) -> None:
        import http.client

        body = line.encode()
        for attempt in (1, 2):  # a kept-alive connection the server closed: reconnect once
            if self._connection is None:
                self._connection = self._connect()
            try:
                self._connection.request("POST", self._path, body=body, headers=self._headers)
                answer = self._connection.getresponse()
                answer.read()
            except (OSError, http.client.HTTPException) as exc:
                self.close()
                if attempt == 2:
                    raise OSError(f"OpenLineage backend unreachable: {exc}") from exc
                continue
            if answer.status >= 300:
                raise OSError(f"the OpenLineage backend answered {answer.status} {answer.reason}")
            return

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None


def _sender(settings: LineageSettings, root: Path) -> _Sender:
    match settings.transport:
        case "file":
            return _FileSender(root / settings.path)
        case "http":
            return _HttpSender(settings)
    return _ConsoleSender()

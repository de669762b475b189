"""The Arrow Flight SQL server: the one door every consumer reads the mesh through.

Commands arrive packed in ``google.protobuf.Any`` inside Flight descriptors, tickets and action
bodies; this module unpacks them, asks the :class:`~gateway.service.Gateway` and streams the
answers. Every GatewayError leaves as a Flight error with its status code (gateway.errors);
anything unexpected is logged and reported as INTERNAL without a traceback.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import json
import logging
import secrets
import threading
import time
from collections.abc import Callable, Iterator

import pyarrow as pa
import pyarrow.flight as flight
from google.protobuf import any_pb2
from sqlglot import exp

from gateway.draining import Lifecycle
from gateway.errors import (
    InvalidQuery,
    NotFound,
    ShuttingDown,
    Unsupported,
    client_error,
    hide_python_details,
)
from gateway.flightsql import flight_session_pb2 as session_pb2
from gateway.flightsql import flight_sql_pb2 as sql_pb2
from gateway.flightsql import metadata
from gateway.flightsql.auth import MIDDLEWARE_KEY, AuthMiddlewareFactory, NoOpHandshake
from gateway.flightsql.commands import METADATA_COMMANDS
from gateway.flightsql.notices import NOTICES_KEY, NoticeMiddlewareFactory, add_notices
from gateway.flightsql.parameter_types import parameter_schema
from gateway.jwt_auth import IdentityProvider
from gateway.plan_cache import PlanCache, plan_key
from gateway.planner.parse import parse_statement, split_explain
from gateway.principals import Principal
from gateway.query_stream import QueryStream
from gateway.service import Gateway
from gateway.tls import server_tls_options, tls_location
from gateway.tokens import Signer

log = logging.getLogger(__name__)

EXPLAIN_SCHEMA = pa.schema([pa.field("plan", pa.string(), nullable=False)])
PREPARED_TTL_SECONDS = 3600
PRUNE_SECONDS = 60


def _pack(message) -> bytes:
    wrapped = any_pb2.Any()
    wrapped.Pack(message)
    return wrapped.SerializeToString()


def _unpack(data: bytes):
    """The Flight SQL message inside ``data`` (a serialized Any), or InvalidQuery."""
    wrapped = any_pb2.Any()
    try:
        wrapped.ParseFromString(data)
    except Exception:  # noqa: BLE001 - protobuf raises DecodeError and others
        raise InvalidQuery("the command is not a Flight SQL message") from None
    name = wrapped.TypeName()
    for module in (sql_pb2, session_pb2):
        message_class = getattr(module, name.rpartition(".")[2], None)
        if message_class is not None and message_class.DESCRIPTOR.full_name == name:
            message = message_class()
            wrapped.Unpack(message)
            return message
    raise Unsupported(f"the Flight SQL command {name or '(empty)'} is not supported by meshgate")


@functools.lru_cache(maxsize=1024)
def _placeholder_count(statement: str, dialect: str) -> int:
    """How many ``?`` a statement has; clients prepare the same statements again and again."""
    parsed = parse_statement(statement, dialect=dialect)
    return sum(1 for _ in parsed.find_all(exp.Placeholder))


def _values(batch: pa.RecordBatch) -> tuple:
    """The one set of parameter values a bound batch holds (none if it has no rows)."""
    return tuple(batch.to_pylist()[0].values()) if batch.num_rows else ()


def _decoded_parameters(schema_ipc: str, batch_ipc: str) -> tuple:
    """The values of a parameter batch carried in a handle or ticket. DoPut, GetFlightInfo and
    DoGet each read the same one, so small ones (nearly all) are decoded once."""
    if len(batch_ipc) > CACHED_PARAMETERS_BYTES:
        return _decode_values(schema_ipc, batch_ipc)
    return _cached_values(schema_ipc, batch_ipc)


def _decode_values(schema_ipc: str, batch_ipc: str) -> tuple:
    batch = pa.ipc.read_record_batch(
        pa.py_buffer(base64.b64decode(batch_ipc)),
        pa.ipc.read_schema(pa.py_buffer(base64.b64decode(schema_ipc))),
    )
    return _values(batch)


_cached_values = functools.lru_cache(maxsize=256)(_decode_values)
CACHED_PARAMETERS_BYTES = 16 * 1024


def _edge(method):
    """Every error of a Flight call leaves through gateway.errors.client_error: its status,
    its public message scrubbed of physical names, unexpected ones as INTERNAL with a log
    reference; never a traceback."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - each one is mapped, none leaves as it is
            raise client_error(exc, log=log, scrub=self.gateway.redactor.scrub) from None

    return wrapper


def _served(
    stream: QueryStream, scrub: Callable[[str], str], call: _LiveCall | None
) -> flight.GeneratorStream:
    """The answer's stream, whose errors leave as the same client errors as any other; each
    batch is pulled while the call is certainly alive (``_LiveCall``).

    A GeneratorStream, not a RecordBatchStream over a Python reader: pyarrow maps the Flight
    errors a generator raises to their status, while an error raised inside a reader leaves as
    UNKNOWN with the Python traceback as its detail. When the call ends early the generator is
    closed, and so is the stream, which owns everything else (gateway.query_stream).
    """
    alive = call.alive if call is not None else contextlib.nullcontext

    def batches() -> Iterator[pa.RecordBatch]:
        try:
            while True:
                with alive():
                    batch = next(stream, None)
                if batch is None:
                    return
                yield batch
        except Exception as exc:  # noqa: BLE001 - each one is mapped, none leaves as it is
            raise client_error(exc, log=log, scrub=scrub) from None
        finally:
            stream.close()

    return flight.GeneratorStream(stream.schema, batches())


class _LiveCall:
    """Whether a DoGet's client cancelled, asked only while the call is certainly alive.

    The ServerCallContext lives only as long as its call, and pyarrow's wrapper does not know
    when that ends: is_cancelled() on a finished call (from the local engine's watch, after the
    client had gone) segfaulted the server. The call is alive while its handler runs and while
    the gRPC thread is inside the stream's next(); cancelled() answers False at any other time,
    and one lock keeps the call from ending while it asks.
    """

    def __init__(self, context) -> None:
        self._context = context
        self._lock = threading.Lock()
        self._inside = 0

    @contextlib.contextmanager
    def alive(self) -> Iterator[None]:
        with self._lock:
            self._inside += 1
        try:
            yield
        finally:
            with self._lock:
                self._inside -= 1

    def cancelled(self) -> bool:
        with self._lock:
            return self._inside > 0 and self._context.is_cancelled()


def _session_options_request(action: flight.Action) -> session_pb2.SetSessionOptionsRequest:
    request = session_pb2.SetSessionOptionsRequest()
    try:
        request.ParseFromString(action.body.to_pybytes())
    except Exception:  # noqa: BLE001 - protobuf raises DecodeError and others
        raise InvalidQuery("SetSessionOptions needs a SetSessionOptionsRequest") from None
    return request


class MeshFlightServer(flight.FlightServerBase):
    def __init__(self, gateway: Gateway, location: str = "grpc://127.0.0.1:8815", **kwargs):
        self.gateway = gateway
        self.signer = Signer()
        hide_python_details()
        identity_provider = None
        if gateway.settings.identity_provider is not None:
            identity_provider = IdentityProvider(
                gateway.settings.identity_provider, gateway.mesh.root
            )
        anonymous = (
            Principal("anonymous")
            if not gateway.principals.names() and identity_provider is None
            else None
        )
        if gateway.settings.tls is not None and "tls_certificates" not in kwargs:
            kwargs.update(server_tls_options(gateway.settings.tls, gateway.mesh.root))
        if kwargs.get("tls_certificates"):
            location = tls_location(location)
        self.listen_location = location
        super().__init__(
            location,
            auth_handler=NoOpHandshake(),
            middleware={
                MIDDLEWARE_KEY: AuthMiddlewareFactory(
                    gateway.current_principals,
                    self.signer,
                    token_ttl_seconds=gateway.settings.token_ttl_seconds,
                    anonymous=anonymous,
                    identity_provider=identity_provider,
                ),
                NOTICES_KEY: NoticeMiddlewareFactory(),
                **gateway.observe.flight_middleware(),  # a client's trace context, if traced
            },
            **kwargs,
        )
        self.lifecycle = Lifecycle()
        self._bound: dict[str, tuple[float, bytes]] = {}  # prepared id -> (time, parameters IPC)
        self._bound_lock = threading.Lock()
        self._pruned_at = time.monotonic()
        self._parameter_schemas: PlanCache[pa.Schema] = PlanCache()

    # --- helpers ---------------------------------------------------------------------------

    @staticmethod
    def _principal(context) -> Principal:
        return context.get_middleware(MIDDLEWARE_KEY).principal

    def _refuse_if_draining(self) -> None:
        if self.lifecycle.draining.is_set():
            raise ShuttingDown(
                "the gateway is shutting down and takes no new queries; retry, another replica "
                "(or this one, restarted) will answer"
            )

    def _statement_schema(
        self, sql: str, principal: Principal, parameters: list | None
    ) -> pa.Schema:
        explain, statement = split_explain(sql)
        if explain:
            self.gateway.schema(statement, principal, parameters)  # validates and governs
            return EXPLAIN_SCHEMA
        return metadata.result_schema(self.gateway.schema(sql, principal, parameters))

    def _query_ticket(self, principal: Principal, sql: str, parameters_ipc: str | None) -> bytes:
        handle = self.signer.sign("ticket", {"p": principal.name, "q": sql, "b": parameters_ipc})
        return _pack(sql_pb2.TicketStatementQuery(statement_handle=handle))

    def _flight_info(self, descriptor, schema: pa.Schema, ticket: bytes) -> flight.FlightInfo:
        endpoint = flight.FlightEndpoint(ticket, [])
        return flight.FlightInfo(schema, descriptor, [endpoint], -1, -1)

    def _prepared(self, handle: bytes, principal: Principal) -> dict:
        payload = self.signer.verify("prepared statement", handle)
        if payload["p"] != principal.name:
            raise NotFound("unknown prepared statement; prepare it again")
        if payload.get("b") is None:
            with self._bound_lock:
                bound = self._bound.get(payload["id"])
            if bound is not None:
                payload["b"] = bound[1]
        return payload

    @staticmethod
    def _decode_parameters(parameters_ipc: list[str] | None) -> list | None:
        if parameters_ipc is None:
            return None
        return list(_decoded_parameters(*parameters_ipc))

    # --- Flight RPCs -----------------------------------------------------------------------

    @_edge
    def get_flight_info(self, context, descriptor):
        principal = self._principal(context)
        self._refuse_if_draining()
        command = _unpack(descriptor.command)
        schema, ticket = self._describe(command, principal, descriptor.command)
        self._notify(context, command, principal)
        return self._flight_info(descriptor, schema, ticket)

    def _notify(self, context, command, principal: Principal) -> None:
        """Warn the client of what the statement it described reads (deprecated versions)."""
        match command:
            case sql_pb2.CommandStatementQuery():
                self._notify_sql(context, command.query, principal, None)
            case sql_pb2.CommandPreparedStatementQuery():
                prepared = self._prepared(command.prepared_statement_handle, principal)
                parameters = self._decode_parameters(prepared.get("b"))
                self._notify_sql(context, prepared["q"], principal, parameters)

    def _notify_sql(self, context, sql: str, principal: Principal, parameters) -> None:
        _, statement = split_explain(sql)
        add_notices(context, self.gateway.statement_warnings(statement, principal, parameters))

    @_edge
    def get_schema(self, context, descriptor):
        principal = self._principal(context)
        schema, _ = self._describe(_unpack(descriptor.command), principal, descriptor.command)
        return flight.SchemaResult(schema)

    def _describe(self, command, principal: Principal, raw: bytes) -> tuple[pa.Schema, bytes]:
        match command:
            case sql_pb2.CommandStatementQuery():
                schema = self._statement_schema(command.query, principal, None)
                return schema, self._query_ticket(principal, command.query, None)
            case sql_pb2.CommandPreparedStatementQuery():
                prepared = self._prepared(command.prepared_statement_handle, principal)
                parameters = self._decode_parameters(prepared.get("b"))
                schema = self._statement_schema(prepared["q"], principal, parameters)
                return schema, self._query_ticket(principal, prepared["q"], prepared.get("b"))
            case sql_pb2.CommandStatementUpdate() | sql_pb2.CommandPreparedStatementUpdate():
                raise InvalidQuery("meshgate is read-only: updates are not accepted")
        entry = METADATA_COMMANDS.get(type(command))
        if entry is None:
            raise Unsupported(f"{type(command).__name__} is not supported by meshgate")
        return entry.schema(command), raw

    @_edge
    def do_get(self, context, ticket):
        principal = self._principal(context)
        command = _unpack(ticket.ticket)
        if isinstance(command, sql_pb2.TicketStatementQuery):
            self._refuse_if_draining()
            call = _LiveCall(context)
            with call.alive():
                return self._run_ticket(command.statement_handle, principal, context, call)
        return flight.RecordBatchStream(self._metadata_table(command, principal))

    def _run_ticket(
        self, handle: bytes, principal: Principal, context, call: _LiveCall | None = None
    ) -> flight.FlightDataStream:
        payload = self.signer.verify("ticket", handle)
        if payload["p"] != principal.name:
            raise NotFound("unknown ticket; run the query again")
        parameters = self._decode_parameters(payload.get("b"))
        self._notify_sql(context, payload["q"], principal, parameters)
        explain, statement = split_explain(payload["q"])
        if explain:
            plan = self.gateway.describe(statement, principal, parameters)
            lines = self.gateway.explain_for(plan, principal)
            return flight.RecordBatchStream(
                pa.table([pa.array(lines.splitlines())], schema=EXPLAIN_SCHEMA)
            )
        cancelled = call.cancelled if call is not None else None
        stream = self.gateway.stream(statement, principal, parameters, cancelled=cancelled)
        return _served(stream, self.gateway.redactor.scrub, call)

    def _metadata_table(self, command, principal: Principal) -> pa.Table:
        entry = METADATA_COMMANDS.get(type(command))
        if entry is None:
            raise Unsupported(f"{type(command).__name__} cannot be fetched with DoGet")
        return entry.table(self.gateway, command, principal)

    @_edge
    def do_put(self, context, descriptor, reader, writer):
        principal = self._principal(context)
        command = _unpack(descriptor.command)
        if not isinstance(command, sql_pb2.CommandPreparedStatementQuery):
            raise InvalidQuery(
                "meshgate is read-only: DoPut only binds prepared statement parameters"
            )
        prepared = self._prepared(command.prepared_statement_handle, principal)
        table = reader.read_all()
        if table.num_rows > 1:
            raise InvalidQuery(
                f"{table.num_rows} parameter sets were bound; a query takes exactly one set"
            )
        batch = (
            table.combine_chunks().to_batches()[0]
            if table.num_rows
            else pa.record_batch([pa.array([], f.type) for f in table.schema], schema=table.schema)
        )
        encoded = (
            base64.b64encode(batch.schema.serialize().to_pybytes()).decode(),
            base64.b64encode(batch.serialize().to_pybytes()).decode(),
        )
        self._statement_schema(prepared["q"], principal, list(_values(batch)))
        with self._bound_lock:
            now = time.monotonic()
            if now - self._pruned_at >= PRUNE_SECONDS:  # statements their clients never closed
                self._pruned_at = now
                self._bound = {
                    k: v for k, v in self._bound.items() if now - v[0] < PREPARED_TTL_SECONDS
                }
            self._bound[prepared["id"]] = (now, encoded)
        handle = self.signer.sign(
            "prepared statement",
            {"p": principal.name, "q": prepared["q"], "id": prepared["id"], "b": encoded},
        )
        result = sql_pb2.DoPutPreparedStatementResult(prepared_statement_handle=handle)
        writer.write(pa.py_buffer(result.SerializeToString()))

    @_edge
    def do_action(self, context, action):
        principal = self._principal(context)
        kind = action.type
        if kind == "HealthCheck":
            status = self.lifecycle.status(self.gateway.admission.running())
            return [flight.Result(pa.py_buffer(json.dumps(status).encode()))]
        if kind == "CreatePreparedStatement":
            self._refuse_if_draining()
            return [flight.Result(pa.py_buffer(_pack(self._prepare(action, principal))))]
        if kind == "ClosePreparedStatement":
            request = _unpack(action.body.to_pybytes())
            payload = self.signer.verify("prepared statement", request.prepared_statement_handle)
            with self._bound_lock:
                self._bound.pop(payload["id"], None)
            return []
        if kind == "SetSessionOptions":
            result = metadata.set_session_options(_session_options_request(action))
            return [flight.Result(pa.py_buffer(result.SerializeToString()))]
        if kind == "GetSessionOptions":
            result = metadata.session_options()
            return [flight.Result(pa.py_buffer(result.SerializeToString()))]
        if kind == "CloseSession":
            result = session_pb2.CloseSessionResult(status=session_pb2.CloseSessionResult.CLOSED)
            return [flight.Result(pa.py_buffer(result.SerializeToString()))]
        if kind in {"BeginTransaction", "EndTransaction", "BeginSavepoint", "EndSavepoint"}:
            raise Unsupported("meshgate has no transactions; connect with autocommit=True")
        raise Unsupported(f"action {kind!r} is not supported by meshgate")

    def _prepare(
        self, action: flight.Action, principal: Principal
    ) -> sql_pb2.ActionCreatePreparedStatementResult:
        """A prepared statement's handle (signed: the server keeps nothing) and its schemas."""
        request = _unpack(action.body.to_pybytes())
        if not isinstance(request, sql_pb2.ActionCreatePreparedStatementRequest):
            raise InvalidQuery(
                "CreatePreparedStatement needs an ActionCreatePreparedStatementRequest"
            )
        if request.HasField("transaction_id"):
            raise Unsupported("meshgate has no transactions; connect with autocommit=True")
        schema = self._prepare_schema(request.query, principal)
        handle = self.signer.sign(
            "prepared statement",
            {"p": principal.name, "q": request.query, "id": secrets.token_hex(12), "b": None},
        )
        result = sql_pb2.ActionCreatePreparedStatementResult(
            prepared_statement_handle=handle, dataset_schema=schema.serialize().to_pybytes()
        )
        parameters = self._parameter_schema(request.query, principal)
        if parameters is not None:
            result.parameter_schema = parameters.serialize().to_pybytes()
        return result

    def _parameter_schema(self, sql: str, principal: Principal) -> pa.Schema | None:
        """The types of the statement's ``?`` (the JDBC driver binds only into these).

        Worked out once per statement and principal while the policy holds: typing them parses
        the statement and builds a sqlglot schema of every product the principal may read,
        which was a third of the server's Python time per prepared point query."""
        _, statement = split_explain(sql)
        if not _placeholder_count(statement, self.gateway.settings.dialect):
            return None  # most statements: no policy lookups on their way
        self.gateway.reload_policies()
        key = plan_key(statement, principal, "parameter types", self.gateway.policy_generation)
        found = self._parameter_schemas.get(key)
        if found is None:
            visible = self.gateway.visible_products(principal)
            columns = {address: product.columns for address, product in visible.items()}
            found = parameter_schema(statement, columns, dialect=self.gateway.settings.dialect)
            self._parameter_schemas.put(key, found)
        return found

    def _prepare_schema(self, sql: str, principal: Principal) -> pa.Schema:
        """The schema of a statement whose parameters are not bound yet (they bind as NULL)."""
        _, statement = split_explain(sql)
        count = _placeholder_count(statement, self.gateway.settings.dialect)
        return self._statement_schema(sql, principal, [None] * count)

    def list_actions(self, context):
        return [
            ("CreatePreparedStatement", "Prepare a SQL query"),
            ("ClosePreparedStatement", "Release a prepared statement"),
            ("SetSessionOptions", "Choose the catalog (only `mesh` exists)"),
            ("GetSessionOptions", "The session's options: its catalog"),
            ("CloseSession", "End the client's session"),
            ("HealthCheck", 'JSON {"status": "serving" | "draining", "running_queries": n}'),
        ]

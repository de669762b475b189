"""One error hierarchy for everything a client can cause or meet, mapped to Flight once.

Every layer raises a :class:`GatewayError` subclass with a message that says what went wrong and
what to do; :func:`to_flight_error` at the server edge turns it into the Flight status the client
sees. Anything else that escapes is logged and reported as INTERNAL without a traceback.

An error's message (``str(error)``) is what the server log and the audit trail keep. When it holds
what a consumer must not see (a driver's text: physical names, SQL, hosts, file paths), the raiser
gives a ``public`` message as well, and the client gets only that, with a reference to the log.
"""

from __future__ import annotations

import functools
import logging
import re
import traceback
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.flight as flight

if TYPE_CHECKING:
    from pydantic import ValidationError


class GatewayError(Exception):
    """Base of every error meshgate reports to a client.

    ``public`` is the message for the client when ``str(error)`` (kept in the log and the audit
    trail) quotes a store or driver; None when the message itself is fit for the client.
    """

    def __init__(self, message: str = "", *, public: str | None = None):
        super().__init__(message)
        self.public = public


class InvalidQuery(GatewayError):
    """The statement cannot be run as written: syntax, not read-only, several statements, types."""


class NotFound(GatewayError):
    """A product, column, prepared statement or ticket that does not exist (for this principal)."""


class DeniedAsNotFound(NotFound):
    """A product exists but a policy denies it and it is invisible to the principal: the client
    is told it does not exist, the audit trail records a denial."""


class PermissionDenied(GatewayError):
    """The principal is authenticated but a policy forbids the request."""

    def __init__(self, message: str, *, product: str | None = None):
        super().__init__(message)
        self.product = product
        """The product address the policy denied, where one did (for metrics)."""


class Unauthenticated(GatewayError):
    """Missing, wrong or expired credentials."""


class SourceUnavailable(GatewayError):
    """A store could not be reached or failed while answering; other stores keep serving."""

    def __init__(self, message: str, *, store: str | None = None, public: str | None = None):
        super().__init__(message, public=public)
        self.store = store
        """The store (or engine) that failed, where known: a query routed to an engine that is
        down can then run without it."""


class ContractBroken(SourceUnavailable):
    """A store no longer holds what the product's descriptor promises (a column dropped or
    retyped): the product is not served until the store or the descriptor is fixed."""


class ProductRetired(NotFound):
    """A deprecated product version read after its sunset; the message names the replacement."""


class QueryTimeout(GatewayError):
    """A store did not answer within the configured timeout."""


class QueryCancelled(GatewayError):
    """The client cancelled the query or went away."""


class ShuttingDown(SourceUnavailable):
    """The gateway is draining before it stops: new queries go to another replica."""


class ResourceExhausted(GatewayError):
    """A limit of the gateway was reached: concurrent queries, result rows or bytes, memory."""


class Unsupported(GatewayError):
    """A valid request that meshgate does not implement (writes, transactions, Substrait)."""


class MeshConfigError(GatewayError):
    """A mesh that cannot be loaded: each problem names the file, the field and the fix."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__(
            f"the mesh has {len(problems)} problem(s):\n" + "\n".join(f"  - {p}" for p in problems)
        )


@dataclass(frozen=True)
class FieldProblem:
    """One problem pydantic found in a YAML document: where, and what to do about it."""

    location: tuple[str | int, ...]
    """The path of keys and indexes to the field; empty for the document itself."""
    message: str

    @property
    def field(self) -> str:
        """The field as a dotted path (``stores.sales.port``), or ``(top level)``."""
        return ".".join(str(part) for part in self.location) or "(top level)"


def field_problems(error: ValidationError) -> list[FieldProblem]:
    """Each problem of a pydantic ``ValidationError``, worded for the person who wrote the file.

    Every loader of descriptors, mesh.yaml, principals and policies words its problems this one
    way: unknown and missing fields say what to do, a validator's own message stays as written.
    """
    problems = []
    for item in error.errors():
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            message = "unknown field; remove it or check its spelling"
        elif item["type"] == "missing":
            message = "required field is missing; add it"
        problems.append(FieldProblem(tuple(item["loc"]), message))
    return problems


QUOTED_VALUE = re.compile(r"'(?:[^']|'')*'")
INPUT_VALUE = re.compile(r'(input (?:syntax|value) for (?:type )?[\w ]+: )"(?:[^"]|"")*"', re.I)


def values_hidden(text: str) -> str:
    """A store's or engine's message without the values it quotes.

    A failing cast names the value it met ("Could not convert string 'Ann' to INT32"), and a
    store may evaluate it on a row the principal's row filter drops: such a value must not reach
    the client. Identifiers (double quotes in DuckDB's messages) stay.

    >>> values_hidden("Could not convert string 'Ann' to INT32")
    "Could not convert string '…' to INT32"
    """
    return INPUT_VALUE.sub(r'\1"…"', QUOTED_VALUE.sub("'…'", text))


DUCKDB_ERROR = re.compile(r"(?P<kind>[A-Za-z][A-Za-z ]*?) Error: ")
"""How DuckDB begins every error message: its exception type's name, then `` Error: ``."""

DUCKDB_DATA_ERRORS = frozenset(
    {"Conversion", "Out of Range", "Mismatch Type", "Divide by Zero", "Decimal", "Invalid Input"}
)
"""DuckDB's errors about values: a cast or function met a value it cannot take. ``Invalid
Input`` is also what ``error()`` and a failing fragment scan raise (see the executor)."""

DUCKDB_STATEMENT_ERRORS = frozenset(
    {
        "Parser",
        "Syntax",
        "Binder",
        "Catalog",
        "Not implemented",
        "Invalid type",
        "Unknown Type",
        "Parameter Not Resolved",
        "Parameter Not Allowed",
        "Constraint",
        "Dependency",
        "Sequence",
        "Expression",
    }
)
"""DuckDB's errors about the statement itself: its syntax, names, types or functions."""


def duckdb_error_kind(error: BaseException) -> str | None:
    """DuckDB's name for the class of ``error`` (``"Conversion"``, ``"Binder"``, ``"INTERRUPT"``…)
    when DuckDB raised it; None when it did not.

    DuckDB raises its own classes (``duckdb.ConversionException``) from ``execute``, but an error
    met while its result streams (after the first batch) reaches Python through Arrow's C stream
    as a plain ``OSError`` with the same message: both are recognised by that message.

    >>> duckdb_error_kind(OSError("Conversion Error: Could not convert string 'x' to INT32"))
    'Conversion'
    >>> duckdb_error_kind(ValueError("Conversion Error: not DuckDB's")) is None
    True
    """
    module = type(error).__module__ or ""
    if not (module.split(".")[0] in ("duckdb", "_duckdb") or isinstance(error, OSError)):
        return None
    match = DUCKDB_ERROR.match(str(error))
    return match["kind"] if match else None


def engine_error(error: BaseException, *, engine: str) -> GatewayError | None:
    """The GatewayError for ``error`` raised by a DuckDB that runs (part of) a query, the one
    classification of DuckDB's errors whether they come before the first batch or while the
    answer streams; None when DuckDB did not raise ``error``.

    ``engine`` names what ran it for the message ("the local engine", "store 'lake'"). A value
    or statement the engine cannot take is the client's to fix (INVALID_ARGUMENT); running out
    of memory is a limit; a file it cannot read is the store's; an interrupt is a cancellation
    (callers that interrupted it for a deadline say so instead). Anything else DuckDB raised
    for this statement alone (its INTERNAL errors among them) is reported as the statement's:
    the gateway and the other queries go on. The message keeps DuckDB's first line only (the
    next ones quote the SQL: physical names, row filters), and its public form hides values.
    """
    kind = duckdb_error_kind(error)
    if kind is None:
        return None
    reason = str(error).split("\n")[0].rstrip()
    public_reason = values_hidden(reason)
    if kind == "INTERRUPT":
        return QueryCancelled(f"{engine}'s query was interrupted")
    if kind == "Out of Memory":
        return ResourceExhausted(
            f"{engine} ran out of memory for the query ({reason}); narrow it, or ask the "
            "gateway's operators to raise the engine's `memory_limit`",
            public=f"{engine} ran out of memory for the query; narrow it, or ask the gateway's "
            "operators to raise the engine's `memory_limit`",
        )
    if kind in ("IO", "HTTP"):
        return SourceUnavailable(
            f"{engine} cannot read its data: {reason}",
            public=f"{engine} cannot read its data",  # DuckDB names the files
        )
    if kind in DUCKDB_DATA_ERRORS:
        hint = (
            "a value does not fit the cast or function applied to it; change the query "
            "(TRY_CAST, or a filter that keeps such values out)"
        )
    elif kind in DUCKDB_STATEMENT_ERRORS:
        hint = "correct the statement"
    else:
        hint = "change the query"
    return InvalidQuery(
        f"{engine} could not run the query: {reason}; {hint}",
        public=f"{engine} could not run the query: {public_reason}; {hint}",
    )


def new_reference() -> str:
    """A short id that ties what a client was told to the server log entry with the details."""
    return uuid.uuid4().hex[:12]


class _OpaqueDetail:
    """Marks the exceptions that carry a status pyarrow has no Flight exception class for.

    pyarrow turns any other Python exception into an Arrow status whose detail is the exception
    formatted by ``traceback.format_exception`` (frames, server file paths), appended to the
    message every client sees as ``. Detail: Python exception: ...``. :func:`hide_python_details`
    makes that detail, for these exceptions only, the status name.
    """

    status_name = ""


class _InvalidArgument(_OpaqueDetail, pa.ArrowInvalid):
    status_name = "InvalidArgument"


class _NotFound(_OpaqueDetail, pa.ArrowKeyError):
    status_name = "NotFound"

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class _Unimplemented(_OpaqueDetail, NotImplementedError):
    status_name = "Unimplemented"


@functools.cache
def hide_python_details() -> None:
    """Make pyarrow's status detail of the gateway's own errors their status name, not a
    traceback. Idempotent; other exceptions are formatted as before."""
    original = traceback.format_exception

    @functools.wraps(original)
    def format_exception(exc, /, *args, **kwargs):
        value = args[0] if args else kwargs.get("value", exc)
        if isinstance(value, _OpaqueDetail):
            return [value.status_name]
        return original(exc, *args, **kwargs)

    traceback.format_exception = format_exception


def to_flight_error(error: GatewayError) -> Exception:
    """The pyarrow exception that carries ``error`` to the client with the right status code.

    pyarrow maps ``ArrowInvalid`` to INVALID_ARGUMENT, ``ArrowKeyError`` to NOT_FOUND and
    ``NotImplementedError`` to UNIMPLEMENTED; the Flight exception classes cover the rest, each
    made with an empty ``extra_info`` (the binary detail clients may read). pyarrow's Flight
    transport has no RESOURCE_EXHAUSTED: a limit leaves as UNAVAILABLE, its message naming the
    limit and the setting that changes it.
    """
    hide_python_details()
    message = error.public if error.public is not None else str(error)
    match error:
        case InvalidQuery() | MeshConfigError():
            return _InvalidArgument(message)
        case NotFound():
            return _NotFound(message)
        case PermissionDenied():
            return flight.FlightUnauthorizedError(message, b"")
        case Unauthenticated():
            return flight.FlightUnauthenticatedError(message, b"")
        case SourceUnavailable() | ResourceExhausted():
            return flight.FlightUnavailableError(message, b"")
        case QueryTimeout():
            return flight.FlightTimedOutError(message, b"")
        case QueryCancelled():
            return flight.FlightCancelledError(message, b"")
        case Unsupported():
            return _Unimplemented(message)
    return flight.FlightInternalError(message, b"")


def client_error(
    error: BaseException, *, log: logging.Logger, scrub: Callable[[str], str] = str
) -> Exception:
    """What the client receives for ``error`` raised while serving it: the one place errors
    leave the gateway.

    A GatewayError leaves with its status and its public message, scrubbed of physical names and
    paths; when the full message differs it goes to the log under a reference the client is
    given. Anything else is a bug: logged in full, and the client gets INTERNAL with only the
    reference.
    """
    if isinstance(error, GatewayError):
        public = scrub(error.public if error.public is not None else str(error))
        if public != str(error):
            reference = new_reference()
            log.warning("%s (reference %s): %s", type(error).__name__, reference, error)
            public = f"{public} (reference {reference}; the gateway's log has the details)"
        return to_flight_error(_with_public(error, public))
    if isinstance(error, flight.FlightError) and type(error) in _OWN_FLIGHT_ERRORS:
        return error
    reference = new_reference()
    log.error("internal error (reference %s)", reference, exc_info=error)
    return flight.FlightInternalError(
        f"internal error (reference {reference}); the gateway's log has the details", b""
    )


def _with_public(error: GatewayError, public: str) -> GatewayError:
    return with_messages(error, str(error), public)


def with_messages(error: GatewayError, message: str, public: str | None) -> GatewayError:
    """A copy of ``error`` (its class and attributes, such as a store's name) with new messages."""
    copy = GatewayError.__new__(type(error))
    copy.__dict__.update(error.__dict__)
    copy.args = (message,)
    copy.public = public
    return copy


_OWN_FLIGHT_ERRORS = (flight.FlightCancelledError,)
"""Flight errors raised inside a handler that leave as they are: a client that went away."""


def status_name(error: BaseException | None) -> str:
    """The Flight status code name ``error`` reaches the client with (``OK`` for None), as
    metrics and traces label outcomes; the same mapping as :func:`to_flight_error`."""
    match error:
        case None:
            return "OK"
        case InvalidQuery() | MeshConfigError():
            return "INVALID_ARGUMENT"
        case NotFound():
            return "NOT_FOUND"
        case PermissionDenied():
            return "PERMISSION_DENIED"
        case Unauthenticated():
            return "UNAUTHENTICATED"
        case SourceUnavailable() | ResourceExhausted():
            return "UNAVAILABLE"
        case QueryTimeout():
            return "TIMED_OUT"
        case QueryCancelled() | GeneratorExit() | KeyboardInterrupt():
            return "CANCELLED"
        case Unsupported():
            return "UNIMPLEMENTED"
    return "INTERNAL"

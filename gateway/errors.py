"""One error hierarchy for everything a client can cause or meet, mapped to Flight once.

Every layer raises a :class:`GatewayError` subclass with a message that says what went wrong and
what to do; :func:`to_flight_error` at the server edge turns it into the Flight status the client
sees. Anything else that escapes is logged and reported as INTERNAL without a traceback.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.flight as flight


class GatewayError(Exception):
    """Base of every error meshgate reports to a client."""


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

    def __init__(self, message: str, *, store: str | None = None):
        super().__init__(message)
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


class Unsupported(GatewayError):
    """A valid request that meshgate does not implement (writes, transactions, Substrait)."""


class MeshConfigError(GatewayError):
    """A mesh that cannot be loaded: each problem names the file, the field and the fix."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__(
            f"the mesh has {len(problems)} problem(s):\n" + "\n".join(f"  - {p}" for p in problems)
        )


def to_flight_error(error: GatewayError) -> Exception:
    """The pyarrow exception that carries ``error`` to the client with the right status code.

    pyarrow maps ``ArrowInvalid`` to INVALID_ARGUMENT, ``ArrowKeyError`` to NOT_FOUND and
    ``NotImplementedError`` to UNIMPLEMENTED; the Flight exception classes cover the rest.
    """
    message = str(error)
    match error:
        case InvalidQuery() | MeshConfigError():
            return pa.ArrowInvalid(message)
        case NotFound():
            return pa.ArrowKeyError(message)
        case PermissionDenied():
            return flight.FlightUnauthorizedError(message)
        case Unauthenticated():
            return flight.FlightUnauthenticatedError(message)
        case SourceUnavailable():
            return flight.FlightUnavailableError(message)
        case QueryTimeout():
            return flight.FlightTimedOutError(message)
        case QueryCancelled():
            return flight.FlightCancelledError(message)
        case Unsupported():
            return NotImplementedError(message)
    return flight.FlightInternalError(message)


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
        case SourceUnavailable():
            return "UNAVAILABLE"
        case QueryTimeout():
            return "TIMED_OUT"
        case QueryCancelled() | GeneratorExit() | KeyboardInterrupt():
            return "CANCELLED"
        case Unsupported():
            return "UNIMPLEMENTED"
    return "INTERNAL"

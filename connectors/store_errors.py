"""How every connector reports a store's failure: one classification, one wording.

A driver's error is one of three kinds, whatever the store: the store is unreachable or went
away (SourceUnavailable: retry once it is back), it stopped the query at its deadline
(QueryTimeout: narrow it or raise the limit), or it rejected the query (InvalidQuery). Connectors
whose drivers say which by text declare the signs as data (:class:`ErrorSigns`); the messages,
and what of them a client may see, are made here only.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from gateway.errors import GatewayError, InvalidQuery, QueryTimeout, SourceUnavailable

Kind = Literal["unavailable", "timeout", "rejected"]


@dataclass(frozen=True)
class ErrorSigns:
    """Lowercase fragments of a driver's message that tell what kind of failure it reports."""

    timeout: tuple[str, ...] = ()
    """The store stopped the query at its deadline (looked for first: a store's own timeout
    can also read as an interruption)."""
    unavailable: tuple[str, ...] = ()
    """The store cannot be reached, or the connection went away under the query."""


def kind_of(message: str, signs: ErrorSigns) -> Kind:
    """The kind of failure ``message`` reports; anything without a sign is a rejection.

    >>> kind_of("FATAL: terminating connection", ErrorSigns(unavailable=("terminating",)))
    'unavailable'
    """
    lowered = message.lower()
    if any(sign in lowered for sign in signs.timeout):
        return "timeout"
    if any(sign in lowered for sign in signs.unavailable):
        return "unavailable"
    return "rejected"


def store_error(
    kind: Kind,
    *,
    store: str,
    message: str,
    where: str | None = None,
    timeout_seconds: float | None = None,
    public_reason: str | None = None,
) -> GatewayError:
    """The gateway error for a failure of ``kind`` at ``store``.

    ``message`` is the driver's text (kept in the log and the audit trail, never sent: it may
    name hosts, physical tables or quote the SQL); ``public_reason`` is what of it a client may
    read, if anything; ``where`` names the server for the log (host:port).
    """
    message = message.strip()
    if kind == "timeout":
        return timed_out(store, timeout_seconds)
    if kind == "unavailable":
        at = f" ({where})" if where else ""
        return SourceUnavailable(
            f"store {store!r}{at} is unavailable: {message}; "
            "the query can be retried once the server is back",
            public=f"store {store!r} is unavailable; retry once it is back",
        )
    return InvalidQuery(
        f"store {store!r} rejected the query: {message}",
        public=f"store {store!r} rejected the query"
        + (f": {public_reason}" if public_reason else ""),
    )


def timed_out(store: str, timeout_seconds: float | None) -> QueryTimeout:
    """The store (or the gateway for it) stopped the query at ``query_timeout_seconds``."""
    after = f" within {timeout_seconds:g} s" if timeout_seconds is not None else " in time"
    return QueryTimeout(
        f"store {store!r} did not answer{after} and the query was cancelled; narrow it or "
        "raise `query_timeout_seconds` in mesh.yaml"
    )


def missing_database_file(store: str, path: Path | str) -> SourceUnavailable:
    """A file-backed store whose database file is not there."""
    return SourceUnavailable(
        f"store {store!r}: database file {path} does not exist; check `path` in mesh.yaml",
        public=f"store {store!r} is unavailable",
    )

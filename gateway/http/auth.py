"""Who is calling the HTTP port: the Flight port's principals, checked the same way.

Requests carry ``Authorization: Basic ...`` (a browser's login prompt, curl ``-u``) or
``Authorization: Bearer <token>`` with a token the Flight handshake issued. Both go through the
Flight port's own :class:`~gateway.flightsql.auth.AuthMiddlewareFactory`, so whatever that accepts
(and refuses) holds here too. A verified Basic header is remembered for a minute, since a browser
resends it with every page and bcrypt is deliberately slow.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable

from gateway.errors import Unauthenticated
from gateway.flightsql.auth import AuthMiddlewareFactory
from gateway.principals import Principal, PrincipalDirectory
from gateway.tokens import Signer

REMEMBER_SECONDS = 60.0
REMEMBERED = 1024


class HttpAuthenticator:
    """The principal of an ``Authorization`` header, or Unauthenticated with what to do."""

    def __init__(
        self,
        principals: Callable[[], PrincipalDirectory],
        signer: Signer,
        *,
        token_ttl_seconds: int,
    ):
        self._principals = principals
        anonymous = Principal("anonymous") if not principals().names() else None
        self._flight = AuthMiddlewareFactory(
            principals, signer, token_ttl_seconds=token_ttl_seconds, anonymous=anonymous
        )
        self._remembered: dict[bytes, tuple[str, float, int]] = {}
        self._lock = threading.Lock()

    def principal(self, header: str | None) -> Principal:
        """Who sent ``header``; Unauthenticated when nobody valid did."""
        key = hashlib.sha256(header.encode()).digest() if header else None
        directory = self._principals()
        if key is not None:
            with self._lock:
                known = self._remembered.get(key)
            # a reloaded principals.yaml (a changed password) checks the password again
            if known is not None and known[1] > time.monotonic() and known[2] == id(directory):
                principal = directory.get(known[0])
                if principal is not None:
                    return principal
        principal = self._flight._authenticate(header).principal  # noqa: SLF001 - one auth path
        if key is not None and header.lower().startswith("basic "):
            with self._lock:
                if len(self._remembered) >= REMEMBERED:
                    self._remembered.clear()
                self._remembered[key] = (
                    principal.name,
                    time.monotonic() + REMEMBER_SECONDS,
                    id(directory),
                )
        return principal


__all__ = ["HttpAuthenticator", "Unauthenticated"]

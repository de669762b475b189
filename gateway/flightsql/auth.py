"""Flight authentication: HTTP Basic in the handshake, a signed bearer token afterwards.

ADBC and JDBC clients send ``authorization: Basic ...`` on their first call (the Handshake) and
expect ``authorization: Bearer <token>`` back; every later call carries the bearer token. The
middleware authenticates each call and hands the principal to the handlers.

Tokens live ``token_ttl_seconds`` (mesh.yaml, default 8 h) and are renewed while in use: a call
whose token is past half its life gets a fresh one in its response headers, both as
``authorization: Bearer`` (the ADBC Go driver adopts it) and as the session cookie (the Flight SQL
JDBC driver keeps only its first bearer token, but its cookie middleware sends back the latest
cookie, which is honoured before the header). So a connection kept busy never expires, and one
idle longer than the lifetime must connect again. Revocation does not wait for expiry: every
call looks its principal up in the current principals.yaml (re-read within a second of a change),
and a token issued before the principal's password changed is refused.
"""

from __future__ import annotations

import base64
import logging
import time
from collections.abc import Callable

import pyarrow.flight as flight

from gateway.errors import Unauthenticated, client_error, to_flight_error
from gateway.jwt_auth import IdentityProvider, looks_like_jwt
from gateway.principals import Principal, PrincipalDirectory
from gateway.tokens import Signer

log = logging.getLogger(__name__)

MIDDLEWARE_KEY = "auth"
SESSION_COOKIE = "meshgate_session"


class NoOpHandshake(flight.ServerAuthHandler):
    """pyarrow refuses Handshake without an auth handler; the middleware does the real work."""

    def authenticate(self, outgoing, incoming):
        pass

    def is_valid(self, token):
        return ""


class AuthMiddleware(flight.ServerMiddleware):
    def __init__(self, principal: Principal, bearer: str | None, ttl_seconds: int = 0):
        self.principal = principal
        self._bearer = bearer
        self._ttl = ttl_seconds

    def sending_headers(self):
        if not self._bearer:
            return {}
        return {
            "authorization": f"Bearer {self._bearer}",
            "set-cookie": f"{SESSION_COOKIE}={self._bearer}; Max-Age={self._ttl}; HttpOnly",
        }


def session_cookie(headers: dict) -> str | None:
    """The session token in the call's ``cookie`` headers, if a client's cookie middleware sent
    one back."""
    for key, values in headers.items():
        if key.lower() != "cookie":
            continue
        for value in values:
            for pair in value.split(";"):
                name, _, token = pair.strip().partition("=")
                token = token.strip('"')  # Java's cookie middleware quotes the value
                if name == SESSION_COOKIE and token:
                    return token
    return None


class AuthMiddlewareFactory(flight.ServerMiddlewareFactory):
    def __init__(
        self,
        principals: Callable[[], PrincipalDirectory],
        signer: Signer,
        *,
        token_ttl_seconds: int,
        anonymous: Principal | None,
        identity_provider: IdentityProvider | None = None,
    ):
        self._principals = principals
        self._signer = signer
        self._ttl = token_ttl_seconds
        self._anonymous = anonymous
        self._identity_provider = identity_provider

    def _header(self, headers: dict) -> str | None:
        for key, values in headers.items():
            if key.lower() == "authorization" and values:
                return values[0]
        return None

    def start_call(self, info, headers):
        try:
            return self._authenticate(self._header(headers), session_cookie(headers))
        except Unauthenticated as exc:
            log.info("refused a %s call: %s", info.method, exc)
            raise to_flight_error(exc) from None
        except Exception as exc:  # noqa: BLE001 - a bug must not reach the client as a traceback
            raise client_error(exc, log=log) from None

    def _authenticate(self, header: str | None, cookie: str | None = None) -> AuthMiddleware:
        if cookie is not None and not (header or "").lower().startswith("basic "):
            try:
                return self._bearer(cookie)  # the latest renewal, where the header may be stale
            except Unauthenticated:
                if header is None:
                    raise
        if header is None:
            if self._anonymous is not None:
                return AuthMiddleware(self._anonymous, None)
            raise Unauthenticated("no credentials; connect with a username and password")
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "basic":
            return self._basic(value)
        if scheme.lower() == "bearer":
            if self._identity_provider is not None and looks_like_jwt(value.strip()):
                return AuthMiddleware(self._identity_provider.principal(value.strip()), None)
            return self._bearer(value.strip())
        raise Unauthenticated(f"unsupported authorization scheme {scheme!r}; use Basic or Bearer")

    def _basic(self, value: str) -> AuthMiddleware:
        """The principal of Basic credentials, with a bearer token to use from now on."""
        try:
            raw = value.strip()  # Go clients send unpadded base64
            name, _, password = (
                base64.b64decode(raw + "=" * (-len(raw) % 4)).decode().partition(":")
            )
        except (ValueError, UnicodeDecodeError):
            raise Unauthenticated("malformed Basic credentials") from None
        directory = self._principals()
        principal = directory.authenticate(name, password)
        if principal is None:
            raise Unauthenticated("wrong username or password")
        return AuthMiddleware(principal, self._issue(principal.name, directory), self._ttl)

    def _issue(self, name: str, directory: PrincipalDirectory) -> str:
        return self._signer.bearer(name, self._ttl, credential=directory.credential_tag(name))

    def _bearer(self, token: str) -> AuthMiddleware:
        """The principal of a bearer token, if it still exists with the same password, and a
        renewed token once this one is past half its life."""
        claims = self._signer.bearer_claims(token)
        directory = self._principals()
        principal = directory.get(claims.principal)
        if principal is None:
            raise Unauthenticated(f"principal {claims.principal!r} no longer exists")
        if claims.credential is not None and claims.credential != directory.credential_tag(
            principal.name
        ):
            raise Unauthenticated(
                f"the password of {principal.name!r} changed; connect again with the new one"
            )
        renewed = None
        if claims.expires - time.time() < self._ttl / 2:
            renewed = self._issue(principal.name, directory)
        return AuthMiddleware(principal, renewed, self._ttl)

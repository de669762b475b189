"""Signed, opaque tokens: bearer tokens, tickets and prepared-statement handles.

Each is a JSON payload with an HMAC-SHA256 signature, so any gateway replica sharing the secret
(``MESHGATE_SECRET``) can verify what another issued, and no client can forge or alter one.
Payloads hold only what the holder already knows (their own name and statement), never plans,
filters or physical names.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
import time
from dataclasses import dataclass
from typing import Any

from gateway.errors import NotFound, Unauthenticated

REMEMBERED_BEARERS = 4096


def _b64(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


def _unb64(data: bytes) -> bytes:
    return base64.urlsafe_b64decode(data + b"=" * (-len(data) % 4))


@dataclass(frozen=True)
class BearerClaims:
    """What a verified bearer token says: whose it is, until when, and for which credential."""

    principal: str
    expires: float
    credential: str | None
    """A tag of the password hash it was issued for (None for tokens from other sources):
    a changed password ends every token issued before the change."""


class Signer:
    def __init__(self, secret: bytes | None = None):
        configured = os.environ.get("MESHGATE_SECRET")
        self._key = secret or (configured.encode() if configured else secrets.token_bytes(32))
        self._bearers: dict[str, BearerClaims] = {}  # verified token -> its claims

    def sign(self, kind: str, payload: dict[str, Any]) -> bytes:
        body = _b64(json.dumps({"k": kind, **payload}, separators=(",", ":")).encode())
        mac = _b64(hmac.new(self._key, body, hashlib.sha256).digest())
        return body + b"." + mac

    def verify(self, kind: str, token: bytes) -> dict[str, Any]:
        """The payload of a token this gateway (or a replica) signed; NotFound otherwise."""
        body, _, mac = token.partition(b".")
        expected = _b64(hmac.new(self._key, body, hashlib.sha256).digest())
        if not mac or not hmac.compare_digest(mac, expected):
            raise NotFound(f"unknown or altered {kind}; request a new one")
        payload = json.loads(_unb64(body))
        if payload.pop("k", None) != kind:
            raise NotFound(f"unknown or altered {kind}; request a new one")
        return payload

    def bearer(self, principal: str, ttl_seconds: int, *, credential: str | None = None) -> str:
        payload: dict[str, Any] = {"p": principal, "exp": int(time.time()) + ttl_seconds}
        if credential is not None:
            payload["c"] = credential
        return self.sign("bearer", payload).decode()

    def principal_of_bearer(self, token: str) -> str:
        """The principal a valid, unexpired bearer token names; Unauthenticated otherwise."""
        return self.bearer_claims(token).principal

    def bearer_claims(self, token: str) -> BearerClaims:
        """The claims of a valid, unexpired bearer token; Unauthenticated otherwise.

        A client sends its token with every call (five per query), so tokens already verified
        are remembered with their claims rather than checked again.
        """
        known = self._bearers.get(token)
        if known is None:
            try:
                payload = self.verify("bearer", token.encode())
            except (NotFound, ValueError):
                raise Unauthenticated("invalid bearer token; connect again") from None
            known = BearerClaims(payload["p"], payload["exp"], payload.get("c"))
            if len(self._bearers) >= REMEMBERED_BEARERS:
                self._bearers.clear()
            self._bearers[token] = known
        if known.expires < time.time():
            raise Unauthenticated(
                "the session expired after being idle longer than the mesh's token_ttl_seconds; "
                "connect again"
            )
        return known

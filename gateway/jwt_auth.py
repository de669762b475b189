"""Bearer tokens from an identity provider: JWTs signed by a key the mesh trusts.

::

    gateway:
      identity_provider:
        issuer: https://login.acme.example/
        audience: meshgate
        algorithms: [RS256, ES256]     # HS256 only with secret_env (tests, single services)
        jwks: idp/jwks.json            # a JWKS file (keys chosen by the token's `kid`) ...
        public_key: idp/signing.pem    # ... or one PEM public key ...
        secret_env: MESHGATE_JWT_SECRET   # ... or an HMAC secret in this variable
        principal_claim: sub           # dotted paths reach nested claims
        roles_claim: roles             # a list, or a space-separated string
        attribute_claims: {region: region}   # principal attribute -> claim

A client sends ``authorization: Bearer <JWT>`` on every call. The signature, ``exp``, ``iss`` and
``aud`` are checked by PyJWT; each failure is UNAUTHENTICATED with a message naming the check.
Basic credentials from principals.yaml keep working beside it (service accounts).
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from gateway.errors import MeshConfigError, Unauthenticated
from gateway.principals import Principal

REMEMBERED_TOKENS = 4096
KEYS_CHECKED_SECONDS = 5.0
"""How often a JWKS or key file is looked at for rotation."""


class IdentityProviderSettings(BaseModel):
    """``gateway.identity_provider`` in mesh.yaml."""

    model_config = ConfigDict(extra="forbid")

    issuer: str
    audience: str
    algorithms: list[str] = Field(default_factory=lambda: ["RS256", "ES256"])
    jwks: str | None = None
    public_key: str | None = None
    secret_env: str | None = None
    principal_claim: str = "sub"
    roles_claim: str = "roles"
    attribute_claims: dict[str, str] = Field(default_factory=dict)
    leeway_seconds: int = Field(default=30, ge=0, le=600)
    """Clock skew allowed on ``exp``/``nbf``."""

    @model_validator(mode="after")
    def _one_key_source(self) -> IdentityProviderSettings:
        given = [k for k in ("jwks", "public_key", "secret_env") if getattr(self, k)]
        if len(given) != 1:
            raise ValueError("give exactly one of `jwks`, `public_key` or `secret_env`")
        if self.secret_env and any(not a.startswith("HS") for a in self.algorithms):
            raise ValueError("`secret_env` signs with HMAC: set `algorithms: [HS256]`")
        if not self.secret_env and any(a.startswith("HS") for a in self.algorithms):
            raise ValueError("HS* algorithms need `secret_env`; public keys use RS256/ES256")
        return self


def looks_like_jwt(token: str) -> bool:
    """JWTs have three dot-separated parts; the gateway's own bearer tokens have two."""
    return token.count(".") == 2


def claim(claims: dict[str, Any], path: str) -> Any:
    """The claim at a dotted ``path`` (``realm_access.roles``), or None.

    >>> claim({"realm_access": {"roles": ["analyst"]}}, "realm_access.roles")
    ['analyst']
    """
    value: Any = claims
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def principal_from_claims(claims: dict[str, Any], settings: IdentityProviderSettings) -> Principal:
    """The principal a verified token describes: name, roles and attributes from its claims."""
    name = claim(claims, settings.principal_claim)
    if not isinstance(name, str) or not name:
        raise Unauthenticated(
            f"the token has no `{settings.principal_claim}` claim naming the principal; ask the "
            "identity provider to include it"
        )
    roles = claim(claims, settings.roles_claim) or []
    if isinstance(roles, str):
        roles = roles.split()
    if not isinstance(roles, list):
        roles = []
    attributes = {}
    for attribute, path in settings.attribute_claims.items():
        value = claim(claims, path)
        if isinstance(value, str | int | float | bool):
            attributes[attribute] = str(value)
    return Principal(name=name, roles=tuple(str(r) for r in roles), attributes=attributes)


class TrustedKeys:
    """The keys tokens may be signed with, re-read when their file changes (key rotation)."""

    def __init__(self, settings: IdentityProviderSettings, base: Path):
        self._settings = settings
        self._file = None
        source = settings.jwks or settings.public_key
        if source is not None:
            self._file = (base / source).expanduser()
        self._signature: tuple | None = None
        self._checked_at = 0.0
        self._keys: dict[str | None, Any] = {}
        self._lock = threading.Lock()
        self._load()

    def _load(self) -> None:
        import jwt

        if self._settings.secret_env is not None:
            secret = os.environ.get(self._settings.secret_env)
            if not secret:
                raise MeshConfigError(
                    [
                        f"gateway.identity_provider.secret_env: {self._settings.secret_env} is "
                        "not set; set it to the shared HMAC secret"
                    ]
                )
            self._keys = {None: secret}
            return
        try:
            stat = self._file.stat()
            text = self._file.read_text(encoding="utf-8")
        except OSError as exc:
            raise MeshConfigError(
                [f"gateway.identity_provider: cannot read {self._file}: {exc.strerror}"]
            ) from None
        self._signature = (stat.st_mtime_ns, stat.st_size)
        if self._settings.jwks is not None:
            try:
                keyset = jwt.PyJWKSet.from_json(text)
            except (jwt.PyJWKSetError, json.JSONDecodeError, ValueError) as exc:
                raise MeshConfigError(
                    [f"gateway.identity_provider.jwks: {self._file} is not a JWKS: {exc}"]
                ) from None
            keys = {key.key_id: key.key for key in keyset.keys}
            if len(keyset.keys) == 1:
                keys[None] = keyset.keys[0].key
            self._keys = keys
        else:
            self._keys = {None: text}

    def key_for(self, kid: str | None) -> Any:
        """The key of ``kid`` (the token header's key id), or the only key there is."""
        now = time.monotonic()
        if self._file is not None and now - self._checked_at >= KEYS_CHECKED_SECONDS:
            with self._lock:
                self._checked_at = now
                try:
                    stat = self._file.stat()
                    if (stat.st_mtime_ns, stat.st_size) != self._signature:
                        self._load()
                except (OSError, MeshConfigError):
                    pass  # keep the keys in force; the file is being replaced
        key = self._keys.get(kid) or (self._keys.get(None) if kid is None else None)
        if key is None:
            raise Unauthenticated(
                f"the token's signing key {kid!r} is not one the mesh trusts (signature check "
                "failed); get a token from the mesh's identity provider"
            )
        return key


class IdentityProvider:
    """Verifies JWTs and turns their claims into principals."""

    def __init__(self, settings: IdentityProviderSettings, base: Path):
        self.settings = settings
        self._keys = TrustedKeys(settings, base)
        self._verified: dict[str, tuple[Principal, float]] = {}

    def principal(self, token: str) -> Principal:
        """The principal of a valid token; Unauthenticated naming the check that failed.

        A client sends its token with every call (five per query): verified tokens are
        remembered until they expire.
        """
        known = self._verified.get(token)
        if known is not None and known[1] > time.time():
            return known[0]
        claims = self._verify(token)
        principal = principal_from_claims(claims, self.settings)
        if len(self._verified) >= REMEMBERED_TOKENS:
            self._verified.clear()
        self._verified[token] = (principal, float(claims["exp"]) + self.settings.leeway_seconds)
        return principal

    def _verify(self, token: str) -> dict[str, Any]:
        import jwt

        settings = self.settings
        try:
            header = jwt.get_unverified_header(token)
            if header.get("alg") not in settings.algorithms:
                raise Unauthenticated(
                    f"the token is signed with {header.get('alg')!r}; the mesh accepts "
                    f"{', '.join(settings.algorithms)} (algorithm check failed)"
                )
            return jwt.decode(
                token,
                self._keys.key_for(header.get("kid")),
                algorithms=settings.algorithms,
                audience=settings.audience,
                issuer=settings.issuer,
                leeway=settings.leeway_seconds,
                options={"require": ["exp", "iss", "aud"]},
            )
        except jwt.ExpiredSignatureError:
            raise Unauthenticated(
                "the token has expired (expiry check failed); get a new one from the identity "
                "provider"
            ) from None
        except jwt.InvalidAudienceError:
            raise Unauthenticated(
                f"the token is not meant for this gateway (audience check failed: expected "
                f"{settings.audience!r}); ask the identity provider for a token for it"
            ) from None
        except jwt.InvalidIssuerError:
            raise Unauthenticated(
                f"the token was not issued by the mesh's identity provider (issuer check "
                f"failed: expected {settings.issuer!r})"
            ) from None
        except jwt.InvalidSignatureError:
            raise Unauthenticated(
                "the token's signature does not match the keys the mesh trusts (signature "
                "check failed); it is forged or signed by another key"
            ) from None
        except jwt.ImmatureSignatureError:
            raise Unauthenticated(
                "the token is not valid yet (not-before check failed); check the clocks"
            ) from None
        except jwt.MissingRequiredClaimError as exc:
            raise Unauthenticated(
                f"the token lacks the `{exc.claim}` claim (required claim check failed)"
            ) from None
        except (jwt.InvalidKeyError, ValueError, TypeError):
            # a key of another type than the token's algorithm (an EC key for RS256, ...)
            raise Unauthenticated(
                "the token's algorithm does not fit the key it names (signature check failed); "
                "it is forged or signed by another key"
            ) from None
        except jwt.InvalidTokenError as exc:
            raise Unauthenticated(
                f"the token cannot be read as a JWT ({type(exc).__name__}); send "
                "`authorization: Bearer <JWT>` from the mesh's identity provider"
            ) from None

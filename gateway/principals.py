"""Principals: the users and services of a mesh, from ``principals.yaml``.

::

    principals:
      analyst:
        password_hash: "$2b$12$..."      # bcrypt; make one with `meshgate hash-password`
        roles: [analyst]
        attributes: {region: EUROPE, department: finance}

Secrets are stored only as bcrypt hashes. Unknown principals and wrong passwords are
indistinguishable to the client.
"""

from __future__ import annotations

import functools
import hashlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from gateway.errors import MeshConfigError, field_problems
from gateway.located_yaml import line_of, read_located_yaml

PRINCIPALS_FILE = "principals.yaml"
DEFAULT_ROUNDS = 12


@dataclass(frozen=True)
class Principal:
    """An authenticated user or service, with the roles and attributes policies read."""

    name: str
    roles: tuple[str, ...] = ()
    attributes: dict[str, str] = field(default_factory=dict, hash=False, compare=False)

    def cache_key(self) -> tuple[str, tuple[str, ...], tuple[tuple[str, str], ...]]:
        """Everything of the principal that a policy decision can depend on, hashable: the key
        every per-principal cache (plans, decisions, audit and lineage notes) uses.

        >>> Principal("ana", ("analyst",), {"region": "EU"}).cache_key()
        ('ana', ('analyst',), (('region', 'EU'),))
        """
        return self.name, tuple(self.roles), tuple(sorted(self.attributes.items()))


class _Entry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    password_hash: str
    roles: list[str] = Field(default_factory=list)
    attributes: dict[str, str | int | float | bool] = Field(default_factory=dict)

    @field_validator("password_hash")
    @classmethod
    def _bcrypt(cls, value: str) -> str:
        if not value.startswith(("$2a$", "$2b$", "$2y$")):
            raise ValueError(
                "is not a bcrypt hash; never store a plain password, make a hash with "
                "`meshgate hash-password`"
            )
        return value


class _File(BaseModel):
    model_config = ConfigDict(extra="forbid")

    principals: dict[str, _Entry]


def bcrypt_cost(password_hash: str) -> int:
    """The cost (log2 rounds) a bcrypt hash was made with.

    >>> bcrypt_cost("$2b$10$abcdefghijklmnopqrstuv")
    10
    """
    try:
        return int(password_hash.split("$")[2])
    except (IndexError, ValueError):
        return DEFAULT_ROUNDS


@dataclass(frozen=True)
class PrincipalsFile:
    """``principals.yaml`` as read and checked: its entries, and where each one's roles are."""

    path: Path
    entries: dict[str, _Entry]
    role_lines: dict[str, int]
    """The line of each principal's ``roles`` (of the principal, when it lists none)."""


def read_principals(mesh_root: Path) -> PrincipalsFile:
    """The mesh's principals, read and validated once for the directory and the policy checks;
    no file is no principals. MeshConfigError lists every problem with its file and line."""
    path = mesh_root / PRINCIPALS_FILE
    if not path.is_file():
        return PrincipalsFile(path, {}, {})
    problems: list[str] = []
    document = read_located_yaml(path, problems)
    if problems:
        raise MeshConfigError(problems)
    try:
        parsed = _File.model_validate(document or {"principals": {}})
    except ValidationError as exc:
        raise MeshConfigError(
            [f"{path}: field `{p.field}`: {p.message}" for p in field_problems(exc)]
        ) from None
    raw = document.get("principals") or {} if document else {}
    role_lines = {name: line_of(raw.get(name), "roles") for name in parsed.principals}
    return PrincipalsFile(path, parsed.principals, role_lines)


class PrincipalDirectory:
    """The principals of one mesh, checked by bcrypt."""

    def __init__(self, entries: dict[str, _Entry]):
        import bcrypt

        self._entries = entries
        # An unknown name is checked against a hash of the cost most principals' hashes have, so
        # it is refused after the same time as a known name with a wrong password.
        costs = Counter(bcrypt_cost(e.password_hash) for e in entries.values())
        cost = costs.most_common(1)[0][0] if costs else DEFAULT_ROUNDS
        self._dummy_hash = bcrypt.hashpw(b"not a password", bcrypt.gensalt(cost)) if costs else b""

    @classmethod
    def load(cls, mesh_root: Path) -> PrincipalDirectory:
        return cls(read_principals(mesh_root).entries)

    def names(self) -> list[str]:
        return sorted(self._entries)

    def get(self, name: str) -> Principal | None:
        entry = self._entries.get(name)
        if entry is None:
            return None
        return Principal(
            name=name,
            roles=tuple(entry.roles),
            attributes={k: str(v) for k, v in entry.attributes.items()},
        )

    def authenticate(self, name: str, password: str) -> Principal | None:
        """The principal if ``password`` matches its hash, else None."""
        import bcrypt

        entry = self._entries.get(name)
        if entry is None:
            if self._dummy_hash:  # spend the time of a real check: names cannot be probed
                bcrypt.checkpw(password.encode(), self._dummy_hash)
            return None
        if not bcrypt.checkpw(password.encode(), entry.password_hash.encode()):
            return None
        return self.get(name)

    def credential_tag(self, name: str) -> str | None:
        """A short tag of the principal's password hash, carried in its bearer tokens: when the
        hash changes (a new password), tokens issued before stop working."""
        entry = self._entries.get(name)
        if entry is None:
            return None
        return _credential_tag(entry.password_hash)


@functools.lru_cache(maxsize=4096)
def _credential_tag(password_hash: str) -> str:
    """Every call checks its token's tag: a hash's tag is worked out once."""
    return hashlib.sha256(password_hash.encode()).hexdigest()[:16]


def hash_password(password: str, *, rounds: int = DEFAULT_ROUNDS) -> str:
    import bcrypt

    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds)).decode()

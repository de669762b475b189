"""Limits that keep one principal, or one query, from taking the gateway from everyone else.

::

    gateway:
      limits:
        query_timeout_seconds: 600          # a query's whole stream, start to end
        max_concurrent_queries: 64          # running at once, in total
        max_concurrent_queries_per_principal: 8
        max_queued_queries: 256             # waiting for a slot; beyond that, refused at once
        queue_timeout_seconds: 30           # waited longer: refused
        memory_limit: 2GB                   # the local engine's DuckDB; it spills past it
        temp_directory: /var/tmp/meshgate   # where it spills
        roles:                              # a principal gets the largest of its roles' values
          analyst:
            query_timeout_seconds: 120
            max_concurrent_queries: 4
            max_result_rows: 10000000
        principals:                         # and a principal's own entry over those
          batch_loader: {max_concurrent_queries: 16, max_result_bytes: 50GB}

A refusal names the limit and the setting that changes it. Queries wait for their own
principal's slot without holding a slot of the total, so a principal at its limit queues only
itself.
"""

from __future__ import annotations

import re
import threading
from collections import defaultdict
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field, field_validator

from gateway.errors import ResourceExhausted
from gateway.principals import Principal

SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?i?B)?\s*$", re.IGNORECASE)
UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12}
UNITS |= {"kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


def parse_size(value: int | str) -> int:
    """Bytes of ``value``: an integer or a size such as ``512MB`` or ``2GiB``.

    >>> parse_size("2GB"), parse_size("1KiB"), parse_size(10)
    (2000000000, 1024, 10)
    """
    if isinstance(value, int):
        return value
    match = SIZE.match(value)
    if match is None:
        raise ValueError(f"{value!r} is not a size; write e.g. 512MB or 2GiB")
    number, unit = match.groups()
    return int(float(number) * UNITS[(unit or "").lower()])


class PrincipalLimits(BaseModel):
    """Limits of one role or principal; unset values fall back to the gateway's."""

    model_config = ConfigDict(extra="forbid")

    query_timeout_seconds: float | None = Field(default=None, gt=0)
    max_concurrent_queries: int | None = Field(default=None, ge=1)
    max_result_rows: int | None = Field(default=None, ge=1)
    max_result_bytes: int | None = None

    @field_validator("max_result_bytes", mode="before")
    @classmethod
    def _size(cls, value):
        return None if value is None else parse_size(value)


class LimitsSettings(BaseModel):
    """``gateway.limits`` in mesh.yaml."""

    model_config = ConfigDict(extra="forbid")

    query_timeout_seconds: float = Field(default=600, gt=0)
    max_concurrent_queries: int = Field(default=64, ge=1)
    max_concurrent_queries_per_principal: int = Field(default=8, ge=1)
    max_queued_queries: int = Field(default=256, ge=0)
    queue_timeout_seconds: float = Field(default=30, ge=0)
    max_result_rows: int | None = Field(default=None, ge=1)
    max_result_bytes: int | None = None
    memory_limit: int | None = None
    temp_directory: str | None = None
    roles: dict[str, PrincipalLimits] = Field(default_factory=dict)
    principals: dict[str, PrincipalLimits] = Field(default_factory=dict)

    @field_validator("max_result_bytes", "memory_limit", mode="before")
    @classmethod
    def _size(cls, value):
        return None if value is None else parse_size(value)


@dataclass(frozen=True)
class Limits:
    """The limits in force for one principal, and where each came from (for messages)."""

    query_timeout_seconds: float
    max_concurrent_queries: int
    max_result_rows: int | None
    max_result_bytes: int | None
    source: dict[str, str]
    """limit name -> the mesh.yaml setting it came from."""


def _largest(values: list[tuple[float | None, str]]) -> tuple[float | None, str] | None:
    given = [(v, s) for v, s in values if v is not None]
    return max(given, key=lambda pair: pair[0]) if given else None


def limits_for(settings: LimitsSettings, principal: Principal) -> Limits:
    """The principal's own entry, else the largest value among its roles, else the gateway's."""
    own = settings.principals.get(principal.name)
    chosen: dict[str, float | None] = {}
    source: dict[str, str] = {}
    defaults = {
        "query_timeout_seconds": settings.query_timeout_seconds,
        "max_concurrent_queries": settings.max_concurrent_queries_per_principal,
        "max_result_rows": settings.max_result_rows,
        "max_result_bytes": settings.max_result_bytes,
    }
    for name, default in defaults.items():
        if own is not None and getattr(own, name) is not None:
            chosen[name] = getattr(own, name)
            source[name] = f"gateway.limits.principals.{principal.name}.{name}"
            continue
        by_role = _largest(
            [
                (getattr(settings.roles[r], name), f"gateway.limits.roles.{r}.{name}")
                for r in principal.roles
                if r in settings.roles
            ]
        )
        if by_role is not None:
            chosen[name], source[name] = by_role
            continue
        chosen[name] = default
        gateway_name = (
            "max_concurrent_queries_per_principal" if name == "max_concurrent_queries" else name
        )
        source[name] = f"gateway.limits.{gateway_name}"
    return Limits(
        query_timeout_seconds=float(chosen["query_timeout_seconds"]),
        max_concurrent_queries=int(chosen["max_concurrent_queries"]),
        max_result_rows=_whole(chosen["max_result_rows"]),
        max_result_bytes=_whole(chosen["max_result_bytes"]),
        source=source,
    )


def _whole(value: float | None) -> int | None:
    return None if value is None else int(value)


class Admission:
    """Slots for running queries: in total and per principal, with a bounded queue."""

    def __init__(self, settings: LimitsSettings):
        self._settings = settings
        self._changed = threading.Condition()
        self._running = 0
        self._by_principal: defaultdict[str, int] = defaultdict(int)
        self._waiting = 0

    def running(self) -> int:
        with self._changed:
            return self._running

    def admit(self, principal: Principal, limits: Limits) -> Slot:
        """A slot for one query of ``principal``, waiting in the queue if need be;
        ResourceExhausted when the queue is full or the wait too long."""
        settings = self._settings
        name = principal.name

        def free() -> bool:
            return (
                self._running < settings.max_concurrent_queries
                and self._by_principal[name] < limits.max_concurrent_queries
            )

        with self._changed:
            if not free():
                if self._waiting >= settings.max_queued_queries:
                    raise ResourceExhausted(self._refusal(name, limits, queued=False))
                self._waiting += 1
                try:
                    admitted = self._changed.wait_for(free, timeout=settings.queue_timeout_seconds)
                finally:
                    self._waiting -= 1
                if not admitted:
                    raise ResourceExhausted(self._refusal(name, limits, queued=True))
            self._running += 1
            self._by_principal[name] += 1
        return Slot(self, name)

    def _refusal(self, name: str, limits: Limits, *, queued: bool) -> str:
        settings = self._settings
        if self._by_principal[name] >= limits.max_concurrent_queries:
            limit = (
                f"{name!r} already runs {limits.max_concurrent_queries} queries, its limit "
                f"(`{limits.source['max_concurrent_queries']}` in mesh.yaml)"
            )
        else:
            limit = (
                f"the gateway already runs {settings.max_concurrent_queries} queries, its limit "
                "(`gateway.limits.max_concurrent_queries` in mesh.yaml)"
            )
        if queued:
            wait = (
                f"; waited {settings.queue_timeout_seconds:g} s for a slot "
                "(`gateway.limits.queue_timeout_seconds`)"
            )
        else:
            wait = (
                f"; {settings.max_queued_queries} queries are queued already "
                "(`gateway.limits.max_queued_queries`)"
            )
        return f"too many concurrent queries: {limit}{wait}; retry later"

    def _release(self, name: str) -> None:
        with self._changed:
            self._running -= 1
            self._by_principal[name] -= 1
            if not self._by_principal[name]:
                del self._by_principal[name]
            self._changed.notify_all()


class Slot:
    """One admitted query's place; released once, however the query ends."""

    def __init__(self, admission: Admission, name: str):
        self._admission = admission
        self._name = name
        self._lock = threading.Lock()
        self._held = True

    def release(self) -> None:
        with self._lock:
            if not self._held:
                return
            self._held = False
        self._admission._release(self._name)


def result_limit_error(limits: Limits, *, rows: int, size: int) -> ResourceExhausted | None:
    """The error for an answer that grew past the principal's row or byte limit, else None."""
    if limits.max_result_rows is not None and rows > limits.max_result_rows:
        return ResourceExhausted(
            f"the answer exceeds {limits.max_result_rows:,} rows, the limit "
            f"`{limits.source['max_result_rows']}` in mesh.yaml; narrow the query (WHERE, "
            "LIMIT, aggregates) or ask the governance group to raise it"
        )
    if limits.max_result_bytes is not None and size > limits.max_result_bytes:
        return ResourceExhausted(
            f"the answer exceeds {limits.max_result_bytes:,} bytes, the limit "
            f"`{limits.source['max_result_bytes']}` in mesh.yaml; select fewer columns or rows, "
            "or ask the governance group to raise it"
        )
    return None

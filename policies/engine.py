"""PolicyEngine: decides, per principal and product, what may be read, masked and filtered.

The mesh's YAML rules (:mod:`policies.source`) are compiled into the rows of one Casbin enforcer
over ``model.conf``; every question — may this principal read the product, does this filter grant
apply to them, does this role exempt them from that mask — is a Casbin request, so roles (``g``),
domain scoping (``keyMatch``), product globs (``globMatch``) and attribute conditions are decided
in one place. A decision is pure data (:class:`ProductDecision`); the planner compiles it into the
governed relation of each product reference.

Decisions are cached per principal and product; a reload builds a new, independent snapshot, so
a query never sees half of an old policy and half of a new one.
"""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
import threading
from dataclasses import dataclass, field, replace
from fnmatch import fnmatchcase
from functools import lru_cache
from pathlib import Path
from typing import TypeVar

import casbin
from sqlglot import exp

from gateway.errors import MeshConfigError
from gateway.mesh import Mesh, Product
from gateway.principals import PRINCIPALS_FILE, Principal
from policies.masks import STRENGTH, Mask
from policies.source import (
    GLOBAL,
    MaskRule,
    PolicySet,
    Rule,
    load_policy_set,
    matches,
    object_of,
    policy_files,
)

log = logging.getLogger("meshgate.policies")
T = TypeVar("T")

MODEL_PATH = Path(__file__).with_name("model.conf")
MASK_KEY = re.compile(r"^[A-Za-z0-9+/=_.-]{16,}$")
MAX_CACHED_DECISIONS = 10_000
"""Per cache; a full cache starts over (principals x products is small in practice)."""
_process_mask_key: str | None = None


@dataclass(frozen=True)
class ProductDecision:
    """What one principal may do with one product."""

    address: str
    """The product address as the principal named it."""
    readable: bool
    masks: dict[str, Mask]
    """Column name -> the mask that applies (absent = the column is clear)."""
    row_filter: exp.Expression | None
    """None = all rows; else a DuckDB predicate over the product's columns that may read other
    products by address in subqueries; ``FALSE`` when the principal may read the product but no
    filter grant on it applies to them."""
    explanation: tuple[str, ...]
    """One line per rule that decided, ``file:line: rule → effect``; for `meshgate policy check`
    and the principal's own errors, never for other principals."""
    mask_key: str = field(default="", repr=False, compare=False)
    """The secret key of hash masks, passed to :meth:`Mask.apply`."""

    def column(self, name: str, type: str, column: exp.Expression) -> exp.Expression:
        """``column`` (contract column ``name`` of ``type``) as this principal sees it."""
        mask = self.masks.get(name)
        return column if mask is None else mask.apply(column, type=type, key=self.mask_key)


@lru_cache(maxsize=1024)
def _json(text: str) -> dict:
    return json.loads(text)


def attributes_match(attributes: str, condition: str) -> bool:
    """Casbin matcher function: do the principal's attributes meet a rule's ``when:``?

    ``condition`` maps an attribute to glob patterns (any may match) or to None (the principal
    must not have the attribute).
    """
    values = _json(attributes)
    for name, patterns in _json(condition).items():
        value = values.get(name)
        if patterns is None:
            if value is not None:
                return False
        elif value is None or not any(fnmatchcase(str(value), p) for p in patterns):
            return False
    return True


class _Snapshot:
    """One loaded policy: its rules, the Casbin enforcer over them, and cached decisions."""

    def __init__(self, policy: PolicySet, mask_key: str):
        self.policy = policy
        self.mask_key = mask_key
        self.enforcer = casbin.Enforcer(str(MODEL_PATH))
        self.enforcer.add_function("attributesMatch", attributes_match)
        rows = [
            [role, rule.domain, obj, act, rule.when, rule.id]
            for act, rules in (("read", policy.grants), ("filter", policy.filters))
            for rule in rules
            for role in rule.roles
            for obj in rule.objects
        ]
        rows += [
            [role, rule.domain, obj, "unmask", "{}", rule.id]
            for rule in policy.masks
            for role in rule.unless
            for obj in rule.objects
        ]
        if rows:
            self.enforcer.add_policies(rows)
        links = [
            [role, included] for role, includes in policy.roles.items() for included in includes
        ]
        if links:
            self.enforcer.add_grouping_policies(links)
        self.lock = threading.Lock()
        self.decisions: dict[tuple, ProductDecision] = {}
        self.readable: dict[tuple, bool] = {}

    def remember(self, cache: dict[tuple, T], key: tuple, value: T) -> T:
        if len(cache) >= MAX_CACHED_DECISIONS:
            cache.clear()
        cache[key] = value
        return value

    def first_match(
        self, principal: Principal, product: Product, act: str, rule: str = "*"
    ) -> tuple[str, Rule] | None:
        """(role, rule) of the first rule that lets one of the principal's roles do ``act``."""
        attributes = json.dumps(principal.attributes, sort_keys=True)
        with self.lock:  # pycasbin's enforce shares function tables between calls
            for role in principal.roles:
                allowed, row = self.enforcer.enforce_ex(
                    role, product.domain, object_of(product), act, attributes, rule
                )
                if allowed:
                    return role, self.policy.by_id[row[-1]]
        return None


class PolicyEngine:
    """The mesh's governance: load once, decide per (principal, product), reload on change."""

    def __init__(self, mesh: Mesh, snapshot: _Snapshot, signature: tuple):
        self._mesh = mesh
        self._snapshot = snapshot
        self._signature = signature
        self._reload_lock = threading.Lock()

    @classmethod
    def load(cls, mesh: Mesh) -> PolicyEngine:
        """Read ``mesh.root / "policies"`` and principals.yaml; MeshConfigError lists every
        problem with its file and line."""
        signature = _signature(mesh.root)
        return cls(mesh, _compile(mesh), signature)

    @property
    def policy(self) -> PolicySet:
        return self._snapshot.policy

    @property
    def mask_key(self) -> str:
        """The secret key hash masks are computed with; never show it (see hide_mask_key)."""
        return self._snapshot.mask_key

    def mask_key_warning(self) -> str | None:
        """What to tell whoever starts a server when the hash key is random (None when it is
        set): only serving makes hashes that clients keep, so offline commands stay quiet."""
        variable = self._snapshot.policy.mask_key_env
        if variable in os.environ:
            return None
        return (
            f"{variable} is not set: hash masks use a random key until the gateway restarts; set "
            "it to keep masked identifiers stable across restarts and replicas"
        )

    def hide_mask_key(self, text: str) -> str:
        """``text`` (SQL for EXPLAIN, audit or errors) with the hash key replaced."""
        return text.replace(self.mask_key, "<mask key>")

    def decide(
        self, principal: Principal, product: Product, *, address: str | None = None
    ) -> ProductDecision:
        """What ``principal`` may read of ``product`` (named ``address``, default its latest
        address): readable, masks, row filter, and the rules that decided."""
        address = address or f"{product.domain}.{product.name}"
        snapshot = self._snapshot
        key = (*principal.cache_key(), product.versioned_address, address)
        decision = snapshot.decisions.get(key)
        if decision is None:
            decision = _decide(snapshot, principal, product, address)
            snapshot.remember(snapshot.decisions, key, decision)
        row_filter = decision.row_filter
        return replace(
            decision,
            masks=dict(decision.masks),
            row_filter=None if row_filter is None else row_filter.copy(),
        )

    def readable(self, principal: Principal, product: Product) -> bool:
        """May ``principal`` read ``product`` at all (for metadata listings)?"""
        snapshot = self._snapshot
        key = (*principal.cache_key(), object_of(product))
        readable = snapshot.readable.get(key)
        if readable is None:
            readable = snapshot.first_match(principal, product, "read") is not None
            snapshot.remember(snapshot.readable, key, readable)
        return readable

    def reload_if_changed(self) -> bool:
        """Re-read the policy and principal files if they changed since the last look.

        True when a new policy is in force. When the new files are invalid the error is logged,
        the previous policy stays in force and False is returned (until the files change again).
        """
        with self._reload_lock:
            signature = _signature(self._mesh.root)
            if signature == self._signature:
                return False
            self._signature = signature
            try:
                snapshot = _compile(self._mesh)
            except MeshConfigError as error:
                log.error(
                    "policy files changed but are invalid; keeping the previous policy\n%s", error
                )
                return False
            self._snapshot = snapshot
            log.info("policy reloaded from %s", self._mesh.root / "policies")
            return True


def _compile(mesh: Mesh) -> _Snapshot:
    policy, problems = load_policy_set(mesh)
    if not problems and not policy.grants:
        log.warning(
            "%s has no grants: every principal is denied every product", mesh.root / "policies"
        )
    mask_key = _mask_key(policy.mask_key_env, problems)
    if problems:
        raise MeshConfigError(problems)
    return _Snapshot(policy, mask_key)


def _mask_key(variable: str, problems: list[str]) -> str:
    """The hash key from ``variable``; without it a random key for this process, so hashes join
    across products and stores but change when the gateway restarts."""
    global _process_mask_key
    value = os.environ.get(variable)
    if value is not None:
        if not MASK_KEY.match(value):
            problems.append(
                f"environment variable {variable}: the mask key must be at least 16 characters "
                "of letters, digits and + / = _ . - (e.g. `openssl rand -hex 32`)"
            )
        return value
    if _process_mask_key is None:
        _process_mask_key = secrets.token_hex(32)
    return _process_mask_key


def _signature(root: Path) -> tuple:
    paths = [*policy_files(root), root / PRINCIPALS_FILE]
    stats = []
    for path in paths:
        try:
            stat = path.stat()
        except OSError:
            continue
        stats.append((str(path), stat.st_mtime_ns, stat.st_size))
    return tuple(stats)


def _decide(
    snapshot: _Snapshot, principal: Principal, product: Product, address: str
) -> ProductDecision:
    who = principal.name
    granted = snapshot.first_match(principal, product, "read")
    if granted is None:
        roles = ", ".join(principal.roles) or "none"
        line = f"no grant lets {who} (roles: {roles}) read {address}: denied by default"
        return ProductDecision(address, False, {}, exp.false(), (line,), snapshot.mask_key)
    role, grant = granted
    lines = [f"{grant.location}: {grant.summary} → {who} may read {address} (role {role})"]
    masks = _masks(snapshot, principal, product, lines)
    row_filter = _row_filter(snapshot, principal, product, address, lines)
    return ProductDecision(address, True, masks, row_filter, tuple(lines), snapshot.mask_key)


def _masks(
    snapshot: _Snapshot, principal: Principal, product: Product, lines: list[str]
) -> dict[str, Mask]:
    applying: dict[str, list[MaskRule]] = {}
    for rule in snapshot.policy.masks:
        columns = [c.name for c in product.columns if rule.targets(product, c)]
        if not columns:
            continue
        exempt = (
            snapshot.first_match(principal, product, "unmask", rule.id) if rule.unless else None
        )
        if exempt is not None:
            lines.append(
                f"{rule.location}: {rule.summary} → not applied: {principal.name} holds "
                f"{' or '.join(rule.unless)} (role {exempt[0]})"
            )
            continue
        for name in columns:
            applying.setdefault(name, []).append(rule)
    masks = {}
    effects: dict[tuple[MaskRule, str], list[str]] = {}
    for column in product.columns:
        rules = applying.get(column.name)
        if not rules:
            continue
        chosen = max(rules, key=lambda r: STRENGTH[r.mask.effective(column.type).kind])
        masks[column.name] = chosen.mask.effective(column.type)
        reason = chosen.mask.fallback_reason(column.type)
        effect = masks[column.name].describe() + (f" ({reason})" if reason else "")
        effects.setdefault((chosen, effect), []).append(column.name)
    for (rule, effect), names in effects.items():
        lines.append(f"{rule.location}: {rule.summary} → {', '.join(names)} masked: {effect}")
    return masks


def _row_filter(
    snapshot: _Snapshot, principal: Principal, product: Product, address: str, lines: list[str]
) -> exp.Expression | None:
    rules = [
        r
        for r in snapshot.policy.filters
        if r.domain in (GLOBAL, product.domain) and matches(product, r.objects)
    ]
    if not rules:
        return None
    predicates: list[exp.Expression] = []
    all_rows = False
    for rule in rules:
        if snapshot.first_match(principal, product, "filter", rule.id) is None:
            continue
        bound = rule.row_filter.bind(principal.attributes)
        if bound is None:
            missing = [a for a in rule.row_filter.attributes if a not in principal.attributes]
            lines.append(
                f"{rule.location}: {rule.summary} → no rows from this grant: it needs attribute "
                f"{', '.join(missing)}, which {principal.name} lacks"
            )
            continue
        all_rows = all_rows or rule.row_filter.is_true
        predicates.append(bound)
        rows = "all rows" if rule.row_filter.is_true else f"rows where {bound.sql('duckdb')}"
        lines.append(f"{rule.location}: {rule.summary} → {rows}")
    if all_rows:
        return None
    if not predicates:
        lines.append(
            f"{len(rules)} row filter(s) govern {address}, none applies to "
            f"{principal.name}: no rows"
        )
        return exp.false()
    return predicates[0] if len(predicates) == 1 else exp.or_(*predicates)

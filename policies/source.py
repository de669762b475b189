"""The mesh's policy files: YAML rules read with their line numbers and checked against the mesh.

The governance group writes ``policies/global.yaml``; each domain's owners may write
``policies/<domain>.yaml`` with rules on their own products only::

    roles:                          # global.yaml only: every role, and the roles it includes
      admin: ["unmask:pii"]
      analyst: []
    masking: {hash_key_env: MESHGATE_MASK_KEY}     # global.yaml only; where the hash key lives
    grants:                         # who may read which products (globs over domain.product)
      - {role: analyst, products: "*"}
    masks:                          # which columns are masked, unless the principal holds a role
      - {classification: pii, mask: partial, option: 4, unless: "unmask:pii"}
      - {column: sales.customer.c_acctbal, mask: "null", unless: admin}
    row_filters:                    # which rows: OR-combined; none that applies means no rows
      - {role: analyst, products: sales.customer, filter: "c_nationkey = 7"}
      - {role: analyst, products: sales.orders, when: {region: null}, filter: "TRUE"}

``when`` restricts a grant or filter to principals whose attributes match: a value or list of glob
patterns, or ``null`` for principals that lack the attribute. The YAML files are the one source of
truth; :mod:`policies.engine` compiles them into Casbin ``p``/``g`` rows in memory. (Casbin's own
CSV policy files are not used: pycasbin 2.8 splits CSV rows at every top-level comma and has no
quoting, so SQL predicates cannot live in them.)

:func:`load_policy_set` reports every problem at once, each naming its file and line.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from casbin.util import glob_match
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from gateway.errors import MeshConfigError, field_problems
from gateway.located_yaml import Located, line_of, read_located_yaml
from gateway.mesh import Classification, Column, Mesh, Product
from gateway.principals import read_principals
from policies.masks import Mask
from policies.rowfilters import RowFilter, parse_row_filter, unknown_columns

POLICY_DIR = "policies"
GLOBAL_FILE = "global.yaml"
GLOBAL = "*"
"""The Casbin domain of the governance group's rules: they may act on every domain."""
DEFAULT_MASK_KEY_ENV = "MESHGATE_MASK_KEY"

ROLE = re.compile(r"^[a-z][a-z0-9_:.-]*$")
ATTRIBUTE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
SEGMENT = re.compile(r"^[a-z0-9_*?\[\]!{},-]+$")
GLOB_CHARS = set("*?[]{}!")
RULE_SECTIONS = ("grants", "masks", "row_filters")
GLOBAL_SECTIONS = ("roles", "masking")


# --- rules -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rule:
    """What every rule has: an id for Casbin, where it is written, and the domain it acts on."""

    id: str
    location: str
    """``policies/<file>.yaml:<line>``, relative to the mesh, for explanations."""
    domain: str
    """GLOBAL for global.yaml, else the domain of the file."""
    summary: str


@dataclass(frozen=True)
class Grant(Rule):
    roles: tuple[str, ...] = ()
    objects: tuple[str, ...] = ()
    """Casbin object globs over ``/<domain>/<product>``."""
    when: str = "{}"
    """Attribute conditions as JSON, for the Casbin matcher."""


@dataclass(frozen=True)
class FilterRule(Grant):
    row_filter: RowFilter | None = None


@dataclass(frozen=True)
class MaskRule(Rule):
    mask: Mask = field(default_factory=lambda: Mask("null"))
    classification: str | None = None
    columns: tuple[str, ...] = ()
    """Casbin globs over ``/<domain>/<product>/<column>`` (when the rule targets columns)."""
    unless: tuple[str, ...] = ()
    """Roles that exempt a principal from this mask."""

    @property
    def objects(self) -> tuple[str, ...]:
        """The products this mask may touch, as Casbin object globs."""
        if self.columns:
            return tuple(dict.fromkeys(c.rsplit("/", 1)[0] for c in self.columns))
        return (f"/{self.domain}/*" if self.domain != GLOBAL else "/*/*",)

    def targets(self, product: Product, column: Column) -> bool:
        if self.domain not in (GLOBAL, product.domain):
            return False
        if self.classification is not None:
            return column.classification.value == self.classification
        address = f"{object_of(product)}/{column.name}"
        return any(glob_match(address, pattern) for pattern in self.columns)


@dataclass(frozen=True)
class PolicySet:
    """Every rule of a mesh, checked and ready to compile into Casbin rows."""

    roles: dict[str, tuple[str, ...]]
    grants: tuple[Grant, ...]
    masks: tuple[MaskRule, ...]
    filters: tuple[FilterRule, ...]
    mask_key_env: str
    by_id: dict[str, Rule] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        rules = {r.id: r for r in (*self.grants, *self.masks, *self.filters)}
        object.__setattr__(self, "by_id", rules)


def object_of(product: Product) -> str:
    """The Casbin object of a product: ``/<domain>/<product>``, the same for every version."""
    return f"/{product.domain}/{product.name}"


def matches(product: Product, objects: Iterable[str]) -> bool:
    return any(glob_match(object_of(product), pattern) for pattern in objects)


# --- input models ----------------------------------------------------------------------------


def _as_tuple(value: str | list[str]) -> tuple[str, ...]:
    return (value,) if isinstance(value, str) else tuple(value)


class _RuleInput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    description: str = ""


class _SubjectInput(_RuleInput):
    role: str | list[str]
    products: str | list[str]
    when: dict[str, str | list[str] | None] = {}

    @field_validator("when")
    @classmethod
    def _attribute_names(cls, value: dict[str, Any]) -> dict[str, Any]:
        for name in value:
            if not ATTRIBUTE_NAME.match(name):
                raise ValueError(f"{name!r} is not an attribute name; use letters, digits, _")
        return value


class _GrantInput(_SubjectInput):
    pass


class _FilterInput(_SubjectInput):
    filter: str


class _MaskInput(_RuleInput):
    classification: str | None = None
    column: str | list[str] | None = None
    mask: str | None = "null"
    option: str | int | None = None
    unless: str | list[str] = []


class _MaskingInput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    hash_key_env: str = DEFAULT_MASK_KEY_ENV


# --- loading ---------------------------------------------------------------------------------


@dataclass
class _Reader:
    """Reads one mesh's policy files, collecting every problem with its file and line."""

    mesh: Mesh
    problems: list[str] = field(default_factory=list)
    declared_roles: set[str] = field(default_factory=set)
    counter: int = 0

    def problem(self, path: Path, line: int, where: str, message: str) -> None:
        self.problems.append(f"{path}:{line or 1}: {where}: {message}")

    def next_id(self) -> str:
        self.counter += 1
        return f"r{self.counter}"

    def location(self, path: Path, line: int) -> str:
        return f"{path.relative_to(self.mesh.root)}:{line}"

    # -- products and columns

    def product_objects(
        self, path: Path, line: int, where: str, domain: str, patterns: tuple[str, ...]
    ) -> tuple[str, ...]:
        objects = []
        for pattern in patterns:
            parts = ["*", "*"] if pattern == "*" else pattern.split(".")
            if len(parts) != 2 or not all(SEGMENT.match(p) for p in parts):
                self.problem(
                    path,
                    line,
                    where,
                    f"{pattern!r} is not <domain>.<product> (globs allowed: *, ?, [..], {{a,b}})",
                )
                continue
            if not self._in_domain(path, line, where, domain, pattern, parts[0]):
                continue
            obj = "/" + "/".join(parts)
            if not any(glob_match(object_of(p), obj) for p in self.mesh.products.values()):
                self.problem(
                    path, line, where, f"{pattern!r} matches no product{self._suggest(pattern)}"
                )
                continue
            objects.append(obj)
        return tuple(objects)

    def column_objects(
        self, path: Path, line: int, where: str, domain: str, patterns: tuple[str, ...]
    ) -> tuple[str, ...]:
        objects = []
        for pattern in patterns:
            parts = pattern.split(".")
            if len(parts) != 3 or not all(SEGMENT.match(p) for p in parts):
                self.problem(path, line, where, f"{pattern!r} is not <domain>.<product>.<column>")
                continue
            if not self._in_domain(path, line, where, domain, pattern, parts[0]):
                continue
            obj = "/" + "/".join(parts)
            if not any(
                glob_match(f"{object_of(p)}/{c.name}", obj)
                for p in self.mesh.products.values()
                for c in p.columns
            ):
                self.problem(
                    path,
                    line,
                    where,
                    f"{pattern!r} matches no column of any product{self._suggest(pattern)}",
                )
                continue
            objects.append(obj)
        return tuple(objects)

    def _in_domain(
        self, path: Path, line: int, where: str, domain: str, pattern: str, first: str
    ) -> bool:
        if domain == GLOBAL or first == domain:
            return True
        self.problem(
            path,
            line,
            where,
            f"{pattern!r} is outside domain {domain}: {path.name} may only act on {domain}.* "
            f"products; ask the governance group to write this rule in {POLICY_DIR}/{GLOBAL_FILE}",
        )
        return False

    def _suggest(self, pattern: str) -> str:
        """Close product (or, for a 3-part pattern, column) addresses, to fix a typo."""
        products = {f"{p.domain}.{p.name}": p for p in self.mesh.products.values()}
        candidates = list(products)
        if pattern.count(".") == 2:
            candidates = [f"{a}.{c.name}" for a, p in products.items() for c in p.columns]
        close = difflib.get_close_matches(pattern, candidates, n=3, cutoff=0.6)
        return f"; did you mean {', '.join(close)}?" if close else ""

    def roles(self, path: Path, line: int, where: str, names: tuple[str, ...]) -> tuple[str, ...]:
        for name in names:
            if name not in self.declared_roles:
                close = difflib.get_close_matches(name, sorted(self.declared_roles), n=1)
                hint = f"did you mean {close[0]!r}? " if close else ""
                self.problem(
                    path,
                    line,
                    where,
                    f"unknown role {name!r}; {hint}declare it under `roles:` in "
                    f"{POLICY_DIR}/{GLOBAL_FILE}",
                )
        return names

    # -- rules

    def validated(
        self, path: Path, raw: Any, index: int, section: str, model: type[BaseModel]
    ) -> Any:
        where = f"{section}[{index}]"
        if not isinstance(raw, dict):
            self.problem(
                path,
                line_of(raw),
                where,
                "each rule is a mapping, e.g. {role: analyst, products: sales.orders}",
            )
            return None
        try:
            return model.model_validate(raw)
        except ValidationError as error:
            for problem in field_problems(error):
                key = problem.location[0] if problem.location else None
                field_name = ".".join(map(str, problem.location))
                self.problem(path, line_of(raw, key), f"{where}.{field_name}", problem.message)
            return None

    def grant(
        self, path: Path, raw: Located, index: int, domain: str, section: str
    ) -> Grant | None:
        model = _FilterInput if section == "row_filters" else _GrantInput
        rule = self.validated(path, raw, index, section, model)
        if rule is None:
            return None
        where = f"{section}[{index}]"
        roles = self.roles(path, line_of(raw, "role"), f"{where}.role", _as_tuple(rule.role))
        objects = self.product_objects(
            path, line_of(raw, "products"), f"{where}.products", domain, _as_tuple(rule.products)
        )
        when = {k: (None if v is None else list(_as_tuple(v))) for k, v in rule.when.items()}
        common = dict(
            id=self.next_id(),
            location=self.location(path, raw.line),
            domain=domain,
            roles=roles,
            objects=objects,
            when=json.dumps(when, sort_keys=True),
        )
        subject = f"{'/'.join(roles)}{_describe_when(when)}"
        target = ", ".join(_as_tuple(rule.products))
        if section == "grants":
            return Grant(summary=f"grant {subject} read {target}", **common)
        row_filter = self.row_filter(path, raw, where, rule.filter, objects)
        if row_filter is None:
            return None
        return FilterRule(
            summary=f"row filter for {subject} on {target}",
            row_filter=row_filter,
            **common,
        )

    def row_filter(
        self, path: Path, raw: Located, where: str, text: str, objects: tuple[str, ...]
    ) -> RowFilter | None:
        line = line_of(raw, "filter")
        try:
            row_filter = parse_row_filter(text, addresses=self.mesh.products)
        except ValueError as error:
            self.problem(path, line, f"{where}.filter", str(error))
            return None
        read_columns = {c.name for a in row_filter.reads for c in self.mesh.products[a].columns}
        for product in self.mesh.products.values():
            if not matches(product, objects):
                continue
            unknown = unknown_columns(row_filter, {c.name for c in product.columns} | read_columns)
            if unknown:
                self.problem(
                    path,
                    line,
                    f"{where}.filter",
                    f"unknown column(s) {', '.join(unknown)} for {product.versioned_address}; a "
                    "filter uses the product's columns and those of the products it reads",
                )
                return None
        return row_filter

    def mask(self, path: Path, raw: Located, index: int, domain: str) -> MaskRule | None:
        rule = self.validated(path, raw, index, "masks", _MaskInput)
        if rule is None:
            return None
        where = f"masks[{index}]"
        if (rule.classification is None) == (rule.column is None):
            self.problem(
                path, raw.line, where, "give exactly one of `classification:` or `column:`"
            )
            return None
        try:
            mask = Mask(rule.mask or "null", None if rule.option is None else str(rule.option))
        except ValueError as error:
            self.problem(
                path,
                line_of(raw, "option" if rule.option is not None and rule.mask else "mask"),
                f"{where}.mask",
                str(error),
            )
            return None
        classes = [c.value for c in Classification]
        if rule.classification is not None and rule.classification not in classes:
            self.problem(
                path,
                line_of(raw, "classification"),
                f"{where}.classification",
                f"unknown classification {rule.classification!r}; use one of {', '.join(classes)}",
            )
            return None
        columns = ()
        if rule.column is not None:
            columns = self.column_objects(
                path, line_of(raw, "column"), f"{where}.column", domain, _as_tuple(rule.column)
            )
            if not columns:
                return None
        unless = self.roles(path, line_of(raw, "unless"), f"{where}.unless", _as_tuple(rule.unless))
        target = (
            f"classification {rule.classification}"
            if rule.classification
            else ", ".join(_as_tuple(rule.column))
        )
        exempt = f" unless {' or '.join(unless)}" if unless else ""
        return MaskRule(
            id=self.next_id(),
            location=self.location(path, raw.line),
            domain=domain,
            summary=f"mask {target} with {mask.describe()}{exempt}",
            mask=mask,
            classification=rule.classification,
            columns=columns,
            unless=unless,
        )

    # -- files

    def declare_roles(self, path: Path, document: Located) -> dict[str, tuple[str, ...]]:
        raw = document.get("roles") or {}
        line = line_of(document, "roles")
        if not isinstance(raw, dict):
            self.problem(
                path,
                line,
                "roles",
                'give a mapping of role -> roles it includes, e.g. {admin: ["unmask:pii"]}',
            )
            return {}
        roles: dict[str, tuple[str, ...]] = {}
        for name, includes in raw.items():
            includes = [includes] if isinstance(includes, str) else includes or []
            if not isinstance(includes, list):
                self.problem(
                    path, line_of(raw, name), f"roles.{name}", "list the roles it includes"
                )
                continue
            bad = [str(n) for n in (name, *includes) if not ROLE.match(str(n))]
            if bad:
                self.problem(
                    path,
                    line_of(raw, name),
                    f"roles.{name}",
                    f"{', '.join(bad)}: a role name is lowercase letters, digits and _ : . -",
                )
                continue
            roles[str(name)] = tuple(str(i) for i in includes)
        self.declared_roles = set(roles) | {i for includes in roles.values() for i in includes}
        return roles

    def check_principals(self) -> None:
        """Every role a principal holds must be declared: a misspelt role would silently give
        its principal nothing. principals.yaml's own problems are its reader's to report
        (gateway.principals); a file that does not read has no roles to check."""
        try:
            principals = read_principals(self.mesh.root)
        except MeshConfigError:
            return
        for name, entry in principals.entries.items():
            for role in entry.roles:
                if role not in self.declared_roles:
                    close = difflib.get_close_matches(str(role), sorted(self.declared_roles), n=1)
                    hint = f"did you mean {close[0]!r}? " if close else ""
                    self.problem(
                        principals.path,
                        principals.role_lines.get(name, 0),
                        f"principals.{name}.roles",
                        f"role {role!r} is not declared; {hint}declare it under `roles:` in "
                        f"{POLICY_DIR}/{GLOBAL_FILE} or fix the spelling",
                    )


def policy_files(mesh_root: Path) -> list[Path]:
    """Every file of the mesh's policies folder that the engine reads or refuses."""
    folder = mesh_root / POLICY_DIR
    if not folder.is_dir():
        return []
    return sorted(
        p for p in folder.iterdir() if p.is_file() and p.suffix in (".yaml", ".yml", ".csv")
    )


def load_policy_set(mesh: Mesh) -> tuple[PolicySet, list[str]]:
    """Read and check the mesh's policies and principals; the set and every problem found."""
    reader = _Reader(mesh)
    documents = _read_documents(reader, mesh)
    roles: dict[str, tuple[str, ...]] = {}
    mask_key_env = DEFAULT_MASK_KEY_ENV
    global_files = [path for path in documents if _domain_of(path, mesh) == GLOBAL]
    if len(global_files) > 1:
        reader.problem(global_files[1], 1, "file", f"keep one global file, {GLOBAL_FILE}")
    if global_files:
        document = documents[global_files[0]]
        roles = reader.declare_roles(global_files[0], document)
        try:
            mask_key_env = _MaskingInput.model_validate(document.get("masking") or {}).hash_key_env
        except ValidationError as error:
            message = field_problems(error)[0].message
            reader.problem(global_files[0], line_of(document, "masking"), "masking", message)
        # without global.yaml nothing is granted, and no role is declared to check against
        reader.check_principals()

    rules: list[Rule] = []
    for path, document in documents.items():
        domain = _domain_of(path, mesh)
        for section in RULE_SECTIONS:
            entries = document.get(section) or []
            if not isinstance(entries, list):
                where = line_of(document, section)
                reader.problem(path, where, section, "give a list of rules (each starts with -)")
                continue
            for index, raw in enumerate(entries):
                if section == "masks":
                    rules.append(reader.mask(path, raw, index, domain))
                else:
                    rules.append(reader.grant(path, raw, index, domain, section))
    policy = PolicySet(
        roles=roles,
        grants=tuple(r for r in rules if type(r) is Grant),
        masks=tuple(r for r in rules if isinstance(r, MaskRule)),
        filters=tuple(r for r in rules if isinstance(r, FilterRule)),
        mask_key_env=mask_key_env,
    )
    return policy, sorted(reader.problems, key=_file_and_line)


def _read_documents(reader: _Reader, mesh: Mesh) -> dict[Path, Located]:
    """The parsed policy files, each checked for its name and its sections."""
    documents: dict[Path, Located] = {}
    for path in policy_files(mesh.root):
        domain = _domain_of(path, mesh)
        if path.suffix == ".csv":
            reader.problem(
                path,
                1,
                "file",
                "Casbin CSV rows are not read; write the rules in YAML "
                "(see policies/demo/global.yaml in meshgate)",
            )
            continue
        if domain is None:
            reader.problem(
                path,
                1,
                "file",
                f"{path.name} is neither {GLOBAL_FILE} nor a domain of this mesh "
                f"({', '.join(mesh.domains())}); rename it after the domain it governs",
            )
            continue
        document = read_located_yaml(path, reader.problems)
        if document is None:
            continue
        if not isinstance(document, dict):
            reader.problem(path, 1, "file", f"expected a mapping with {', '.join(RULE_SECTIONS)}")
            continue
        allowed = (*GLOBAL_SECTIONS, *RULE_SECTIONS) if domain == GLOBAL else RULE_SECTIONS
        for key in document:
            if key not in allowed:
                fix = (
                    f"only {POLICY_DIR}/{GLOBAL_FILE} may declare {key}"
                    if key in GLOBAL_SECTIONS
                    else f"use one of {', '.join(allowed)}"
                )
                reader.problem(path, line_of(document, key), str(key), f"unknown section; {fix}")
        documents[path] = document
    return documents


def _file_and_line(problem: str) -> tuple[str, int]:
    found = re.match(r"^(.*?):(\d+): ", problem)
    return (found[1], int(found[2])) if found else (problem, 0)


def _domain_of(path: Path, mesh: Mesh) -> str | None:
    if path.stem == GLOBAL_FILE.removesuffix(".yaml"):
        return GLOBAL
    return path.stem if path.stem in mesh.domains() else None


def _describe_when(when: dict[str, list[str] | None]) -> str:
    if not when:
        return ""
    parts = [f"{k} absent" if v is None else f"{k}={'|'.join(v)}" for k, v in sorted(when.items())]
    return f" (when {', '.join(parts)})"

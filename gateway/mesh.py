"""The mesh directory: ``mesh.yaml``, one descriptor per product, validated on load.

A mesh is a directory that domain teams and the governance group change through code review::

    mesh.yaml                  # name, stores, gateway settings
    <domain>/<product>.yaml    # one descriptor per data product version
    policies/                  # the mesh's policy rules
    principals.yaml            # users and services, hashed secrets, roles, attributes

:func:`load_mesh` reads and validates all of it and raises one :class:`MeshConfigError` that
lists every problem with the file, the field and the fix, so a domain team sees all its mistakes
at once rather than one per restart.
"""

from __future__ import annotations

import datetime as dt
import difflib
import re
from collections.abc import Iterable
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal, TypeVar

import pyarrow as pa
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from gateway.errors import MeshConfigError, field_problems
from gateway.jwt_auth import IdentityProviderSettings
from gateway.limits import LimitsSettings
from gateway.observability.settings import ObservabilitySettings
from gateway.tls import TlsSettings
from gateway.types import arrow_type, contract_type

IDENTIFIER = re.compile(r"^[a-z][a-z0-9_]*$")
VERSIONED = re.compile(r"^(?P<name>[a-z][a-z0-9_]*?)_v(?P<major>\d+)$")
CATALOG_NAME = "mesh"


class Classification(StrEnum):
    """How sensitive a column is; policies mask by classification."""

    public = "public"
    internal = "internal"
    confidential = "confidential"
    pii = "pii"


class Column(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    type: str
    description: str = ""
    classification: Classification = Classification.internal

    @field_validator("name")
    @classmethod
    def _lowercase_identifier(cls, value: str) -> str:
        if not IDENTIFIER.match(value):
            raise ValueError(
                f"{value!r} is not a lowercase identifier; use letters, digits and underscores, "
                "starting with a letter"
            )
        return value

    @field_validator("type")
    @classmethod
    def _known_type(cls, value: str) -> str:
        if value.count("(") != value.count(")"):
            raise ValueError(
                f"type {value!r} is cut at a comma; in a YAML flow mapping quote it: "
                'type: "decimal(15,2)"'
            )
        contract_type(value)  # raises ValueError naming the supported types
        return value


DURATION = re.compile(r"^(?P<amount>\d+(\.\d+)?)\s*(?P<unit>ms|s|m|h|d|w)$")
DURATION_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def duration_seconds(text: str) -> float:
    """``"90s"``, ``"15m"``, ``"6h"``, ``"1d"``, ``"2w"`` as seconds; ValueError otherwise.

    >>> duration_seconds("1d")
    86400.0
    """
    match = DURATION.match(text.strip())
    if match is None:
        raise ValueError(
            f"{text!r} is not a duration; write a number and a unit (ms, s, m, h, d, w), e.g. 1d"
        )
    return float(match["amount"]) * DURATION_SECONDS[match["unit"]]


class Freshness(BaseModel):
    """The newest value of ``column`` is at most ``max_age`` old."""

    model_config = ConfigDict(extra="forbid")

    column: str
    max_age: str

    @field_validator("max_age")
    @classmethod
    def _duration(cls, value: str) -> str:
        duration_seconds(value)
        return value


class Availability(BaseModel):
    """At least ``min_percent`` of store probes and queries succeed."""

    model_config = ConfigDict(extra="forbid")

    min_percent: float = Field(default=99.0, gt=0, le=100)


class Latency(BaseModel):
    """The product's queries answer within these percentiles (milliseconds)."""

    model_config = ConfigDict(extra="forbid")

    p50_ms: float | None = Field(default=None, gt=0)
    p95_ms: float | None = Field(default=None, gt=0)


class Volume(BaseModel):
    """Completeness: the product holds between ``min_rows`` and ``max_rows`` rows."""

    model_config = ConfigDict(extra="forbid")

    min_rows: int | None = Field(default=None, ge=0)
    max_rows: int | None = Field(default=None, ge=0)


class Slo(BaseModel):
    """Service levels a product promises; gateway.monitor measures each while serving."""

    model_config = ConfigDict(extra="forbid")

    freshness: Freshness | None = None
    availability: Availability | None = None
    latency: Latency | None = None
    volume: Volume | None = None


QUALITY_METRICS = ("nullValues", "duplicateValues", "invalidValues", "rowCount")
QUALITY_OPERATORS = (
    "mustBe",
    "mustNotBe",
    "mustBeGreaterThan",
    "mustBeGreaterOrEqualTo",
    "mustBeLessThan",
    "mustBeLessOrEqualTo",
    "mustBeBetween",
)


class QualityRule(BaseModel):
    """A quality check in ODCS v3 terms, run at the store on a schedule.

    ``nullValues`` (not null), ``duplicateValues`` (unique), ``invalidValues`` with
    ``arguments: {validValues: [...]}`` (accepted values) or ``{minimum: x, maximum: y}`` (range)
    count offending rows of ``column``; ``rowCount`` counts all rows. Without an operator the
    count must be 0.
    """

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    metric: Literal["nullValues", "duplicateValues", "invalidValues", "rowCount"]
    column: str | None = None
    name: str | None = None
    description: str | None = None
    arguments: dict[str, Any] = Field(default_factory=dict)
    mustBe: float | None = None  # noqa: N815 - ODCS's names
    mustNotBe: float | None = None  # noqa: N815
    mustBeGreaterThan: float | None = None  # noqa: N815
    mustBeGreaterOrEqualTo: float | None = None  # noqa: N815
    mustBeLessThan: float | None = None  # noqa: N815
    mustBeLessOrEqualTo: float | None = None  # noqa: N815
    mustBeBetween: tuple[float, float] | None = None  # noqa: N815

    def operator(self) -> tuple[str, Any]:
        """The one comparison the measured count must pass (default ``mustBe: 0``)."""
        given = [(k, getattr(self, k)) for k in QUALITY_OPERATORS if getattr(self, k) is not None]
        return given[0] if given else ("mustBe", 0)

    @property
    def label(self) -> str:
        if self.name:
            return self.name
        target = f" of {self.column}" if self.column else ""
        return f"{self.metric}{target}"


class Deprecation(BaseModel):
    """This version is deprecated: served with a warning until ``sunset``, refused after it."""

    model_config = ConfigDict(extra="forbid")

    since: dt.date
    sunset: dt.date
    replacement: str


DeniedProducts = Literal["invisible", "discoverable"]
"""What principals no grant lets read a product see of it.

``invisible``: nothing; it is missing from metadata listings and reading it fails as for a
product that does not exist (NOT_FOUND). ``discoverable``: it is listed with its schema and
descriptions, and reading it fails with PERMISSION_DENIED naming its owner to ask for access."""


class Descriptor(BaseModel):
    """What a domain team writes for one version of one data product."""

    model_config = ConfigDict(extra="forbid")

    product: str
    version: int = Field(ge=1)
    owner: str
    description: str
    store: str
    table: str | None = None
    sql: str | None = None
    columns: list[Column] = Field(min_length=1)
    slo: Slo | None = None
    lineage: list[str] = Field(default_factory=list)
    tags: list[str] = Field(default_factory=list)
    quality: list[QualityRule] = Field(default_factory=list)
    deprecated: Deprecation | None = None
    when_denied: DeniedProducts | None = None
    """Overrides the mesh's ``gateway.denied_products`` for this product."""

    @field_validator("product")
    @classmethod
    def _product_name(cls, value: str) -> str:
        if not IDENTIFIER.match(value):
            raise ValueError(f"{value!r} is not a lowercase identifier")
        if VERSIONED.match(value):
            raise ValueError(
                f"{value!r} ends in _v<digits>, which addresses a version; name the product "
                "without it and set `version:` instead"
            )
        return value


class TrinoReach(BaseModel):
    """Where the mesh's Trino engine reads a store: the catalog over it and, for stores whose
    tables carry no schema (files), the schema their tables are registered in."""

    model_config = ConfigDict(extra="forbid")

    catalog: str
    schema_name: str | None = Field(default=None, alias="schema")


class StoreConfig(BaseModel):
    """A store entry of ``mesh.yaml``; the connector validates its own settings."""

    model_config = ConfigDict(extra="allow")

    kind: str
    trino: TrinoReach | None = None
    """How the mesh's Trino engine reaches this store; absent, Trino cannot read it."""

    @property
    def settings(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class Routing(BaseModel):
    """``gateway.routing``: where the cross-store part of a query runs."""

    model_config = ConfigDict(extra="forbid")

    mode: Literal["local", "trino", "auto"] = "local"
    """local: the embedded DuckDB; trino: the engine named in ``engines:`` whenever every store
    of the query is reachable there; auto: Trino when the query's products hold at least
    ``min_rows`` rows (as last counted), and locally when Trino is down."""
    min_rows: int = Field(default=20_000_000, ge=0)
    """auto: the estimated rows read from which a query goes to Trino."""
    refresh_seconds: float = Field(default=600, gt=0)
    """auto: how often the products' row counts are taken again (in the background)."""


class EngineConfig(BaseModel):
    """An ``engines:`` entry: a Trino cluster whose catalogs reach the mesh's stores."""

    model_config = ConfigDict(extra="allow")

    kind: Literal["trino"]

    @property
    def settings(self) -> dict[str, Any]:
        return {"catalog": "system", "schema": "runtime", **(self.model_extra or {})}


class GatewaySettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    dialect: str = "duckdb"
    contract_check: Literal["strict", "warn", "off"] = "strict"
    max_batch_bytes: int = Field(default=4 * 1024 * 1024, ge=64 * 1024, le=12 * 1024 * 1024)
    monitor_interval_seconds: float = Field(default=60.0, ge=0)
    """How often SLOs, contracts and quality checks are measured at the stores while serving
    (0: only when a product is read or its page is opened)."""
    denied_products: DeniedProducts = "invisible"
    """What a principal sees of products no grant lets it read; a descriptor's `when_denied`
    overrides it."""
    token_ttl_seconds: int = Field(default=8 * 3600, ge=5)
    """How long a connection may stay idle: tokens in use are renewed at half their life."""
    audit_log: str | None = "audit/events.jsonl"
    """Where every query's audit event is appended (relative to the mesh); null turns it off."""
    tls: TlsSettings | None = None
    """TLS (and mutual TLS) on the Flight endpoint (gateway.tls); off by default."""
    identity_provider: IdentityProviderSettings | None = None
    """Accept JWT bearer tokens this identity provider signed (gateway.jwt_auth)."""
    limits: LimitsSettings = Field(default_factory=LimitsSettings)
    """Timeouts, concurrency, result size and memory (gateway.limits)."""
    shutdown_grace_seconds: float = Field(default=30, ge=0)
    """On SIGTERM, how long running streams may take to finish before they are cut."""
    health_port: int | None = Field(default=None, ge=0, le=65535)
    """Serve ``GET /healthz`` over HTTP on this port (gateway.draining); off when unset."""
    routing: Routing = Field(default_factory=Routing)
    """Where cross-store queries run: the local engine, the mesh's Trino engine, or by size."""
    observability: ObservabilitySettings = Field(default_factory=ObservabilitySettings)
    """Metrics, traces, lineage events and the log format (gateway.observability.settings)."""


class MeshFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    stores: dict[str, StoreConfig]
    engines: dict[str, EngineConfig] = Field(default_factory=dict, max_length=1)
    """At most one Trino cluster the cross-store part of queries may run on."""
    gateway: GatewaySettings = Field(default_factory=GatewaySettings)


class Product(BaseModel):
    """A loaded descriptor with its place in the mesh."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    domain: str
    descriptor: Descriptor
    path: Path

    @property
    def name(self) -> str:
        return self.descriptor.product

    @property
    def version(self) -> int:
        return self.descriptor.version

    @property
    def versioned_address(self) -> str:
        return f"{self.domain}.{self.name}_v{self.version}"

    @property
    def store(self) -> str:
        return self.descriptor.store

    @property
    def columns(self) -> list[Column]:
        return self.descriptor.columns

    def arrow_schema(self) -> pa.Schema:
        """The contract schema, with descriptions and classifications as field metadata."""
        fields = [
            pa.field(
                c.name,
                arrow_type(c.type),
                metadata={
                    "description": c.description,
                    "classification": c.classification.value,
                    "ARROW:FLIGHT:SQL:CATALOG_NAME": CATALOG_NAME,
                    "ARROW:FLIGHT:SQL:DB_SCHEMA_NAME": self.domain,
                    "ARROW:FLIGHT:SQL:TABLE_NAME": self.name,
                    "ARROW:FLIGHT:SQL:TYPE_NAME": c.type.upper(),
                    "ARROW:FLIGHT:SQL:IS_READ_ONLY": "1",
                },
            )
            for c in self.columns
        ]
        return pa.schema(
            fields,
            metadata={"description": self.descriptor.description, "owner": self.descriptor.owner},
        )


class Mesh(BaseModel):
    """A whole validated mesh: its stores and its products by address."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    root: Path
    config: MeshFile
    products: dict[str, Product]  # every address, versioned and latest, to its product

    @property
    def name(self) -> str:
        return self.config.name

    def domains(self) -> list[str]:
        return sorted({p.domain for p in self.products.values()})

    def addresses(self) -> list[str]:
        return sorted(self.products)

    def when_denied(self, product: Product) -> DeniedProducts:
        """Whether ``product`` stays discoverable to principals that may not read it."""
        return product.descriptor.when_denied or self.config.gateway.denied_products


_Model = TypeVar("_Model", bound=BaseModel)


def closest_addresses(address: str, candidates: Iterable[str], *, n: int = 3) -> list[str]:
    """Up to ``n`` of ``candidates`` close to ``address``, for a "did you mean" hint.

    The caller passes only the addresses its reader may know exist, so that a hint never names
    a product hidden from them.

    >>> closest_addresses("sales.order", ["sales.orders", "supply.part"])
    ['sales.orders']
    """
    return difflib.get_close_matches(address.lower(), list(candidates), n=n, cutoff=0.5)


def _describe_validation_error(path: Path, error: ValidationError) -> list[str]:
    return [f"{path}: field `{p.field}`: {p.message}" for p in field_problems(error)]


def _read_yaml(path: Path, problems: list[str]) -> Any:
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark is not None else ""
        problems.append(f"{path}:{line}: not valid YAML ({getattr(exc, 'problem', exc)}); fix it")
    except OSError as exc:
        problems.append(f"{path}: cannot be read ({exc.strerror})")
    return None


def load_mesh(root: str | Path, *, known_store_kinds: set[str] | None = None) -> Mesh:
    """Read and validate the mesh at ``root``; MeshConfigError lists every problem found."""
    mesh, problems = read_mesh(root, known_store_kinds=known_store_kinds)
    if problems or mesh is None:
        raise MeshConfigError(problems)
    return mesh


def read_mesh(
    root: str | Path, *, known_store_kinds: set[str] | None = None
) -> tuple[Mesh | None, list[str]]:
    """The mesh at ``root`` as far as it can be read, and every problem found on the way.

    Products whose descriptor cannot be parsed are left out; those that parse but name, say, an
    unknown store are kept, so that ``meshgate validate`` can go on to check policies, principals
    and contracts and report every problem of the mesh in one run. None when mesh.yaml itself
    cannot be read.
    """
    root = Path(root).resolve()
    problems: list[str] = []
    mesh_path = root / "mesh.yaml"
    if not mesh_path.is_file():
        return None, [f"{mesh_path}: not found; a mesh directory needs a mesh.yaml"]
    config = _read_model(mesh_path, MeshFile, problems)
    if config is None:
        problems = problems or [f"{mesh_path}: empty; give the mesh a name and stores"]
        for path in _descriptor_paths(root, problems):  # their own problems, all the same
            _read_model(path, Descriptor, problems)
        return None, problems
    problems.extend(_check_mesh_file(mesh_path, config, known_store_kinds))
    products = _read_products(root, config, problems)
    problems.extend(check_replacements(products))
    return Mesh(root=root, config=config, products=products), problems


def _read_model(path: Path, model: type[_Model], problems: list[str]) -> _Model | None:
    """The YAML file at ``path`` validated as ``model``; None, with its problems, if it is not."""
    raw = _read_yaml(path, problems)
    if raw is None:
        return None
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        problems.extend(_describe_validation_error(path, exc))
        return None


def _check_mesh_file(
    mesh_path: Path, config: MeshFile, known_store_kinds: set[str] | None
) -> list[str]:
    """What mesh.yaml gets wrong across its fields: names shared by an engine and a store, a
    routing mode without an engine, store kinds no connector serves."""
    problems = [
        f"{mesh_path}: field `engines.{name}`: a store has that name too; rename the engine"
        for name in config.engines
        if name in config.stores
    ]
    if config.gateway.routing.mode != "local" and not config.engines:
        problems.append(
            f"{mesh_path}: field `gateway.routing.mode`: {config.gateway.routing.mode!r} needs "
            "a Trino cluster under `engines:`; add one or set `mode: local`"
        )
    if known_store_kinds is not None:
        problems.extend(
            f"{mesh_path}: field `stores.{name}.kind`: unknown kind {store.kind!r}; "
            f"use one of {', '.join(sorted(known_store_kinds))}"
            for name, store in config.stores.items()
            if store.kind not in known_store_kinds
        )
    return problems


def _read_products(root: Path, config: MeshFile, problems: list[str]) -> dict[str, Product]:
    """Every product that parses, at its versioned address and (the latest version) at its
    plain one; the problems of each descriptor are added to ``problems``."""
    products: dict[str, Product] = {}
    latest: dict[str, Product] = {}
    for path in _descriptor_paths(root, problems):
        descriptor = _read_model(path, Descriptor, problems)
        if descriptor is None:
            continue
        product = Product(domain=path.parent.name, descriptor=descriptor, path=path)
        problems.extend(_check_descriptor(product, config))
        problems.extend(_check_file_name(product))
        address = product.versioned_address
        if address in products:
            problems.append(
                f"{path}: field `version`: duplicate address {address}, also defined in "
                f"{products[address].path}; bump `version` or remove one file"
            )
            continue
        products[address] = product
        unversioned = f"{product.domain}.{descriptor.product}"
        if unversioned not in latest or latest[unversioned].version < descriptor.version:
            latest[unversioned] = product
    return {**products, **latest}


def _check_file_name(product: Product) -> list[str]:
    """A descriptor is named after its product: ``<product>.yaml`` or ``<product>_v<N>.yaml``."""
    descriptor = product.descriptor
    if product.path.stem in {descriptor.product, f"{descriptor.product}_v{descriptor.version}"}:
        return []
    return [
        f"{product.path}: field `product`: the file of product {descriptor.product!r} version "
        f"{descriptor.version} must be named {descriptor.product}.yaml or "
        f"{descriptor.product}_v{descriptor.version}.yaml"
    ]


def _descriptor_paths(root: Path, problems: list[str]) -> list[Path]:
    """Every ``<domain>/<product>.yaml`` under ``root``; badly named domain folders are
    problems."""
    paths = []
    for path in sorted(root.glob("*/*.yaml")):
        domain = path.parent.name
        if domain in {"policies"} or domain.startswith("."):
            continue
        if not IDENTIFIER.match(domain):
            problems.append(
                f"{path}: domain folder {domain!r} is not a lowercase identifier; rename the folder"
            )
            continue
        paths.append(path)
    return paths


def _check_descriptor(product: Product, config: MeshFile) -> list[str]:
    d, path = product.descriptor, product.path
    problems = []
    if d.store not in config.stores:
        hint = difflib.get_close_matches(d.store, list(config.stores), n=1)
        fix = f"did you mean {hint[0]!r}?" if hint else "declare it under `stores:` in mesh.yaml"
        problems.append(f"{path}: field `store`: unknown store {d.store!r}; {fix}")
    if (d.table is None) == (d.sql is None):
        problems.append(
            f"{path}: field `table`: give exactly one of `table:` (a table or view) or `sql:`"
        )
    names = [c.name for c in d.columns]
    for name in {n for n in names if names.count(n) > 1}:
        problems.append(f"{path}: field `columns`: column {name!r} is listed twice; keep one")
    if d.slo and d.slo.freshness and d.slo.freshness.column not in names:
        problems.append(
            f"{path}: field `slo.freshness.column`: {d.slo.freshness.column!r} is not a column "
            "of this product"
        )
    problems.extend(_check_quality(product, names))
    if d.deprecated is not None and d.deprecated.sunset < d.deprecated.since:
        problems.append(
            f"{path}: field `deprecated.sunset`: {d.deprecated.sunset} is before `since` "
            f"({d.deprecated.since}); the sunset comes after the deprecation"
        )
    return problems


def _check_quality(product: Product, names: list[str]) -> list[str]:
    problems = []
    for i, rule in enumerate(product.descriptor.quality):
        where = f"{product.path}: field `quality.{i}"
        if rule.metric != "rowCount" and rule.column not in names:
            problems.append(
                f"{where}.column`: {rule.metric} needs `column:` naming a column of this product"
                + (f" ({rule.column!r} is not one)" if rule.column else "")
            )
        if rule.metric == "invalidValues" and not (
            "validValues" in rule.arguments or {"minimum", "maximum"} & set(rule.arguments)
        ):
            problems.append(
                f"{where}.arguments`: invalidValues needs `validValues: [...]` (accepted "
                "values) or `minimum:`/`maximum:` (a range)"
            )
        operators = [k for k in QUALITY_OPERATORS if getattr(rule, k) is not None]
        if len(operators) > 1:
            problems.append(f"{where}`: give one operator, not {', '.join(operators)}")
    return problems


def check_replacements(products: dict[str, Product]) -> list[str]:
    """Every deprecation's ``replacement`` must be an address of the mesh."""
    problems = []
    for product in {p.versioned_address: p for p in products.values()}.values():
        deprecated = product.descriptor.deprecated
        if deprecated is not None and deprecated.replacement.lower() not in products:
            close = difflib.get_close_matches(deprecated.replacement, list(products), n=1)
            hint = f"did you mean {close[0]!r}?" if close else "name a product address"
            problems.append(
                f"{product.path}: field `deprecated.replacement`: no product "
                f"{deprecated.replacement!r}; {hint}"
            )
    return problems

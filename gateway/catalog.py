"""The catalog a principal sees: products as records for the discovery API, pages and CLI.

Every view of a product outside the Flight SQL metadata is built here from the same Product
objects the planner reads, filtered by the same policy: a principal sees only the products it may
read, and a column masked for it is shown as masked (with the mask). Records carry the store's
*kind* only, never its connection settings or the physical table behind the product.

The functions are pure over (mesh, policy decisions, measurements); :class:`Catalog` binds them to
a running gateway and the monitors that measure SLOs, contracts and usage while it serves.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from gateway.errors import InvalidQuery, NotFound, PermissionDenied
from gateway.mesh import Classification, Mesh, Product, closest_addresses
from gateway.principals import Principal

if TYPE_CHECKING:
    from gateway.service import Gateway

SEARCH_FIELDS = ("q", "domain", "owner", "classification", "tag")


@dataclass(frozen=True)
class Search:
    """What a catalog search asks for; every given field must match (case-insensitive)."""

    q: str | None = None
    """Free text: a substring of the address, description, owner, tags or a column."""
    domain: str | None = None
    owner: str | None = None
    classification: str | None = None
    """Products with at least one column of this classification."""
    tag: str | None = None

    @classmethod
    def of(cls, params: Mapping[str, str]) -> Search:
        """A search from query parameters; unknown parameters and classifications are refused."""
        unknown = sorted(set(params) - set(SEARCH_FIELDS))
        if unknown:
            raise InvalidQuery(
                f"unknown search parameter(s) {', '.join(unknown)}; use {', '.join(SEARCH_FIELDS)}"
            )
        values = {k: (params.get(k) or "").strip() or None for k in SEARCH_FIELDS}
        known = [c.value for c in Classification]
        if values["classification"] and values["classification"].lower() not in known:
            raise InvalidQuery(
                f"unknown classification {values['classification']!r}; use one of "
                f"{', '.join(known)}"
            )
        return cls(**values)

    def matches(self, record: Mapping[str, Any]) -> bool:
        def same(value: str | None, wanted: str | None) -> bool:
            return wanted is None or (value or "").lower() == wanted.lower()

        if not (same(record["domain"], self.domain) and same(record["owner"], self.owner)):
            return False
        if self.tag and self.tag.lower() not in {t.lower() for t in record["tags"]}:
            return False
        classes = {c["classification"] for c in record["columns"]}
        if self.classification and self.classification.lower() not in classes:
            return False
        if self.q:
            words = [
                record["address"],
                record["description"],
                record["owner"],
                *record["tags"],
                *(f"{c['name']} {c['description']}" for c in record["columns"]),
            ]
            haystack = " ".join(words).lower()
            return all(term in haystack for term in self.q.lower().split())
        return True


def latest_address(product: Product) -> str:
    return f"{product.domain}.{product.name}"


def versions_of(mesh: Mesh, product: Product) -> list[Product]:
    """Every version of ``product``'s name in its domain, oldest first."""
    found = {
        p.versioned_address: p
        for p in mesh.products.values()
        if p.domain == product.domain and p.name == product.name
    }
    return sorted(found.values(), key=lambda p: p.version)


def canonical(mesh: Mesh, address: str) -> Product:
    """The product at ``address`` (latest or pinned); NotFound suggests close addresses."""
    product = mesh.products.get(address.lower())
    if product is None:
        close = closest_addresses(address, mesh.addresses())  # the owners' view: all
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise NotFound(f"no product {address!r}{hint}")
    return product


def upstream_of(product: Product) -> list[str]:
    return list(product.descriptor.lineage)


def downstream_of(mesh: Mesh, product: Product) -> list[str]:
    """Latest addresses of products whose lineage names ``product`` (any of its addresses)."""
    names = {latest_address(product), product.versioned_address}
    found = {
        latest_address(p)
        for p in mesh.products.values()
        if names.intersection(a.lower() for a in p.descriptor.lineage)
    }
    return sorted(found)


def columns_as_seen(product: Product, masks: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The contract's columns as one principal sees them: ``masks`` maps a masked column to
    its :class:`policies.masks.Mask`."""
    columns = []
    for column in product.columns:
        mask = masks.get(column.name)
        effective = mask.effective(column.type) if mask is not None else None
        columns.append(
            {
                "name": column.name,
                "type": column.type if mask is None else mask.result_type(column.type),
                "contract_type": column.type,
                "description": column.description,
                "classification": column.classification.value,
                "masked": mask is not None,
                "mask": effective.describe() if effective is not None else None,
            }
        )
    return columns


def connect_snippets(address: str, *, flight_uri: str, principal: str) -> dict[str, str]:
    """Copy-paste ways to read ``address``: ADBC into pandas, and a JDBC URL for BI tools."""
    host_port = re.sub(r"^grpc(\+tcp|\+tls)?://", "", flight_uri).rstrip("/")
    encryption = "true" if flight_uri.startswith("grpc+tls") else "false"
    python = (
        "import adbc_driver_flightsql.dbapi as flightsql\n\n"
        f'with flightsql.connect("{flight_uri}",\n'
        f'                       db_kwargs={{"username": "{principal}", "password": "..."}},\n'
        "                       autocommit=True) as conn, conn.cursor() as cur:\n"
        f'    cur.execute("SELECT * FROM {address} LIMIT 1000")\n'
        "    df = cur.fetch_df()\n"
    )
    return {
        "python": python,
        "jdbc_url": f"jdbc:arrow-flight-sql://{host_port}/?useEncryption={encryption}",
        "sql": f"SELECT * FROM {address} LIMIT 1000",
    }


@dataclass
class Measurements:
    """What the monitors know of one product version now (filled by gateway.monitor)."""

    slos: list[dict[str, Any]] = field(default_factory=list)
    contract: dict[str, Any] = field(default_factory=lambda: {"status": "unchecked"})
    quality: list[dict[str, Any]] = field(default_factory=list)
    usage: dict[str, Any] = field(default_factory=dict)


def product_record(
    mesh: Mesh,
    product: Product,
    *,
    address: str,
    masks: Mapping[str, Any],
    visible: set[str],
    measured: Measurements | None = None,
    flight_uri: str = "grpc://localhost:8815",
    principal: str = "analyst",
) -> dict[str, Any]:
    """Everything a principal may know of one product, as JSON-ready data.

    ``visible`` is the set of addresses the principal may read: lineage to products outside it is
    left out, so the graph never reveals a product a policy hides.
    """
    d = product.descriptor
    measured = measured or Measurements()
    versions = [
        {
            "version": v.version,
            "address": v.versioned_address,
            "deprecation": deprecation_of(v),
        }
        for v in versions_of(mesh, product)
        if v.versioned_address in visible
    ]
    return {
        "address": address,
        "latest_address": latest_address(product),
        "versioned_address": product.versioned_address,
        "domain": product.domain,
        "name": product.name,
        "version": product.version,
        "versions": versions,
        "is_latest": mesh.products.get(latest_address(product)) == product,
        "owner": d.owner,
        "description": d.description,
        "tags": list(d.tags),
        "store_kind": mesh.config.stores[product.store].kind,
        "columns": columns_as_seen(product, masks),
        "deprecation": deprecation_of(product),
        "lineage": {
            "upstream": [a for a in upstream_of(product) if a.lower() in visible],
            "downstream": [a for a in downstream_of(mesh, product) if a in visible],
        },
        "slos": measured.slos,
        "contract": measured.contract,
        "quality": measured.quality,
        "usage": measured.usage,
        "connect": connect_snippets(address, flight_uri=flight_uri, principal=principal),
    }


def deprecation_of(product: Product) -> dict[str, Any] | None:
    """The product version's deprecation as data, or None while it is current."""
    deprecated = getattr(product.descriptor, "deprecated", None)
    if deprecated is None:
        return None
    return {
        "since": deprecated.since.isoformat(),
        "sunset": deprecated.sunset.isoformat(),
        "replacement": deprecated.replacement,
    }


def worst(statuses: Iterable[str]) -> str:
    """The worst of SLO statuses: broken over at_risk over met over unknown."""
    from gateway.slos import worst_status

    return worst_status(list(statuses))


class Catalog:
    """The catalog of one running gateway, for one principal at a time.

    It lists what the gateway lists for the principal: the products it may read and, where the
    mesh makes denied products discoverable (``Gateway.listed_products``), those it may not read,
    marked ``readable: false`` with the owner to ask and nothing measured about who reads them.
    """

    def __init__(self, gateway: Gateway, *, flight_uri: str):
        self.gateway = gateway
        self.flight_uri = flight_uri

    def _measured(self, product: Product, *, readable: bool = True) -> Measurements:
        measured = self.gateway.monitor.measurements(product)
        measured.usage = self.gateway.usage.usage(product) if readable else {}
        return measured

    def visible(self, principal: Principal) -> dict[str, Product]:
        """The addresses ``principal`` may read."""
        return self.gateway.visible_products(principal)

    def listed(self, principal: Principal) -> dict[str, tuple[Product, bool]]:
        """Every address the principal may know of, with whether it may read it."""
        listing = getattr(self.gateway, "listed_products", None)
        if listing is None:
            return {a: (p, True) for a, p in self.visible(principal).items()}
        return {a: (entry.product, entry.readable) for a, entry in listing(principal).items()}

    def record(
        self,
        principal: Principal,
        address: str,
        *,
        listed: dict[str, tuple[Product, bool]] | None = None,
    ) -> dict[str, Any]:
        """The product at ``address`` as ``principal`` may see it; NotFound if it may not."""
        listed = self.listed(principal) if listed is None else listed
        found = listed.get(address.lower())
        if found is None:
            close = closest_addresses(address, listed)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise NotFound(f"no product {address!r} you may read{hint}")
        product, readable = found
        address = address.lower()
        self.gateway.monitor.on_read([address])
        decision = self.gateway.policy.decide(principal, product, address=address)
        record = product_record(
            self.gateway.mesh,
            product,
            address=address,
            masks=decision.masks if readable else {},
            visible=set(listed),
            measured=self._measured(product, readable=readable),
            flight_uri=self.flight_uri,
            principal=principal.name,
        )
        record["readable"] = readable
        record["rows_filtered"] = readable and decision.row_filter is not None
        if not readable:
            for column in record["columns"]:
                column["masked"] = None  # unknown: the principal may not read the product
        return record

    def readable_record(self, principal: Principal, address: str) -> dict[str, Any]:
        """The record of a product the principal may read: PermissionDenied naming the owner
        for a discoverable one it may not (exports are for readers)."""
        record = self.record(principal, address)
        if not record["readable"]:
            raise PermissionDenied(
                f"you may not read {record['address']}; ask its owner ({record['owner']}) "
                "for access"
            )
        return record

    def unfiltered_record(self, address: str) -> dict[str, Any]:
        """The product at ``address`` as the mesh's owners see it: no policy applied (for the
        offline ``meshgate products`` without a principal)."""
        product = canonical(self.gateway.mesh, address)
        return product_record(
            self.gateway.mesh,
            product,
            address=address,
            masks={},
            visible=set(self.gateway.mesh.products),
            measured=self._measured(product),
            flight_uri=self.flight_uri,
            principal="you",
        ) | {"rows_filtered": False, "readable": True}

    def records(self, principal: Principal, search: Search | None = None) -> list[dict[str, Any]]:
        """One record per product (its latest address) the principal may know of, matching
        ``search``, by domain and name."""
        listed = self.listed(principal)
        latest = sorted(a for a, (p, _) in listed.items() if a == latest_address(p))
        self.gateway.monitor.on_read(latest)
        records = [self.record(principal, a, listed=listed) for a in latest]
        search = search or Search()
        return [r for r in records if search.matches(r)]

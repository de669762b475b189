"""What a consumer may see of where the mesh keeps its data: nothing physical, unless allowed.

Products are addressed by their logical names; their physical tables, files and hosts belong to
the domains that keep them. Two places could show them to a client, and both go through here:

- error messages: :meth:`Redactor.scrub` replaces every physical relation of the mesh, store file
  path, absolute path and quoted SQL excerpt with a neutral word (the last line of defence: the
  raisers already give public messages without driver text, see gateway.errors);
- EXPLAIN: :meth:`Redactor.explain` writes each fragment's physical relations as the product
  addresses they stand for, unless the principal may see physical names: the governance group
  (a role that includes ``see:physical``) or the owners of the product's domain (a role that
  includes ``owner:<domain>``), as the mesh's ``roles:`` declare.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from connectors.base import Connector
from gateway.mesh import Mesh
from gateway.principals import Principal

SEE_PHYSICAL = "see:physical"
"""The role (or permission included by a role) that shows every physical name in EXPLAIN."""
OWNER_PREFIX = "owner:"
"""``owner:<domain>`` shows the physical names of that domain's products in EXPLAIN."""

ABSOLUTE_PATH = re.compile(r"(?<![\w:/.'\"-])(?:/[\w.*+@%=-]+){2,}/?")
"""Two or more ``/segment``s not preceded by a word, a scheme or a quote: a file path."""
QUOTED_PATH = re.compile(r"'(?:/[^'\s]+){2,}'")
SQL_EXCERPT = re.compile(r"\n(?:LINE \d+:|query:|SQL:).*", re.DOTALL)
"""DuckDB (``LINE 1: ...``) and ADBC (``query: ...``) quote the SQL after the message."""


@dataclass(frozen=True)
class PhysicalName:
    """One physical relation of the mesh and how it may be written in a message or in SQL."""

    address: str
    domain: str
    spellings: tuple[str, ...]


def physical_names(mesh: Mesh, connectors: Mapping[str, Connector]) -> list[PhysicalName]:
    """Every product's physical relation, as its descriptor names it and as its store's
    connector renders it in SQL (the exact text a fragment holds)."""
    names = []
    logical = {p.name for p in mesh.products.values()} | {p.domain for p in mesh.products.values()}
    products = {p.versioned_address: p for p in mesh.products.values()}
    for address, product in sorted(products.items()):
        spellings: set[str] = set()
        descriptor = product.descriptor
        connector = connectors.get(product.store)
        if descriptor.table is not None:
            spellings.add(descriptor.table)
            last = descriptor.table.replace("\\", "/").split("/")[-1].split(".")[-1]
            if last not in logical and len(last) >= 3:
                spellings.add(last)
        if connector is not None:
            try:
                relation = connector.relation(
                    descriptor.table,
                    descriptor.sql,
                    columns={c.name: c.type for c in product.columns},
                )
            except Exception:  # noqa: BLE001 - a product that cannot be rendered has no text
                relation = None
            if relation is not None:
                dialect = connector.capabilities.dialect
                inner = relation.this if descriptor.sql is not None else relation
                spellings.add(inner.sql(dialect=dialect))
        names.append(
            PhysicalName(
                address=address,
                domain=product.domain,
                spellings=tuple(sorted(spellings, key=len, reverse=True)),
            )
        )
    return names


def store_locations(connectors: Mapping[str, Connector]) -> list[str]:
    """The resolved file paths and directories the stores read, and their DSNs (longest
    first); relative names as mesh.yaml writes them are too short to be told from words."""
    places = set()
    for connector in connectors.values():
        for attribute in ("path", "root"):
            value = getattr(connector, attribute, None)
            if value is not None:
                places.add(str(value))
        dsn = getattr(connector.settings, "dsn", None)
        if isinstance(dsn, str) and dsn:
            places.add(dsn)
    return sorted(places, key=len, reverse=True)


def holds(principal: Principal, role: str, includes: Mapping[str, Iterable[str]]) -> bool:
    """Whether ``principal`` holds ``role`` directly or through the roles its roles include.

    >>> holds(Principal("a", roles=("admin",)), "see:physical", {"admin": ["see:physical"]})
    True
    """
    seen: set[str] = set()
    pending = list(principal.roles)
    while pending:
        current = pending.pop()
        if current == role:
            return True
        if current not in seen:
            seen.add(current)
            pending.extend(includes.get(current, ()))
    return False


class Redactor:
    """The physical names of one mesh, and what each principal may see of them."""

    def __init__(self, mesh: Mesh, connectors: Mapping[str, Connector]):
        self._names = physical_names(mesh, connectors)
        self._locations = store_locations(connectors)
        # a table named like a product or domain is no secret, and scrubbing the word would
        # mangle every message naming that product
        logical = {p.name for p in mesh.products.values()} | {
            p.domain for p in mesh.products.values()
        }
        spellings = [
            s for n in self._names for s in n.spellings if s.strip("\"'`") not in logical
        ] + self._locations
        unique = sorted(set(spellings), key=len, reverse=True)
        self._physical = (
            re.compile("|".join(_pattern(s) for s in unique)) if unique else re.compile(r"(?!)")
        )

    def scrub(self, message: str) -> str:
        """``message`` without quoted SQL, physical names, store locations or file paths."""
        message = SQL_EXCERPT.sub("", message)
        message = self._physical.sub("<physical name>", message)
        message = QUOTED_PATH.sub("'<path>'", message)
        return ABSOLUTE_PATH.sub("<path>", message)

    def may_see_physical(
        self, principal: Principal, domain: str, includes: Mapping[str, Iterable[str]]
    ) -> bool:
        return holds(principal, SEE_PHYSICAL, includes) or holds(
            principal, f"{OWNER_PREFIX}{domain}", includes
        )

    def explain(
        self,
        text: str,
        principal: Principal,
        *,
        includes: Mapping[str, Iterable[str]],
    ) -> str:
        """EXPLAIN ``text`` with the physical relations the principal may not see written as
        the products they stand for, e.g. ``READ_PARQUET('/…/lineitem/*.parquet')`` as
        ``<product fulfillment.lineitem_v1>``; quoted file paths are hidden with them."""
        hidden = [
            name
            for name in self._names
            if not self.may_see_physical(principal, name.domain, includes)
        ]
        if not hidden:
            return text
        # one pass, longest spelling first: a `sql:` product's query may name another's table
        address_of = {s: n.address for n in hidden for s in n.spellings}
        spellings = sorted(address_of, key=len, reverse=True)
        pattern = re.compile("|".join(f"(?P<s{i}>{_pattern(s)})" for i, s in enumerate(spellings)))

        def product(match: re.Match) -> str:
            return f"<product {address_of[spellings[int(match.lastgroup[1:])]]}>"

        return QUOTED_PATH.sub("'<path>'", pattern.sub(product, text))


def _pattern(spelling: str) -> str:
    """A regex for ``spelling`` as a whole name (not inside a longer identifier)."""
    escaped = re.escape(spelling)
    start = r"(?<![\w])" if spelling[:1].isalnum() or spelling[:1] == "_" else ""
    end = r"(?![\w])" if spelling[-1:].isalnum() or spelling[-1:] == "_" else ""
    return f"{start}{escaped}{end}"

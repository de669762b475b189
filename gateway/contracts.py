"""Contract checks: does each store still hold what each product's descriptor promises?"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import pyarrow as pa

from connectors.base import Connector
from gateway.errors import GatewayError, QueryTimeout, SourceUnavailable
from gateway.mesh import Mesh, Product
from gateway.types import arrow_type


def _family(t: pa.DataType) -> str:
    checks = (
        (pa.types.is_integer, "integer"),
        (pa.types.is_floating, "floating"),
        (pa.types.is_decimal, "decimal"),
        (
            lambda x: (
                pa.types.is_string(x) or pa.types.is_large_string(x) or pa.types.is_string_view(x)
            ),
            "text",
        ),
        (
            lambda x: (
                pa.types.is_binary(x) or pa.types.is_large_binary(x) or pa.types.is_binary_view(x)
            ),
            "binary",
        ),
        (pa.types.is_boolean, "boolean"),
        (pa.types.is_date, "date"),
        (pa.types.is_time, "time"),
    )
    for check, name in checks:
        if check(t):
            return name
    if pa.types.is_timestamp(t):
        return "timestamptz" if t.tz else "timestamp"
    return str(t)


def compatible(store_type: pa.DataType, contract_type: pa.DataType) -> bool:
    """Whether ``store_type`` values can be served as ``contract_type`` keeping their meaning.

    Widths may differ (SQLite integers are 64-bit whatever the declaration); kinds may not.
    """
    return _family(store_type) == _family(contract_type)


@dataclass(frozen=True)
class ContractReport:
    address: str
    store: str
    problems: tuple[str, ...]
    checked: bool = True
    reachable: bool = True
    """False when the store did not answer (rather than refusing the product's table or SQL)."""

    @property
    def ok(self) -> bool:
        return self.checked and not self.problems


def check_contract(product: Product, connector: Connector) -> ContractReport:
    """Compare the product's descriptor with what its store reports now."""
    address = product.versioned_address
    try:
        relation = connector.relation(
            product.descriptor.table,
            product.descriptor.sql,
            columns={c.name: c.type for c in product.columns},
        )
        actual = connector.describe(relation)
    except GatewayError as exc:
        return ContractReport(
            address,
            product.store,
            (f"not checked: {exc}",),
            checked=False,
            reachable=not isinstance(exc, SourceUnavailable | QueryTimeout),
        )
    found = {field.name.lower(): field.type for field in actual}
    problems = []
    for column in product.columns:
        store_type = found.get(column.name)
        if store_type is None:
            problems.append(
                f"column {column.name!r} is not in the store (it has: {', '.join(sorted(found))}); "
                "fix the descriptor's `columns` or the table"
            )
        elif not compatible(store_type, arrow_type(column.type)):
            problems.append(
                f"column {column.name!r} is {store_type} in the store but the descriptor says "
                f"{column.type}; fix `type` or the table"
            )
    return ContractReport(address, product.store, tuple(problems))


def check_contracts(mesh: Mesh, connectors: Mapping[str, Connector]) -> list[ContractReport]:
    """A report per product version, in address order."""
    versions = {p.versioned_address: p for p in mesh.products.values()}
    return [check_contract(p, connectors[p.store]) for _, p in sorted(versions.items())]

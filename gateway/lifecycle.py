"""Versions with a life cycle: deprecated versions warn until their sunset, then are refused.

A descriptor sets ``deprecated: {since: 2026-01-01, sunset: 2026-06-30, replacement:
sales.orders_v2}``. Until the sunset a read works and carries a warning (a Flight header, the
audit event); from the sunset on it fails with :class:`~gateway.errors.ProductRetired` naming the
replacement.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping

from gateway.errors import ProductRetired
from gateway.mesh import Product

WARNING_HEADER = "x-meshgate-warning"


def today() -> dt.date:
    return dt.datetime.now(dt.UTC).date()


def retired(product: Product, on: dt.date) -> bool:
    deprecated = product.descriptor.deprecated
    return deprecated is not None and on >= deprecated.sunset


def deprecation_warning(address: str, product: Product, on: dt.date) -> str | None:
    """The warning a read of ``product`` (named ``address``) carries on day ``on``, if any."""
    deprecated = product.descriptor.deprecated
    if deprecated is None or on < deprecated.since or on >= deprecated.sunset:
        return None
    return (
        f"{address} is deprecated since {deprecated.since} and will stop being served on "
        f"{deprecated.sunset}; read {deprecated.replacement} instead"
    )


def refuse_retired(addresses: Iterable[str], products: Mapping[str, Product], on: dt.date) -> None:
    """ProductRetired for the first of ``addresses`` whose sunset has passed."""
    for address in addresses:
        product = products[address]
        if retired(product, on):
            deprecated = product.descriptor.deprecated
            raise ProductRetired(
                f"{address} was retired on {deprecated.sunset} (deprecated since "
                f"{deprecated.since}); read {deprecated.replacement} instead"
            )


def warnings_for(
    addresses: Iterable[str], products: Mapping[str, Product], on: dt.date
) -> list[str]:
    """The deprecation warnings of a statement reading ``addresses``."""
    found = (deprecation_warning(a, products[a], on) for a in addresses)
    return [w for w in found if w is not None]

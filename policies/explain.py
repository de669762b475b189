"""A readable account of one policy decision, for ``meshgate policy check``.

>>> print(explain(engine, principal, product))  # doctest: +SKIP
eu_analyst (roles: analyst; attributes: region=EUROPE) reading sales.customer (sales.customer_v1)
read: allowed
columns:
  c_custkey     clear
  c_name        partial(4)  '****' || RIGHT(c_name, 4)
  ...
rows: c_nationkey IN (SELECT n_nationkey FROM reference.nation ...)
decided by:
  policies/global.yaml:14: grant analyst read * → eu_analyst may read sales.customer (role analyst)
  ...
"""

from __future__ import annotations

from sqlglot import exp

from gateway.mesh import Product
from gateway.principals import Principal
from policies.engine import PolicyEngine


def explain(engine: PolicyEngine, principal: Principal, product: Product) -> str:
    """Every decision ``engine`` takes for ``principal`` on ``product``, one per line."""
    decision = engine.decide(principal, product)
    attributes = ", ".join(f"{k}={v}" for k, v in sorted(principal.attributes.items()))
    lines = [
        f"{principal.name} (roles: {', '.join(principal.roles) or 'none'}; "
        f"attributes: {attributes or 'none'}) reading {decision.address} "
        f"({product.versioned_address})",
        f"read: {'allowed' if decision.readable else 'denied'}",
    ]
    if decision.readable:
        width = max(len(c.name) for c in product.columns)
        lines.append("columns:")
        for column in product.columns:
            mask = decision.masks.get(column.name)
            if mask is None:
                lines.append(f"  {column.name:<{width}}  clear")
                continue
            masked = decision.column(column.name, column.type, exp.column(column.name))
            sql = engine.hide_mask_key(masked.sql("duckdb"))
            lines.append(f"  {column.name:<{width}}  {mask.describe():<18}  {sql}")
        rows = "all" if decision.row_filter is None else decision.row_filter.sql("duckdb")
        lines.append(f"rows: {rows}")
    lines.append("decided by:")
    lines.extend(f"  {line}" for line in decision.explanation)
    return "\n".join(lines)

"""resolve_products: every table reference must be a data product address the principal can see.

After it, a table with a domain (``sales.orders AS o``) is a product reference, its address
``<domain>.<product>`` in lower case (:func:`product_address`), and every other table is a CTE
of the statement (renamed ``names.CTE``): the tree itself says what each name is.
"""

from __future__ import annotations

import difflib
from dataclasses import replace

from sqlglot import exp

from gateway.errors import DeniedAsNotFound, InvalidQuery, NotFound
from gateway.mesh import CATALOG_NAME
from gateway.planner.context import PlanContext
from gateway.planner.names import CTE
from gateway.planner.state import PlanState


def _rename_ctes(expression: exp.Expression) -> dict[str, str]:
    """Give every CTE a name of the gateway's own; returns user name -> new name.

    A CTE named like a relation the planner generates (``"__source:<address>"``, ``__fragment_1``)
    or like a store's physical table (``region`` in SQLite) would otherwise stand in for it inside
    a governed relation: a row filter reading the user's rows, or a raw physical table.
    """
    names: dict[str, str] = {}
    for cte in expression.find_all(exp.CTE):
        name = cte.alias_or_name.lower()
        names.setdefault(name, f"{CTE}{len(names) + 1}_{name}")
        cte.args["alias"].set("this", exp.to_identifier(names[name], quoted=True))
    return names


def listed(context: PlanContext, product) -> bool:
    """Whether the principal may know ``product`` exists: it may read it, or the product is
    discoverable to those who may not (``denied_products`` / ``when_denied``)."""
    return context.mesh.when_denied(product) == "discoverable" or context.policy.readable(
        context.principal, product
    )


def _not_found(
    address: str, context: PlanContext, *, hint: str = "", error: type[NotFound] = NotFound
) -> NotFound:
    visible = [a for a, p in context.mesh.products.items() if listed(context, p)]
    close = difflib.get_close_matches(address, visible, n=3, cutoff=0.5)
    suggestion = f"; did you mean {', '.join(close)}?" if close else ""
    return error(f"no data product {address!r}{hint}{suggestion} (list them with GetTables)")


def resolve_products(expression: exp.Expression, *, context: PlanContext) -> exp.Expression:
    """Annotate each product reference with its Product; refuse every other kind of table.

    Addresses are ``<domain>.<product>`` or ``<domain>.<product>_v<major>``, optionally in catalog
    ``mesh``; names compare case-insensitively, quoted or not. Physical table names, table
    functions and unqualified names other than CTEs are refused.
    """
    expression = expression.copy()
    ctes = _rename_ctes(expression)
    for table in list(expression.find_all(exp.Table)):
        if not isinstance(table.this, exp.Identifier):
            raise InvalidQuery(
                f"{table.this.sql(context.dialect)} is not a data product: read products by "
                "their address, <domain>.<product>"
            )
        name, domain, catalog = table.name.lower(), table.db.lower(), table.catalog.lower()
        if not domain:
            if name in ctes:
                if not table.args.get("alias"):  # columns keep qualifying it by the user's name
                    table.set("alias", exp.TableAlias(this=table.this.copy()))
                table.set("this", exp.to_identifier(ctes[name], quoted=True))
                continue
            raise _not_found(name, context, hint="; address products as <domain>.<product>")
        address = f"{domain}.{name}"
        if catalog and catalog != CATALOG_NAME:
            raise _not_found(
                f"{catalog}.{address}", context, hint=f" (the catalog is {CATALOG_NAME!r})"
            )
        product = context.mesh.products.get(address)
        if product is None:
            raise _not_found(address, context)
        if not listed(context, product):  # denied and invisible: as good as absent
            raise _not_found(address, context, error=DeniedAsNotFound)
        _normalise(table, domain, name)
    _drop_domain_qualifiers(expression)
    return expression


def resolve_references(state: PlanState) -> PlanState:
    """The step: the statement's product references resolved (see :func:`resolve_products`)."""
    return replace(state, expression=resolve_products(state.tree, context=state.context))


def product_address(table: exp.Expression) -> str | None:
    """The address of a product reference in a resolved tree, or None for anything else."""
    if isinstance(table, exp.Table) and table.db and isinstance(table.this, exp.Identifier):
        return f"{table.db}.{table.name}"
    return None


def _normalise(table: exp.Table, domain: str, name: str) -> None:
    """``"SALES"."Orders"`` as ``sales.orders AS Orders``: the address in lower case, the alias
    the columns qualify it by (its name as written, when it has none)."""
    if not table.args.get("alias"):
        table.set("alias", exp.TableAlias(this=exp.to_identifier(table.name)))
    table.set("catalog", None)
    table.set("db", exp.to_identifier(domain))
    table.set("this", exp.to_identifier(name))


def _drop_domain_qualifiers(expression: exp.Expression) -> None:
    """``sales.orders.o_orderkey`` becomes ``orders.o_orderkey``: the relation keeps its name."""
    for column in expression.find_all(exp.Column):
        if column.args.get("db"):
            column.set("catalog", None)
            column.set("db", None)

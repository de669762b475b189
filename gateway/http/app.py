"""The HTTP port's Starlette app: the discovery API and pages, and room for other routes.

``create_app(gateway)`` builds it. Every request is authenticated as on the Flight port
(gateway.http.auth) and sees only what its principal may read. GatewayErrors are mapped to HTTP
statuses once, in :func:`_gateway_error`; API clients get JSON ``{"error": ...}``, browsers a page.

Other engineers' endpoints (Prometheus ``/metrics``, ...) join through ``extra_routes`` or by adding
them to :func:`base_routes`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from gateway.catalog import Catalog, Search
from gateway.errors import (
    GatewayError,
    InvalidQuery,
    NotFound,
    PermissionDenied,
    QueryTimeout,
    SourceUnavailable,
    Unauthenticated,
)
from gateway.http.auth import HttpAuthenticator
from gateway.principals import Principal
from gateway.tokens import Signer

if TYPE_CHECKING:
    from gateway.service import Gateway

log = logging.getLogger(__name__)

REALM = 'Basic realm="meshgate", charset="UTF-8"'


def http_status(error: GatewayError) -> int:
    """The HTTP status that carries ``error``, as to_flight_error does for Flight."""
    match error:
        case Unauthenticated():
            return 401
        case PermissionDenied():
            return 403
        case NotFound():
            return 404
        case InvalidQuery():
            return 400
        case SourceUnavailable():
            return 503
        case QueryTimeout():
            return 504
    return 500


def wants_html(request: Request) -> bool:
    return not request.url.path.startswith("/api/") and "text/html" in request.headers.get(
        "accept", ""
    )


async def _gateway_error(request: Request, error: Exception) -> Response:
    """The one place a GatewayError becomes an HTTP answer."""
    assert isinstance(error, GatewayError)
    status = http_status(error)
    headers = {"WWW-Authenticate": REALM} if status == 401 else None
    if wants_html(request):
        from gateway.http import pages

        return pages.error_page(request, status, str(error), headers=headers)
    return JSONResponse({"error": str(error)}, status_code=status, headers=headers)


async def _internal_error(request: Request, error: Exception) -> Response:
    log.error("internal error serving %s", request.url.path, exc_info=error)
    return JSONResponse(
        {"error": "internal error; the gateway's log has the details"}, status_code=500
    )


def principal_of(request: Request) -> Principal:
    """The authenticated principal of ``request`` (Unauthenticated if there is none)."""
    authenticator: HttpAuthenticator = request.app.state.authenticator
    return authenticator.principal(request.headers.get("authorization"))


def catalog_of(request: Request) -> Catalog:
    return request.app.state.catalog


async def list_products(request: Request) -> Response:
    """``GET /api/products?q=&domain=&owner=&classification=&tag=``"""
    principal = principal_of(request)
    search = Search.of(dict(request.query_params))
    records = catalog_of(request).records(principal, search)
    return JSONResponse({"principal": principal.name, "count": len(records), "products": records})


async def get_product(request: Request) -> Response:
    """``GET /api/products/{address}``: one product as the principal may see it."""
    principal = principal_of(request)
    return JSONResponse(catalog_of(request).record(principal, request.path_params["address"]))


def _yaml(text: str) -> Response:
    return Response(text, media_type="application/yaml; charset=utf-8")


async def product_odcs(request: Request) -> Response:
    """``GET /api/products/{address}/odcs.yaml``: the product version's ODCS v3 contract."""
    from gateway.standards import as_yaml, odcs_contract

    principal = principal_of(request)
    catalog = catalog_of(request)
    record = catalog.readable_record(principal, request.path_params["address"])
    product = catalog.gateway.mesh.products[record["address"]]
    contract = odcs_contract(
        record, product, mesh_name=catalog.gateway.mesh.name, flight_uri=catalog.flight_uri
    )
    return _yaml(as_yaml(contract))


async def product_odps(request: Request) -> Response:
    """``GET /api/products/{address}/odps.yaml``: the product as an ODPS v1 document."""
    from gateway.standards import as_yaml, odps_product

    principal = principal_of(request)
    catalog = catalog_of(request)
    record = catalog.readable_record(principal, request.path_params["address"])
    return _yaml(as_yaml(odps_product(record, **_odps_context(request))))


async def mesh_odps(request: Request) -> Response:
    """``GET /api/odps.yaml``: every product the principal may read, one ODPS document each."""
    from gateway.standards import as_yaml, odps_product

    principal = principal_of(request)
    records = [r for r in catalog_of(request).records(principal) if r["readable"]]
    return _yaml(as_yaml([odps_product(r, **_odps_context(request)) for r in records]))


def _odps_context(request: Request) -> dict[str, str]:
    return {
        "mesh_name": request.app.state.gateway.mesh.name,
        "discovery_url": str(request.base_url).rstrip("/"),
    }


async def healthz(request: Request) -> Response:
    """Unauthenticated liveness: the port answers (says nothing about the mesh)."""
    return JSONResponse({"status": "ok"})


def base_routes() -> list[BaseRoute]:
    """The discovery port's own routes. Mount other ports of the product experience here."""
    from gateway.http import metrics, pages

    return [
        Route("/healthz", healthz),
        *metrics.routes(),
        Route("/api/products", list_products),
        Route("/api/odps.yaml", mesh_odps),
        Route("/api/products/{address:str}/odcs.yaml", product_odcs),
        Route("/api/products/{address:str}/odps.yaml", product_odps),
        Route("/api/products/{address:str}", get_product),
        *pages.routes(),
    ]


def create_app(
    gateway: Gateway,
    *,
    signer: Signer | None = None,
    flight_uri: str = "grpc://localhost:8815",
    extra_routes: Sequence[BaseRoute] = (),
) -> Starlette:
    """The HTTP app over ``gateway``. Pass the Flight server's ``signer`` so the bearer tokens
    its handshake issues are accepted here too; ``flight_uri`` is what the snippets connect to."""
    app = Starlette(
        routes=[*extra_routes, *base_routes()],
        exception_handlers={GatewayError: _gateway_error, Exception: _internal_error},
    )
    app.state.gateway = gateway
    app.state.authenticator = HttpAuthenticator(
        gateway.current_principals,
        signer or Signer(),
        token_ttl_seconds=gateway.settings.token_ttl_seconds,
    )
    app.state.catalog = Catalog(gateway, flight_uri=flight_uri)
    app.state.flight_uri = flight_uri
    return app

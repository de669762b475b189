"""``GET /metrics``: the gateway's Prometheus metrics on the HTTP port.

Unauthenticated by default, as Prometheus scrapes (and as ``/healthz``): the labels carry no SQL
and no principal names (unless ``metrics_principal_labels``), but they do name products and
stores, so a mesh whose product names are themselves confidential sets
``observability.metrics_require_auth: true`` and the scraper authenticates like any client
(basic or bearer).
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route


async def metrics(request: Request) -> Response:
    gateway = request.app.state.gateway
    settings = gateway.settings.observability
    if settings.metrics_require_auth:
        from gateway.http.app import principal_of

        principal_of(request)  # Unauthenticated -> 401 through the app's one error mapping
    observed = gateway.observe.metrics if gateway.observe is not None else None
    if observed is None:
        return PlainTextResponse(
            "metrics are off: set gateway.observability.metrics: true in mesh.yaml\n",
            status_code=404,
        )
    from gateway.observability.metrics import CONTENT_TYPE

    return Response(observed.exposition(), media_type=CONTENT_TYPE)


def routes() -> list[Route]:
    return [Route("/metrics", metrics)]

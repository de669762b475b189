"""Server-rendered pages of the discovery port: the product list, a product, the lineage graph.

Plain HTML from Jinja2 templates and one stylesheet; no JavaScript is needed to search, read or
follow links (search is an ordinary GET form). Pages show the same records the API returns.
"""

from __future__ import annotations

from pathlib import Path

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from gateway.catalog import SEARCH_FIELDS, Search, worst

HERE = Path(__file__).resolve().parent
templates = Jinja2Templates(directory=str(HERE / "templates"))
templates.env.globals["worst"] = worst


def _render(request: Request, name: str, context: dict, *, status: int = 200) -> Response:
    from gateway.http.app import principal_of

    principal = principal_of(request)
    return templates.TemplateResponse(
        request,
        name,
        {"principal": principal.name, "mesh": request.app.state.gateway.mesh.name, **context},
        status_code=status,
    )


def error_page(
    request: Request, status: int, message: str, *, headers: dict | None = None
) -> Response:
    html = templates.get_template("error.html").render(
        request=request, status=status, message=message
    )
    return HTMLResponse(html, status_code=status, headers=headers)


async def products_page(request: Request) -> Response:
    from gateway.http.app import catalog_of, principal_of

    principal = principal_of(request)
    params = {k: v for k, v in request.query_params.items() if k in SEARCH_FIELDS}
    search = Search.of(params)
    records = catalog_of(request).records(principal, search)
    domains: dict[str, list[dict]] = {}
    for record in records:
        domains.setdefault(record["domain"], []).append(record)
    return _render(
        request,
        "products.html",
        {"domains": domains, "search": search, "count": len(records)},
    )


async def product_page(request: Request) -> Response:
    from gateway.http.app import catalog_of, principal_of

    principal = principal_of(request)
    record = catalog_of(request).record(principal, request.path_params["address"])
    return _render(request, "product.html", {"p": record})


async def lineage_page(request: Request) -> Response:
    """The mesh's lineage as the principal may see it, drawn as SVG on the server."""
    from gateway.http.app import catalog_of, principal_of
    from gateway.http.lineage import render_svg

    principal = principal_of(request)
    records = [r for r in catalog_of(request).records(principal) if r["readable"]]
    nodes = {r["address"]: r["domain"] for r in records}
    edges = sorted(
        {(up, r["address"]) for r in records for up in r["lineage"]["upstream"] if up in nodes}
    )
    statuses = {r["address"]: worst(s["status"] for s in r["slos"]) for r in records}
    focus = request.query_params.get("focus")
    svg = render_svg(nodes, edges, statuses=statuses, focus=focus if focus in nodes else None)
    return _render(request, "lineage.html", {"svg": svg, "count": len(nodes), "edges": edges})


def routes() -> list[BaseRoute]:
    return [
        Route("/", products_page),
        Route("/lineage", lineage_page),
        Route("/products/{address:str}", product_page),
        Mount("/static", app=StaticFiles(directory=str(HERE / "static")), name="static"),
    ]

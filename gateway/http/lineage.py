"""The mesh's lineage drawn server-side as SVG: products in layers, upstream on the left.

The graph holds only the products a principal may read (and the lineage between them), so a
drawing never reveals a hidden product. networkx orders the layers (each product one step right
of everything it reads); nodes within a layer are ordered by the mean position of their upstream
products to keep edges short. Every node links to its product page, so the graph is navigable
without JavaScript.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from html import escape

NODE_WIDTH, NODE_HEIGHT = 178, 44
COLUMN_GAP, ROW_GAP, MARGIN = 44, 22, 20
PALETTE = ("#2f6fdd", "#1f8a4c", "#b0521c", "#7a4fd0", "#0f7c8c", "#b23a6b", "#6b7a1f")


@dataclass(frozen=True)
class Node:
    address: str
    domain: str
    x: float
    y: float
    status: str = "unknown"


def layers(nodes: Iterable[str], edges: Iterable[tuple[str, str]]) -> list[list[str]]:
    """Products in layers: each after everything upstream of it, ordered to keep edges short.

    >>> layers(["a", "b", "c"], [("a", "c"), ("b", "c")])
    [['a', 'b'], ['c']]
    """
    import networkx as nx

    graph = nx.DiGraph()
    graph.add_nodes_from(nodes)
    graph.add_edges_from(edges)
    if not nx.is_directed_acyclic_graph(graph):  # a lineage cycle: break it, keep drawing
        graph.remove_edges_from(nx.find_cycle(graph))
    ordered: list[list[str]] = []
    position: dict[str, float] = {}
    for generation in nx.topological_generations(graph):

        def barycenter(node: str) -> tuple[float, str]:
            ups = [position[u] for u in graph.predecessors(node) if u in position]
            return (sum(ups) / len(ups) if ups else float("inf"), node)

        row = sorted(generation, key=barycenter)
        position.update({node: i for i, node in enumerate(row)})
        ordered.append(row)
    return ordered


def layout(
    nodes: Mapping[str, str], edges: list[tuple[str, str]], statuses: Mapping[str, str]
) -> list[Node]:
    """Node positions for products ``nodes`` (address -> domain) and ``edges`` (up, down)."""
    placed = []
    for column, row in enumerate(layers(nodes, edges)):
        for index, address in enumerate(row):
            placed.append(
                Node(
                    address,
                    nodes[address],
                    MARGIN + column * (NODE_WIDTH + COLUMN_GAP),
                    MARGIN + index * (NODE_HEIGHT + ROW_GAP),
                    statuses.get(address, "unknown"),
                )
            )
    return placed


def render_svg(
    nodes: Mapping[str, str],
    edges: list[tuple[str, str]],
    *,
    statuses: Mapping[str, str] | None = None,
    focus: str | None = None,
) -> str:
    """The lineage graph as one SVG element (links to ``/products/<address>``)."""
    placed = layout(nodes, edges, statuses or {})
    at = {node.address: node for node in placed}
    domains = sorted(set(nodes.values()))
    colour = {d: PALETTE[i % len(PALETTE)] for i, d in enumerate(domains)}
    width = max((n.x for n in placed), default=0) + NODE_WIDTH + MARGIN
    height = max((n.y for n in placed), default=0) + NODE_HEIGHT + MARGIN + 28
    parts = [
        f'<svg class="lineage" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width:.0f} '
        f'{height:.0f}" width="{width:.0f}" height="{height:.0f}" role="img" '
        'aria-label="lineage of the mesh\'s products">',
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="8" '
        'markerHeight="8" markerUnits="userSpaceOnUse" orient="auto-start-reverse">'
        '<path d="M0,0 L10,5 L0,10 z" fill="#8a94a0"/></marker></defs>',
    ]
    for up, down in edges:
        if up not in at or down not in at:
            continue
        a, b = at[up], at[down]
        x1, y1 = a.x + NODE_WIDTH, a.y + NODE_HEIGHT / 2
        x2, y2 = b.x - 2, b.y + NODE_HEIGHT / 2
        bend = (x2 - x1) / 2
        near = focus in (up, down)
        parts.append(
            f'<path d="M{x1:.0f},{y1:.0f} C{x1 + bend:.0f},{y1:.0f} {x2 - bend:.0f},{y2:.0f} '
            f'{x2:.0f},{y2:.0f}" fill="none" stroke="{"#2f6fdd" if near else "#b8c0ca"}" '
            f'stroke-width="{2.2 if near else 1.4}" marker-end="url(#arrow)"/>'
        )
    status_colour = {"met": "#1f8a4c", "at_risk": "#c27c0e", "broken": "#c8342b"}
    for node in placed:
        stroke = "#14202e" if node.address == focus else colour[node.domain]
        parts.append(
            f'<a href="/products/{escape(node.address)}"><g class="node">'
            f'<rect x="{node.x:.0f}" y="{node.y:.0f}" width="{NODE_WIDTH}" height="{NODE_HEIGHT}" '
            f'rx="8" fill="#fff" stroke="{stroke}" '
            f'stroke-width="{3 if node.address == focus else 1.6}"/>'
            f'<rect x="{node.x:.0f}" y="{node.y:.0f}" width="6" height="{NODE_HEIGHT}" rx="3" '
            f'fill="{colour[node.domain]}"/>'
            f'<text x="{node.x + 14:.0f}" y="{node.y + 18:.0f}" font-size="12.5" '
            f'font-family="DejaVu Sans Mono, monospace" fill="#1d2733">'
            f"{escape(node.address)}</text>"
            f'<text x="{node.x + 14:.0f}" y="{node.y + 34:.0f}" font-size="11" '
            f'font-family="sans-serif" fill="#66717e">{escape(node.domain)}</text>'
            f'<circle cx="{node.x + NODE_WIDTH - 12:.0f}" cy="{node.y + 31:.0f}" r="5" '
            f'fill="{status_colour.get(node.status, "#c9d1da")}"><title>SLOs: '
            f"{escape(node.status)}</title></circle></g></a>"
        )
    legend_y = height - 14
    x = MARGIN
    for domain in domains:
        parts.append(
            f'<rect x="{x}" y="{legend_y - 9}" width="10" height="10" rx="2" '
            f'fill="{colour[domain]}"/><text x="{x + 14}" y="{legend_y}" font-size="12" '
            f'font-family="sans-serif" fill="#34414f">{escape(domain)}</text>'
        )
        x += 24 + 8 * len(domain)
    parts.append("</svg>")
    return "".join(parts)

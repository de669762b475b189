"""Products in the open standards: ODCS v3 data contracts and ODPS v1 data products.

:func:`odcs_contract` turns one product version, as one principal sees it (catalog record), into
an Open Data Contract Standard document: its schema with logical and contract types,
classifications and column quality rules, its SLOs as ``slaProperties``, its owner as team and
support, and the Flight SQL endpoint as its server. :func:`odps_product` describes a product with
all its visible versions as output ports and its lineage as input ports (Open Data Product
Standard). Physical names and connection settings never appear; masked columns say so.

The JSON schemas of both standards are used by the tests only (they ship in PyPI packages);
nothing here needs them at run time.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import yaml

from gateway.mesh import Product, QualityRule, duration_seconds

ODCS_API_VERSION = "v3.1.0"
ODPS_API_VERSION = "v1.0.0"

LOGICAL_TYPES = {
    "boolean": "boolean",
    "smallint": "integer",
    "integer": "integer",
    "bigint": "integer",
    "real": "number",
    "double": "number",
    "decimal": "number",
    "varchar": "string",
    "date": "date",
    "time": "time",
    "timestamp": "timestamp",
    "timestamptz": "timestamp",
    "blob": "string",
}


def logical_type(contract_type: str) -> str:
    """The ODCS logical type of a contract column type.

    >>> logical_type("decimal(15,2)"), logical_type("timestamptz")
    ('number', 'timestamp')
    """
    return LOGICAL_TYPES.get(contract_type.split("(")[0].strip().lower(), "string")


def contract_id(mesh_name: str, versioned_address: str) -> str:
    return f"{mesh_name}.{versioned_address}"


def _status(record: dict[str, Any]) -> str:
    return "deprecated" if record["deprecation"] else "active"


def quality_rule(rule: QualityRule) -> dict[str, Any]:
    """One descriptor rule as an ODCS ``library`` quality item."""
    operator, operand = rule.operator()
    item: dict[str, Any] = {"type": "library", "metric": rule.metric, "name": rule.label}
    if rule.description:
        item["description"] = rule.description
    if rule.arguments:
        item["arguments"] = dict(rule.arguments)
    item[operator] = list(operand) if isinstance(operand, tuple) else operand
    item["unit"] = "rows"
    item["dimension"] = {
        "nullValues": "completeness",
        "duplicateValues": "uniqueness",
        "invalidValues": "conformity",
        "rowCount": "completeness",
    }[rule.metric]
    return item


def _property(column: dict[str, Any], rules: list[QualityRule]) -> dict[str, Any]:
    prop: dict[str, Any] = {
        "name": column["name"],
        "logicalType": logical_type(column["type"]),
        "physicalType": column["type"].upper(),
        "classification": column["classification"],
    }
    if column["description"]:
        prop["description"] = column["description"]
    if any(r.metric == "nullValues" and r.operator() == ("mustBe", 0) for r in rules):
        prop["required"] = True
    if any(r.metric == "duplicateValues" and r.operator() == ("mustBe", 0) for r in rules):
        prop["unique"] = True
    if column["masked"]:
        prop["customProperties"] = [
            {"property": "maskedForReader", "value": column["mask"]},
            {"property": "contractType", "value": column["contract_type"]},
        ]
    if rules:
        prop["quality"] = [quality_rule(r) for r in rules]
    return prop


def _sla_properties(product: Product) -> list[dict[str, Any]]:
    slo = product.descriptor.slo
    if slo is None:
        return []
    found: list[dict[str, Any]] = []
    if slo.freshness is not None:
        hours = duration_seconds(slo.freshness.max_age) / 3600
        found.append(
            {
                "property": "latency",
                "value": round(hours, 3),
                "unit": "h",
                "element": f"{product.name}.{slo.freshness.column}",
                "description": f"the newest {slo.freshness.column} is at most "
                f"{slo.freshness.max_age} old",
            }
        )
    if slo.availability is not None:
        found.append(
            {"property": "availability", "value": slo.availability.min_percent, "unit": "percent"}
        )
    if slo.latency is not None:
        for q, value in (("p50", slo.latency.p50_ms), ("p95", slo.latency.p95_ms)):
            if value is not None:
                found.append(
                    {
                        "property": "responseTime",
                        "value": value,
                        "unit": "ms",
                        "description": f"{q} of the product's queries through meshgate",
                    }
                )
    return found


def _server(flight_uri: str) -> dict[str, Any]:
    parts = urlsplit(flight_uri)
    return {
        "server": "meshgate",
        "type": "custom",
        "description": "Arrow Flight SQL endpoint of the mesh (catalog mesh, schema = domain)",
        "host": parts.hostname or "localhost",
        "port": parts.port or 8815,
        "catalog": "mesh",
        "customProperties": [{"property": "protocol", "value": "arrow-flight-sql"}],
    }


def odcs_contract(
    record: dict[str, Any], product: Product, *, mesh_name: str, flight_uri: str
) -> dict[str, Any]:
    """The ODCS v3 contract of one product version as ``record`` (catalog) shows it."""
    rules = product.descriptor.quality
    by_column = {c["name"]: [r for r in rules if r.column == c["name"]] for c in record["columns"]}
    table_rules = [r for r in rules if r.column is None]
    schema_object: dict[str, Any] = {
        "name": product.name,
        "logicalType": "object",
        "physicalType": "table",
        "description": record["description"],
        "properties": [_property(c, by_column[c["name"]]) for c in record["columns"]],
    }
    volume = product.descriptor.slo.volume if product.descriptor.slo else None
    table_quality = [quality_rule(r) for r in table_rules]
    if volume is not None and volume.min_rows is not None:
        table_quality.append(
            {"type": "library", "metric": "rowCount", "mustBeGreaterOrEqualTo": volume.min_rows}
        )
    if volume is not None and volume.max_rows is not None:
        table_quality.append(
            {"type": "library", "metric": "rowCount", "mustBeLessOrEqualTo": volume.max_rows}
        )
    if table_quality:
        schema_object["quality"] = table_quality
    custom = [
        {"property": "address", "value": record["versioned_address"]},
        {"property": "storeKind", "value": record["store_kind"]},
    ]
    if record["deprecation"]:
        custom.append({"property": "deprecation", "value": dict(record["deprecation"])})
    contract: dict[str, Any] = {
        "apiVersion": ODCS_API_VERSION,
        "kind": "DataContract",
        "id": contract_id(mesh_name, record["versioned_address"]),
        "name": record["versioned_address"],
        "version": f"{record['version']}.0.0",
        "status": _status(record),
        "tenant": mesh_name,
        "domain": record["domain"],
        "dataProduct": record["latest_address"],
        "description": {
            "purpose": record["description"],
            "usage": f"SELECT ... FROM {record['address']} through the mesh's Flight SQL port",
        },
        "tags": list(record["tags"]),
        "schema": [schema_object],
        "servers": [_server(flight_uri)],
        "team": {
            "name": record["owner"],
            "members": [{"username": record["owner"], "role": "owner"}],
        },
        "support": [{"channel": "owner", "tool": "email", "url": f"mailto:{record['owner']}"}],
        "customProperties": custom,
    }
    sla = _sla_properties(product)
    if sla:
        contract["slaProperties"] = sla
    return contract


def odps_product(record: dict[str, Any], *, mesh_name: str, discovery_url: str) -> dict[str, Any]:
    """The ODPS v1 description of the product ``record`` shows (all its visible versions)."""
    outputs = [
        {
            "name": version["address"],
            "version": str(version["version"]),
            "type": "flightsql",
            "contractId": contract_id(mesh_name, version["address"]),
            "description": f"Flight SQL table mesh.{version['address']}",
        }
        for version in record["versions"]
    ]
    inputs = [
        {"name": upstream, "version": "latest", "contractId": f"{mesh_name}.{upstream}"}
        for upstream in record["lineage"]["upstream"]
    ]
    product: dict[str, Any] = {
        "apiVersion": ODPS_API_VERSION,
        "kind": "DataProduct",
        "id": f"{mesh_name}.{record['latest_address']}",
        "name": record["latest_address"],
        "version": str(record["version"]),
        "status": _status(record),
        "domain": record["domain"],
        "tenant": mesh_name,
        "description": {"purpose": record["description"]},
        "tags": list(record["tags"]),
        "outputPorts": outputs,
        "managementPorts": [
            {
                "name": "discovery",
                "content": "discoverability",
                "type": "rest",
                "url": f"{discovery_url}/api/products/{record['latest_address']}",
            }
        ],
        "team": {
            "name": record["owner"],
            "members": [{"username": record["owner"], "role": "owner"}],
        },
    }
    if inputs:
        product["inputPorts"] = inputs
    return product


def as_yaml(document: dict[str, Any] | list[dict[str, Any]]) -> str:
    """One document, or several separated by ``---``, as YAML in the order they were built."""
    documents = document if isinstance(document, list) else [document]
    return yaml.safe_dump_all(documents, sort_keys=False, allow_unicode=True, width=100)

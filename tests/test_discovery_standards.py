"""ODCS and ODPS exports, validated against the standards' own JSON schemas (shipped on PyPI)."""

from __future__ import annotations

import importlib.resources
import json

import httpx
import jsonschema
import pytest
import yaml

from tests.support.discovery import serving


def _schema(package: str, name: str) -> dict:
    return json.loads((importlib.resources.files(package) / name).read_text(encoding="utf-8"))


ODCS = _schema("open_data_contract_standard", "schema.json")
ODPS = _schema("dataproduct", "schemas/odps-1.0.0.schema.json")


def _validate(document: dict, schema: dict) -> None:
    validator = jsonschema.Draft201909Validator(schema)
    errors = sorted(validator.iter_errors(document), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{list(e.path)}: {e.message}" for e in errors[:10])


@pytest.fixture(scope="module")
def served(demo_mesh):
    with serving(demo_mesh) as running:
        running.gateway.monitor.check_now()
        yield running


def _yaml(served, path: str, user: str = "analyst") -> list[dict]:
    response = httpx.get(served.http_url + path, auth=(user, user), timeout=30)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/yaml")
    return list(yaml.safe_load_all(response.text))


def test_every_product_exports_a_valid_odcs_contract(served):
    addresses = sorted({p.versioned_address for p in served.gateway.mesh.products.values()})
    for address in addresses:
        (contract,) = _yaml(served, f"/api/products/{address}/odcs.yaml", "admin")
        _validate(contract, ODCS)
        assert contract["kind"] == "DataContract" and contract["name"] == address


def test_the_odcs_contract_carries_schema_classifications_quality_slas_and_masks(served):
    (contract,) = _yaml(served, "/api/products/sales.orders_v1/odcs.yaml")
    assert contract["status"] == "deprecated"
    assert contract["version"] == "1.0.0" and contract["domain"] == "sales"
    (table,) = contract["schema"]
    properties = {p["name"]: p for p in table["properties"]}
    assert properties["o_orderkey"]["logicalType"] == "integer"
    assert properties["o_totalprice"]["physicalType"] == "DECIMAL(15,2)"
    assert properties["o_comment"]["classification"] == "internal"
    assert {s["property"] for s in contract["slaProperties"]} == {"latency"}
    (v2,) = _yaml(served, "/api/products/sales.orders/odcs.yaml")
    assert v2["status"] == "active"
    slas = {s["property"] for s in v2["slaProperties"]}
    assert slas == {"latency", "availability", "responseTime"}
    v2_properties = {p["name"]: p for p in v2["schema"][0]["properties"]}
    assert v2_properties["o_orderkey"]["required"] and v2_properties["o_orderkey"]["unique"]
    metrics = {q["metric"] for p in v2_properties.values() for q in p.get("quality", [])}
    assert metrics >= {"nullValues", "duplicateValues", "invalidValues"}
    text = json.dumps(contract)
    for secret in ("sales.duckdb", "stores/", "sales_db"):
        assert secret not in text

    # masked columns say so, for whom they are masked; an admin's contract shows them clear
    def c_name(user):
        (customer,) = _yaml(served, "/api/products/sales.customer/odcs.yaml", user)
        return next(p for p in customer["schema"][0]["properties"] if p["name"] == "c_name")

    analyst = c_name("analyst")
    assert analyst["classification"] == "pii"
    masked = {c["property"]: c["value"] for c in analyst["customProperties"]}
    assert masked["maskedForReader"].startswith("partial")
    assert "customProperties" not in c_name("admin")


def test_the_mesh_exports_one_valid_odps_document_per_readable_product(served):
    documents = _yaml(served, "/api/odps.yaml", "analyst")
    names = [d["name"] for d in documents]
    assert "sales.orders" in names and "audit.events" not in names
    for document in documents:
        _validate(document, ODPS)
    orders = next(d for d in documents if d["name"] == "sales.orders")
    assert [p["name"] for p in orders["outputPorts"]] == ["sales.orders_v1", "sales.orders_v2"]
    assert [p["name"] for p in orders["inputPorts"]] == ["sales.customer"]
    assert orders["managementPorts"][0]["url"].endswith("/api/products/sales.orders")
    guest = [d["name"] for d in _yaml(served, "/api/odps.yaml", "guest")]
    assert guest == ["reference.nation", "reference.region"]
    (single,) = _yaml(served, "/api/products/supply.part/odps.yaml")
    _validate(single, ODPS)


def test_exports_of_products_a_principal_may_not_read_are_not_found(served):
    response = httpx.get(
        served.http_url + "/api/products/audit.events/odcs.yaml",
        auth=("analyst", "analyst"),
        timeout=30,
    )
    assert response.status_code == 404
    # a product listed but denied (a discoverable one) exports nothing either
    response = httpx.get(
        served.http_url + "/api/products/sales.orders/odcs.yaml",
        auth=("guest", "guest"),
        timeout=30,
    )
    assert response.status_code in (403, 404)

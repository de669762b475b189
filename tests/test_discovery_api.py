"""The discovery API over a real gateway: HTTP beside Flight SQL, same principals, same policies."""

from __future__ import annotations

import time

import httpx
import pyarrow.flight as flight
import pytest

from tests.support.discovery import serving


@pytest.fixture(scope="module")
def served(demo_mesh):
    with serving(demo_mesh) as running:
        yield running


def _get(served, path: str, user: str | None = "analyst", **params) -> httpx.Response:
    auth = (user, user) if user else None
    return httpx.get(served.http_url + path, auth=auth, params=params, timeout=30)


def _addresses(response: httpx.Response) -> list[str]:
    """The products of a listing the principal may read (a mesh may also list, as not readable,
    denied products it makes discoverable)."""
    assert response.status_code == 200, response.text
    return [p["address"] for p in response.json()["products"] if p["readable"]]


def test_each_principal_lists_only_the_products_it_may_read(served):
    everything = _addresses(_get(served, "/api/products", "admin"))
    assert "audit.events" in everything
    analyst = _addresses(_get(served, "/api/products", "analyst"))
    assert "audit.events" not in analyst and "sales.orders" in analyst
    assert set(analyst) < set(everything)
    assert _addresses(_get(served, "/api/products", "guest")) == [
        "reference.nation",
        "reference.region",
    ]
    eu = _addresses(_get(served, "/api/products", "eu_analyst"))
    assert "audit.events" not in eu and "sales.customer" in eu
    # listed as each principal's Flight SQL metadata lists them
    for user in ("admin", "analyst", "guest", "eu_analyst"):
        principal = served.gateway.principals.get(user)
        visible = served.gateway.visible_products(principal)
        latest = sorted(a for a, p in visible.items() if a == f"{p.domain}.{p.name}")
        assert _addresses(_get(served, "/api/products", user)) == latest


def test_masked_columns_are_shown_masked_for_whom_they_are_masked(served):
    def columns(user):
        response = _get(served, "/api/products/sales.customer", user)
        assert response.status_code == 200, response.text
        return {c["name"]: c for c in response.json()["columns"]}

    analyst, admin, eu = columns("analyst"), columns("admin"), columns("eu_analyst")
    assert analyst["c_name"]["classification"] == "pii"
    assert analyst["c_name"]["masked"] and analyst["c_name"]["mask"].startswith("partial")
    assert eu["c_phone"]["masked"]
    assert not admin["c_name"]["masked"] and admin["c_name"]["mask"] is None
    assert not analyst["c_custkey"]["masked"]
    assert analyst["c_custkey"]["description"]
    # a row filter is shown as applying, never as its SQL
    eu = _get(served, "/api/products/sales.customer", "eu_analyst").json()
    assert eu["rows_filtered"] is True and "EUROPE" not in str(eu)
    assert _get(served, "/api/products/sales.customer", "admin").json()["rows_filtered"] is False


def test_a_product_a_principal_may_not_read_does_not_exist_for_it(served):
    denied = _get(served, "/api/products/audit.events", "analyst")
    unknown = _get(served, "/api/products/audit.nothing", "analyst")
    assert denied.status_code == unknown.status_code == 404
    assert "you may read" in denied.json()["error"]
    assert "audit.events" not in denied.json()["error"].split("read")[-1]
    assert _get(served, "/api/products/audit.events", "admin").status_code == 200
    # a product the guest may not read is absent for it, or listed as not readable
    customer = _get(served, "/api/products/sales.customer", "guest")
    assert customer.status_code == 404 or customer.json()["readable"] is False
    odcs = _get(served, "/api/products/sales.customer/odcs.yaml", "guest")
    assert odcs.status_code in (403, 404)


def test_a_near_miss_suggests_only_products_the_principal_may_know_of(served):
    hidden = _get(served, "/api/products/audit.event", "analyst")  # audit.events is invisible
    assert hidden.status_code == 404
    assert "audit.events" not in hidden.json()["error"]
    admin = _get(served, "/api/products/audit.event", "admin")
    assert admin.status_code == 404
    assert "did you mean audit.events" in admin.json()["error"]
    readable = _get(served, "/api/products/sales.order", "analyst")
    assert "did you mean sales.orders" in readable.json()["error"]


def test_product_detail_has_versions_owner_store_kind_lineage_and_snippets(served):
    record = _get(served, "/api/products/sales.orders").json()
    assert record["owner"] and record["description"] and record["domain"] == "sales"
    assert [v["address"] for v in record["versions"]] == ["sales.orders_v1", "sales.orders_v2"]
    assert record["version"] == 2 and record["store_kind"] == "duckdb"
    assert "sales.customer" in record["lineage"]["upstream"]
    assert "fulfillment.lineitem" in record["lineage"]["downstream"]
    text = str(record)
    for secret in ("sales.duckdb", "stores/", "main.orders", "sales_db"):
        assert secret not in text, secret
    assert "jdbc:arrow-flight-sql://127.0.0.1:" in record["connect"]["jdbc_url"]
    assert "useEncryption=false" in record["connect"]["jdbc_url"]
    assert served.flight_uri in record["connect"]["python"]
    pinned = _get(served, "/api/products/sales.orders_v1").json()
    assert pinned["version"] == 1 and pinned["address"] == "sales.orders_v1"


def test_the_python_snippet_reads_the_product_through_the_gateway(served):
    snippet = _get(served, "/api/products/reference.nation").json()["connect"]["python"]
    namespace: dict = {}
    exec(snippet.replace('"..."', '"analyst"'), namespace)  # noqa: S102 - the page's own snippet
    assert len(namespace["df"]) == 25


def test_search_by_text_domain_owner_classification_and_tag(served):
    assert _addresses(_get(served, "/api/products", domain="reference")) == [
        "reference.nation",
        "reference.region",
    ]
    by_text = _addresses(_get(served, "/api/products", q="nation"))
    assert "reference.nation" in by_text and "supply.part" not in by_text
    assert _addresses(_get(served, "/api/products", q="c_mktsegment")) == ["sales.customer"]
    pii = _addresses(_get(served, "/api/products", classification="pii"))
    assert "sales.customer" in pii and "reference.region" not in pii
    owner = _get(served, "/api/products/reference.nation").json()["owner"]
    assert "reference.nation" in _addresses(_get(served, "/api/products", owner=owner.upper()))
    assert "sales.orders" in _addresses(_get(served, "/api/products", tag="tpch"))
    assert _addresses(_get(served, "/api/products", tag="no-such-tag")) == []
    # a guest's search never reaches past its grants
    assert _addresses(_get(served, "/api/products", "guest", classification="pii")) == []


def test_bad_search_parameters_get_a_clear_400(served):
    response = _get(served, "/api/products", classification="secret")
    assert response.status_code == 400
    assert "public" in response.json()["error"]
    response = _get(served, "/api/products", colour="red")
    assert response.status_code == 400 and "colour" in response.json()["error"]


def test_credentials_are_checked_like_the_flight_port(served):
    missing = _get(served, "/api/products", None)
    assert missing.status_code == 401 and missing.headers["www-authenticate"].startswith("Basic")
    wrong = httpx.get(served.http_url + "/api/products", auth=("analyst", "nope"), timeout=30)
    assert wrong.status_code == 401 and "wrong username or password" in wrong.json()["error"]
    forged = httpx.get(
        served.http_url + "/api/products", headers={"authorization": "Bearer abc.def"}, timeout=30
    )
    assert forged.status_code == 401
    # the bearer token the Flight handshake issues is accepted here too
    client = flight.FlightClient(served.flight_uri)
    key, value = client.authenticate_basic_token("guest", "guest")
    client.close()
    response = httpx.get(
        served.http_url + "/api/products", headers={key.decode(): value.decode()}, timeout=30
    )
    assert response.json()["principal"] == "guest"
    assert _addresses(response) == ["reference.nation", "reference.region"]
    assert _get(served, "/healthz", None).json() == {"status": "ok"}


def test_usage_counts_queries_and_distinct_principals_from_the_audit_trail(served):
    from tests.support.server import connect

    def usage():
        return _get(served, "/api/products/reference.region", "admin").json()["usage"]

    before = usage()
    for user, sql in (
        ("analyst", "SELECT count(*) FROM reference.region"),
        ("analyst", "SELECT r_name FROM reference.region_v1"),
        ("guest", "SELECT * FROM reference.region"),
    ):
        with connect(served.flight_uri, user) as conn, conn.cursor() as cur:
            cur.execute(sql)
            cur.fetchall()
    deadline = time.monotonic() + 30  # the summary is kept for a few seconds
    while usage()["queries_day"] < before["queries_day"] + 3 and time.monotonic() < deadline:
        time.sleep(0.5)
    after = usage()
    assert after["queries_day"] == before["queries_day"] + 3
    assert after["queries_week"] == before["queries_week"] + 3
    assert {"analyst", "guest"} <= set(after["readers_week"])
    assert after["principals_day"] >= 2 and after["last_read"] is not None


def test_discoverable_denied_products_are_listed_as_not_readable(tmp_path):
    """Where a mesh makes denied products discoverable (``gateway.denied_products``), the
    catalog lists them as the Flight SQL metadata does: not readable, the owner to ask."""
    from gateway.service import Gateway

    if not hasattr(Gateway, "listed_products"):
        pytest.skip("this gateway has no discoverable denied products (denied_products setting)")
    import duckdb

    duckdb.connect(str(tmp_path / "s.duckdb")).execute("CREATE TABLE t AS SELECT 1 AS k").close()
    (tmp_path / "mesh.yaml").write_text(
        "name: t\nstores:\n  s: {kind: duckdb, path: s.duckdb}\n"
        "gateway: {denied_products: discoverable}\n"
    )
    for domain in ("open", "closed"):
        (tmp_path / domain).mkdir()
        (tmp_path / domain / "t.yaml").write_text(
            f"product: t\nversion: 1\nowner: {domain}@example.com\ndescription: {domain}\n"
            "store: s\ntable: t\ncolumns:\n  - {name: k, type: integer}\n"
        )
    from tests.support.mesh import grant_everything

    grant_everything(tmp_path)  # writes principals.yaml; the grant is narrowed below
    (tmp_path / "policies" / "global.yaml").write_text(
        "roles: {reader: []}\ngrants:\n  - {role: reader, products: 'open.*'}\n"
    )
    with serving(tmp_path) as running:
        listing = httpx.get(
            running.http_url + "/api/products", auth=("tester", "tester"), timeout=30
        ).json()["products"]
        assert {p["address"]: p["readable"] for p in listing} == {"open.t": True, "closed.t": False}
        closed = next(p for p in listing if p["address"] == "closed.t")
        assert closed["usage"] == {} and closed["owner"] == "closed@example.com"
        odcs = httpx.get(
            running.http_url + "/api/products/closed.t/odcs.yaml",
            auth=("tester", "tester"),
            timeout=30,
        )
        assert odcs.status_code == 403 and "closed@example.com" in odcs.json()["error"]
        page = httpx.get(
            running.http_url + "/products/closed.t", auth=("tester", "tester"), timeout=30
        )
        assert "Ask its owner" in page.text
        assert "Read it" not in page.text and "odcs.yaml" not in page.text

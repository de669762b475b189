"""The discovery pages in a real headless browser (Debian's Chromium driven by Playwright).

Screenshots of each page are written to ``MESHGATE_SCREENSHOTS`` (default: the test's tmp dir) so
a person can look at them; the README's picture comes from this test.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.support.discovery import serving
from tests.support.stores import stores_required

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        reason = "Chromium is not installed (scripts/test-services installs Debian's chromium)"
        if stores_required():
            pytest.fail(f"MESHGATE_REQUIRE_STORES=1 but {reason}", pytrace=False)
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture(scope="module")
def served(demo_mesh):
    with serving(demo_mesh) as running:
        running.gateway.monitor.check_now()
        from tests.support.server import connect

        with connect(running.flight_uri, "analyst") as conn, conn.cursor() as cur:
            for sql in (
                "SELECT count(*) FROM sales.orders",
                "SELECT o_orderstatus, count(*) FROM sales.orders GROUP BY 1",
                "SELECT * FROM sales.orders_v1 LIMIT 5",
            ):
                cur.execute(sql)
                cur.fetchall()
        yield running


@pytest.fixture
def shots(tmp_path) -> Path:
    directory = Path(os.environ.get("MESHGATE_SCREENSHOTS") or tmp_path)
    directory.mkdir(parents=True, exist_ok=True)
    return directory


def _page(browser, user: str, *, javascript: bool = True):
    context = browser.new_context(
        http_credentials={"username": user, "password": user},
        viewport={"width": 1280, "height": 900},
        java_script_enabled=javascript,
    )
    return context, context.new_page()


def test_the_product_list_is_searchable_without_javascript(browser, served, shots):
    context, page = _page(browser, "analyst", javascript=False)
    try:
        page.goto(served.http_url + "/")
        assert page.locator("text=signed in as").inner_text().endswith("analyst")
        domains = page.locator("section.domain h2").all_inner_texts()
        assert [d.lower() for d in domains] == [
            "fulfillment",
            "reference",
            "sales",
            "supply",
        ]
        page.screenshot(path=str(shots / "products.png"), full_page=True)
        page.fill("input[name=q]", "nation")
        page.click("button[type=submit]")
        page.wait_for_url("**/?q=nation*")
        addresses = page.locator("a.address").all_inner_texts()
        assert "reference.nation" in addresses and "supply.part" not in addresses
        page.select_option("select[name=classification]", "pii")
        page.fill("input[name=q]", "")
        page.click("button[type=submit]")
        page.wait_for_url("**classification=pii*")
        assert "sales.customer" in page.locator("a.address").all_inner_texts()
    finally:
        context.close()


def test_the_product_page_shows_schema_masks_slos_usage_lineage_and_snippets(
    browser, served, shots
):
    context, page = _page(browser, "analyst")
    try:
        page.goto(served.http_url + "/products/sales.orders")
        assert page.locator("h1").inner_text().startswith("sales.orders")
        schema = page.locator("table.schema")
        assert schema.locator("td.mono", has_text="o_orderkey").count() == 1
        slos = page.locator("table.slos").first.inner_text()
        assert "freshness" in slos and "latency" in slos and "volume" in slos
        assert "broken" in slos  # TPC-H orders stop in 1998: the freshness SLO says so
        assert "ADBC" in page.locator("section.card", has_text="Read it").inner_text()
        assert "jdbc:arrow-flight-sql://" in page.locator("pre.code").nth(1).inner_text()
        usage = page.locator("table.usage").inner_text()
        assert "queries" in usage
        page.screenshot(path=str(shots / "product-page.png"), full_page=True)
        page.click("a.pill:has-text('sales.customer')")
        page.wait_for_url("**/products/sales.customer")
        masked = page.locator("tr.masked")
        assert masked.count() == 3  # c_name, c_address, c_phone: pii, masked for analysts
        assert "masked: partial(4)" in masked.first.inner_text()
        page.screenshot(path=str(shots / "product-masked.png"), full_page=True)
        page.goto(served.http_url + "/products/sales.orders_v1")
        assert "deprecated" in page.locator("div.banner").inner_text()
        assert "sales.orders_v2" in page.locator("div.banner").inner_text()
        assert "analyst" in page.locator("div.banner").inner_text()  # still reads it
        page.screenshot(path=str(shots / "product-deprecated.png"), full_page=True)
    finally:
        context.close()


def test_the_lineage_graph_is_drawn_on_the_server_and_links_to_products(browser, served, shots):
    context, page = _page(browser, "analyst", javascript=False)
    try:
        page.goto(served.http_url + "/lineage?focus=sales.orders")
        svg = page.locator("svg.lineage")
        assert svg.count() == 1
        nodes = svg.locator("g.node").count()
        assert nodes == 8
        assert svg.locator("path[marker-end]").count() >= 6
        page.screenshot(path=str(shots / "lineage.png"), full_page=True)
        svg.locator("a[href='/products/reference.region']").click()
        page.wait_for_url("**/products/reference.region")
    finally:
        context.close()


def test_each_principal_sees_only_its_products_in_the_browser(browser, served, shots):
    context, page = _page(browser, "guest")
    try:
        page.goto(served.http_url + "/")
        assert page.locator("tr:not(.denied) a.address").all_inner_texts() == [
            "reference.nation",
            "reference.region",
        ]
        page.goto(served.http_url + "/lineage")
        assert page.locator("svg.lineage g.node").count() == 2
        response = page.goto(served.http_url + "/products/audit.events")
        assert response.status == 404
        assert "you may read" in page.locator("section.error").inner_text()
        page.screenshot(path=str(shots / "guest-denied.png"), full_page=True)
    finally:
        context.close()
    context, page = _page(browser, "eu_analyst")
    try:
        page.goto(served.http_url + "/products/sales.customer")
        assert page.locator("tr.masked").count() == 3
    finally:
        context.close()


def test_a_browser_without_credentials_is_asked_for_them(browser, served):
    from playwright.sync_api import Error

    context = browser.new_context()
    try:
        page = context.new_page()
        answers = []
        page.on("response", lambda response: answers.append(response))
        # a headless browser cannot show the login prompt, so it gives up on the challenge
        with pytest.raises(Error, match="AUTH"):
            page.goto(served.http_url + "/")
        (challenge,) = answers
        assert challenge.status == 401
        assert challenge.headers["www-authenticate"].startswith("Basic")
    finally:
        context.close()

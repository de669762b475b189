"""What a principal sees of a product it may not read: nothing (``invisible``) or its listing
and the owner to ask (``discoverable``), per mesh and per product, the same in queries, the
Flight SQL metadata listings and ``Gateway.listed_products`` (the discovery page's source)."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import adbc_driver_manager
import pytest

from gateway.principals import Principal, hash_password
from tests.support.server import connect, running_server


def mesh_with_a_secret(root: Path, *, mesh_setting: str | None, secret_setting: str | None):
    """``geo.cities`` everyone reads, ``geo.secrets`` only the role ``spy``; principal ``ann``
    (password ann) is a plain reader."""
    (root / "data").mkdir(parents=True)
    (root / "data" / "cities.csv").write_text("city\nLyon\n")
    gateway = f"gateway: {{denied_products: {mesh_setting}}}\n" if mesh_setting else ""
    (root / "mesh.yaml").write_text(
        f"name: t\nstores:\n  lake: {{kind: files, root: ./data}}\n{gateway}"
    )
    (root / "geo").mkdir()
    for product, extra in (("cities", ""), ("secrets", secret_setting)):
        (root / "geo" / f"{product}.yaml").write_text(
            textwrap.dedent(
                f"""\
                product: {product}
                version: 1
                owner: {product}-team@example.com
                description: {product}
                store: lake
                table: cities.csv
                columns: [{{name: city, type: varchar}}]
                """
            )
            + (f"when_denied: {extra}\n" if extra else "")
        )
    (root / "policies").mkdir()
    (root / "policies" / "global.yaml").write_text(
        "roles: {reader: [], spy: []}\ngrants:\n"
        "  - {role: reader, products: geo.cities}\n  - {role: spy, products: '*'}\n"
    )
    (root / "principals.yaml").write_text(
        f"principals:\n  ann:\n    password_hash: '{hash_password('ann', rounds=4)}'\n"
        "    roles: [reader]\n"
    )
    return root


def listed_tables(conn) -> set[str]:
    (catalog,) = conn.adbc_get_objects(depth="tables").read_all().to_pylist()
    return {
        f"{schema['db_schema_name']}.{table['table_name']}"
        for schema in catalog["catalog_db_schemas"]
        for table in schema["db_schema_tables"]
    }


def refusal(conn, sql: str) -> str:
    with conn.cursor() as cur, pytest.raises(adbc_driver_manager.Error) as caught:
        cur.execute(sql)
    return str(caught.value).split(". Detail:")[0]


ANN = Principal("ann", roles=("reader",))
READABLE = {"geo.cities", "geo.cities_v1"}
SECRETS = {"geo.secrets", "geo.secrets_v1"}


@pytest.mark.parametrize(
    ("mesh_setting", "secret_setting", "discoverable"),
    [
        (None, None, False),  # the default: deny by default, invisible
        ("invisible", None, False),
        ("discoverable", None, True),
        ("discoverable", "invisible", False),  # a product that must stay hidden in an open mesh
        ("invisible", "discoverable", True),  # a product that wants to be found
    ],
)
def test_queries_listings_and_the_discovery_source_agree(
    tmp_path, mesh_setting, secret_setting, discoverable
):
    root = mesh_with_a_secret(
        tmp_path / "mesh", mesh_setting=mesh_setting, secret_setting=secret_setting
    )
    with running_server(root) as (uri, gateway), connect(uri, "ann") as conn:
        listing = gateway.listed_products(ANN)
        expected = READABLE | (SECRETS if discoverable else set())
        assert set(listing) == expected
        assert {a for a, entry in listing.items() if entry.readable} == READABLE
        assert listed_tables(conn) >= {"geo.cities"}
        assert ("geo.secrets" in listed_tables(conn)) is discoverable

        message = refusal(conn, "SELECT * FROM geo.secrets")
        if discoverable:
            assert message.startswith("UNAUTHORIZED"), message
            assert "ask its owner (secrets-team@example.com) for access" in message
        else:
            absent = refusal(conn, "SELECT * FROM geo.secretz")
            assert message.startswith("NOT_FOUND"), message
            assert "secrets-team" not in message
            # indistinguishable from a product that does not exist
            assert message.replace("geo.secrets", "X") == absent.replace("geo.secretz", "X")
        with conn.cursor() as cur:  # the server keeps serving
            cur.execute("SELECT count(*) FROM geo.cities")
            assert cur.fetchone() == (1,)
    events = [json.loads(line) for line in (root / "audit" / "events.jsonl").open()]
    outcome = next(e["outcome"] for e in events if "geo.secrets" in e["statement"])
    assert outcome == "denied"  # the trail says what happened, whatever the client was told


def test_an_unknown_setting_is_refused_with_the_choices(tmp_path):
    from gateway.validate import validate_mesh

    root = mesh_with_a_secret(tmp_path / "mesh", mesh_setting="hidden", secret_setting="secret")
    problems = validate_mesh(root).problems
    assert any("mesh.yaml: field `gateway.denied_products`" in p for p in problems), problems
    assert any("secrets.yaml: field `when_denied`" in p for p in problems), problems
    assert all("'invisible' or 'discoverable'" in p for p in problems), problems

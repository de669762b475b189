"""``meshgate init DIR``: a small mesh that serves at once, to start one's own from.

It writes every part a mesh has, each commented, so the first edit is to a working file::

    mesh.yaml                 # one store: the CSV files under data/
    data/cities.csv           # the data
    geo/cities.yaml           # the product geo.cities (address <domain>.<product>)
    policies/global.yaml      # roles, a grant, a mask
    principals.yaml           # one principal with a bcrypt hash of its password
"""

from __future__ import annotations

import re
import secrets
from pathlib import Path

from gateway.errors import GatewayError
from gateway.principals import hash_password


class ScaffoldError(GatewayError):
    """The scaffold cannot be written where asked; the message says what to do."""


CITIES_CSV = """\
city,country,people,mayor_email
Lyon,France,522250,mayor@lyon.example
Ghent,Belgium,265086,mayor@ghent.example
Porto,Portugal,231962,mayor@porto.example
Graz,Austria,298479,mayor@graz.example
Tartu,Estonia,97435,mayor@tartu.example
"""

MESH_YAML = """\
# The mesh: its name, the stores its products live in, and gateway settings.
name: {name}
stores:
  # Parquet, CSV and JSON-lines files under a folder (relative to this file).
  # Other kinds: duckdb, sqlite, postgres, mysql, trino (see the README's "Stores").
  files: {{kind: files, root: ./data}}
gateway:
  token_ttl_seconds: 28800    # a connection idle longer than this (8 h) must log in again
  denied_products: discoverable   # or invisible: may principals see products they cannot read?
"""

PRODUCT_YAML = """\
# The data product geo.cities: what a domain team publishes. Version 1; a breaking change
# goes into cities_v2.yaml with `version: 2`, and geo.cities then means the latest.
product: cities
version: 1
owner: {owner}
description: European cities with their population, one row per city.
store: files
table: cities.csv              # a file (or glob, e.g. cities/*.parquet) under the store's root
columns:
  - {{name: city, type: varchar, description: City name, classification: public}}
  - {{name: country, type: varchar, description: Country the city is in, classification: public}}
  - {{name: people, type: bigint, description: Inhabitants (census), classification: public}}
  - {{name: mayor_email, type: varchar, description: How to reach the mayor, classification: pii}}
"""

POLICY_YAML = """\
# Who may read what. Deny by default: a product no grant names is denied.
roles:                      # every role, and the permissions it includes
  owner: ["unmask:pii"]
  reader: []
grants:
  - {role: reader, products: "*"}        # globs over <domain>.<product>
  - {role: owner, products: "geo.*"}
masks:                      # null, redact, partial (keep the last N), truncate_date, hash
  - {classification: pii, mask: redact, unless: "unmask:pii"}
row_filters: []    # e.g. {role: reader, products: geo.cities, filter: "country = ${country}"}
"""

PRINCIPALS_YAML = """\
# Users and services: a bcrypt hash of each password (make one with `meshgate hash-password`),
# roles from policies/global.yaml, and attributes row filters can read as ${{attribute}}.
principals:
  {user}:
    password_hash: "{password_hash}"
    roles: [owner, reader]
    attributes: {{country: France}}
"""


def mesh_name(directory: Path) -> str:
    """A mesh name from the directory's name: lowercase letters, digits and dashes.

    >>> mesh_name(Path("/tmp/My Mesh"))
    'my-mesh'
    """
    return re.sub(r"[^a-z0-9]+", "-", directory.resolve().name.lower()).strip("-") or "mesh"


def write_scaffold(directory: Path, *, user: str, password: str | None) -> str:
    """Write the scaffold into ``directory`` (new or empty); returns the principal's password
    (``password``, or a new random one)."""
    if directory.exists() and (not directory.is_dir() or any(directory.iterdir())):
        raise ScaffoldError(
            f"{directory} already exists and is not empty; choose a new directory, e.g. "
            f"`meshgate init {directory.name}-2`"
        )
    if not re.fullmatch(r"[a-z][a-z0-9_.-]*", user):
        raise ScaffoldError(
            f"--user {user!r}: use lowercase letters, digits, '_', '.' or '-', starting with a "
            "letter"
        )
    password = password or secrets.token_urlsafe(12)
    files = {
        "mesh.yaml": MESH_YAML.format(name=mesh_name(directory)),
        "data/cities.csv": CITIES_CSV,
        "geo/cities.yaml": PRODUCT_YAML.format(owner=f"geo-team@{mesh_name(directory)}.example"),
        "policies/global.yaml": POLICY_YAML,
        "principals.yaml": PRINCIPALS_YAML.format(user=user, password_hash=hash_password(password)),
    }
    for relative, text in files.items():
        path = directory / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    (directory / "principals.yaml").chmod(0o600)
    return password

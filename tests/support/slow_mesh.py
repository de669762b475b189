"""A mesh with a slow PostgreSQL product and a small Parquet one, for limits and shutdown tests."""

from __future__ import annotations

import textwrap

import pyarrow as pa
import pyarrow.parquet as pq

from gateway.principals import hash_password
from tests.support.stores import POSTGRES, require

SLOW_SECONDS = 3


def slow_mesh(root, limits: str = "{}"):
    """Under ``root``: crm.slow, a PostgreSQL query that sleeps SLOW_SECONDS, and lake.events,
    100 Parquet rows; ``limits`` is the YAML of gateway.limits. Principals alice, bob (role
    reader), slowpoke, limited (roles of those names); passwords are their names."""
    require(POSTGRES)
    root.mkdir(exist_ok=True)
    (root / "data").mkdir()
    pq.write_table(
        pa.table({"e": list(range(100)), "label": ["x" * 50] * 100}), root / "data" / "ev.parquet"
    )
    (root / "mesh.yaml").write_text(
        textwrap.dedent(
            f"""
            name: t
            stores:
              crm_pg: {{kind: postgres, host: {POSTGRES.host}, port: {POSTGRES.port},
                        user: {POSTGRES.user}, database: {POSTGRES.database}}}
              lake: {{kind: files, root: data}}
            gateway:
              audit_log: null
              limits:
            """
        )
        + textwrap.indent(textwrap.dedent(limits).strip(), " " * 4)
        + "\n"
    )
    for domain, product, body in (
        ("crm", "slow", f"store: crm_pg\nsql: SELECT 1::bigint AS k FROM pg_sleep({SLOW_SECONDS})"),
        ("lake", "events", "store: lake\ntable: ev.parquet"),
    ):
        (root / domain).mkdir()
        columns = (
            "  - {name: k, type: bigint}\n"
            if product == "slow"
            else ("  - {name: e, type: bigint}\n  - {name: label, type: varchar}\n")
        )
        (root / domain / f"{product}.yaml").write_text(
            f"product: {product}\nversion: 1\nowner: o@example.com\ndescription: d\n{body}\n"
            f"columns:\n{columns}"
        )
    (root / "policies").mkdir()
    (root / "policies" / "global.yaml").write_text(
        "roles: {reader: [], slowpoke: [], limited: []}\n"
        "grants:\n  - {role: [reader, slowpoke, limited], products: '*'}\n"
    )
    users = {"alice": "reader", "bob": "reader", "slowpoke": "slowpoke", "limited": "limited"}
    (root / "principals.yaml").write_text(
        "principals:\n"
        + "".join(
            f"  {name}:\n    password_hash: '{hash_password(name, rounds=4)}'\n"
            f"    roles: [{role}]\n"
            for name, role in users.items()
        )
    )
    return root

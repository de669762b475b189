"""Small helpers for the throw-away meshes tests build in tmp_path."""

from __future__ import annotations

import contextlib
import textwrap
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path

from gateway.principals import Principal, hash_password


def grant_everything(root: Path, *, principal: str = "tester", role: str = "reader") -> Principal:
    """Policies and principals.yaml under ``root`` letting one principal read every product.

    The password is the principal's name. Returns the principal as the gateway will see it.
    """
    (root / "policies").mkdir(exist_ok=True)
    (root / "policies" / "global.yaml").write_text(
        f"roles: {{{role}: []}}\ngrants:\n  - {{role: {role}, products: '*'}}\n"
    )
    (root / "principals.yaml").write_text(
        f"principals:\n  {principal}:\n"
        f"    password_hash: '{hash_password(principal, rounds=4)}'\n    roles: [{role}]\n"
    )
    return Principal(principal, roles=(role,))


@contextlib.contextmanager
def mariadb_people(root: Path, table: str, rows: Sequence[tuple[int, str | None]]) -> Iterator:
    """A gateway over a mesh in ``root`` publishing ``crm.people``: a MariaDB table named after
    ``table`` with a suffix of its own (others run the suite at the same time), (k INT, name
    VARCHAR(20)) holding ``rows``, dropped again afterwards."""
    from gateway.service import Gateway
    from tests.support.stores import MARIADB, mysql_admin

    table = f"{table}_{uuid.uuid4().hex[:8]}"
    admin = mysql_admin()
    with admin.cursor() as cur:
        cur.execute(f"DROP TABLE IF EXISTS {table}")
        cur.execute(f"CREATE TABLE {table} (k INT, name VARCHAR(20))")
        cur.executemany(f"INSERT INTO {table} VALUES (%s, %s)", rows)
    (root / "crm").mkdir()
    (root / "mesh.yaml").write_text(
        f"name: t\nstores:\n  crm_db: {{kind: mysql, host: {MARIADB.host}, port: {MARIADB.port}, "
        f"user: {MARIADB.user}, database: {MARIADB.database}}}\n"
    )
    (root / "crm" / "people.yaml").write_text(
        textwrap.dedent(
            f"""
            product: people
            version: 1
            owner: crm@example.com
            description: people
            store: crm_db
            table: {table}
            columns:
              - {{name: k, type: integer}}
              - {{name: name, type: varchar}}
            """
        )
    )
    grant_everything(root)
    gateway = Gateway.open(root)
    try:
        yield gateway
    finally:
        gateway.close()
        with admin.cursor() as cur:
            cur.execute(f"DROP TABLE IF EXISTS {table}")
        admin.close()


def set_gateway_settings(root: Path, settings: dict) -> None:
    """Merge ``settings`` into the ``gateway:`` section of ``root``'s mesh.yaml."""
    import yaml

    path = root / "mesh.yaml"
    config = yaml.safe_load(path.read_text())
    config.setdefault("gateway", {}).update(settings)
    path.write_text(yaml.safe_dump(config, sort_keys=False))

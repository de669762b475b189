"""Policy and principal files change under a running server and take effect without a restart."""

from __future__ import annotations

import shutil
import time

import adbc_driver_manager
import pytest

from gateway.principals import hash_password
from tests.support.server import connect, running_server


def _touch_later(path, text: str) -> None:
    time.sleep(1.1)  # the gateway looks at the files at most once a second
    path.write_text(text)


def test_new_principals_and_revoked_grants_apply_without_a_restart(demo_mesh, tmp_path):
    mesh = tmp_path / "mesh"
    shutil.copytree(demo_mesh, mesh)
    with running_server(mesh) as (uri, _):
        with pytest.raises(adbc_driver_manager.Error, match="UNAUTHENTICATED"):
            connect(uri, "newbie").close()
        principals = mesh / "principals.yaml"
        _touch_later(
            principals,
            principals.read_text()
            + f"  newbie:\n    password_hash: '{hash_password('newbie', rounds=4)}'\n"
            "    roles: [guest]\n",
        )
        time.sleep(1.1)
        with connect(uri, "newbie") as conn, conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM reference.region")
            assert cur.fetchone() == (5,)

        rules = mesh / "policies" / "global.yaml"
        text = rules.read_text()
        assert 'products: "reference.*"' in text
        _touch_later(rules, text.replace('products: "reference.*"', 'products: "reference.nation"'))
        time.sleep(1.1)
        with connect(uri, "guest") as conn, conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM reference.nation")
            assert cur.fetchone() == (25,)
            with pytest.raises(adbc_driver_manager.Error, match="may not read reference.region"):
                cur.execute("SELECT count(*) FROM reference.region")

        _touch_later(rules, "grants: [this is not valid\n")
        time.sleep(1.1)
        with connect(uri, "guest") as conn, conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM reference.nation")
            assert cur.fetchone() == (25,), "an invalid change keeps the previous policy"

"""Policies and principals for meshes that mask their pii columns."""

from __future__ import annotations

from pathlib import Path

from gateway.principals import hash_password


def write_reader_with_pii_masked(root: Path, *, principal: str = "reader") -> None:
    """``principal`` (password = its name, role ``reader``) reads every product of the mesh in
    ``root``, with every pii column masked to NULL."""
    (root / "policies").mkdir(exist_ok=True)
    (root / "policies" / "global.yaml").write_text(
        "roles: {reader: []}\n"
        "grants:\n  - {role: reader, products: '*'}\n"
        "masks:\n  - {classification: pii, mask: 'null'}\n"
    )
    (root / "principals.yaml").write_text(
        f"principals:\n  {principal}:\n"
        f"    password_hash: '{hash_password(principal, rounds=4)}'\n    roles: [reader]\n"
    )

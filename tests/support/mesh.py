"""Small helpers for the throw-away meshes tests build in tmp_path."""

from __future__ import annotations

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

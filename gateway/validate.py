"""``meshgate validate``: every problem ``serve`` would refuse a mesh for, found in one run.

``serve`` stops at the first stage that fails (mesh.yaml and descriptors, then principals, then
policies, then stores, then contracts), so a store typo and a missing column surface in two
separate runs. :func:`validate_mesh` goes through every stage with whatever the earlier ones
could read and reports every problem at once, each naming its file, line or field, and the fix.
``serve`` runs the same function before it starts, so the two can never disagree.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from gateway.contracts import ContractReport, check_contract
from gateway.errors import MeshConfigError
from gateway.mesh import Mesh, read_mesh
from gateway.principals import PRINCIPALS_FILE, PrincipalDirectory

log = logging.getLogger(__name__)


@dataclass
class Validation:
    """What validating a mesh found: problems ``serve`` refuses, and warnings it only logs."""

    root: Path
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    contracts: list[ContractReport] = field(default_factory=list)
    mesh: Mesh | None = None

    @property
    def ok(self) -> bool:
        return not self.problems

    def report(self) -> str:
        """Every problem and warning, one per line, as the command line prints them."""
        lines = []
        if self.problems:
            lines.append(f"the mesh at {self.root} has {len(self.problems)} problem(s):")
            lines += [f"  - {p}" for p in self.problems]
        if self.warnings:
            lines.append(f"{len(self.warnings)} warning(s):")
            lines += [f"  - {w}" for w in self.warnings]
        return "\n".join(lines)


def validate_mesh(root: str | Path, *, unreachable_is_problem: bool = True) -> Validation:
    """Check the mesh at ``root`` the way ``serve`` would, collecting every problem.

    ``unreachable_is_problem``: a store that cannot be reached is a problem for ``validate`` (the
    mesh cannot be checked against it); ``serve`` starts anyway, and the queries that need that
    store fail with UNAVAILABLE until it is back, so for ``serve`` it is a warning.
    """
    import connectors

    result = Validation(Path(root).resolve())
    mesh, problems = read_mesh(root, known_store_kinds=set(connectors.KINDS))
    result.problems += problems
    result.mesh = mesh
    if mesh is None:
        return result
    if getattr(mesh.config.gateway, "identity_provider", None) is None:  # JWTs log in otherwise
        result.problems += principal_problems(mesh.root)
    else:
        result.problems += principal_problems(mesh.root, required=False)
    result.problems += policy_problems(mesh)
    _check_stores(mesh, result, unreachable_is_problem=unreachable_is_problem)
    return result


def principal_problems(root: Path, *, required: bool = True) -> list[str]:
    """principals.yaml's problems; without principals (and without an identity provider, when
    ``required``) the server would be one nobody can log into."""
    path = root / PRINCIPALS_FILE
    try:
        directory = PrincipalDirectory.load(root)
    except MeshConfigError as exc:
        return list(exc.problems)
    if directory.names() or not required:
        return []
    state = "is missing" if not path.is_file() else "lists no principals"
    return [
        f"{path}: {state}, so nobody could log in; add one, e.g.\n"
        "      principals:\n"
        "        alice:\n"
        '          password_hash: "<the output of `meshgate hash-password`>"\n'
        "          roles: [analyst]"
    ]


def policy_problems(mesh: Mesh) -> list[str]:
    """Every problem of the policy files, each with its file and line."""
    from policies import PolicyEngine

    try:
        PolicyEngine.load(mesh)
    except MeshConfigError as exc:
        return list(exc.problems)
    return []


def _check_stores(mesh: Mesh, result: Validation, *, unreachable_is_problem: bool) -> None:
    """Open each store, and compare every product whose store opened with its descriptor."""
    import connectors

    opened: dict[str, connectors.Connector] = {}
    for name, store in mesh.config.stores.items():
        if store.kind not in connectors.KINDS:
            continue  # already reported by read_mesh
        try:
            opened[name] = connectors.open_connector(
                name, {"kind": store.kind, **store.settings}, base_dir=mesh.root
            )
        except MeshConfigError as exc:
            result.problems += exc.problems
    mode = mesh.config.gateway.contract_check
    unreachable: set[str] = set()
    try:
        versions = {p.versioned_address: p for p in mesh.products.values()}
        for _, product in sorted(versions.items()):
            connector = opened.get(product.store)
            if connector is None or product.store in unreachable or mode == "off":
                continue
            report = check_contract(product, connector)
            result.contracts.append(report)
            if not report.checked and report.reachable:
                result.problems.append(
                    f"{product.path}: field `{'sql' if product.descriptor.sql else 'table'}`: "
                    f"the store cannot read it: {report.problems[0].removeprefix('not checked: ')}"
                    "; fix the descriptor or create it in the store"
                )
                continue
            if not report.checked:
                unreachable.add(product.store)
                message = (
                    f"{mesh.root / 'mesh.yaml'}: field `stores.{product.store}`: "
                    f"{report.problems[0].removeprefix('not checked: ')}; serve would start, "
                    "but every query over it fails with UNAVAILABLE until it answers"
                )
                (result.problems if unreachable_is_problem else result.warnings).append(message)
                continue
            for problem in report.problems:
                message = f"{product.path}: field `columns`: {problem}"
                (result.problems if mode == "strict" else result.warnings).append(message)
    finally:
        for connector in opened.values():
            connector.close()

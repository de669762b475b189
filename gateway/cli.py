"""The ``meshgate`` command line: serve a mesh, run the demo, validate a mesh, explain a query."""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
from pathlib import Path

from gateway.errors import GatewayError, MeshConfigError

log = logging.getLogger("meshgate")

DEFAULT_PORT = 8815
DEFAULT_HTTP_PORT = 8816


def _public_host(host: str) -> str:
    return "localhost" if host in ("0.0.0.0", "127.0.0.1") else host


def _serve(
    gateway,
    *,
    host: str,
    port: int,
    http_port: int | None,
    banner: str | None = None,
    health_port: int | None = None,
) -> None:
    """Serve Flight SQL on ``port`` and, unless ``http_port`` is None, the discovery port;
    SIGTERM drains (gateway.draining)."""
    from gateway.draining import drain_on_sigterm, serve_health

    if gateway.settings.observability.log_format == "json":
        from gateway.observability.logs import use_json_logs

        use_json_logs()  # every line a JSON object with its query's id, principal and trace id
    http = None
    server = _flight_server(gateway, host=host, port=port)
    # SIGTERM (service managers, containers) drains: new queries are refused, running streams
    # finish, then the finally below sends queued spans and lineage events and closes the stores
    running = gateway.admission.running
    drain_on_sigterm(server, running=running, grace_seconds=gateway.settings.shutdown_grace_seconds)
    health_port = health_port if health_port is not None else gateway.settings.health_port
    health = None
    gateway.monitor.start()  # SLOs, contracts and quality measured while serving
    scheme = server.listen_location.partition("://")[0]
    try:
        if health_port is not None:
            health = serve_health(server.lifecycle, running=running, host=host, port=health_port)
            print(f"health check at http://{host}:{health.server_port}/healthz", flush=True)
        if http_port is not None:
            http = _discovery_server(gateway, server, host=host, http_port=http_port)
        print(
            banner
            or f"meshgate serving mesh {gateway.mesh.name!r} at {scheme}://{host}:{server.port}"
            + (f"; discovery at {http.url}" if http is not None else ""),
            flush=True,
        )
        # the server answers from construction on; waiting here rather than in serve() keeps
        # SIGTERM for the drain (serve() would shut gRPC down on it at once)
        while not server.lifecycle.stopped.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        if http is not None:
            http.stop()
        if server.lifecycle.draining.is_set():
            server.lifecycle.stopped.wait()
        else:
            server.shutdown()
        if health is not None:
            health.shutdown()
        gateway.close()


def _flight_server(gateway, *, host: str, port: int):
    """The Flight SQL server on ``port``, after warning of a weak mask key; the gateway is
    closed when the server cannot start."""
    from gateway.flightsql.server import MeshFlightServer

    try:
        ensure_port_free(host, port)
        warning = getattr(gateway.policy, "mask_key_warning", lambda: None)()
        if warning:
            logging.getLogger("meshgate").warning(warning)
        return MeshFlightServer(gateway, f"grpc://{host}:{port}")
    except BaseException:
        gateway.close()
        raise


def _discovery_server(gateway, server, *, host: str, http_port: int):
    """The started discovery port, or None when the default port is busy (a warning then; a
    port asked for on the command line that is in use ends the command)."""
    from gateway.http.app import create_app
    from gateway.http.server import HttpServer

    scheme = server.listen_location.partition("://")[0]
    flight_uri = f"{scheme}://{_public_host(host)}:{server.port}"
    app = create_app(gateway, signer=server.signer, flight_uri=flight_uri)
    try:
        return HttpServer(app, host=host, port=http_port or DEFAULT_HTTP_PORT).start()
    except OSError as exc:
        if http_port:
            raise SystemExit(f"meshgate: {exc}") from None
        log.warning("%s; serving Flight SQL only", exc)
        return None


def _http_port(args) -> int | None:
    """The discovery port asked for: None for off (0), and 0 for the default, which may be
    busy (then only Flight SQL is served, with a warning)."""
    if args.http_port is None:
        return 0
    return None if args.http_port == 0 else args.http_port


def ensure_port_free(host: str, port: int) -> None:
    """Refuse, in one line naming the port and the flag, to start on a port already taken.

    gRPC would only say "Server did not start properly", and it binds with SO_REUSEPORT, so a
    plain bind (which that option does not let share a port) is the reliable test.
    """
    import errno
    import socket

    if port == 0:
        return
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise UsageError(
                    f"port {port} on {host} is already in use (another meshgate?); stop it or "
                    "choose another port with --port"
                ) from None
            raise UsageError(
                f"cannot listen on {host}:{port} ({exc.strerror}); check --host"
            ) from None


class UsageError(GatewayError):
    """A command-line request that cannot be carried out; the message says what to change."""


def _cmd_serve(args) -> None:
    from gateway.service import Gateway
    from gateway.validate import validate_mesh

    validation = validate_mesh(args.mesh, unreachable_is_problem=False)
    for warning in validation.warnings:
        logging.getLogger("meshgate").warning(warning)
    if not validation.ok:
        raise MeshConfigError(validation.problems)
    gateway = Gateway.open(args.mesh)
    if args.tls_cert or args.tls_key or args.tls_client_ca:
        _use_tls_flags(gateway, args)
    _serve(
        gateway,
        host=args.host,
        port=args.port,
        http_port=_http_port(args),
        health_port=args.health_port,
    )


def _use_tls_flags(gateway, args) -> None:
    """``--tls-cert``/``--tls-key``/``--tls-client-ca`` in place of mesh.yaml's ``gateway.tls``."""
    from gateway.tls import TlsSettings

    if not (args.tls_cert and args.tls_key):
        gateway.close()
        raise UsageError("TLS needs both --tls-cert and --tls-key")
    gateway.settings.tls = TlsSettings(
        cert=str(Path(args.tls_cert).resolve()),
        key=str(Path(args.tls_key).resolve()),
        client_ca=str(Path(args.tls_client_ca).resolve()) if args.tls_client_ca else None,
    )


def _cmd_validate(args) -> None:
    from gateway.validate import validate_mesh

    validation = validate_mesh(args.mesh)
    if validation.report():
        print(validation.report(), file=sys.stderr if not validation.ok else sys.stdout)
    if not validation.ok:
        raise SystemExit(1)
    versions = len({p.versioned_address for p in validation.mesh.products.values()})
    print(
        f"{validation.root}: ok ({versions} product version(s), {len(validation.contracts)} "
        "contract(s) checked against their stores)"
    )


def _cmd_demo(args) -> None:
    from demo import build_demo_mesh
    from gateway.service import Gateway

    directory = build_demo_mesh(Path(args.dir), scale_factor=args.scale_factor, progress=_progress)
    gateway = Gateway.open(directory)
    uri = f"grpc://{_public_host(args.host)}:{args.port}"
    http_port = _http_port(args)
    discovery = (
        f"http://{_public_host(args.host)}:{http_port or DEFAULT_HTTP_PORT}"
        "  (log in as any of the principals)"
        if http_port is not None
        else "off"
    )
    snippet = client_snippet(
        uri, user="analyst", password="analyst", query=DEMO_QUERY, python=sys.executable
    )
    banner = DEMO_BANNER.format(
        uri=uri,
        mesh=directory,
        products=len(gateway.mesh.products),
        snippet=snippet,
        discovery=discovery,
    )
    _serve(gateway, host=args.host, port=args.port, http_port=http_port, banner=banner)


@contextlib.contextmanager
def _as_principal(mesh: str, name: str):
    """The gateway over ``mesh`` and the principal called ``name`` in it."""
    from gateway.service import Gateway

    gateway = Gateway.open(mesh)
    try:
        principal = gateway.principals.get(name)
        if principal is None:
            raise SystemExit(f"no principal {name!r} in {mesh}/principals.yaml")
        yield gateway, principal
    finally:
        gateway.close()


def _cmd_init(args) -> None:
    from gateway.scaffold import write_scaffold

    directory = Path(args.dir)
    password = write_scaffold(directory, user=args.user, password=args.password)
    uri = f"grpc://localhost:{DEFAULT_PORT}"
    snippet = client_snippet(
        uri,
        user=args.user,
        password=password,
        query="SELECT city, people, mayor_email FROM geo.cities ORDER BY people DESC",
        python=sys.executable,
    )
    print(
        INIT_BANNER.format(
            dir=directory,
            user=args.user,
            password=password,
            serve=_meshgate_command(),
            snippet=snippet,
        )
    )


def _meshgate_command() -> str:
    """How to run meshgate again from any shell: the script beside this Python, by full path."""
    import shlex

    script = Path(sys.executable).with_name("meshgate")
    return shlex.quote(str(script)) if script.exists() else "meshgate"


INIT_BANNER = """\
Wrote a new mesh in {dir}: mesh.yaml, data/cities.csv, geo/cities.yaml (the product geo.cities),
policies/global.yaml and principals.yaml.

  principal   {user} / {password}      (keep it; principals.yaml has only its bcrypt hash)

Check it, then serve it:

  {serve} validate --mesh {dir}
  {serve} serve --mesh {dir}

and read the product from another shell by pasting these lines:

{snippet}
"""


def _cmd_explain(args) -> None:
    with _as_principal(args.mesh, args.principal) as (gateway, principal):
        print(gateway.explain(gateway.plan(args.sql, principal)))


def _cmd_policy_check(args) -> None:
    from policies import explain

    with _as_principal(args.mesh, args.principal) as (gateway, principal):
        product = gateway.mesh.products.get(args.product)
        if product is None:
            raise SystemExit(f"no product {args.product!r}; addresses are <domain>.<product>")
        print(explain(gateway.policy, principal, product))


def _cmd_contracts(args) -> None:
    from gateway.validate import validate_mesh

    validation = validate_mesh(args.mesh)
    for report in validation.contracts:
        state = "ok" if report.ok else ("not checked" if not report.checked else "DRIFT")
        print(f"{report.address:40} {report.store:20} {state}")
        for problem in report.problems:
            print(f"    {problem}")
    if validation.report():
        print(validation.report())
    if not validation.ok or not all(report.ok for report in validation.contracts):
        raise SystemExit(1)


def _cmd_products(args) -> None:
    """Every product the principal may read (all, without --principal), measured now."""
    from gateway.catalog import Catalog, latest_address, worst
    from gateway.service import Gateway

    logging.getLogger("meshgate.monitor").setLevel(logging.ERROR)  # breaches: for `serve`'s log
    gateway = Gateway.open(args.mesh)
    try:
        if args.principal is None:
            principal = None
            visible = sorted(a for a, p in gateway.mesh.products.items() if a == latest_address(p))
        else:
            principal = gateway.principals.get(args.principal)
            if principal is None:
                raise SystemExit(f"no principal {args.principal!r} in {args.mesh}/principals.yaml")
            visible = None
        gateway.monitor.check_now()
        catalog = Catalog(gateway, flight_uri=f"grpc://localhost:{DEFAULT_PORT}")
        records = (
            catalog.records(principal)
            if principal is not None
            else [catalog.unfiltered_record(a) for a in visible]
        )
        print(format_products(records, worst=worst))
    finally:
        gateway.close()


def format_products(records: list[dict], *, worst) -> str:
    """The ``meshgate products`` table: one line per product, its versions and statuses."""
    header = ("product", "versions", "owner", "SLOs", "contract", "deprecation")
    rows = [header]
    for r in records:
        versions = ", ".join(
            f"v{v['version']}" + (" (deprecated)" if v["deprecation"] else "")
            for v in r["versions"]
        )
        slos = ", ".join(f"{s['kind']} {s['status']}" for s in r["slos"]) if r["slos"] else "none"
        overall = worst(s["status"] for s in r["slos"]) if r["slos"] else ""
        deprecated = [v for v in r["versions"] if v["deprecation"]]
        note = "; ".join(
            f"v{v['version']} sunset {v['deprecation']['sunset']} -> "
            f"{v['deprecation']['replacement']}"
            for v in deprecated
        )
        rows.append(
            (
                r["address"] + ("" if r.get("readable", True) else " (no access)"),
                versions,
                r["owner"],
                f"{overall.upper()}: {slos}" if overall else slos,
                r["contract"].get("status", "unchecked"),
                note or "-",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )


def _cmd_hash_password(args) -> None:
    import getpass

    from gateway.principals import hash_password

    password = args.password
    if password is None:
        password = getpass.getpass("password: ")
        if getpass.getpass("the same password again: ") != password:
            raise UsageError("the two passwords differ; nothing was hashed, run it again")
    if not password:
        raise UsageError("the password is empty; choose one")
    print(hash_password(password))


def _progress(message: str) -> None:
    print(f"  {message}", file=sys.stderr, flush=True)


DEMO_BANNER = """
meshgate demo mesh is up at {uri}   ({products} product addresses, mesh in {mesh})

  discovery     {discovery}

  credentials   admin/admin   analyst/analyst   eu_analyst/eu_analyst   guest/guest

Read a product into pandas: paste these lines into another shell (they run this venv's Python):

{snippet}

Press Ctrl-C to stop.
"""

DEMO_QUERY = """SELECT n.n_name AS nation, count(*) AS orders, sum(o.o_totalprice) AS revenue
                   FROM sales.orders o
                   JOIN sales.customer c ON c.c_custkey = o.o_custkey
                   JOIN reference.nation n ON n.n_nationkey = c.c_nationkey
                   GROUP BY n.n_name ORDER BY revenue DESC"""


def client_snippet(uri: str, *, user: str, password: str, query: str, python: str) -> str:
    """Shell lines that print ``query``'s answer as a pandas DataFrame, ready to paste.

    Flush left, since a heredoc ends only at a line that is exactly its terminator, and run by
    ``python`` (the interpreter meshgate runs in, which has the ADBC driver and pandas) by its
    full path, since the user's shell need not have the venv on its PATH.
    """
    import json
    import shlex

    credentials = json.dumps({"username": user, "password": password})
    lines = [
        f"{shlex.quote(python)} - <<'PY'",
        "import adbc_driver_flightsql.dbapi as flightsql",
        f"with flightsql.connect({json.dumps(uri)}, db_kwargs={credentials},",
        "                       autocommit=True) as conn, conn.cursor() as cur:",
        f'    cur.execute("""{query}""")',
        "    print(cur.fetch_df())",
        "PY",
    ]
    return "\n".join(lines)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"meshgate {version('meshgate')}"
    except PackageNotFoundError:
        return "meshgate (not installed)"


MESH_HELP = "the mesh directory (the one holding mesh.yaml)"
HOST_HELP = (
    "the address to listen on (default 127.0.0.1: this machine only; 0.0.0.0 for every interface)"
)
PORT_HELP = f"the Flight SQL port (default {DEFAULT_PORT})"


def build_parser() -> argparse.ArgumentParser:
    """Every command and option, each with its help text."""
    parser = argparse.ArgumentParser(prog="meshgate", description=__doc__.replace("``", ""))
    parser.add_argument("--version", action="version", version=_version())
    parser.add_argument(
        "--log-level", default="INFO", help="DEBUG, INFO, WARNING or ERROR (default INFO)"
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="serve a mesh directory over Flight SQL")
    serve.add_argument("--mesh", required=True, help=MESH_HELP)
    serve.add_argument("--host", default="127.0.0.1", help=HOST_HELP)
    serve.add_argument("--port", type=int, default=DEFAULT_PORT, help=PORT_HELP)
    serve.add_argument("--tls-cert", help="serve grpc+tls:// with this certificate chain (PEM)")
    serve.add_argument("--tls-key", help="the certificate's private key (PEM)")
    serve.add_argument(
        "--tls-client-ca", help="mutual TLS: accept only client certificates this CA signed"
    )
    serve.add_argument(
        "--health-port", type=int, help="answer GET /healthz over HTTP on this port (for LBs)"
    )
    serve.add_argument(
        "--http-port",
        type=int,
        help=f"the discovery pages and API (default {DEFAULT_HTTP_PORT}; 0 turns them off)",
    )
    serve.set_defaults(run=_cmd_serve)

    demo = commands.add_parser("demo", help="build (once) and serve the demo mesh")
    demo.add_argument(
        "--dir", default="demo-mesh", help="where the demo mesh lives (default ./demo-mesh)"
    )
    demo.add_argument("--host", default="127.0.0.1", help=HOST_HELP)
    demo.add_argument("--port", type=int, default=DEFAULT_PORT, help=PORT_HELP)
    demo.add_argument(
        "--http-port",
        type=int,
        help=f"the discovery pages and API (default {DEFAULT_HTTP_PORT}; 0 turns them off)",
    )
    demo.add_argument(
        "--scale-factor", type=float, default=0.01, help="TPC-H scale factor (default 0.01)"
    )
    demo.set_defaults(run=_cmd_demo)

    validate = commands.add_parser(
        "validate",
        help="check everything serve would refuse (descriptors, policies, principals, stores, "
        "contracts) and report every problem at once; exit 1 if there is any",
    )
    validate.add_argument("--mesh", required=True, help=MESH_HELP)
    validate.set_defaults(run=_cmd_validate)

    init = commands.add_parser(
        "init", help="write a small mesh that serves at once (one CSV product), to start from"
    )
    init.add_argument("dir", help="a new (or empty) directory for the mesh")
    init.add_argument(
        "--user", default="admin", help="the name of the principal to create (default admin)"
    )
    init.add_argument("--password", help="its password (default: a random one, printed once)")
    init.set_defaults(run=_cmd_init)

    explain = commands.add_parser("explain", help="show where each part of a query would run")
    explain.add_argument("--mesh", required=True, help=MESH_HELP)
    explain.add_argument(
        "--principal", required=True, help="plan as this principal: its policies apply"
    )
    explain.add_argument("sql", help='the query, e.g. "SELECT count(*) FROM sales.orders"')
    explain.set_defaults(run=_cmd_explain)

    contracts = commands.add_parser(
        "contracts",
        help="compare every product's descriptor with its store now; exit 1 on drift or on "
        "anything else serve would refuse",
    )
    contracts.add_argument("--mesh", required=True, help=MESH_HELP)
    contracts.set_defaults(run=_cmd_contracts)

    products = commands.add_parser(
        "products",
        help="list the products a principal may read: owner, versions, deprecation, SLOs",
    )
    products.add_argument("--mesh", default=".", help="the mesh directory (default: here)")
    products.add_argument(
        "--principal", help="list what this principal may read (default: every product)"
    )
    products.set_defaults(run=_cmd_products)

    policy = commands.add_parser("policy", help="inspect the mesh's policies")
    policy_commands = policy.add_subparsers(dest="policy_command", required=True, metavar="CHECK")
    check = policy_commands.add_parser(
        "check", help="explain every decision for one principal and one product"
    )
    check.add_argument("--mesh", required=True, help=MESH_HELP)
    check.add_argument("--principal", required=True, help="a principal of principals.yaml")
    check.add_argument("--product", required=True, help="a product address, e.g. sales.customer")
    check.set_defaults(run=_cmd_policy_check)

    hashpw = commands.add_parser(
        "hash-password", help="print a bcrypt hash for principals.yaml (asks for it twice)"
    )
    hashpw.add_argument(
        "--password", help="hash this instead of asking (it stays in your shell's history)"
    )
    hashpw.set_defaults(run=_cmd_hash_password)
    return parser


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("casbin").setLevel(logging.WARNING)  # it logs its whole model at INFO
    try:
        args.run(args)
    except GatewayError as exc:
        print(f"meshgate: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()

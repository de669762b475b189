"""The ``meshgate`` command line: serve a mesh, run the demo, explain a query."""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
from pathlib import Path

from gateway.errors import GatewayError

DEFAULT_PORT = 8815


def _serve(
    gateway, *, host: str, port: int, banner: str | None = None, health_port: int | None = None
) -> None:
    from gateway.flightsql.server import MeshFlightServer
    from gateway.lifecycle import drain_on_sigterm, serve_health

    server = MeshFlightServer(gateway, f"grpc://{host}:{port}")
    running = gateway.admission.running
    drain_on_sigterm(server, running=running, grace_seconds=gateway.settings.shutdown_grace_seconds)
    health_port = health_port if health_port is not None else gateway.settings.health_port
    health = None
    if health_port is not None:
        health = serve_health(server.lifecycle, running=running, host=host, port=health_port)
        print(f"health check at http://{host}:{health.server_port}/healthz", flush=True)
    scheme = server.listen_location.partition("://")[0]
    print(
        banner or f"meshgate serving mesh {gateway.mesh.name!r} at {scheme}://{host}:{server.port}",
        flush=True,
    )
    try:
        # the server answers from construction on; waiting here rather than in serve() keeps
        # SIGTERM for our handler (serve() would shut gRPC down on it at once)
        while not server.lifecycle.stopped.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        if server.lifecycle.draining.is_set():
            server.lifecycle.stopped.wait()
        else:
            server.shutdown()
        if health is not None:
            health.shutdown()
        gateway.close()


def _cmd_serve(args) -> None:
    from gateway.service import Gateway

    gateway = Gateway.open(args.mesh)
    if args.tls_cert or args.tls_key or args.tls_client_ca:
        _use_tls_flags(gateway, args)
    _serve(gateway, host=args.host, port=args.port, health_port=args.health_port)


def _use_tls_flags(gateway, args) -> None:
    """``--tls-cert``/``--tls-key``/``--tls-client-ca`` in place of mesh.yaml's ``gateway.tls``."""
    from gateway.tls import TlsSettings

    if not (args.tls_cert and args.tls_key):
        gateway.close()
        raise SystemExit("meshgate: TLS needs both --tls-cert and --tls-key")
    gateway.settings.tls = TlsSettings(
        cert=str(Path(args.tls_cert).resolve()),
        key=str(Path(args.tls_key).resolve()),
        client_ca=str(Path(args.tls_client_ca).resolve()) if args.tls_client_ca else None,
    )


def _cmd_demo(args) -> None:
    from gateway.demo import build_demo_mesh
    from gateway.service import Gateway

    directory = build_demo_mesh(Path(args.dir), scale_factor=args.scale_factor, progress=_progress)
    gateway = Gateway.open(directory)
    uri = (
        f"grpc://{'localhost' if args.host in ('0.0.0.0', '127.0.0.1') else args.host}:{args.port}"
    )
    banner = DEMO_BANNER.format(uri=uri, mesh=directory, products=len(gateway.mesh.products))
    _serve(gateway, host=args.host, port=args.port, banner=banner)


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
    import connectors
    from gateway.contracts import check_contracts
    from gateway.mesh import load_mesh
    from gateway.service import open_stores

    mesh = load_mesh(args.mesh, known_store_kinds=set(connectors.KINDS))
    stores = open_stores(mesh)
    try:
        reports = check_contracts(mesh, stores)
    finally:
        for store in stores.values():
            store.close()
    for report in reports:
        state = "ok" if report.ok else ("not checked" if not report.checked else "DRIFT")
        print(f"{report.address:40} {report.store:20} {state}")
        for problem in report.problems:
            print(f"    {problem}")
    if not all(report.ok for report in reports):
        raise SystemExit(1)


def _cmd_hash_password(args) -> None:
    import getpass

    from gateway.principals import hash_password

    password = args.password or getpass.getpass("password: ")
    print(hash_password(password))


def _progress(message: str) -> None:
    print(f"  {message}", file=sys.stderr, flush=True)


DEMO_BANNER = """
meshgate demo mesh is up at {uri}   ({products} product addresses, mesh in {mesh})

  credentials   admin/admin   analyst/analyst   eu_analyst/eu_analyst   guest/guest

Read a product into pandas from another shell (the same venv has the ADBC driver):

  python - <<'PY'
  import adbc_driver_flightsql.dbapi as flightsql
  with flightsql.connect("{uri}", db_kwargs={{"username": "analyst", "password": "analyst"}},
                         autocommit=True) as conn, conn.cursor() as cur:
      cur.execute('''SELECT n.n_name AS nation, count(*) AS orders, sum(o.o_totalprice) AS revenue
                     FROM sales.orders o
                     JOIN sales.customer c ON c.c_custkey = o.o_custkey
                     JOIN reference.nation n ON n.n_nationkey = c.c_nationkey
                     GROUP BY n.n_name ORDER BY revenue DESC''')
      print(cur.fetch_df())
  PY

Press Ctrl-C to stop.
"""


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="meshgate", description=__doc__)
    parser.add_argument("--log-level", default="INFO", help="logging level (default INFO)")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="serve a mesh directory over Flight SQL")
    serve.add_argument("--mesh", required=True, help="the mesh directory (holds mesh.yaml)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=DEFAULT_PORT)
    serve.add_argument("--tls-cert", help="serve grpc+tls:// with this certificate chain (PEM)")
    serve.add_argument("--tls-key", help="the certificate's private key (PEM)")
    serve.add_argument(
        "--tls-client-ca", help="mutual TLS: accept only client certificates this CA signed"
    )
    serve.add_argument(
        "--health-port", type=int, help="answer GET /healthz over HTTP on this port (for LBs)"
    )
    serve.set_defaults(run=_cmd_serve)

    demo = commands.add_parser("demo", help="build (once) and serve the demo mesh")
    demo.add_argument(
        "--dir", default="demo-mesh", help="where the demo mesh lives (default ./demo-mesh)"
    )
    demo.add_argument("--host", default="127.0.0.1")
    demo.add_argument("--port", type=int, default=DEFAULT_PORT)
    demo.add_argument(
        "--scale-factor", type=float, default=0.01, help="TPC-H scale factor (default 0.01)"
    )
    demo.set_defaults(run=_cmd_demo)

    explain = commands.add_parser("explain", help="show where each part of a query would run")
    explain.add_argument("--mesh", required=True)
    explain.add_argument(
        "--principal", required=True, help="plan as this principal: its policies apply"
    )
    explain.add_argument("sql")
    explain.set_defaults(run=_cmd_explain)

    contracts = commands.add_parser(
        "contracts", help="compare every product's descriptor with its store now"
    )
    contracts.add_argument("--mesh", required=True)
    contracts.set_defaults(run=_cmd_contracts)

    policy = commands.add_parser("policy", help="inspect the mesh's policies")
    policy_commands = policy.add_subparsers(dest="policy_command", required=True)
    check = policy_commands.add_parser(
        "check", help="explain every decision for one principal and one product"
    )
    check.add_argument("--mesh", required=True)
    check.add_argument("--principal", required=True)
    check.add_argument("--product", required=True, help="a product address, e.g. sales.customer")
    check.set_defaults(run=_cmd_policy_check)

    hashpw = commands.add_parser("hash-password", help="print a bcrypt hash for principals.yaml")
    hashpw.add_argument("--password", help="(default: prompt)")
    hashpw.set_defaults(run=_cmd_hash_password)

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

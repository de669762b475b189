"""TLS and mutual TLS on the Flight endpoint, with certificates the test makes, through ADBC.

The server is configured the way a deployment configures it (``gateway.tls`` in mesh.yaml, or
the CLI flags); the ADBC driver checks the server against the test CA, and under mutual TLS
presents a client certificate. Plaintext clients, clients that do not trust the CA and clients
without an accepted certificate are refused while trusted ones keep being served.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time

import adbc_driver_manager
import pytest

from tests.support.certs import issue, make_ca
from tests.support.mesh import set_gateway_settings
from tests.support.server import connect, running_server
from tests.support.stores import free_port

ROOTS = "adbc.flight.sql.client_option.tls_root_certs"
CLIENT_CERT = "adbc.flight.sql.client_option.mtls_cert_chain"
CLIENT_KEY = "adbc.flight.sql.client_option.mtls_private_key"


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """A CA, a server certificate for localhost, a client certificate of that CA and one of
    another CA, written under a directory."""
    directory = tmp_path_factory.mktemp("pki")
    ca, ca_cert, ca_key = make_ca()
    (directory / "ca.pem").write_bytes(ca.cert)
    issue(ca_cert, ca_key, "localhost", server=True).write(directory, "server")
    client = issue(ca_cert, ca_key, "analyst", server=False)
    _, rogue_cert, rogue_key = make_ca("someone else's CA")
    rogue = issue(rogue_cert, rogue_key, "analyst", server=False)
    return {"dir": directory, "ca": ca, "client": client, "rogue": rogue}


@pytest.fixture
def tls_mesh(demo_mesh, tmp_path, pki):
    """The demo mesh with ``gateway.tls`` set (the certificate files beside mesh.yaml)."""
    root = tmp_path / "mesh"
    shutil.copytree(demo_mesh, root)
    for name in ("server.pem", "server.key", "ca.pem"):
        shutil.copy(pki["dir"] / name, root / name)

    def configure(*, mutual: bool):
        tls = {"cert": "server.pem", "key": "server.key"}
        set_gateway_settings(root, {"tls": {**tls, "client_ca": "ca.pem"} if mutual else tls})
        return root

    return configure


def _count(uri: str, **options: str) -> int:
    with connect(uri, "analyst", **options) as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM reference.nation")
        return cur.fetchone()[0]


def _refused(uri: str, **options: str) -> str:
    with pytest.raises(adbc_driver_manager.Error) as caught:
        _count(uri, **options)
    return str(caught.value)


def test_tls_serves_clients_that_trust_the_ca_and_refuses_plaintext(tls_mesh, pki):
    with running_server(tls_mesh(mutual=False)) as (uri, _):
        assert uri.startswith("grpc+tls://")
        assert _count(uri, **{ROOTS: pki["ca"].cert.decode()}) == 25
        plaintext = uri.replace("grpc+tls://", "grpc://")
        assert "Unavailable" in _refused(plaintext)
        untrusted = _refused(uri)  # the system roots do not know the test CA
        assert "certificate" in untrusted.lower() or "Unavailable" in untrusted
        assert _count(uri, **{ROOTS: pki["ca"].cert.decode()}) == 25, "still serving"


def test_mutual_tls_accepts_only_client_certificates_the_ca_signed(tls_mesh, pki):
    roots = {ROOTS: pki["ca"].cert.decode()}
    with running_server(tls_mesh(mutual=True)) as (uri, _):
        client, rogue = pki["client"], pki["rogue"]
        trusted = {**roots, CLIENT_CERT: client.cert.decode(), CLIENT_KEY: client.key.decode()}
        assert _count(uri, **trusted) == 25
        assert "Unavailable" in _refused(uri, **roots), "no client certificate"
        stranger = {**roots, CLIENT_CERT: rogue.cert.decode(), CLIENT_KEY: rogue.key.decode()}
        assert "Unavailable" in _refused(uri, **stranger), "a certificate of another CA"
        assert _count(uri, **trusted) == 25, "still serving"


def test_the_cli_serves_tls_with_its_flags(demo_mesh, pki):
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gateway.cli",
            "serve",
            "--mesh",
            str(demo_mesh),
            "--port",
            str(port),
            "--tls-cert",
            str(pki["dir"] / "server.pem"),
            "--tls-key",
            str(pki["dir"] / "server.key"),
            "--http-port",
            "0",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        banner = next(line for line in process.stdout if "serving" in line)
        assert f"grpc+tls://127.0.0.1:{port}" in banner, banner
        uri = f"grpc+tls://localhost:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                assert _count(uri, **{ROOTS: pki["ca"].cert.decode()}) == 25
                break
            except adbc_driver_manager.Error:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
    finally:
        process.terminate()
        process.wait(timeout=30)


@pytest.fixture(scope="module")
def jdbc(tmp_path_factory):
    from tests.support.jdbc import Jdbc, compile_probe, driver_jar

    jar = driver_jar()
    directory = tmp_path_factory.mktemp("jdbc")
    client = Jdbc(jar, compile_probe(jar, directory), log_path=directory / "jvm.log")
    yield client
    client.close()


def _jdbc_count(jdbc, url: str, **properties: str) -> str:
    from tests.support.jdbc import rows

    conn = jdbc.connect(url, user="analyst", password="analyst", **properties)
    try:
        return rows(conn.query("SELECT count(*) FROM reference.nation"))[0][0]
    finally:
        conn.close()


def test_jdbc_over_tls_and_mutual_tls(tls_mesh, pki, jdbc, tmp_path):
    from tests.support.jdbc import JdbcError

    client_cert, client_key = pki["client"].write(tmp_path, "client")
    ca = pki["dir"] / "ca.pem"
    with running_server(tls_mesh(mutual=True)) as (uri, _):
        host_port = uri.removeprefix("grpc+tls://").replace("127.0.0.1", "localhost")
        url = f"jdbc:arrow-flight-sql://{host_port}/?useEncryption=true&tlsRootCerts={ca}"
        mutual = {"clientCertificate": str(client_cert), "clientKey": str(client_key)}
        assert _jdbc_count(jdbc, url, **mutual) == "25"
        with pytest.raises(JdbcError):
            _jdbc_count(jdbc, url)  # no client certificate
        plaintext = f"jdbc:arrow-flight-sql://{host_port}/?useEncryption=false"
        with pytest.raises(JdbcError):
            _jdbc_count(jdbc, plaintext)
        assert _jdbc_count(jdbc, url, **mutual) == "25", "still serving"

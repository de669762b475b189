"""TLS on the Flight endpoint, and optionally mutual TLS (client certificates checked against a CA).

::

    gateway:
      tls:
        cert: tls/server.pem        # the server's certificate chain (PEM), relative to the mesh
        key: tls/server.key         # its private key (PEM); or key_env: a variable holding it
        client_ca: tls/clients.pem  # optional: only clients with a certificate this CA signed

Clients then connect to ``grpc+tls://host:port``. gRPC checks client certificates during the
TLS handshake, so a client without one never reaches a handler. (pyarrow.flight shows handlers
no peer certificate, so the certificate's subject cannot name the principal; clients still
authenticate with a password or a token.)
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from gateway.errors import MeshConfigError


class TlsSettings(BaseModel):
    """``gateway.tls`` in mesh.yaml (or ``--tls-cert``/``--tls-key``/``--tls-client-ca``)."""

    model_config = ConfigDict(extra="forbid")

    cert: str
    """The server's certificate chain, PEM."""
    key: str | None = None
    """Its private key, PEM (a file; keep it out of git) ..."""
    key_env: str | None = None
    """... or the environment variable that holds the PEM text."""
    client_ca: str | None = None
    """Require client certificates signed by these CA certificates (mutual TLS)."""


def _read(path: str, base: Path, what: str) -> bytes:
    file = (base / path).expanduser()
    try:
        return file.read_bytes()
    except OSError as exc:
        raise MeshConfigError(
            [f"gateway.tls.{what}: cannot read {file}: {exc.strerror}; check the path"]
        ) from None


def server_tls_options(tls: TlsSettings, base: Path) -> dict:
    """The keyword arguments of ``pyarrow.flight.FlightServerBase`` that turn TLS on."""
    cert = _read(tls.cert, base, "cert")
    if tls.key_env is not None:
        key_text = os.environ.get(tls.key_env)
        if not key_text:
            raise MeshConfigError(
                [f"gateway.tls.key_env: the variable {tls.key_env} is not set; set it to the key"]
            )
        key = key_text.encode()
    elif tls.key is not None:
        key = _read(tls.key, base, "key")
    else:
        raise MeshConfigError(["gateway.tls: give `key` (a file) or `key_env` (a variable)"])
    options: dict = {"tls_certificates": [(cert, key)]}
    if tls.client_ca is not None:
        options["verify_client"] = True
        options["root_certificates"] = _read(tls.client_ca, base, "client_ca")
    return options


def tls_location(location: str) -> str:
    """``location`` with the scheme a TLS endpoint has: ``grpc+tls://``."""
    scheme, sep, rest = location.partition("://")
    return f"grpc+tls://{rest}" if sep and scheme in ("grpc", "grpc+tcp") else location

"""Bearer JWTs from an identity provider, through the real server and the ADBC driver.

Tokens are signed with keys the test makes (RS256 PEM public key, ES256 in a JWKS file, HS256
with a shared secret); the principal, its roles and attributes come from the claims and the
demo's policies apply to them. Every failed check is UNAUTHENTICATED naming the check, and Basic
credentials keep working beside tokens.
"""

from __future__ import annotations

import json
import shutil
import time

import adbc_driver_flightsql.dbapi as flightsql
import adbc_driver_manager
import jwt
import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from tests.support.mesh import set_gateway_settings
from tests.support.server import connect, running_server

ISSUER = "https://login.acme.example/"
AUDIENCE = "meshgate"
HEADER = "adbc.flight.sql.authorization_header"


def _public_pem(key) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


@pytest.fixture(scope="module")
def keys():
    return {
        "rsa": rsa.generate_private_key(public_exponent=65537, key_size=2048),
        "ec": ec.generate_private_key(ec.SECP256R1()),
        "other_rsa": rsa.generate_private_key(public_exponent=65537, key_size=2048),
    }


def _mesh(demo_mesh, tmp_path, provider: str):
    root = tmp_path / "mesh"
    shutil.copytree(demo_mesh, root)
    settings = {
        "issuer": ISSUER,
        "audience": AUDIENCE,
        "roles_claim": "realm_access.roles",
        "attribute_claims": {"region": "region"},
        **yaml.safe_load(provider),
    }
    set_gateway_settings(root, {"identity_provider": settings})
    return root


def _claims(**overrides):
    now = int(time.time())
    claims = {
        "sub": "carol",
        "iss": ISSUER,
        "aud": AUDIENCE,
        "exp": now + 600,
        "iat": now,
        "realm_access": {"roles": ["analyst"]},
    }
    claims.update(overrides)
    return {k: v for k, v in claims.items() if v is not None}


def _with_token(uri: str, token: str):
    return flightsql.connect(uri, db_kwargs={HEADER: f"Bearer {token}"}, autocommit=True)


def _count(uri: str, token: str, sql: str = "SELECT count(*) FROM sales.customer") -> int:
    with _with_token(uri, token) as conn, conn.cursor() as cur:
        cur.execute(sql)
        return cur.fetchone()[0]


def _refusal(uri: str, token: str) -> str:
    with pytest.raises(adbc_driver_manager.Error) as caught:
        _count(uri, token)
    text = str(caught.value)
    assert "(Unauthenticated;" in text, text
    return text


@pytest.fixture
def rs256_server(demo_mesh, tmp_path, keys):
    (tmp_path / "idp.pem").write_text(_public_pem(keys["rsa"]))
    root = _mesh(demo_mesh, tmp_path, f"algorithms: [RS256]\npublic_key: {tmp_path / 'idp.pem'}")
    with running_server(root) as (uri, gateway):
        yield uri, gateway


def test_a_valid_token_names_the_principal_its_roles_and_attributes(rs256_server, keys):
    uri, _ = rs256_server
    everyone = _count(uri, jwt.encode(_claims(), keys["rsa"], algorithm="RS256"))
    european = jwt.encode(_claims(sub="dave", region="EUROPE"), keys["rsa"], algorithm="RS256")
    in_europe = _count(uri, european)
    assert 0 < in_europe < everyone, "the region claim drives the row filter"
    guest = jwt.encode(_claims(realm_access={"roles": ["guest"]}), keys["rsa"], algorithm="RS256")
    with pytest.raises(adbc_driver_manager.Error) as denied:
        _count(uri, guest)
    assert "(PermissionDenied;" in str(denied.value) or "(NotFound;" in str(denied.value)


@pytest.mark.parametrize(
    ("claims", "signer", "check"),
    [
        ({"exp": int(time.time()) - 3600}, "rsa", "expiry check failed"),
        ({"aud": "another-service"}, "rsa", "audience check failed"),
        ({"iss": "https://evil.example/"}, "rsa", "issuer check failed"),
        ({}, "other_rsa", "signature check failed"),
        ({"aud": None}, "rsa", "required claim check failed"),
    ],
    ids=["expired", "wrong audience", "wrong issuer", "forged", "no audience"],
)
def test_bad_tokens_are_unauthenticated_naming_the_check(rs256_server, keys, claims, signer, check):
    uri, _ = rs256_server
    token = jwt.encode(_claims(**claims), keys[signer], algorithm="RS256")
    text = _refusal(uri, token)
    assert check in text, text
    assert _count(uri, jwt.encode(_claims(), keys["rsa"], algorithm="RS256")) > 0, "still serving"


def test_an_unaccepted_algorithm_and_garbage_are_refused(rs256_server, keys):
    uri, _ = rs256_server
    hs = jwt.encode(_claims(), "a-shared-secret-of-some-length-32b", algorithm="HS256")
    assert "algorithm check failed" in _refusal(uri, hs)
    assert "cannot be read as a JWT" in _refusal(uri, "not.a.jwt")


def test_basic_auth_still_works_beside_tokens(rs256_server):
    uri, _ = rs256_server
    with connect(uri, "analyst") as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM reference.nation")
        assert cur.fetchone() == (25,)


def test_es256_keys_from_a_jwks_file_chosen_by_kid(demo_mesh, tmp_path, keys):
    jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(keys["ec"].public_key()))
    other = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(keys["other_rsa"].public_key()))
    jwks = {"keys": [{**jwk, "kid": "ec-1", "alg": "ES256"}, {**other, "kid": "rsa-9"}]}
    (tmp_path / "jwks.json").write_text(json.dumps(jwks))
    root = _mesh(demo_mesh, tmp_path, f"algorithms: [ES256, RS256]\njwks: {tmp_path / 'jwks.json'}")
    with running_server(root) as (uri, _):
        token = jwt.encode(_claims(), keys["ec"], algorithm="ES256", headers={"kid": "ec-1"})
        assert _count(uri, token) > 0
        wrong_kid = jwt.encode(_claims(), keys["ec"], algorithm="ES256", headers={"kid": "rsa-9"})
        assert "signature check failed" in _refusal(uri, wrong_kid)
        unknown = jwt.encode(_claims(), keys["ec"], algorithm="ES256", headers={"kid": "nope"})
        assert "not one the mesh trusts" in _refusal(uri, unknown)


def test_hs256_with_a_shared_secret(demo_mesh, tmp_path, monkeypatch):
    monkeypatch.setenv("MESHGATE_TEST_JWT_SECRET", "s3cret-s3cret-s3cret-s3cret-s3cret")
    root = _mesh(demo_mesh, tmp_path, "algorithms: [HS256]\nsecret_env: MESHGATE_TEST_JWT_SECRET")
    with running_server(root) as (uri, _):
        good = jwt.encode(_claims(), "s3cret-s3cret-s3cret-s3cret-s3cret", algorithm="HS256")
        assert _count(uri, good) > 0
        forged = jwt.encode(_claims(), "another-secret-another-secret-xx", algorithm="HS256")
        assert "signature check failed" in _refusal(uri, forged)


def test_jdbc_sends_a_jwt_as_its_token_property(rs256_server, keys, tmp_path):
    from tests.support.jdbc import Jdbc, JdbcError, compile_probe, driver_jar, rows

    uri, _ = rs256_server
    jar = driver_jar()
    jdbc = Jdbc(jar, compile_probe(jar, tmp_path), log_path=tmp_path / "jvm.log")
    url = f"jdbc:arrow-flight-sql://{uri.removeprefix('grpc://')}/?useEncryption=false"
    try:
        token = jwt.encode(_claims(), keys["rsa"], algorithm="RS256")
        conn = jdbc.connect(url, token=token)
        try:
            assert rows(conn.query("SELECT count(*) FROM reference.nation")) == [["25"]]
        finally:
            conn.close()
        expired = jwt.encode(_claims(exp=int(time.time()) - 3600), keys["rsa"], algorithm="RS256")
        with pytest.raises(JdbcError) as caught:
            jdbc.connect(url, token=expired).query("SELECT 1")
        assert "expiry check failed" in caught.value.everything_shown
    finally:
        jdbc.close()

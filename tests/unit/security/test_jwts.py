"""llmopt.security.jwts: JWTs against HS256 secrets, EC/RSA public keys and JWKS files."""

from __future__ import annotations

import json
import time
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from llmopt import errors
from llmopt.security import AuthConfigError, Authenticator, Principal
from llmopt.security.jwts import LEEWAY_S, JwtVerifier

SECRET = b"an HS256 secret of at least thirty-two bytes"


def claims(**extra: object) -> dict[str, object]:
    return {"sub": "svc", "exp": int(time.time()) + 300, "scope": "read decide", **extra}


def public_pem(private: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> bytes:
    return private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


@pytest.fixture
def hs256(tmp_path: Path) -> JwtVerifier:
    path = tmp_path / "secret"
    path.write_bytes(SECRET + b"\n")
    return JwtVerifier.from_file(path, issuer="https://issuer", audience="llmopt")


def test_hs256_valid(hs256: JwtVerifier):
    token = jwt.encode(claims(iss="https://issuer", aud="llmopt"), SECRET, "HS256")
    assert hs256.verify(token) == Principal("svc", frozenset({"read", "decide"}), "jwt")


def test_the_scopes_claim_as_a_list(hs256: JwtVerifier):
    payload = claims(iss="https://issuer", aud="llmopt", scopes=["admin"])
    del payload["scope"]
    assert hs256.verify(jwt.encode(payload, SECRET, "HS256")).scopes == {"admin"}


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (
            claims(iss="https://issuer", aud="llmopt", exp=int(time.time()) - LEEWAY_S - 60),
            "expired token",
        ),
        (claims(iss="https://issuer", aud="other"), "token audience 'other' is not 'llmopt'"),
        (claims(iss="https://evil", aud="llmopt"), "token issuer 'https://evil' is not"),
        ({"sub": "svc", "iss": "https://issuer", "aud": "llmopt"}, "lacks the 'exp' claim"),
    ],
)
def test_bad_claims_are_unauthenticated_saying_why(hs256: JwtVerifier, payload, message):
    token = jwt.encode(payload, SECRET, "HS256")
    with pytest.raises(errors.Unauthenticated) as caught:
        hs256.verify(token)
    assert message in str(caught.value)
    assert token not in str(caught.value)


def test_expiry_has_leeway(hs256: JwtVerifier):
    payload = claims(iss="https://issuer", aud="llmopt", exp=int(time.time()) - LEEWAY_S // 2)
    assert hs256.verify(jwt.encode(payload, SECRET, "HS256")).name == "svc"


def test_the_wrong_key_is_unknown(hs256: JwtVerifier):
    token = jwt.encode(claims(iss="https://issuer", aud="llmopt"), SECRET + b"!", "HS256")
    with pytest.raises(errors.Unauthenticated, match=r"^unknown token$"):
        hs256.verify(token)


def test_es256_public_key(tmp_path: Path):
    private = ec.generate_private_key(ec.SECP256R1())
    path = tmp_path / "key.pem"
    path.write_bytes(public_pem(private))
    verifier = JwtVerifier.from_file(path)
    assert verifier.verify(jwt.encode(claims(), private, "ES256")).name == "svc"
    other = ec.generate_private_key(ec.SECP256R1())
    with pytest.raises(errors.Unauthenticated, match="unknown token"):
        verifier.verify(jwt.encode(claims(), other, "ES256"))


def test_the_algorithm_is_pinned_by_the_key(tmp_path: Path):
    """An HS256 token signed with the public key's bytes (the classic confusion) is refused."""
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    path = tmp_path / "key.pem"
    path.write_bytes(public_pem(private))
    verifier = JwtVerifier.from_file(path)
    assert verifier.verify(jwt.encode(claims(), private, "RS256")).name == "svc"
    header = {"alg": "HS256", "typ": "JWT"}
    body = json.dumps(claims()).encode()
    algorithm = jwt.algorithms.HMACAlgorithm(jwt.algorithms.HMACAlgorithm.SHA256)
    signing_input = b".".join(
        jwt.utils.base64url_encode(part) for part in (json.dumps(header).encode(), body)
    )
    signature = algorithm.sign(signing_input, public_pem(private))
    token = (signing_input + b"." + jwt.utils.base64url_encode(signature)).decode()
    with pytest.raises(errors.Unauthenticated, match="unknown token"):
        verifier.verify(token)


def test_jwks_file_by_key_id(tmp_path: Path):
    first, second = (ec.generate_private_key(ec.SECP256R1()) for _ in range(2))
    keys = []
    for kid, private in (("k1", first), ("k2", second)):
        jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(private.public_key()))
        keys.append({**jwk, "kid": kid, "alg": "ES256", "use": "sig"})
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps({"keys": keys}))
    verifier = JwtVerifier.from_file(path)
    token = jwt.encode(claims(), second, "ES256", headers={"kid": "k2"})
    assert verifier.verify(token).name == "svc"
    wrong = jwt.encode(claims(), first, "ES256", headers={"kid": "k2"})
    with pytest.raises(errors.Unauthenticated, match="unknown token"):
        verifier.verify(wrong)
    with pytest.raises(errors.Unauthenticated, match="no key for its key id"):
        verifier.verify(jwt.encode(claims(), first, "ES256", headers={"kid": "k9"}))


def test_a_private_key_file_is_refused(tmp_path: Path):
    private = ec.generate_private_key(ec.SECP256R1())
    path = tmp_path / "private.pem"
    path.write_bytes(
        private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    with pytest.raises(AuthConfigError, match="private key"):
        JwtVerifier.from_file(path)


def test_an_authenticator_with_jwts_only(tmp_path: Path):
    path = tmp_path / "secret"
    path.write_bytes(SECRET)
    auth = Authenticator.from_files(None, path)
    assert auth is not None
    token = jwt.encode(claims(), SECRET, "HS256")
    assert auth.authenticate({"authorization": f"Bearer {token}"}, None).via == "jwt"
    with pytest.raises(errors.Unauthenticated, match=r"^unknown token$"):
        auth.authenticate({"authorization": "Bearer opaque"}, None)

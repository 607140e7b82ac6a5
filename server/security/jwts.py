"""JWT bearer tokens, checked with PyJWT against one key file.

The key file is one of: a JWKS JSON file (``{"keys": [...]}``, a key picked by the token's
``kid``), a PEM public key (RSA: RS256; EC P-256: ES256, P-384: ES384, P-521: ES512), or anything
else, taken as an HS256 shared secret (the file's bytes, a trailing newline dropped). The
algorithm is pinned by the key, never taken from the token. ``exp`` and ``sub`` are required;
``iss`` and ``aud`` are checked when configured; clocks may differ by ``LEEWAY_S``. The principal
is ``sub``; its scopes are the ``scope`` claim (space separated) or the ``scopes`` claim (a list
or a space separated string).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from llmopt import errors
from llmopt.security.principal import Principal
from llmopt.security.tokens import AuthConfigError

LEEWAY_S = 30
EC_ALGORITHMS = {"secp256r1": "ES256", "secp384r1": "ES384", "secp521r1": "ES512"}


def looks_like_jwt(token: str) -> bool:
    """Three base64url segments: header, claims, signature."""
    return token.count(".") == 2 and not token.startswith(".")


@dataclass(frozen=True)
class _Key:
    key: Any
    algorithm: str


def _pem_key(data: bytes, path: Path) -> _Key:
    try:
        public = serialization.load_pem_public_key(data)
    except ValueError:
        try:
            serialization.load_pem_private_key(data, password=None)
        except (ValueError, TypeError):
            raise AuthConfigError(f"JWT key {path}: not a PEM public key") from None
        raise AuthConfigError(
            f"JWT key {path}: a private key; give the server the public key only"
        ) from None
    if isinstance(public, rsa.RSAPublicKey):
        return _Key(public, "RS256")
    if isinstance(public, ec.EllipticCurvePublicKey) and public.curve.name in EC_ALGORITHMS:
        return _Key(public, EC_ALGORITHMS[public.curve.name])
    raise AuthConfigError(f"JWT key {path}: expected an RSA or EC (P-256/384/521) public key")


def _jwks(data: bytes, path: Path) -> dict[str, _Key]:
    try:
        keyset = jwt.PyJWKSet.from_json(data.decode())
    except (jwt.PyJWTError, ValueError, KeyError) as exc:
        raise AuthConfigError(f"JWT key {path}: not a usable JWKS file: {exc}") from None
    keys: dict[str, _Key] = {}
    for jwk in keyset.keys:
        keys[jwk.key_id or ""] = _Key(jwk.key, jwk.algorithm_name)
    return keys


class JwtVerifier:
    """Checks JWTs against the key file's key(s), issuer and audience."""

    def __init__(self, keys: dict[str, _Key], issuer: str = "", audience: str = "") -> None:
        self._keys = keys
        self.issuer = issuer
        self.audience = audience

    @classmethod
    def from_file(cls, path: Path, issuer: str = "", audience: str = "") -> JwtVerifier:
        path = Path(path)
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise AuthConfigError(f"JWT key {path}: cannot be read: {exc}") from None
        stripped = data.strip()
        if stripped.startswith(b"{"):
            try:
                is_jwks = "keys" in json.loads(stripped)
            except ValueError:
                is_jwks = False
            if is_jwks:
                return cls(_jwks(stripped, path), issuer, audience)
        if stripped.startswith(b"-----BEGIN"):
            return cls({"": _pem_key(stripped, path)}, issuer, audience)
        secret = data.rstrip(b"\r\n")
        if not secret:
            raise AuthConfigError(f"JWT key {path}: the HS256 secret is empty")
        return cls({"": _Key(secret, "HS256")}, issuer, audience)

    def _key_for(self, token: str) -> _Key:
        try:
            kid = jwt.get_unverified_header(token).get("kid")
        except jwt.PyJWTError:
            raise errors.Unauthenticated("unknown token") from None
        if kid is not None and kid in self._keys:
            return self._keys[kid]
        if kid is None and len(self._keys) == 1:
            return next(iter(self._keys.values()))
        if kid is None and "" in self._keys:
            return self._keys[""]
        raise errors.Unauthenticated("unknown token: no key for its key id")

    def verify(self, token: str) -> Principal:
        """The principal of a valid ``token``; Unauthenticated saying why otherwise."""
        key = self._key_for(token)
        required = ["exp", "sub"]
        if self.issuer:
            required.append("iss")
        if self.audience:
            required.append("aud")
        try:
            claims = jwt.decode(
                token,
                key.key,
                algorithms=[key.algorithm],
                audience=self.audience or None,
                issuer=self.issuer or None,
                leeway=LEEWAY_S,
                options={"require": required, "verify_aud": bool(self.audience)},
            )
        except jwt.ExpiredSignatureError:
            raise errors.Unauthenticated("expired token") from None
        except jwt.InvalidAudienceError:
            # Raised after the signature verified: the claim is the token's issuer's word.
            aud = _unverified(token).get("aud")
            raise errors.Unauthenticated(
                f"token audience {aud!r} is not {self.audience!r}"
            ) from None
        except jwt.InvalidIssuerError:
            iss = _unverified(token).get("iss")
            raise errors.Unauthenticated(f"token issuer {iss!r} is not {self.issuer!r}") from None
        except jwt.MissingRequiredClaimError as exc:
            raise errors.Unauthenticated(f"token lacks the {exc.claim!r} claim") from None
        except jwt.ImmatureSignatureError:
            raise errors.Unauthenticated("token not valid yet (nbf/iat in the future)") from None
        except jwt.PyJWTError:
            raise errors.Unauthenticated("unknown token") from None
        subject = claims.get("sub")
        if not isinstance(subject, str) or not subject:
            raise errors.Unauthenticated("token 'sub' claim must be a non-empty string")
        return Principal(subject, _scopes_of(claims), "jwt")


def _unverified(token: str) -> dict[str, Any]:
    try:
        return dict(jwt.decode(token, options={"verify_signature": False}))
    except jwt.PyJWTError:
        return {}


def _scopes_of(claims: dict[str, Any]) -> frozenset[str]:
    value = claims.get("scope", claims.get("scopes", ""))
    if isinstance(value, str):
        return frozenset(value.split())
    if isinstance(value, list):
        return frozenset(s for s in value if isinstance(s, str))
    return frozenset()

"""Authentication and authorization of RPCs, without transport: the interceptor hands in the
request's metadata and the client certificate's subject, and gets a Principal or an error.

A bearer token (``authorization: Bearer <token>``) is looked up in the token file by its sha256,
or, when it has a JWT's shape and a JWT key is configured, checked as a JWT. Without a token, a
client certificate (mTLS) whose subject common name has a ``subject:<CN>`` entry in the token
file is the principal. Messages say what is wrong and never echo the token.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from llmopt import errors
from llmopt.security.jwts import JwtVerifier, looks_like_jwt
from llmopt.security.principal import Principal
from llmopt.security.scopes import scope_of
from llmopt.security.tokens import TokenFile, hash_token

MISSING = "missing bearer token (authorization: Bearer <token>)"


class Authenticator:
    """Who is calling (``authenticate``) and whether they may (``authorize``)."""

    def __init__(self, tokens: TokenFile | None, jwts: JwtVerifier | None) -> None:
        self.tokens = tokens
        self.jwts = jwts

    @classmethod
    def from_files(
        cls,
        token_file: Path | None,
        jwt_key: Path | None,
        jwt_issuer: str = "",
        jwt_audience: str = "",
    ) -> Authenticator | None:
        """The authenticator of these files; None when neither is given (auth off).

        Raises ``AuthConfigError`` naming the file (and line) that cannot be used.
        """
        if token_file is None and jwt_key is None:
            return None
        tokens = TokenFile(Path(token_file)) if token_file is not None else None
        jwts = (
            JwtVerifier.from_file(Path(jwt_key), jwt_issuer, jwt_audience)
            if jwt_key is not None
            else None
        )
        return cls(tokens, jwts)

    def authenticate(self, metadata: Mapping[str, str], peer_subject: str | None) -> Principal:
        """The principal of a call; Unauthenticated when it has none we accept."""
        header = metadata.get("authorization")
        if header is not None:
            return self._bearer(header)
        if peer_subject and self.tokens is not None:
            principal = self.tokens.current().by_subject.get(peer_subject)
            if principal is not None:
                return principal
            raise errors.Unauthenticated(
                f"{MISSING}; the client certificate's subject {peer_subject!r} has no "
                "'subject:' entry in the token file"
            )
        raise errors.Unauthenticated(MISSING)

    def _bearer(self, header: str) -> Principal:
        scheme, _, token = header.strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise errors.Unauthenticated(f"{MISSING}: the authorization header is not 'Bearer'")
        if self.tokens is not None:
            # A dict lookup of the sha256: the token itself is never compared byte by byte.
            principal = self.tokens.current().by_hash.get(hash_token(token))
            if principal is not None:
                return principal
        if self.jwts is not None and looks_like_jwt(token):
            return self.jwts.verify(token)
        raise errors.Unauthenticated("unknown token")

    def authorize(self, principal: Principal, method: str) -> None:
        """Nothing when ``principal`` holds the scope ``method`` needs; PermissionDenied naming
        it otherwise. KeyError for a method the scope table does not know."""
        scope = scope_of(method)
        if scope is not None and scope not in principal.scopes:
            raise errors.PermissionDenied(
                f"principal {principal.name!r} lacks scope {scope!r} needed by {method}"
            )

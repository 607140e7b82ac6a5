"""Who is calling and what they may do: principals, the scope of every RPC, tokens and JWTs.

No transport inside: ``llmopt.api.interceptor`` hands metadata and the client certificate's
subject to ``Authenticator`` and sets ``current_principal`` for the handler.
"""

from llmopt.security.auth import Authenticator
from llmopt.security.principal import Principal, current_actor, current_principal
from llmopt.security.scopes import REFLECTION_METHODS, SCOPE_BY_METHOD, SCOPES, scope_of
from llmopt.security.tokens import AuthConfigError, hash_token

__all__ = [
    "REFLECTION_METHODS",
    "SCOPES",
    "SCOPE_BY_METHOD",
    "AuthConfigError",
    "Authenticator",
    "Principal",
    "current_actor",
    "current_principal",
    "hash_token",
    "scope_of",
]

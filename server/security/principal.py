"""Who is calling: the authenticated principal of the RPC being served."""

from __future__ import annotations

import contextvars
from dataclasses import dataclass


@dataclass(frozen=True)
class Principal:
    """An authenticated caller: its name, the scopes it holds, and how it proved who it is
    (``"token"``: the token file, ``"jwt"``, ``"mtls"``: a client certificate's subject)."""

    name: str
    scopes: frozenset[str]
    via: str


current_principal: contextvars.ContextVar[Principal | None] = contextvars.ContextVar(
    "llmopt_current_principal", default=None
)
"""The principal of the RPC this thread serves; set by the interceptor for the handler."""


def current_actor() -> str:
    """The name of the principal being served, "" when none (auth off, or an open RPC)."""
    principal = current_principal.get()
    return principal.name if principal is not None else ""

"""What each service module hands the server: its servicer, ready to register.

Each module in ``llmopt.api`` has ``bind(services) -> ServiceBinding``: it turns the domain
service the composition root built (``llmopt.composition.Services``) into its registered servicer,
and constructs nothing else.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc


@dataclass(frozen=True)
class ServiceBinding:
    name: str
    add_to_server: Callable[[Any, grpc.Server], None]
    servicer: Any


F = TypeVar("F", bound=Callable[..., Any])


def answers_serialized(method: F) -> F:
    """Marks a unary servicer method whose answer is already serialized (bytes): the server's
    interceptor registers it without the generated response serializer."""
    method.answers_serialized = True  # type: ignore[attr-defined]
    return method


def service_name(pb2_module: Any, service: str) -> str:
    """Full name of a service declared in a generated module, e.g. 'llmopt.v1.Registry'."""
    return pb2_module.DESCRIPTOR.services_by_name[service].full_name

"""What each service module hands the server: its servicer, and the domain components it owns."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import grpc
from llmopt.config import Settings
from llmopt.storage import DataDir


class Component(Protocol):
    """A domain part the server owns: warmed before SERVING, closed after draining (in reverse)."""

    def warm_up(self) -> None: ...

    def close(self) -> None: ...


@dataclass
class AppContext:
    """Passed to each service module's ``bind`` in dependency order (see llmopt.app)."""

    settings: Settings
    data_dir: DataDir
    components: list[Component] = field(default_factory=list)
    # Domain objects, set by the module that owns them, read by the ones bound after it.
    registry: Any = None
    features: Any = None
    bandits: Any = None
    inference: Any = None


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

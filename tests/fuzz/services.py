"""Every RPC of every service the server can serve, found from the service descriptors."""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass
from typing import Any

from google.protobuf import message_factory
from google.protobuf.descriptor import MethodDescriptor, ServiceDescriptor
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection_pb2 as reflection_v1alpha_pb2

import llmopt.gen

# Services the server takes from libraries rather than from its own contract.
LIBRARY_DESCRIPTORS = (health_pb2.DESCRIPTOR, reflection_v1alpha_pb2.DESCRIPTOR)


@dataclass(frozen=True)
class Method:
    path: str  # "/package.Service/Method"
    descriptor: MethodDescriptor
    request: type[Any]  # the request message class

    @property
    def client_streaming(self) -> bool:
        return bool(self.descriptor.client_streaming)

    @property
    def server_streaming(self) -> bool:
        return bool(self.descriptor.server_streaming)


def service_descriptors() -> list[ServiceDescriptor]:
    """The services of every generated module of ``llmopt.gen`` and the library services."""
    files = list(LIBRARY_DESCRIPTORS)
    for info in pkgutil.walk_packages(llmopt.gen.__path__, "llmopt.gen."):
        if info.name.endswith("_pb2"):
            files.append(importlib.import_module(info.name).DESCRIPTOR)
    services = {s.full_name: s for f in files for s in f.services_by_name.values()}
    return [services[name] for name in sorted(services)]


def methods() -> list[Method]:
    return [
        Method(f"/{s.full_name}/{m.name}", m, message_factory.GetMessageClass(m.input_type))
        for s in service_descriptors()
        for m in s.methods
    ]

"""llmopt.v1.Registry servicer. RPCs not overridden answer UNIMPLEMENTED (server.api.interceptor)."""

from __future__ import annotations

from server.api.binding import AppContext, ServiceBinding, service_name
from server.gen.llmopt.v1 import registry_pb2, registry_pb2_grpc


class RegistryServicer(registry_pb2_grpc.RegistryServicer):
    pass


def bind(ctx: AppContext) -> ServiceBinding:
    return ServiceBinding(
        service_name(registry_pb2, "Registry"),
        registry_pb2_grpc.add_RegistryServicer_to_server,
        RegistryServicer(),
    )

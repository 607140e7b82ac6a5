"""llmopt.v1.Bandits servicer. RPCs not overridden answer UNIMPLEMENTED (server.api.interceptor)."""

from __future__ import annotations

from server.api.binding import AppContext, ServiceBinding, service_name
from server.gen.llmopt.v1 import bandits_pb2, bandits_pb2_grpc


class BanditsServicer(bandits_pb2_grpc.BanditsServicer):
    pass


def bind(ctx: AppContext) -> ServiceBinding:
    return ServiceBinding(
        service_name(bandits_pb2, "Bandits"),
        bandits_pb2_grpc.add_BanditsServicer_to_server,
        BanditsServicer(),
    )

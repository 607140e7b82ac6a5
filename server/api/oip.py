"""inference.GRPCInferenceService (Open Inference Protocol). RPCs not overridden answer UNIMPLEMENTED."""

from __future__ import annotations

from server.api.binding import AppContext, ServiceBinding, service_name
from server.gen.inference import grpc_service_pb2, grpc_service_pb2_grpc


class OpenInferenceServicer(grpc_service_pb2_grpc.GRPCInferenceServiceServicer):
    pass


def bind(ctx: AppContext) -> ServiceBinding:
    return ServiceBinding(
        service_name(grpc_service_pb2, "GRPCInferenceService"),
        grpc_service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server,
        OpenInferenceServicer(),
    )

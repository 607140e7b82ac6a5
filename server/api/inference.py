"""llmopt.v1.Inference servicer. RPCs not overridden answer UNIMPLEMENTED (server.api.interceptor)."""

from __future__ import annotations

from server.api.binding import AppContext, ServiceBinding, service_name
from server.gen.llmopt.v1 import inference_pb2, inference_pb2_grpc


class InferenceServicer(inference_pb2_grpc.InferenceServicer):
    pass


def bind(ctx: AppContext) -> ServiceBinding:
    return ServiceBinding(
        service_name(inference_pb2, "Inference"),
        inference_pb2_grpc.add_InferenceServicer_to_server,
        InferenceServicer(),
    )

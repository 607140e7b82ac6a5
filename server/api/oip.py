"""inference.GRPCInferenceService: the Open Inference Protocol (KServe V2) over the same engine.

``model_name`` is a registry model; an empty ``model_version`` is routed like Predict (the
``routing_key`` string parameter makes it sticky), a number pins that version. ModelInfer runs
through the same ``Predictor`` as Predict.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from llmopt import __version__
from llmopt.api import convert_inference as conv
from llmopt.api.binding import ServiceBinding, service_name
from llmopt.gen.inference import grpc_service_pb2 as pb
from llmopt.gen.inference import grpc_service_pb2_grpc
from llmopt.inference import InferenceEngine, Predictor

if TYPE_CHECKING:
    from llmopt.composition import Services

SERVER_NAME = "llmopt-server"
EXTENSIONS = ("model_repository",)


class OpenInferenceServicer(grpc_service_pb2_grpc.GRPCInferenceServiceServicer):
    """``predictor`` is the one predict path, shared with Predict."""

    def __init__(self, engine: InferenceEngine, predictor: Predictor) -> None:
        self.engine = engine
        self.predictor = predictor

    def ServerLive(self, request, context):  # type: ignore[no-untyped-def]
        return pb.ServerLiveResponse(live=True)

    def ServerReady(self, request, context):  # type: ignore[no-untyped-def]
        return pb.ServerReadyResponse(ready=self.engine.warm)

    def ModelReady(self, request, context):  # type: ignore[no-untyped-def]
        version = conv.parse_version(request.version, "version")
        return pb.ModelReadyResponse(ready=self.engine.is_ready(request.name, version))

    def ServerMetadata(self, request, context):  # type: ignore[no-untyped-def]
        return pb.ServerMetadataResponse(
            name=SERVER_NAME, version=__version__, extensions=EXTENSIONS
        )

    def ModelMetadata(self, request, context):  # type: ignore[no-untyped-def]
        version = conv.parse_version(request.version, "version")
        return conv.to_model_metadata(self.engine.describe(request.name, version))

    def ModelInfer(self, request, context):  # type: ignore[no-untyped-def]
        call = conv.from_infer_request(request)
        prediction = self.predictor.predict(
            call.model,
            call.inputs,
            version=call.version,
            output_names=call.output_names,
            routing_key=call.routing_key,
        )
        return conv.to_infer_response(prediction, call.id)

    def RepositoryIndex(self, request, context):  # type: ignore[no-untyped-def]
        return conv.to_repository_index(self.engine.index(), request.ready)


def bind(services: Services) -> ServiceBinding:
    return ServiceBinding(
        service_name(pb, "GRPCInferenceService"),
        grpc_service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server,
        OpenInferenceServicer(services.inference, services.predictor),
    )

"""inference.GRPCInferenceService: the Open Inference Protocol (KServe V2) over the same engine,
with Triton's extensions: model configuration, statistics, the model repository and streaming.

``model_name`` is a registry model; an empty ``model_version`` is routed like Predict (the
``routing_key`` string parameter makes it sticky), a number pins that version. ModelInfer and
each message of ModelStreamInfer run through the same ``Predictor`` as Predict.

A call naming a model the registry does not have answers NOT_FOUND in Triton's words ("Request
for unknown model: 'NAME' is not found"), which clients match on. With a model repository
(``Services.repository``), RepositoryModelLoad reads the model from it again first and
RepositoryIndex lists the models it could not read.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING

from llmopt import __version__, errors
from llmopt.api import convert_inference as conv
from llmopt.api.binding import ServiceBinding, service_name
from llmopt.api.convert import deadline_of
from llmopt.api.errors import status_of
from llmopt.gen.inference import grpc_service_pb2 as pb
from llmopt.gen.inference import grpc_service_pb2_grpc
from llmopt.inference import IndexEntry, InferenceEngine, Predictor
from llmopt.ports import ModelRepositoryControl

if TYPE_CHECKING:
    from llmopt.composition import Services

SERVER_NAME = "llmopt-server"
# Exactly the extensions served: the repository calls, ModelConfig, ModelStatistics.
EXTENSIONS = ("model_repository", "model_configuration", "statistics")
STREAM_INFER = "/inference.GRPCInferenceService/ModelStreamInfer"


def unknown_model(name: str) -> errors.NotFound:
    """Triton's wording for a model it does not have (tritonclient users match on it)."""
    return errors.NotFound(f"Request for unknown model: '{name}' is not found")


class OpenInferenceServicer(grpc_service_pb2_grpc.GRPCInferenceServiceServicer):
    """``predictor`` is the one predict path, shared with Predict; ``repository`` (optional) is
    the model repository directory, with ``load(model)`` and ``problems()``."""

    def __init__(
        self,
        engine: InferenceEngine,
        predictor: Predictor,
        repository: ModelRepositoryControl | None = None,
    ) -> None:
        self.engine = engine
        self.predictor = predictor
        self.repository = repository

    @contextlib.contextmanager
    def _naming(self, model: str) -> Iterator[None]:
        """Turn a NotFound of a model the registry lacks into Triton's unknown-model answer (a
        NotFound of a version of a known model passes unchanged)."""
        try:
            yield
        except errors.NotFound:
            if model and not self.engine.knows(model):
                raise unknown_model(model) from None
            raise

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
        with self._naming(request.name):
            return conv.to_model_metadata(self.engine.describe(request.name, version))

    def ModelConfig(self, request, context):  # type: ignore[no-untyped-def]
        version = conv.parse_version(request.version, "version")
        with self._naming(request.name):
            desc = self.engine.describe(request.name, version)
            return conv.to_model_config(desc, self.engine.batching(request.name))

    def ModelStatistics(self, request, context):  # type: ignore[no-untyped-def]
        version = conv.parse_version(request.version, "version")
        with self._naming(request.name):
            stats = self.engine.statistics(request.name, version)
        return conv.to_statistics_response(stats)

    def ModelInfer(self, request, context):  # type: ignore[no-untyped-def]
        return self._infer(request, deadline_of(context))

    def _infer(
        self, request: pb.ModelInferRequest, deadline: float | None = None
    ) -> pb.ModelInferResponse:
        call = conv.from_infer_request(request)
        with self._naming(call.model):
            prediction = self.predictor.predict(
                call.model,
                call.inputs,
                version=call.version,
                output_names=call.output_names,
                routing_key=call.routing_key,
                deadline=deadline,
            )
        return conv.to_infer_response(prediction, call.id)

    def ModelStreamInfer(self, request_iterator, context):  # type: ignore[no-untyped-def]
        """One answer per request, in order: its response, or its error message (the stream
        goes on)."""
        deadline = deadline_of(context)
        for request in request_iterator:
            try:
                response = self._infer(request, deadline)
            except Exception as exc:
                _, message = status_of(exc, f"{STREAM_INFER} request {request.id!r}")
                error = pb.ModelStreamInferResponse(error_message=message)
                error.infer_response.id = request.id
                error.infer_response.model_name = request.model_name
                error.infer_response.model_version = request.model_version
                yield error
                continue
            yield pb.ModelStreamInferResponse(infer_response=response)

    def RepositoryIndex(self, request, context):  # type: ignore[no-untyped-def]
        entries = self.engine.index()
        if self.repository is not None:
            entries += [
                IndexEntry(name, 0, "UNAVAILABLE", reason)
                for name, reason in sorted(self.repository.problems().items())
            ]
        return conv.to_repository_index(entries, request.ready)

    def RepositoryModelLoad(self, request, context):  # type: ignore[no-untyped-def]
        name = request.model_name
        if not name:
            raise errors.invalid("model_name", name, "a model name")
        if self.repository is not None:
            self.repository.load(name)
        with self._naming(name):
            self.engine.load(name)
        return pb.RepositoryModelLoadResponse()

    def RepositoryModelUnload(self, request, context):  # type: ignore[no-untyped-def]
        name = request.model_name
        if not name:
            raise errors.invalid("model_name", name, "a model name")
        with self._naming(name):
            self.engine.unload(name)
        return pb.RepositoryModelUnloadResponse()


def bind(services: Services) -> ServiceBinding:
    return ServiceBinding(
        service_name(pb, "GRPCInferenceService"),
        grpc_service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server,
        OpenInferenceServicer(services.inference, services.predictor, services.repository),
    )

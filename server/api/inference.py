"""llmopt.v1.Inference servicer: converts messages, calls ``llmopt.inference``, converts back."""

from __future__ import annotations

import logging
import uuid
from typing import Any

import grpc
from llmopt import errors
from llmopt.api import convert_inference as conv
from llmopt.api.binding import AppContext, ServiceBinding, answers_serialized, service_name
from llmopt.api.errors import status_for
from llmopt.gen.llmopt.v1 import inference_pb2, inference_pb2_grpc
from llmopt.inference import (
    MIGRATIONS,
    EngineConfig,
    InferenceEngine,
    Prediction,
    SessionConfig,
    TrafficPolicyStore,
)
from llmopt.storage import Database

log = logging.getLogger("llmopt.rpc.inference")


class InferenceServicer(inference_pb2_grpc.InferenceServicer):
    def __init__(self, engine: InferenceEngine, features: Any = None) -> None:
        self.engine = engine
        self.features = features  # llmopt.features.FeatureService: vectors for feature_set

    @answers_serialized
    def Predict(self, request, context):  # type: ignore[no-untyped-def]
        """Answers a serialized PredictResponse (see ``convert_inference.predict_answer``)."""
        return conv.predict_answer(self._predict(request), request.id)

    def _predict(self, request: inference_pb2.PredictRequest) -> Prediction:
        call = conv.from_predict_request(request)
        row = None
        if not call.inputs:  # a prediction from request facts (tensors are never empty)
            if self.features is None:
                raise errors.NotImplementedYet("feature_set: no feature service in this server")
            row = self.features.vector(
                request.feature_set, conv.from_predict_context(request), list(request.entity_ids)
            ).values
        return self.engine.predict(
            call.model,
            call.inputs,
            version=call.version,
            alias=call.alias,
            output_names=call.output_names,
            routing_key=call.routing_key,
            row=row,
        )

    def PredictStream(self, request_iterator, context):  # type: ignore[no-untyped-def]
        """One answer per message, in order; a bad message gets an error answer, the stream goes
        on."""
        for request in request_iterator:
            yield self._answer(request)

    def _answer(self, request: inference_pb2.PredictRequest) -> inference_pb2.PredictResponse:
        try:
            return conv.to_predict_response(self._predict(request), request.id)
        except errors.LLMOptError as exc:
            code, message = status_for(exc), str(exc)
        except Exception as exc:
            request_id = uuid.uuid4().hex
            log.error(
                "PredictStream message %r failed, request id %s",
                request.id,
                request_id,
                exc_info=exc,
            )
            code = grpc.StatusCode.INTERNAL
            message = f"internal error (request id {request_id}); the server logged the details"
        return inference_pb2.PredictResponse(
            id=request.id,
            model=request.model,
            error=inference_pb2.PredictError(code=code.value[0], message=message),
        )

    def SetTrafficPolicy(self, request, context):  # type: ignore[no-untyped-def]
        policy = self.engine.set_policy(conv.from_traffic_policy(request.policy))
        return conv.to_traffic_policy(policy)

    def GetTrafficPolicy(self, request, context):  # type: ignore[no-untyped-def]
        return conv.to_traffic_policy(self.engine.get_policy(request.model))

    def GetModelStats(self, request, context):  # type: ignore[no-untyped-def]
        return conv.to_model_stats(self.engine.stats(request.model))


class InferenceComponent:
    """The engine and its policy database, as the server warms and closes them."""

    def __init__(self, engine: InferenceEngine, db: Database) -> None:
        self.engine = engine
        self.db = db

    def warm_up(self) -> None:
        self.engine.warm_up()

    def close(self) -> None:
        try:
            self.engine.close()
        finally:
            self.db.close()


def engine_config(ctx: AppContext) -> EngineConfig:
    s = ctx.settings
    return EngineConfig(
        session=SessionConfig(
            intra_op_threads=s.onnx_intra_op_threads,
            inter_op_threads=s.onnx_inter_op_threads,
            providers=tuple(s.onnx_providers.split(",")),
        ),
        max_loaded_models=s.max_loaded_models,
        idle_seconds=s.model_idle_seconds,
        shadow_queue_size=s.shadow_queue_size,
    )


def bind(ctx: AppContext) -> ServiceBinding:
    if ctx.registry is None:
        raise RuntimeError("llmopt.api.inference binds after llmopt.api.registry")
    folder = ctx.data_dir.path("inference")
    folder.mkdir(parents=True, exist_ok=True)
    config = engine_config(ctx)
    db = Database(
        folder / "inference.db", migrations=MIGRATIONS, synchronous=ctx.settings.sqlite_sync
    )
    try:
        engine = InferenceEngine(ctx.registry, TrafficPolicyStore(db), config)
    except BaseException:
        db.close()
        raise
    ctx.inference = engine
    ctx.components.append(InferenceComponent(engine, db))
    return ServiceBinding(
        service_name(inference_pb2, "Inference"),
        inference_pb2_grpc.add_InferenceServicer_to_server,
        InferenceServicer(engine, ctx.features),
    )

"""llmopt.v1.Inference servicer: converts messages, calls ``llmopt.inference``, converts back."""

from __future__ import annotations

from typing import TYPE_CHECKING

from llmopt import errors
from llmopt.api import convert_inference as conv
from llmopt.api.binding import ServiceBinding, answers_serialized, service_name
from llmopt.api.convert import deadline_of
from llmopt.api.errors import status_of
from llmopt.gen.llmopt.v1 import inference_pb2, inference_pb2_grpc
from llmopt.inference import InferenceEngine, Prediction, Predictor
from llmopt.inference.explain import Explainer

if TYPE_CHECKING:
    from llmopt.composition import Services

PREDICT_STREAM = f"/{service_name(inference_pb2, 'Inference')}/PredictStream"


class InferenceServicer(inference_pb2_grpc.InferenceServicer):
    """``predictor`` is the one predict path (shared with ModelInfer); ``engine`` answers the
    traffic policy and statistics calls; ``explainer`` Explain and GetFeatureImportance (None:
    they are UNIMPLEMENTED)."""

    def __init__(
        self, engine: InferenceEngine, predictor: Predictor, explainer: Explainer | None = None
    ) -> None:
        self.engine = engine
        self.predictor = predictor
        self.explainer = explainer

    @answers_serialized
    def Predict(self, request, context):  # type: ignore[no-untyped-def]
        """Answers a serialized PredictResponse (see ``convert_inference.predict_answer``)."""
        return conv.predict_answer(self._predict(request, deadline_of(context)), request.id)

    def _predict(
        self, request: inference_pb2.PredictRequest, deadline: float | None = None
    ) -> Prediction:
        call = conv.from_predict_request(request)
        return self.predictor.predict(
            call.model,
            call.inputs,
            version=call.version,
            alias=call.alias,
            output_names=call.output_names,
            routing_key=call.routing_key,
            feature_set=request.feature_set,
            context=conv.from_predict_context(request),
            entity_ids=request.entity_ids,
            deadline=deadline,
        )

    def PredictStream(self, request_iterator, context):  # type: ignore[no-untyped-def]
        """One answer per message, in order; a bad message gets an error answer, the stream goes
        on."""
        deadline = deadline_of(context)
        for request in request_iterator:
            yield self._answer(request, deadline)

    def _answer(
        self, request: inference_pb2.PredictRequest, deadline: float | None
    ) -> inference_pb2.PredictResponse:
        try:
            return conv.to_predict_response(self._predict(request, deadline), request.id)
        except Exception as exc:
            code, message = status_of(exc, f"{PREDICT_STREAM} message {request.id!r}")
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

    def _explainer(self) -> Explainer:
        if self.explainer is None:
            raise errors.NotImplementedYet("explain: no explainer in this server")
        return self.explainer

    def Explain(self, request, context):  # type: ignore[no-untyped-def]
        call = conv.from_explain_request(request)
        explanation = self._explainer().explain(
            call.model,
            call.inputs,
            version=call.version,
            alias=call.alias,
            method=call.method,
            output_name=call.output_name,
            output_index=call.output_index,
            samples=call.samples,
            seed=call.seed,
            routing_key=call.routing_key,
        )
        return conv.to_explain_response(explanation)

    def GetFeatureImportance(self, request, context):  # type: ignore[no-untyped-def]
        importance = self._explainer().feature_importance(
            request.model, version=request.version, alias=request.alias
        )
        return conv.to_feature_importance(importance)


def bind(services: Services) -> ServiceBinding:
    return ServiceBinding(
        service_name(inference_pb2, "Inference"),
        inference_pb2_grpc.add_InferenceServicer_to_server,
        InferenceServicer(services.inference, services.predictor, services.explainer),
    )

"""Predictions from input tensors or from a request's facts: the one path behind every predict RPC.

``llmopt.v1.Inference`` Predict / PredictStream and the Open Inference Protocol's ModelInfer both
call ``Predictor.predict``: with input tensors it runs them; without, it asks the feature service
for the request's vector (a feature set, the request context, entity ids) and feeds it as one row
of the model's single input.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

from llmopt import errors
from llmopt.inference.engine import InferenceEngine, Prediction
from llmopt.ports import FeatureVectors

if TYPE_CHECKING:
    from llmopt.features.context import RequestContext


class Predictor:
    """Predictions for a request, from tensors or from features; safe from many threads.

    ``features`` is None in a server without a feature service: predicting from request facts is
    then UNIMPLEMENTED, tensors still work.
    """

    def __init__(self, engine: InferenceEngine, features: FeatureVectors | None = None) -> None:
        self._engine = engine
        self._features = features

    def predict(
        self,
        model: str,
        inputs: Mapping[str, np.ndarray] | None = None,
        *,
        version: int = 0,
        alias: str = "",
        output_names: Sequence[str] | None = None,
        routing_key: str = "",
        feature_set: str = "",
        context: RequestContext | None = None,
        entity_ids: Sequence[str] = (),
        deadline: float | None = None,
    ) -> Prediction:
        """Run the request on the version it names, or on the one the traffic policy routes to.

        With no ``inputs`` (None or empty) the model's input is the feature service's vector of
        ``feature_set`` (``""``: the built-in request context vector) for ``context`` and
        ``entity_ids``. ``deadline``: ``time.monotonic()`` seconds, for dynamic batching.
        """
        row = None
        if not inputs:
            row = self._vector(feature_set, context, entity_ids)
        return self._engine.predict(
            model,
            inputs or {},
            version=version,
            alias=alias,
            output_names=output_names,
            routing_key=routing_key,
            row=row,
            deadline=deadline,
        )

    def _vector(
        self, feature_set: str, context: RequestContext | None, entity_ids: Sequence[str]
    ) -> np.ndarray:
        if self._features is None:
            raise errors.NotImplementedYet("feature_set: no feature service in this server")
        return self._features.vector(feature_set, context, list(entity_ids)).values

"""Predictor: the one predict path, from tensors or from a request's feature vector."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np
import pytest

from llmopt import errors
from llmopt.features import FeatureVector, RequestContext
from llmopt.inference import InferenceEngine, Predictor
from llmopt.inference.explain import Explainer
from llmopt.registry import Registry
from tests.support import onnx_models
from tests.unit.inference.conftest import upload

Engine = Callable[..., InferenceEngine]


class FixedVectors:
    """A feature service that answers one row and remembers what it was asked."""

    def __init__(self, row: np.ndarray) -> None:
        self.row = row
        self.asked: list[tuple[str, RequestContext | None, object]] = []

    def vector(
        self,
        feature_set: str,
        context: RequestContext | None,
        entity_ids: Sequence[str] | Mapping[str, str] = (),
    ) -> FeatureVector:
        self.asked.append((feature_set, context, entity_ids))
        names = tuple(f"x{i}" for i in range(len(self.row)))
        return FeatureVector(self.row, names, feature_set, 1)


def test_without_inputs_the_feature_vector_is_the_models_one_row(
    registry: Registry, make_engine: Engine, linreg: onnx_models.TrainedModel
) -> None:
    upload(registry, "reg", linreg.onnx, alias="champion")
    engine = make_engine()
    features = FixedVectors(linreg.X[3].astype(np.float64))
    context = RequestContext(user_id="u1")
    got = Predictor(engine, features).predict(
        "reg", None, feature_set="fs", context=context, entity_ids=["u1"]
    )
    assert features.asked == [("fs", context, ["u1"])]
    direct = engine.predict("reg", {"X": linreg.X[3:4]})
    np.testing.assert_array_equal(got.outputs["variable"], direct.outputs["variable"])


def test_with_inputs_the_feature_service_is_not_asked(
    registry: Registry, make_engine: Engine, linreg: onnx_models.TrainedModel
) -> None:
    upload(registry, "reg", linreg.onnx, alias="champion")
    engine = make_engine()
    features = FixedVectors(np.zeros(onnx_models.FEATURES))
    got = Predictor(engine, features).predict("reg", {"X": linreg.X[:2]}, feature_set="fs")
    assert features.asked == []
    assert got.outputs["variable"].shape == (2, 1)


def test_no_feature_service_refuses_predictions_from_features(
    registry: Registry, make_engine: Engine, linreg: onnx_models.TrainedModel
) -> None:
    upload(registry, "reg", linreg.onnx, alias="champion")
    predictor = Predictor(make_engine())
    with pytest.raises(errors.NotImplementedYet, match="feature_set"):
        predictor.predict("reg", {})
    assert predictor.predict("reg", {"X": linreg.X[:1]}).version == 1


def test_rows_from_the_feature_service_are_traffic_too(
    registry: Registry, make_engine: Engine, linreg: onnx_models.TrainedModel
) -> None:
    upload(registry, "reg", linreg.onnx, alias="champion")
    engine = make_engine()
    explainer = Explainer(engine, registry)
    predictor = Predictor(engine, FixedVectors(linreg.X[3].astype(np.float64)))
    predictor.predict("reg", None, feature_set="fs")
    predictor.predict("reg", {"X": linreg.X[:2]})
    total, rows = explainer.traffic.recent("reg", 1)  # type: ignore[misc]
    assert total == 3
    np.testing.assert_array_equal(rows, np.vstack([linreg.X[3:4], linreg.X[:2]]))

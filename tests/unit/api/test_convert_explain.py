"""Explain's converters and the background of an upload, both ways."""

from __future__ import annotations

import re

import numpy as np
import pytest

from llmopt import errors
from llmopt.api import convert_inference as conv
from llmopt.api import convert_registry
from llmopt.api.convert import to_tensor
from llmopt.client import types as ct
from llmopt.gen.llmopt.v1 import inference_pb2, registry_pb2
from llmopt.inference.explain import Explanation, FeatureImportance, Method
from llmopt.registry import VersionMetadata


def test_every_method_has_a_proto_value_and_a_client_name() -> None:
    assert set(conv.METHOD_BY_PROTO.values()) == set(Method)
    assert set(ct.EXPLAIN_METHODS.values()) == set(conv.METHOD_BY_PROTO)
    for name, value in ct.EXPLAIN_METHODS.items():
        assert conv.METHOD_BY_PROTO[value].value == name


def test_explain_request_converts() -> None:
    X = np.arange(6, dtype=np.float32).reshape(2, 3)
    msg = inference_pb2.ExplainRequest(
        model="m",
        version=2,
        inputs=[to_tensor(X, "input")],
        output_name="variable",
        output_index=1,
        method=inference_pb2.TREE_SHAP,
        samples=10,
        seed=2**64 - 1,
        routing_key="u",
    )
    call = conv.from_explain_request(msg)
    assert (call.model, call.version, call.alias, call.method) == ("m", 2, "", Method.TREE_SHAP)
    assert (call.output_name, call.output_index, call.samples, call.seed) == (
        "variable",
        1,
        10,
        2**64 - 1,
    )
    np.testing.assert_array_equal(call.inputs["input"], X)


@pytest.mark.parametrize(
    ("msg", "field"),
    [
        (
            inference_pb2.ExplainRequest(inputs=[to_tensor(np.zeros((1, 2), np.float32), "x")]),
            "model",
        ),
        (inference_pb2.ExplainRequest(model="m"), "inputs"),
        (
            inference_pb2.ExplainRequest(
                model="m", inputs=[to_tensor(np.zeros((1, 2), np.float32), "x")], method=7
            ),
            "method",
        ),
        (
            inference_pb2.ExplainRequest(
                model="m", inputs=[to_tensor(np.zeros((1, 2), np.float32))]
            ),
            "inputs[0].name",
        ),
    ],
)
def test_bad_explain_requests_name_the_field(msg: inference_pb2.ExplainRequest, field: str) -> None:
    with pytest.raises(errors.InvalidArgument, match=f"^{re.escape(field)}: "):
        conv.from_explain_request(msg)


def test_explanation_reaches_the_client_value_unchanged() -> None:
    contributions = np.array([[0.5, -0.25, 1e-300], [2.0, 0.0, -3.5]])
    explanation = Explanation(
        model="m",
        version=3,
        method="kernel_shap",
        feature_names=("a", "b", "c"),
        contributions=contributions,
        base_values=np.array([1.5, 1.5]),
        predictions=np.array([1.75, 0.0]),
        output_name="variable",
        output_index=0,
        samples=2048,
        seed=9,
        background_rows=100,
    )
    got = ct.from_explanation(conv.to_explain_response(explanation))
    assert (got.model, got.version, got.method, got.feature_names) == (
        "m",
        3,
        "kernel_shap",
        ("a", "b", "c"),
    )
    np.testing.assert_array_equal(got.contributions, contributions)
    np.testing.assert_array_equal(got.base_values, [1.5, 1.5])
    np.testing.assert_array_equal(got.predictions, [1.75, 0.0])
    assert (got.samples, got.seed, got.background_rows) == (2048, 9, 100)


def test_feature_importance_keeps_its_order() -> None:
    importance = FeatureImportance("m", 2, 40, (("b", 2.0), ("a", 1.0), ("c", 0.0)))
    msg = conv.to_feature_importance(importance)
    assert [e.feature for e in msg.features] == ["b", "a", "c"]
    got = ct.from_feature_importance(msg)
    assert (got.model, got.version, got.rows) == ("m", 2, 40)
    assert list(got.features.items()) == [("b", 2.0), ("a", 1.0), ("c", 0.0)]


def test_upload_background_round_trip() -> None:
    sample = np.arange(8, dtype=np.float32).reshape(2, 4)
    meta = VersionMetadata(alias="champion", background=sample)
    msg = convert_registry.to_upload_metadata("m", meta)
    assert msg.HasField("background")
    back = convert_registry.from_upload_metadata(msg)
    np.testing.assert_array_equal(back.background, sample)
    assert back == meta  # the background is not part of equality
    plain = convert_registry.from_upload_metadata(registry_pb2.UploadVersionMetadata(model="m"))
    assert plain.background is None


def test_upload_background_bytes_must_fit_the_shape() -> None:
    msg = registry_pb2.UploadVersionMetadata(model="m")
    msg.background.CopyFrom(to_tensor(np.zeros((2, 4), np.float32)))
    msg.background.shape[:] = [3, 4]
    with pytest.raises(errors.InvalidArgument, match=r"^metadata\.background\.raw_data"):
        convert_registry.from_upload_metadata(msg)

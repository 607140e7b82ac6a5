"""llmopt.api.convert_inference: both directions, and the errors it raises."""

from __future__ import annotations

import numpy as np
import pytest

from llmopt import errors
from llmopt.api import convert_inference as conv
from llmopt.api.convert import from_tensor, to_tensor
from llmopt.gen.inference import grpc_service_pb2 as pb
from llmopt.gen.llmopt.v1 import common_pb2, inference_pb2
from llmopt.inference import Prediction, TrafficMode, TrafficPolicy, Variant
from llmopt.inference.signature import IOSpec, Signature
from llmopt.inference.stats import (
    LatencySummary,
    LoadFailure,
    ModelStats,
    ShadowStats,
    VariantStats,
)


def test_predict_request_round_trip_and_fast_path_equals_from_tensor() -> None:
    X = np.arange(32, dtype=np.float32).reshape(2, 16)
    msg = inference_pb2.PredictRequest(
        model="m",
        version=3,
        inputs=[to_tensor(X, "X")],
        output_names=["label"],
        routing_key="k",
    )
    call = conv.from_predict_request(msg)
    assert (call.model, call.version, call.alias, call.output_names, call.routing_key) == (
        "m",
        3,
        "",
        ("label",),
        "k",
    )
    np.testing.assert_array_equal(call.inputs["X"], X)
    np.testing.assert_array_equal(conv.input_array(msg.inputs[0], "x"), from_tensor(msg.inputs[0]))


@pytest.mark.parametrize(
    ("tensor", "fragment"),
    [
        (
            common_pb2.Tensor(name="X", dtype=common_pb2.FLOAT32, shape=[2], raw_data=b"\0" * 7),
            "needs 8 bytes",
        ),
        (
            common_pb2.Tensor(
                name="X", dtype=common_pb2.FLOAT32, shape=[-2, -1], raw_data=b"\0" * 8
            ),
            "dimensions must be >= 0",
        ),
        (
            common_pb2.Tensor(name="X", dtype=common_pb2.STRING, shape=[1], raw_data=b"\0" * 4),
            "dtype",
        ),
        (
            common_pb2.Tensor(name="", dtype=common_pb2.FLOAT32, shape=[1], raw_data=b"\0" * 4),
            "needs its name",
        ),
    ],
)
def test_malformed_tensors_are_refused(tensor: common_pb2.Tensor, fragment: str) -> None:
    with pytest.raises(errors.InvalidArgument, match=fragment):
        conv.from_predict_request(inference_pb2.PredictRequest(model="m", inputs=[tensor]))


def test_prediction_to_response_and_back() -> None:
    label = np.array([1, 0], np.int64)
    probs = np.array([[0.25, 0.75], [0.5, 0.5]], np.float32)
    pred = Prediction("m", 2, Variant.CHALLENGER, {"label": label, "probabilities": probs}, "r-1")
    msg = conv.to_predict_response(pred, "id-9")
    assert (msg.id, msg.model, msg.version, msg.variant, msg.request_id) == (
        "id-9",
        "m",
        2,
        inference_pb2.CHALLENGER,
        "r-1",
    )
    back = {t.name: from_tensor(t) for t in msg.outputs}
    np.testing.assert_array_equal(back["label"], label)
    np.testing.assert_array_equal(back["probabilities"], probs)
    strided = probs[:, 1]  # not contiguous: the slow path
    big_endian = label.astype(">i8")  # the slow path too
    tensors = inference_pb2.PredictResponse().outputs
    for array in (strided, big_endian):
        conv.put_tensor(tensors, array, "p")
    np.testing.assert_array_equal(from_tensor(tensors[0]), strided)
    np.testing.assert_array_equal(from_tensor(tensors[1]), label)
    assert tensors[1].dtype == common_pb2.INT64


def test_traffic_policy_both_ways() -> None:
    policy = TrafficPolicy("m", TrafficMode.SPLIT, 12.34)
    msg = conv.to_traffic_policy(policy)
    assert (msg.mode, msg.challenger_percent) == (inference_pb2.SPLIT, 12.34)
    assert conv.from_traffic_policy(msg) == policy
    assert conv.from_traffic_policy(inference_pb2.TrafficPolicy(model="m")).mode is TrafficMode.OFF
    with pytest.raises(errors.InvalidArgument, match=r"policy\.mode"):
        conv.from_traffic_policy(inference_pb2.TrafficPolicy(model="m", mode=42))  # type: ignore[arg-type]


def test_model_stats_to_proto() -> None:
    stats = ModelStats(
        "m",
        (
            VariantStats(1, Variant.CHAMPION, 5, 9, 1, LatencySummary(1.0, 2.0, 3.0)),
            VariantStats(2, Variant.SHADOW, 4, 8, 0, LatencySummary(0.5, 0.6, 0.7)),
        ),
        ShadowStats(
            compared=4,
            dropped=1,
            errors=0,
            label_agreement=0.75,
            mean_abs_diff=0.1,
            max_abs_diff=0.3,
        ),
        (LoadFailure(3, "champion", "boom"),),
    )
    msg = conv.to_model_stats(stats)
    assert [(v.version, v.variant, v.requests, v.rows, v.errors) for v in msg.variants] == [
        (1, inference_pb2.CHAMPION, 5, 9, 1),
        (2, inference_pb2.SHADOW_COPY, 4, 8, 0),
    ]
    assert msg.variants[0].latency.p99_ms == 3.0
    assert (msg.shadow.compared, msg.shadow.dropped, msg.shadow.label_agreement) == (4, 1, 0.75)
    assert [(f.version, f.alias, f.message) for f in msg.load_failures] == [(3, "champion", "boom")]


def test_every_numeric_datatype_has_a_numpy_dtype_and_back() -> None:
    for name, dtype in conv.NUMPY_BY_DATATYPE.items():
        assert conv.datatype_of(dtype) == name
    assert conv.datatype_of(np.dtype(object)) == "BYTES"


@pytest.mark.parametrize(
    "datatype", ["FP32", "FP64", "INT64", "INT32", "INT8", "UINT8", "BOOL", "UINT64", "UINT32"]
)
def test_infer_request_typed_contents_equal_raw_contents(datatype: str) -> None:
    dtype = conv.NUMPY_BY_DATATYPE[datatype]
    values = (np.arange(6) % 2 if datatype == "BOOL" else np.arange(6)).astype(dtype).reshape(2, 3)
    typed = pb.ModelInferRequest.InferInputTensor(name="x", datatype=datatype, shape=[2, 3])
    getattr(typed.contents, conv.CONTENTS_FIELD_BY_DATATYPE[datatype]).extend(
        values.ravel().tolist()
    )
    raw = pb.ModelInferRequest.InferInputTensor(name="x", datatype=datatype, shape=[2, 3])
    a = conv.from_infer_request(pb.ModelInferRequest(model_name="m", inputs=[typed]))
    b = conv.from_infer_request(
        pb.ModelInferRequest(model_name="m", inputs=[raw], raw_input_contents=[values.tobytes()])
    )
    for call in (a, b):
        assert call.inputs["x"].dtype == dtype
        np.testing.assert_array_equal(call.inputs["x"], values)


def test_infer_request_version_routing_key_and_errors() -> None:
    inp = pb.ModelInferRequest.InferInputTensor(name="x", datatype="FP32", shape=[1])
    msg = pb.ModelInferRequest(
        model_name="m", model_version="4", id="q", inputs=[inp], raw_input_contents=[b"\0" * 4]
    )
    msg.parameters["routing_key"].string_param = "user-1"
    msg.outputs.add(name="y")
    call = conv.from_infer_request(msg)
    assert (call.version, call.id, call.routing_key, call.output_names) == (
        4,
        "q",
        "user-1",
        ("y",),
    )
    assert conv.parse_version("") == 0
    for bad in ("0", "-1", "v2", "1.5"):
        with pytest.raises(errors.InvalidArgument, match="model_version"):
            conv.parse_version(bad)
    short = pb.ModelInferRequest.InferInputTensor(name="x", datatype="FP32", shape=[3])
    short.contents.fp32_contents.extend([1.0])
    with pytest.raises(errors.InvalidArgument, match="needs 3"):
        conv.from_infer_request(pb.ModelInferRequest(model_name="m", inputs=[short]))
    fp16 = pb.ModelInferRequest.InferInputTensor(name="x", datatype="FP16", shape=[1])
    with pytest.raises(errors.InvalidArgument, match="no typed contents"):
        conv.from_infer_request(pb.ModelInferRequest(model_name="m", inputs=[fp16]))


def test_infer_response_and_metadata() -> None:
    label = np.array([3, 1], np.int64)
    pred = Prediction("m", 7, Variant.CHAMPION, {"label": label}, "r")
    msg = conv.to_infer_response(pred, "id")
    assert (msg.model_name, msg.model_version, msg.id) == ("m", "7", "id")
    assert [(o.name, o.datatype, list(o.shape)) for o in msg.outputs] == [("label", "INT64", [2])]
    np.testing.assert_array_equal(np.frombuffer(msg.raw_output_contents[0], np.int64), label)
    assert msg.parameters["variant"].string_param == "champion"
    strings = conv.to_infer_response(
        Prediction("m", 1, Variant.CHAMPION, {"s": np.array(["ab", "c"], dtype=object)}, "r")
    )
    assert strings.outputs[0].datatype == "BYTES"
    assert strings.raw_output_contents[0] == b"\x02\0\0\0ab\x01\0\0\0c"

    from llmopt.inference import ModelDescription

    sig = Signature(
        (IOSpec("X", np.dtype(np.float32), (-1, 16)),),
        (IOSpec("label", np.dtype(np.int64), (-1,)),),
    )
    meta = conv.to_model_metadata(ModelDescription("m", 2, sig, (2, 3)))
    assert (meta.name, list(meta.versions), meta.platform) == ("m", ["2", "3"], "onnxruntime_onnx")
    assert [(t.name, t.datatype, list(t.shape)) for t in meta.inputs] == [("X", "FP32", [-1, 16])]
    assert [(t.name, t.datatype) for t in meta.outputs] == [("label", "INT64")]


HUGE_SHAPES = [[2**62, 0], [0, 2**62], [2**32, 2**32]]


@pytest.mark.parametrize("shape", HUGE_SHAPES, ids=str)
def test_predict_tensor_with_unrepresentable_shape_is_refused(shape: list[int]) -> None:
    t = common_pb2.Tensor(name="X", dtype=common_pb2.FLOAT32, shape=shape, raw_data=b"")
    with pytest.raises(errors.InvalidArgument, match=r"inputs\[0\]\['X'\]\.shape"):
        conv.from_predict_request(inference_pb2.PredictRequest(model="m", inputs=[t]))


@pytest.mark.parametrize("shape", HUGE_SHAPES, ids=str)
@pytest.mark.parametrize("raw", [True, False], ids=["raw", "typed"])
def test_infer_input_with_unrepresentable_shape_is_refused(shape: list[int], raw: bool) -> None:
    inp = pb.ModelInferRequest.InferInputTensor(name="x", datatype="FP32", shape=shape)
    msg = pb.ModelInferRequest(model_name="m", inputs=[inp])
    if raw:
        msg.raw_input_contents.append(b"")
    with pytest.raises(errors.InvalidArgument, match=r"inputs\[0\]\.shape"):
        conv.from_infer_request(msg)


def test_infer_typed_contents_out_of_the_datatypes_range_are_refused() -> None:
    inp = pb.ModelInferRequest.InferInputTensor(name="x", datatype="UINT8", shape=[2])
    inp.contents.uint_contents.extend([1, 300])
    with pytest.raises(errors.InvalidArgument, match=r"uint_contents.*fit UINT8"):
        conv.from_infer_request(pb.ModelInferRequest(model_name="m", inputs=[inp]))


@pytest.mark.parametrize("text", ["9" * 40, str(2**63), "\u00b2", "\u0661"])
def test_model_version_beyond_int64_or_not_ascii_digits_is_refused(text: str) -> None:
    with pytest.raises(errors.InvalidArgument, match=r"^version: .*1\.\.9223372036854775807"):
        conv.parse_version(text, "version")
    assert conv.parse_version(str(2**63 - 1)) == 2**63 - 1

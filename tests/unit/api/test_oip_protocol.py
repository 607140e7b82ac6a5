"""The Open Inference Protocol's converters (statistics, model configuration, BYTES tensors,
metadata), and our generated messages and service checked against tritonclient's own copies."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from llmopt import errors
from llmopt.api import convert_inference as conv
from llmopt.gen.inference import grpc_service_pb2 as pb
from llmopt.gen.inference import model_config_pb2 as mc
from llmopt.inference import (
    BatchStatistics,
    Duration,
    IOSpec,
    ModelDescription,
    Prediction,
    Signature,
    Variant,
    VersionStatistics,
)

ROOT = Path(__file__).resolve().parents[3]


def _desc(inputs: tuple[IOSpec, ...], outputs: tuple[IOSpec, ...]) -> ModelDescription:
    return ModelDescription("m", 2, Signature(inputs, outputs), (2, 3), (1, 2, 3))


CLASSIFIER = _desc(
    (IOSpec("X", np.dtype("float32"), (-1, 16)),),
    (
        IOSpec("label", np.dtype("int64"), (-1,)),
        IOSpec("probabilities", np.dtype("float32"), (-1, 2)),
    ),
)
BATCHING = SimpleNamespace(
    max_batch_size=64, max_queue_delay_us=500, preferred_batch_sizes=[16, 32]
)


# -- ModelConfig -----------------------------------------------------------------------------------


def test_model_config_without_batching_reports_whole_shapes() -> None:
    config = conv.to_model_config(CLASSIFIER).config
    assert (config.name, config.platform, config.backend) == (
        "m",
        "onnxruntime_onnx",
        "onnxruntime",
    )
    assert config.max_batch_size == 0
    assert config.WhichOneof("scheduling_choice") is None
    assert [(i.name, i.data_type, list(i.dims)) for i in config.input] == [
        ("X", mc.TYPE_FP32, [-1, 16])
    ]
    assert [(o.name, o.data_type, list(o.dims)) for o in config.output] == [
        ("label", mc.TYPE_INT64, [-1]),
        ("probabilities", mc.TYPE_FP32, [-1, 2]),
    ]
    assert config.version_policy.WhichOneof("policy_choice") == "specific"
    assert list(config.version_policy.specific.versions) == [2, 3]


def test_model_config_with_batching_leaves_the_batch_dimension_out() -> None:
    config = conv.to_model_config(CLASSIFIER, BATCHING).config
    assert config.max_batch_size == 64
    assert [list(i.dims) for i in config.input] == [[16]]
    assert [list(o.dims) for o in config.output] == [[], [2]]
    assert list(config.dynamic_batching.preferred_batch_size) == [16, 32]
    assert config.dynamic_batching.max_queue_delay_microseconds == 500


def test_model_config_with_a_fixed_first_dimension_declares_no_batch_dimension() -> None:
    fixed = _desc(
        (IOSpec("X", np.dtype("float32"), (2, 4)),), (IOSpec("Y", np.dtype("float32"), (2, 4)),)
    )
    config = conv.to_model_config(fixed, BATCHING).config
    assert config.max_batch_size == 0
    assert [list(i.dims) for i in config.input] == [[2, 4]]
    assert config.HasField("dynamic_batching")  # batching is on, merging no rows of it


def test_batching_settings_read_seconds_and_off() -> None:
    assert conv.batching_settings(None) == conv.BatchingSettings()
    seconds = SimpleNamespace(max_batch_size=8, max_queue_delay=0.002, preferred_batch_sizes=())
    assert conv.batching_settings(seconds) == conv.BatchingSettings(8, 2000, ())


def test_every_datatype_has_a_config_type() -> None:
    assert set(conv.CONFIG_TYPE_BY_DATATYPE) == {*conv.NUMPY_BY_DATATYPE, "BYTES"}
    strings = _desc(
        (IOSpec("text", np.dtype(object), (-1,)),), (IOSpec("code", np.dtype("int64"), (-1,)),)
    )
    assert conv.to_model_config(strings).config.input[0].data_type == mc.TYPE_STRING


# -- ModelStatistics and ModelMetadata -----------------------------------------------------------


def test_model_statistics_carry_every_field() -> None:
    stats = VersionStatistics(
        model="m",
        version=3,
        last_inference_ms=1_700_000_000_123,
        inference_count=11,
        execution_count=3,
        success=Duration(3, 900),
        fail=Duration(1, 50),
        queue=Duration(3, 0),
        compute_input=Duration(3, 100),
        compute_infer=Duration(3, 600),
        compute_output=Duration(3, 30),
        batches=(BatchStatistics(5, Duration(1, 40), Duration(1, 300), Duration(1, 10)),),
    )
    msg = conv.to_statistics_response([stats]).model_stats[0]
    assert (msg.name, msg.version, msg.last_inference) == ("m", "3", 1_700_000_000_123)
    assert (msg.inference_count, msg.execution_count) == (11, 3)
    s = msg.inference_stats
    assert [(d.count, d.ns) for d in (s.success, s.fail, s.queue)] == [(3, 900), (1, 50), (3, 0)]
    assert [(d.count, d.ns) for d in (s.compute_input, s.compute_infer, s.compute_output)] == [
        (3, 100),
        (3, 600),
        (3, 30),
    ]
    (b,) = msg.batch_stats
    assert (b.batch_size, b.compute_input.ns, b.compute_infer.ns, b.compute_output.ns) == (
        5,
        40,
        300,
        10,
    )


def test_model_metadata_lists_every_servable_version() -> None:
    assert list(conv.to_model_metadata(CLASSIFIER).versions) == ["1", "2", "3"]


# -- BYTES -----------------------------------------------------------------------------------------


def _raw(*items: bytes) -> bytes:
    return b"".join(len(b).to_bytes(4, "little") + b for b in items)


def _bytes_request(shape: list[int], raw: bytes | None = None, values=()) -> pb.ModelInferRequest:  # type: ignore[no-untyped-def]
    tensor = pb.ModelInferRequest.InferInputTensor(name="text", datatype="BYTES", shape=shape)
    tensor.contents.bytes_contents.extend(values)
    request = pb.ModelInferRequest(model_name="m", inputs=[tensor])
    if raw is not None:
        request.raw_input_contents.append(raw)
    return request


def test_bytes_inputs_from_raw_and_typed_contents_are_string_arrays() -> None:
    words = ["red", "grün", ""]
    for request in (
        _bytes_request([3], raw=_raw(*(w.encode() for w in words))),
        _bytes_request([3], values=[w.encode() for w in words]),
    ):
        text = conv.from_infer_request(request).inputs["text"]
        assert text.dtype == object and text.shape == (3,)
        assert text.tolist() == words


@pytest.mark.parametrize(
    ("label", "request_", "match"),
    [
        ("too few", _bytes_request([3], raw=_raw(b"a", b"b")), "2 elements"),
        ("too many", _bytes_request([1], raw=_raw(b"a", b"b")), r"2\+ elements"),
        ("cut length", _bytes_request([1], raw=b"\x05\x00"), "4-byte length"),
        ("cut element", _bytes_request([1], raw=b"\x05\x00\x00\x00ab"), "bytes left"),
        ("typed count", _bytes_request([2], values=[b"a"]), "needs 2"),
        ("not UTF-8", _bytes_request([1], values=[b"\xff"]), "UTF-8"),
    ],
)
def test_malformed_bytes_inputs_are_refused(
    label: str, request_: pb.ModelInferRequest, match: str
) -> None:
    with pytest.raises(errors.InvalidArgument, match=match):
        conv.from_infer_request(request_)


def test_string_outputs_travel_as_length_prefixed_raw_bytes() -> None:
    prediction = Prediction(
        "m", 1, Variant.CHAMPION, {"echo": np.array(["a", "grün"], dtype=object)}, "r-1"
    )
    response = conv.to_infer_response(prediction, "id-1")
    (out,) = response.outputs
    assert (out.name, out.datatype, list(out.shape)) == ("echo", "BYTES", [2])
    assert response.raw_output_contents[0] == _raw(b"a", "grün".encode())


# -- the generated protocol against tritonclient's copy --------------------------------------------

_COMPARE = r"""
import json, sys
from tritonclient.grpc import model_config_pb2, service_pb2

ours = json.load(open(sys.argv[1]))
pool = service_pb2.DESCRIPTOR.pool
problems = []
for name, fields in ours["messages"].items():
    theirs = pool.FindMessageTypeByName(name)
    for field, spec in fields.items():
        f = theirs.fields_by_name.get(field)
        if f is None:
            problems.append(f"{name}.{field}: not in tritonclient's")
            continue
        kind = f.message_type.full_name if f.message_type else (
            f.enum_type.full_name if f.enum_type else "")
        actual = [f.number, f.type, f.is_repeated, kind]
        if actual != spec:
            problems.append(f"{name}.{field}: ours {spec}, theirs {actual}")
for name, values in ours["enums"].items():
    theirs = {v.name: v.number for v in pool.FindEnumTypeByName(name).values}
    for value, number in values.items():
        if theirs.get(value) != number:
            problems.append(f"{name}.{value}: ours {number}, theirs {theirs.get(value)}")
service = service_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"]
for method, spec in ours["methods"].items():
    m = service.methods_by_name.get(method)
    if m is None:
        problems.append(f"rpc {method}: not in tritonclient's")
        continue
    actual = [m.input_type.full_name, m.output_type.full_name, m.client_streaming,
              m.server_streaming]
    if actual != spec:
        problems.append(f"rpc {method}: ours {spec}, theirs {actual}")
assert not problems, problems
print("same", sum(map(len, ours["messages"].values())), len(ours["enums"]), len(ours["methods"]))
"""


def _messages(container):  # type: ignore[no-untyped-def]
    for m in container:
        if not m.GetOptions().map_entry:
            yield m
        yield from _messages(m.nested_types)


def _enums(files):  # type: ignore[no-untyped-def]
    for f in files:
        yield from f.enum_types_by_name.values()
        for m in _messages(f.message_types_by_name.values()):
            yield from m.enum_types


def test_every_message_enum_and_method_matches_tritonclients(tmp_path: Path) -> None:
    """Each field we define (name, number, type, repeated, message or enum type), each enum
    value, and each method (types, streaming kind) equals tritonclient's; compared in a
    subprocess, since both register package ``inference`` in the default descriptor pool."""
    files = (pb.DESCRIPTOR, mc.DESCRIPTOR)
    messages = {
        m.full_name: {
            f.name: [
                f.number,
                f.type,
                f.is_repeated,
                f.message_type.full_name
                if f.message_type
                else (f.enum_type.full_name if f.enum_type else ""),
            ]
            for f in m.fields
        }
        for file in files
        for m in _messages(file.message_types_by_name.values())
    }
    enums = {e.full_name: {v.name: v.number for v in e.values} for e in _enums(files)}
    service = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    methods = {
        m.name: [
            m.input_type.full_name,
            m.output_type.full_name,
            m.client_streaming,
            m.server_streaming,
        ]
        for m in service.methods
    }
    assert methods["ModelStreamInfer"][2:] == [True, True]
    assert "inference.ModelConfig" in messages and "inference.DataType" in enums
    path = tmp_path / "ours.json"
    path.write_text(json.dumps({"messages": messages, "enums": enums, "methods": methods}))
    done = subprocess.run(
        [sys.executable, "-c", _COMPARE, str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.startswith("same"), done.stdout

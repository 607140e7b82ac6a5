"""inference.GRPCInferenceService (Open Inference Protocol) through the real server."""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path

import grpc
import numpy as np
import onnxruntime as ort
import pytest

from llmopt.gen.inference import grpc_service_pb2 as pb
from llmopt.gen.inference import grpc_service_pb2_grpc
from tests.support import onnx_models
from tests.support.inference_client import register
from tests.support.server import ServerProcess

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def served(channel: grpc.Channel) -> dict[str, str]:
    """A float regression model and an int64-label classifier, each with a champion."""
    names = {"float": f"oip-reg-{uuid.uuid4().hex[:6]}", "clf": f"oip-clf-{uuid.uuid4().hex[:6]}"}
    register(channel, names["float"], onnx_models.linear_regression(0).onnx, alias="champion")
    register(channel, names["clf"], onnx_models.logistic_regression(0).onnx, alias="champion")
    return names


def stub(channel: grpc.Channel) -> grpc_service_pb2_grpc.GRPCInferenceServiceStub:
    return grpc_service_pb2_grpc.GRPCInferenceServiceStub(channel)


def test_model_infer_with_raw_and_typed_contents(
    channel: grpc.Channel, served: dict[str, str]
) -> None:
    lr = onnx_models.logistic_regression(0)
    X = lr.X[:5]
    inp = pb.ModelInferRequest.InferInputTensor(name="X", datatype="FP32", shape=X.shape)
    raw = pb.ModelInferRequest(
        model_name=served["clf"], id="r1", inputs=[inp], raw_input_contents=[X.tobytes()]
    )
    typed_inp = pb.ModelInferRequest.InferInputTensor(name="X", datatype="FP32", shape=X.shape)
    typed_inp.contents.fp32_contents.extend(X.ravel().tolist())
    typed = pb.ModelInferRequest(
        model_name=served["clf"], model_version="1", id="r2", inputs=[typed_inp]
    )
    direct = ort.InferenceSession(lr.onnx).run(["label", "probabilities"], {"X": X})
    for request in (raw, typed):
        response = stub(channel).ModelInfer(request)
        assert (response.model_name, response.model_version, response.id) == (
            served["clf"],
            "1",
            request.id,
        )
        assert [(o.name, o.datatype, list(o.shape)) for o in response.outputs] == [
            ("label", "INT64", [5]),
            ("probabilities", "FP32", [5, 2]),
        ]
        label = np.frombuffer(response.raw_output_contents[0], np.int64)
        probs = np.frombuffer(response.raw_output_contents[1], np.float32).reshape(5, 2)
        np.testing.assert_array_equal(label, direct[0])
        np.testing.assert_array_equal(label, lr.estimator.predict(X))
        np.testing.assert_array_equal(probs, direct[1])


@pytest.mark.parametrize(
    ("label", "mutate", "code"),
    [
        ("datatype", lambda r: setattr(r.inputs[0], "datatype", "FP64"), "INVALID_ARGUMENT"),
        ("bad datatype", lambda r: setattr(r.inputs[0], "datatype", "FLOAT"), "INVALID_ARGUMENT"),
        ("bytes to FP32", lambda r: setattr(r.inputs[0], "datatype", "BYTES"), "INVALID_ARGUMENT"),
        (
            "raw length",
            lambda r: r.raw_input_contents.__setitem__(0, b"\0" * 7),
            "INVALID_ARGUMENT",
        ),
        ("raw count", lambda r: r.raw_input_contents.append(b""), "INVALID_ARGUMENT"),
        ("version text", lambda r: setattr(r, "model_version", "v1"), "INVALID_ARGUMENT"),
        ("unknown version", lambda r: setattr(r, "model_version", "9"), "NOT_FOUND"),
        ("unknown model", lambda r: setattr(r, "model_name", "nope"), "NOT_FOUND"),
        ("input name", lambda r: setattr(r.inputs[0], "name", "Y"), "INVALID_ARGUMENT"),
    ],
)
def test_malformed_infer_requests_are_refused(
    channel: grpc.Channel,
    served: dict[str, str],
    label: str,
    mutate,
    code: str,  # type: ignore[no-untyped-def]
) -> None:
    X = np.zeros((2, 16), np.float32)
    request = pb.ModelInferRequest(
        model_name=served["float"],
        inputs=[pb.ModelInferRequest.InferInputTensor(name="X", datatype="FP32", shape=[2, 16])],
        raw_input_contents=[X.tobytes()],
    )
    mutate(request)
    with pytest.raises(grpc.RpcError) as info:
        stub(channel).ModelInfer(request)
    assert info.value.code().name == code, (label, info.value.details())


def test_metadata_readiness_and_index(channel: grpc.Channel, served: dict[str, str]) -> None:
    s = stub(channel)
    assert s.ServerLive(pb.ServerLiveRequest()).live
    assert s.ServerReady(pb.ServerReadyRequest()).ready
    assert s.ModelReady(pb.ModelReadyRequest(name=served["clf"])).ready
    assert not s.ModelReady(pb.ModelReadyRequest(name="ghost")).ready
    meta = s.ModelMetadata(pb.ModelMetadataRequest(name=served["clf"]))
    assert (meta.name, list(meta.versions), meta.platform) == (
        served["clf"],
        ["1"],
        "onnxruntime_onnx",
    )
    assert [(t.name, t.datatype, list(t.shape)) for t in meta.inputs] == [("X", "FP32", [-1, 16])]
    index = s.RepositoryIndex(pb.RepositoryIndexRequest(ready=True))
    assert {(m.name, m.version, m.state) for m in index.models} >= {
        (served["clf"], "1", "READY"),
        (served["float"], "1", "READY"),
    }


def test_tritonclient_gets_metadata_readiness_and_inference(
    server: ServerProcess, served: dict[str, str], tmp_path: Path
) -> None:
    reg, clf = onnx_models.linear_regression(0), onnx_models.logistic_regression(0)
    X = reg.X[:7]
    variable = ort.InferenceSession(reg.onnx).run(["variable"], {"X": X})[0]
    label, probabilities = ort.InferenceSession(clf.onnx).run(None, {"X": X})
    np.testing.assert_array_equal(label, clf.estimator.predict(X))
    data = tmp_path / "data.npz"
    np.savez(data, X=X, variable=variable, label=label, probabilities=probabilities)
    script = Path(__file__).with_name("tritonclient_check.py")
    done = subprocess.run(
        [sys.executable, str(script), server.address, served["float"], served["clf"], str(data)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "tritonclient ok" in done.stdout


def test_every_field_matches_tritons_own_proto(tmp_path: Path) -> None:
    """Names, numbers, types and labels of every field equal those of the grpc_service.proto
    that tritonclient ships (compared in a subprocess: the two cannot share one process)."""
    import json

    def messages(desc, prefix=""):  # type: ignore[no-untyped-def]
        for m in desc.message_types_by_name.values() if prefix == "" else desc.nested_types:
            yield m
            yield from messages(m, m.full_name)

    ours = {
        m.full_name: {
            f.name: [
                f.number,
                f.type,
                f.is_repeated,
                f.message_type.full_name if f.message_type else "",
            ]
            for f in m.fields
        }
        for m in messages(pb.DESCRIPTOR)
        if not m.GetOptions().map_entry
    }
    path = tmp_path / "ours.json"
    path.write_text(json.dumps(ours))
    script = Path(__file__).with_name("tritonclient_check.py")
    done = subprocess.run(
        [sys.executable, str(script), "--fields", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "fields ok" in done.stdout


def test_stream_infer_answers_each_request_in_order_and_goes_on_after_errors(
    channel: grpc.Channel, served: dict[str, str]
) -> None:
    reg = onnx_models.linear_regression(0)
    X = reg.X[:3]
    (expected,) = ort.InferenceSession(reg.onnx).run(["variable"], {"X": X})

    def request(id: str, model: str, datatype: str = "FP32") -> pb.ModelInferRequest:
        inp = pb.ModelInferRequest.InferInputTensor(name="X", datatype=datatype, shape=X.shape)
        return pb.ModelInferRequest(
            model_name=model, id=id, inputs=[inp], raw_input_contents=[X.tobytes()]
        )

    requests = [
        request("a", served["float"]),
        request("b", served["float"], "INT32"),
        request("c", "ghost"),
        request("d", served["float"]),
    ]
    answers = list(stub(channel).ModelStreamInfer(iter(requests)))
    assert [a.infer_response.id for a in answers] == ["a", "b", "c", "d"]
    assert [bool(a.error_message) for a in answers] == [False, True, True, False]
    assert "Request for unknown model: 'ghost' is not found" in answers[2].error_message
    for a in (answers[0], answers[3]):
        got = np.frombuffer(a.infer_response.raw_output_contents[0], np.float32)
        np.testing.assert_array_equal(got, expected.ravel())


def test_statistics_config_and_repository_calls_answer_precise_codes(
    channel: grpc.Channel, served: dict[str, str]
) -> None:
    s = stub(channel)
    config = s.ModelConfig(pb.ModelConfigRequest(name=served["clf"])).config
    assert (config.platform, config.max_batch_size, list(config.input[0].dims)) == (
        "onnxruntime_onnx",
        0,
        [-1, 16],
    )
    stats = s.ModelStatistics(pb.ModelStatisticsRequest(name=served["clf"])).model_stats
    assert [m.version for m in stats] == ["1"]
    calls = [
        (s.ModelStatistics, pb.ModelStatisticsRequest(name="ghost"), "NOT_FOUND"),
        (
            s.ModelStatistics,
            pb.ModelStatisticsRequest(name=served["clf"], version="0x1"),
            "INVALID_ARGUMENT",
        ),
        (s.ModelStatistics, pb.ModelStatisticsRequest(version="1"), "INVALID_ARGUMENT"),
        (s.ModelConfig, pb.ModelConfigRequest(name="ghost"), "NOT_FOUND"),
        (s.ModelConfig, pb.ModelConfigRequest(name=""), "INVALID_ARGUMENT"),
        (s.ModelMetadata, pb.ModelMetadataRequest(name="ghost"), "NOT_FOUND"),
        (s.RepositoryModelLoad, pb.RepositoryModelLoadRequest(model_name="ghost"), "NOT_FOUND"),
        (s.RepositoryModelLoad, pb.RepositoryModelLoadRequest(), "INVALID_ARGUMENT"),
        (s.RepositoryModelUnload, pb.RepositoryModelUnloadRequest(model_name="ghost"), "NOT_FOUND"),
        (s.RepositoryModelUnload, pb.RepositoryModelUnloadRequest(), "INVALID_ARGUMENT"),
    ]
    for call, request, code in calls:
        with pytest.raises(grpc.RpcError) as info:
            call(request)
        assert info.value.code().name == code, (request, info.value.details())
        if code == "NOT_FOUND":
            assert info.value.details().startswith("Request for unknown model: 'ghost'")

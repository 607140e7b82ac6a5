"""--model-repository through the real server: served at start-up, restarts, poll mode."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import onnxruntime as ort
import pytest

from llmopt.api.convert import from_tensor
from llmopt.gen.inference import grpc_service_pb2 as pb
from llmopt.gen.inference import grpc_service_pb2_grpc
from llmopt.gen.llmopt.v1 import registry_pb2
from tests.support import onnx_models
from tests.support.inference_client import inference_stub, predict_request, registry_stub
from tests.support.server import ServerProcess

pytestmark = pytest.mark.integration

V1 = onnx_models.logistic_regression(seed=11)
V2 = onnx_models.logistic_regression(seed=12)
LINEAR = onnx_models.linear_regression(seed=13)


def put(root: Path, model: str, version: int | str, data: bytes) -> None:
    folder = root / model / str(version)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / "model.onnx.part"
    tmp.write_bytes(data)
    tmp.rename(folder / "model.onnx")  # whole at once, as a poll may read it at any time


@pytest.fixture
def repository(tmp_path: Path) -> Path:
    root = tmp_path / "models"
    put(root, "simple", 1, V1.onnx)
    put(root, "simple", 2, V2.onnx)
    (root / "simple" / "config.pbtxt").write_text(
        'name: "simple"\nplatform: "onnxruntime_onnx"\nmax_batch_size: 64\n'
        "version_policy: { all: {} }\n"
        'input [ { name: "X", data_type: TYPE_FP32, dims: [16] } ]\n'
        "instance_group [ { count: 1, kind: KIND_CPU } ]\n"
    )
    put(root, "linear", 1, LINEAR.onnx)
    put(root, "broken", 1, b"not an onnx file")
    (root / "odd").mkdir()
    put(root, "odd", "latest", V1.onnx)
    return root


@pytest.fixture
def servers() -> Iterator[list[ServerProcess]]:
    started: list[ServerProcess] = []
    yield started
    for server in started:
        server.stop()


def start(servers: list[ServerProcess], data: Path, *args: str) -> ServerProcess:
    server = ServerProcess(data, args=args).start()
    servers.append(server)
    return server


def oip(channel: grpc.Channel) -> grpc_service_pb2_grpc.GRPCInferenceServiceStub:
    return grpc_service_pb2_grpc.GRPCInferenceServiceStub(channel)


def infer_labels(channel: grpc.Channel, model: str, X: np.ndarray, version: str = "") -> tuple:
    inp = pb.ModelInferRequest.InferInputTensor(name="X", datatype="FP32", shape=X.shape)
    response = oip(channel).ModelInfer(
        pb.ModelInferRequest(
            model_name=model,
            model_version=version,
            inputs=[inp],
            raw_input_contents=[X.tobytes()],
            outputs=[pb.ModelInferRequest.InferRequestedOutputTensor(name="label")],
        )
    )
    return response.model_version, np.frombuffer(response.raw_output_contents[0], np.int64)


def versions(channel: grpc.Channel, model: str) -> list[tuple[int, str, tuple[str, ...]]]:
    listed = registry_stub(channel).ListVersions(registry_pb2.ListVersionsRequest(model=model))
    return sorted((v.version, v.sha256, tuple(v.aliases)) for v in listed.versions)


def test_served_at_start_and_a_restart_changes_nothing(
    tmp_path: Path, repository: Path, servers: list[ServerProcess]
) -> None:
    data = tmp_path / "data"
    server = start(servers, data, "--model-repository", str(repository))
    X = V2.X[:6]
    with server.channel() as channel:
        assert oip(channel).ModelReady(pb.ModelReadyRequest(name="simple")).ready
        version, labels = infer_labels(channel, "simple", X)
        assert version == "2"  # the highest version is champion
        expected = ort.InferenceSession(V2.onnx).run(["label"], {"X": X})[0]
        np.testing.assert_array_equal(labels, expected)
        version, labels = infer_labels(channel, "simple", X, version="1")  # policy all: both
        np.testing.assert_array_equal(labels, V1.estimator.predict(X))
        answer = inference_stub(channel).Predict(predict_request("linear", LINEAR.X[:3]))
        assert answer.version == 1
        np.testing.assert_allclose(
            from_tensor(answer.outputs[0]).ravel(),
            LINEAR.estimator.predict(LINEAR.X[:3]),
            rtol=1e-4,
        )
        before = {m: versions(channel, m) for m in ("simple", "linear")}
        with pytest.raises(grpc.RpcError):  # landed nothing, reported
            registry_stub(channel).GetModel(registry_pb2.GetModelRequest(name="broken"))
    log = server.log()
    assert "'simple': repository version 2 registered" in log
    assert "broken" in log and "not an ONNX model" in log
    assert "latest: not a version" in log
    assert server.faults() == []
    assert server.terminate() == 0

    again = start(servers, data, "--model-repository", str(repository))
    with again.channel() as channel:
        assert {m: versions(channel, m) for m in ("simple", "linear")} == before
        assert infer_labels(channel, "simple", X)[0] == "2"
    assert "registered" not in again.log().split("listening on")[-1]


def test_poll_mode_lands_a_new_version(
    tmp_path: Path, repository: Path, servers: list[ServerProcess]
) -> None:
    server = start(
        servers,
        tmp_path / "data",
        "--model-repository",
        str(repository),
        "--model-control-mode",
        "poll",
        "--repository-poll-seconds",
        "0.2",
    )
    v3 = onnx_models.logistic_regression(seed=14)
    X = v3.X[:8]
    with server.channel() as channel:
        assert infer_labels(channel, "simple", X)[0] == "2"
        put(repository, "simple", 3, v3.onnx)
        deadline = time.monotonic() + 60
        while infer_labels(channel, "simple", X)[0] != "3" and time.monotonic() < deadline:
            time.sleep(0.1)
        version, labels = infer_labels(channel, "simple", X)
        assert version == "3"
        np.testing.assert_array_equal(labels, v3.estimator.predict(X))
        assert [v for v, _, _ in versions(channel, "simple")] == [1, 2, 3]
    assert server.faults() == []


def test_poll_mode_unloads_a_removed_model_and_serves_it_when_it_returns(
    tmp_path: Path, repository: Path, servers: list[ServerProcess]
) -> None:
    import shutil

    server = start(
        servers,
        tmp_path / "data",
        "--model-repository",
        str(repository),
        "--model-control-mode",
        "poll",
        "--repository-poll-seconds",
        "0.2",
    )
    stub_dir = tmp_path / "kept-simple"
    with server.channel() as channel:
        ready = lambda: oip(channel).ModelReady(pb.ModelReadyRequest(name="simple")).ready  # noqa: E731
        assert ready()
        shutil.move(str(repository / "simple"), stub_dir)
        deadline = time.monotonic() + 60
        while ready() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not ready()  # unloaded, as Triton's poll mode does
        with pytest.raises(grpc.RpcError) as err:
            infer_labels(channel, "simple", onnx_models.logistic_regression(0).X[:2])
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        assert [v for v, _, _ in versions(channel, "simple")] == [1, 2]  # the registry keeps them
        shutil.move(str(stub_dir), repository / "simple")
        deadline = time.monotonic() + 60
        while not ready() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert ready()
        assert infer_labels(channel, "simple", onnx_models.logistic_regression(0).X[:2])[0] == "2"
    assert server.faults() == []


def test_explicit_mode_lands_nothing_at_start(
    tmp_path: Path, repository: Path, servers: list[ServerProcess]
) -> None:
    server = start(
        servers,
        tmp_path / "data",
        "--model-repository",
        str(repository),
        "--model-control-mode",
        "explicit",
    )
    with server.channel() as channel:
        models = registry_stub(channel).ListModels(registry_pb2.ListModelsRequest()).models
        assert [m.name for m in models] == []


def test_poll_without_a_repository_is_refused(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "data", args=["--model-control-mode", "poll"])
    with pytest.raises(RuntimeError, match="needs --model-repository"):
        server.start(timeout=60)
    server.stop()

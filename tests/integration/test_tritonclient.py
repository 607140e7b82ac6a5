"""tritonclient's gRPC client against the real server, one call flow per test, each in its own
process as Triton's example clients run: infer then statistics, model configuration, unload and
load, stream infer, BYTES tensors, metadata of every version, and the status codes of bad calls.

tritonclient registers its own ``inference.*`` messages in the default descriptor pool, which
clash with ``llmopt.gen.inference``; so the client half of this module (run as
``python -m tests.integration.test_tritonclient FLOW SETUP.json``) imports nothing of llmopt, and
the test half imports the server-side helpers only inside its fixtures.
"""

from __future__ import annotations

import json
import queue
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


# -- the client half (its own process) ------------------------------------------------------------


def _client(setup: dict[str, Any]) -> Any:
    import tritonclient.grpc as triton

    return triton.InferenceServerClient(url=setup["address"])


def _x(setup: dict[str, Any]) -> Any:
    import tritonclient.grpc as triton

    X = np.load(setup["data"])["X"]
    x = triton.InferInput("X", list(X.shape), "FP32")
    x.set_data_from_numpy(X)
    return x


def _refused(call: Any, status: str, text: str = "") -> str:
    """Run ``call``; it must fail with ``status`` (and ``text`` in its message)."""
    from tritonclient.utils import InferenceServerException

    try:
        call()
    except InferenceServerException as exc:
        assert exc.status() == f"StatusCode.{status}", (exc.status(), exc.message())
        assert text in (exc.message() or ""), exc.message()
        return exc.message() or ""
    raise AssertionError(f"expected {status}, the call succeeded")


def flow_infer_statistics(setup: dict[str, Any]) -> None:
    """The canonical sync flow: infer, then read the model's statistics."""
    client = _client(setup)
    model = setup["reg"]
    data = np.load(setup["data"])
    for _ in range(2):
        result = client.infer(model, [_x(setup)])
        np.testing.assert_array_equal(result.as_numpy("variable"), data["variable"])
    rows = len(data["X"])
    stats = client.get_inference_statistics(model)
    (s,) = stats.model_stats
    assert (s.name, s.version) == (model, "1"), s
    assert (s.inference_count, s.execution_count) == (2 * rows, 2), s
    assert s.last_inference > 1_600_000_000_000, s  # ms since the epoch
    i = s.inference_stats
    assert (i.success.count, i.fail.count) == (2, 0), i
    assert i.compute_infer.count == 2 and i.compute_infer.ns > 0, i
    assert i.success.ns >= i.compute_input.ns + i.compute_infer.ns + i.compute_output.ns, i
    assert [(b.batch_size, b.compute_infer.count) for b in s.batch_stats] == [(rows, 2)], s
    as_json = client.get_inference_statistics(model, "1", as_json=True)
    assert as_json["model_stats"][0]["inference_count"] == str(2 * rows), as_json
    every = client.get_inference_statistics()
    assert model in {m.name for m in every.model_stats}
    _refused(
        lambda: client.get_inference_statistics("no-such-model"),
        "NOT_FOUND",
        "Request for unknown model: 'no-such-model' is not found",
    )


def flow_model_config(setup: dict[str, Any]) -> None:
    client = _client(setup)
    config = client.get_model_config(setup["clf"]).config
    assert (config.name, config.platform, config.backend) == (
        setup["clf"],
        "onnxruntime_onnx",
        "onnxruntime",
    ), config
    assert config.max_batch_size == 0  # no batching: whole shapes
    assert [(i.name, i.data_type, list(i.dims)) for i in config.input] == [("X", 11, [-1, 16])]
    assert [(o.name, list(o.dims)) for o in config.output] == [
        ("label", [-1]),
        ("probabilities", [-1, 2]),
    ], config
    assert list(config.version_policy.specific.versions) == [1]
    as_json = client.get_model_config(setup["clf"], as_json=True)["config"]
    assert as_json["input"][0]["data_type"] == "TYPE_FP32", as_json
    # Dynamic batching on (the traffic policy's): a batch dimension, left out of the dims.
    batched = client.get_model_config(setup["batched"]).config
    assert batched.max_batch_size == 32, batched
    assert [list(i.dims) for i in batched.input] == [[16]], batched
    assert [list(o.dims) for o in batched.output] == [[], [2]], batched
    assert list(batched.dynamic_batching.preferred_batch_size) == [8, 16], batched
    assert batched.dynamic_batching.max_queue_delay_microseconds == 500, batched
    _refused(
        lambda: client.get_model_config("no-such-model"), "NOT_FOUND", "Request for unknown model"
    )


def flow_unload_load(setup: dict[str, Any]) -> None:
    client = _client(setup)
    model = setup["spare"]
    assert client.is_model_ready(model)
    client.unload_model(model)
    assert not client.is_model_ready(model)
    _refused(lambda: client.infer(model, [_x(setup)]), "UNAVAILABLE", "unloaded")
    index = {m.name: m for m in client.get_model_repository_index().models}
    assert (index[model].state, index[model].reason) == ("UNAVAILABLE", "unloaded"), index[model]
    client.load_model(model)
    assert client.is_model_ready(model)
    index = {m.name: m for m in client.get_model_repository_index().models}
    assert index[model].state == "READY", index[model]
    data = np.load(setup["data"])
    result = client.infer(model, [_x(setup)])
    np.testing.assert_array_equal(result.as_numpy("variable"), data["variable"])
    _refused(lambda: client.load_model("no-such-model"), "NOT_FOUND", "Request for unknown model")
    _refused(lambda: client.unload_model("no-such-model"), "NOT_FOUND", "Request for unknown model")


def flow_stream(setup: dict[str, Any]) -> None:
    import tritonclient.grpc as triton

    client = _client(setup)
    answers: queue.Queue[tuple[Any, Any]] = queue.Queue()
    client.start_stream(callback=lambda result, error: answers.put((result, error)))
    data = np.load(setup["data"])
    bad = triton.InferInput("X", [len(data["X"]), 16], "FP64")
    bad.set_data_from_numpy(data["X"].astype(np.float64))
    client.async_stream_infer(setup["reg"], [_x(setup)], request_id="s-1")
    client.async_stream_infer(setup["reg"], [bad], request_id="s-2")
    client.async_stream_infer("no-such-model", [_x(setup)], request_id="s-3")
    client.async_stream_infer(setup["reg"], [_x(setup)], request_id="s-4")
    got = [answers.get(timeout=30) for _ in range(4)]
    client.stop_stream()
    (r1, e1), (r2, e2), (r3, e3), (r4, e4) = got
    assert e1 is None and e4 is None, (e1, e4)
    assert [r.get_response().id for r in (r1, r4)] == ["s-1", "s-4"]
    for r in (r1, r4):
        np.testing.assert_array_equal(r.as_numpy("variable"), data["variable"])
    assert r2 is None and "X" in e2.message(), e2  # the stream goes on after an error
    assert r3 is None and "Request for unknown model" in e3.message(), e3


def flow_bytes(setup: dict[str, Any]) -> None:
    import tritonclient.grpc as triton

    client = _client(setup)
    words = np.array([b"red", b"blue", "grün".encode(), b""], dtype=object)
    text = triton.InferInput("text", [len(words)], "BYTES")
    text.set_data_from_numpy(words)
    result = client.infer(setup["words"], [text])
    np.testing.assert_array_equal(result.as_numpy("code"), [0, 2, -1, -1])
    assert result.as_numpy("echo").tolist() == list(words)
    meta = client.get_model_metadata(setup["words"])
    assert [(t.name, t.datatype) for t in meta.inputs] == [("text", "BYTES")]
    assert client.get_model_config(setup["words"]).config.input[0].data_type == 13  # TYPE_STRING
    bad = triton.InferInput("text", [1], "BYTES")
    bad.set_data_from_numpy(np.array([b"\xff"], dtype=object))
    _refused(lambda: client.infer(setup["words"], [bad]), "INVALID_ARGUMENT", "UTF-8")


def flow_metadata(setup: dict[str, Any]) -> None:
    client = _client(setup)
    meta = client.get_model_metadata(setup["versions"])
    assert list(meta.versions) == ["1", "2", "3"], meta
    server = client.get_server_metadata()
    assert sorted(server.extensions) == ["model_configuration", "model_repository", "statistics"]
    _refused(
        lambda: client.get_model_metadata("no-such-model"),
        "NOT_FOUND",
        "Request for unknown model: 'no-such-model' is not found",
    )
    _refused(lambda: client.infer("no-such-model", [_x(setup)]), "NOT_FOUND", "unknown model")
    _refused(lambda: client.get_model_metadata(setup["versions"], "9"), "NOT_FOUND")
    _refused(lambda: client.get_model_config(setup["versions"], "v1"), "INVALID_ARGUMENT")
    _refused(lambda: client.get_inference_statistics(setup["versions"], "x"), "INVALID_ARGUMENT")


def flow_repository(setup: dict[str, Any]) -> None:
    """Explicit model control over a model repository: nothing served until load_model."""
    client = _client(setup)
    assert not client.is_model_ready("linear")
    client.load_model("linear")
    assert client.is_model_ready("linear")
    data = np.load(setup["data"])
    result = client.infer("linear", [_x(setup)])
    np.testing.assert_array_equal(result.as_numpy("variable"), data["variable"])
    message = _refused(lambda: client.load_model("broken"), "FAILED_PRECONDITION", "broken")
    index = client.get_model_repository_index().models
    broken = [m for m in index if m.name == "broken"]
    assert [m.state for m in broken] == ["UNAVAILABLE"] and broken[0].reason, (index, message)
    assert [m.state for m in index if m.name == "linear"] == ["READY"], index


def flow_async_infer(setup: dict[str, Any]) -> None:
    """The callback flow: several async_infer calls in flight, then the statistics."""
    client = _client(setup)
    model = setup["callbacks"]
    data = np.load(setup["data"])
    answers: queue.Queue[Any] = queue.Queue()
    for _ in range(4):
        client.async_infer(
            model, [_x(setup)], callback=lambda result, error: answers.put((result, error))
        )
    for _ in range(4):
        result, error = answers.get(timeout=30)
        assert error is None, error
        np.testing.assert_array_equal(result.as_numpy("variable"), data["variable"])
    (s,) = client.get_inference_statistics(model).model_stats
    assert s.inference_stats.success.count == 4, s


def flow_aio(setup: dict[str, Any]) -> None:
    """The asyncio flow (tritonclient.grpc.aio): infer, then the statistics and the config."""
    import asyncio

    import tritonclient.grpc.aio as aio_triton

    async def run() -> None:
        client = aio_triton.InferenceServerClient(url=setup["address"])
        try:
            model = setup["aio"]
            data = np.load(setup["data"])
            x = aio_triton.InferInput("X", list(data["X"].shape), "FP32")
            x.set_data_from_numpy(data["X"])
            result = await client.infer(model, [x])
            np.testing.assert_array_equal(result.as_numpy("variable"), data["variable"])
            stats = await client.get_inference_statistics(model)
            assert stats.model_stats[0].inference_count == len(data["X"]), stats
            config = await client.get_model_config(model)
            assert config.config.platform == "onnxruntime_onnx", config
            assert await client.is_server_ready()
        finally:
            await client.close()

    asyncio.run(run())


FLOWS = {
    "infer_statistics": flow_infer_statistics,
    "model_config": flow_model_config,
    "unload_load": flow_unload_load,
    "stream": flow_stream,
    "bytes": flow_bytes,
    "metadata": flow_metadata,
    "repository": flow_repository,
    "async_infer": flow_async_infer,
    "aio": flow_aio,
}


# -- the test half --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def setup(server: Any, channel: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Fresh models on the shared server, and the data the flows check answers against."""
    import onnxruntime as ort

    from llmopt.gen.llmopt.v1 import inference_pb2, inference_pb2_grpc
    from tests.support import onnx_models
    from tests.support.inference_client import register
    from tests.support.onnx_models import string_model

    tag = uuid.uuid4().hex[:6]
    kinds = ("reg", "clf", "spare", "words", "versions", "batched", "aio", "callbacks")
    names = {k: f"triton-{k}-{tag}" for k in kinds}
    reg, clf = onnx_models.linear_regression(0), onnx_models.logistic_regression(0)
    register(channel, names["reg"], reg.onnx, alias="champion")
    register(channel, names["clf"], clf.onnx, alias="champion")
    register(channel, names["batched"], clf.onnx, alias="champion")
    batching = inference_pb2.DynamicBatching(
        max_batch_size=32, max_queue_delay_us=500, preferred_batch_sizes=[8, 16]
    )
    inference_pb2_grpc.InferenceStub(channel).SetTrafficPolicy(
        inference_pb2.SetTrafficPolicyRequest(
            policy=inference_pb2.TrafficPolicy(
                model=names["batched"], mode=inference_pb2.OFF, batching=batching
            )
        )
    )
    register(channel, names["spare"], reg.onnx, alias="champion")
    register(channel, names["aio"], reg.onnx, alias="champion")
    register(channel, names["callbacks"], reg.onnx, alias="champion")
    register(channel, names["words"], string_model(), alias="champion")
    register(channel, names["versions"], reg.onnx)
    register(channel, names["versions"], clf.onnx, alias="champion")
    register(channel, names["versions"], onnx_models.logistic_regression(1).onnx)
    X = reg.X[:7]
    (variable,) = ort.InferenceSession(reg.onnx).run(["variable"], {"X": X})
    folder = tmp_path_factory.mktemp("tritonclient")
    np.savez(folder / "data.npz", X=X, variable=variable)
    path = folder / "setup.json"
    path.write_text(
        json.dumps({"address": server.address, "data": str(folder / "data.npz")} | names)
    )
    return path


def _run_flow(flow: str, setup: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "tests.integration.test_tritonclient", flow, str(setup)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"{flow} ok" in done.stdout


@pytest.mark.parametrize("flow", sorted(set(FLOWS) - {"repository"}))
def test_tritonclient_flow(setup: Path, flow: str) -> None:
    _run_flow(flow, setup)


def test_tritonclient_loads_from_a_model_repository(server_factory: Any, tmp_path: Path) -> None:
    import onnxruntime as ort

    from tests.support import onnx_models

    reg = onnx_models.linear_regression(0)
    root = tmp_path / "models"
    for model, data in (("linear", reg.onnx), ("broken", b"not an onnx file")):
        (root / model / "1").mkdir(parents=True)
        (root / model / "1" / "model.onnx").write_bytes(data)
    server = server_factory("--model-repository", str(root), "--model-control-mode", "explicit")
    X = reg.X[:5]
    (variable,) = ort.InferenceSession(reg.onnx).run(["variable"], {"X": X})
    np.savez(tmp_path / "data.npz", X=X, variable=variable)
    path = tmp_path / "setup.json"
    path.write_text(json.dumps({"address": server.address, "data": str(tmp_path / "data.npz")}))
    _run_flow("repository", path)


if __name__ == "__main__":
    assert "llmopt.gen.inference.grpc_service_pb2" not in sys.modules
    FLOWS[sys.argv[1]](json.loads(Path(sys.argv[2]).read_text()))
    print(f"{sys.argv[1]} ok")

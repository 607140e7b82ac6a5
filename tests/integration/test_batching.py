"""Dynamic batching through the real server: SetTrafficPolicy turns it on, concurrent ModelInfer
calls share runs (ModelStatistics counts one execution for them), answers equal the unbatched
ones, and a model repository's config.pbtxt dynamic_batching becomes the model's policy."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from pathlib import Path

import grpc
import numpy as np
import onnxruntime as ort
import pytest

from llmopt.gen.inference import grpc_service_pb2 as oip
from llmopt.gen.inference import grpc_service_pb2_grpc as oip_grpc
from llmopt.gen.llmopt.v1 import inference_pb2, inference_pb2_grpc
from tests.support import onnx_models
from tests.support.inference_client import register
from tests.support.server import ServerProcess

pytestmark = pytest.mark.integration
CALLS = 4  # the server's unary workers (--workers 4, the default) all take one at once


def _infer(model: str, X: np.ndarray) -> oip.ModelInferRequest:
    msg = oip.ModelInferRequest(model_name=model)
    msg.inputs.add(name="X", datatype="FP32", shape=X.shape)
    msg.raw_input_contents.append(X.tobytes())
    return msg


def _stats(stub: oip_grpc.GRPCInferenceServiceStub, model: str) -> oip.ModelStatistics:
    [s] = stub.ModelStatistics(oip.ModelStatisticsRequest(name=model), timeout=10).model_stats
    return s


def test_concurrent_infers_share_one_run_and_answer_as_unbatched(
    server: ServerProcess, channel: grpc.Channel
) -> None:
    model = f"batched-{uuid.uuid4().hex[:8]}"
    gbm = onnx_models.gradient_boosting(0, trees=20)
    register(channel, model, gbm.onnx, alias="champion")
    X = gbm.X[: 2 * CALLS]
    expected = ort.InferenceSession(gbm.onnx).run(None, {"X": X})
    # A batch of 2 * CALLS rows runs as soon as the CALLS requests are in (long before 10 s).
    batching = inference_pb2.DynamicBatching(max_batch_size=2 * CALLS, max_queue_delay_us=10**7)
    policy = inference_pb2.TrafficPolicy(model=model, batching=batching)
    inference = inference_pb2_grpc.InferenceStub(channel)
    inference.SetTrafficPolicy(inference_pb2.SetTrafficPolicyRequest(policy=policy), timeout=10)
    got = inference.GetTrafficPolicy(inference_pb2.GetTrafficPolicyRequest(model=model))
    assert got.batching == batching
    stub = oip_grpc.GRPCInferenceServiceStub(channel)
    before = _stats(stub, model)
    answers: list[oip.ModelInferResponse | None] = [None] * CALLS
    barrier = threading.Barrier(CALLS)

    def call(i: int) -> None:
        barrier.wait()
        answers[i] = stub.ModelInfer(_infer(model, X[2 * i : 2 * i + 2]), timeout=30)

    threads = [threading.Thread(target=call, args=(i,)) for i in range(CALLS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    label = np.concatenate(
        [np.frombuffer(a.raw_output_contents[0], dtype=np.int64) for a in answers if a]
    )
    np.testing.assert_array_equal(label, expected[0])
    after = _stats(stub, model)
    assert after.inference_count - before.inference_count == 2 * CALLS
    assert after.execution_count - before.execution_count == 1, after
    assert any(b.batch_size == 2 * CALLS for b in after.batch_stats), after


def test_config_pbtxt_dynamic_batching_becomes_the_policy(
    server_factory: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    lr = onnx_models.logistic_regression(0)
    root = tmp_path / "models"
    (root / "scorer" / "1").mkdir(parents=True)
    (root / "scorer" / "1" / "model.onnx").write_bytes(lr.onnx)
    (root / "scorer" / "config.pbtxt").write_text(
        'name: "scorer"\nplatform: "onnxruntime_onnx"\nmax_batch_size: 32\n'
        "dynamic_batching { preferred_batch_size: [8, 16] max_queue_delay_microseconds: 300 }\n"
    )
    server = server_factory("--model-repository", str(root))
    with server.channel() as channel:
        policy = inference_pb2_grpc.InferenceStub(channel).GetTrafficPolicy(
            inference_pb2.GetTrafficPolicyRequest(model="scorer"), timeout=10
        )
        assert policy.batching == inference_pb2.DynamicBatching(
            max_batch_size=32, max_queue_delay_us=300, preferred_batch_sizes=[8, 16]
        )
        config = (
            oip_grpc.GRPCInferenceServiceStub(channel)
            .ModelConfig(oip.ModelConfigRequest(name="scorer"), timeout=10)
            .config
        )
        assert config.max_batch_size == 32
        assert list(config.dynamic_batching.preferred_batch_size) == [8, 16]

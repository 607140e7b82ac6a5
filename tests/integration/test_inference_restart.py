"""Traffic policies survive a restart, and champions are loaded before the server is SERVING."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from llmopt.gen.llmopt.v1 import inference_pb2
from tests.support import onnx_models
from tests.support.inference_client import inference_stub, predict_request, register
from tests.support.server import ServerProcess

pytestmark = pytest.mark.integration


def test_policy_survives_kill_and_champion_is_warm_before_serving(
    server_factory: Callable[..., ServerProcess],
) -> None:
    lr, lr2 = onnx_models.logistic_regression(0), onnx_models.logistic_regression(1)
    first = server_factory("--max-loaded-models", "4", "--onnx-intra-op-threads", "1")
    policy = inference_pb2.TrafficPolicy(
        model="m", mode=inference_pb2.SPLIT, challenger_percent=33.33
    )
    with first.channel() as channel:
        register(channel, "m", lr.onnx, alias="champion")
        register(channel, "m", lr2.onnx, alias="challenger")
        inference_stub(channel).SetTrafficPolicy(
            inference_pb2.SetTrafficPolicyRequest(policy=policy)
        )
    first.kill()  # acknowledged means durable: no clean shutdown needed

    second = server_factory(data_dir=first.data_dir)
    log = second.log()
    served_at = log.rindex("serving on")
    assert log.rindex("model 'm' version 1 loaded and warmed") < served_at
    assert log.rindex("model 'm' version 2 loaded and warmed") < served_at
    with second.channel() as channel:
        stub = inference_stub(channel)
        assert stub.GetTrafficPolicy(inference_pb2.GetTrafficPolicyRequest(model="m")) == policy
        versions = {stub.Predict(predict_request("m", lr.X[:1])).version for _ in range(60)}
        assert versions == {1, 2}


def test_unavailable_execution_provider_stops_the_server_with_a_clear_message(
    server_factory: Callable[..., ServerProcess],
) -> None:
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("CUDA is available here")
    proc = server_factory("--onnx-providers", "cuda", start=False)
    with pytest.raises(RuntimeError, match="exited"):
        proc.start(timeout=60)
    assert "'cuda' (CUDAExecutionProvider) is not available" in proc.log()


def test_bad_provider_flag_is_refused(server_factory: Callable[..., ServerProcess]) -> None:
    proc = server_factory("--onnx-providers", "gpu9000", start=False)
    with pytest.raises(RuntimeError, match="exited"):
        proc.start(timeout=60)
    assert "--onnx-providers" in proc.log()

"""llmopt.v1.Inference through the real server process."""

from __future__ import annotations

import math
import uuid

import grpc
import numpy as np
import onnxruntime as ort
import pytest

from llmopt.api.convert import from_tensor, to_tensor
from llmopt.gen.llmopt.v1 import common_pb2, inference_pb2, registry_pb2
from tests.support import onnx_models
from tests.support.inference_client import (
    inference_stub,
    predict_request,
    register,
    registry_stub,
)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def models() -> dict[str, onnx_models.TrainedModel]:
    return {
        "lr": onnx_models.logistic_regression(0),
        "lr2": onnx_models.logistic_regression(1),
        "linreg": onnx_models.linear_regression(0),
    }


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def outputs_of(response: inference_pb2.PredictResponse) -> dict[str, np.ndarray]:
    return {t.name: from_tensor(t) for t in response.outputs}


@pytest.mark.parametrize("rows", [1, 1000])
def test_classifier_and_regressor_predictions_equal_onnxruntime_and_sklearn(
    channel: grpc.Channel, models: dict[str, onnx_models.TrainedModel], rows: int
) -> None:
    stub = inference_stub(channel)
    for key, outputs in (("lr", ("label", "probabilities")), ("linreg", ("variable",))):
        trained = models[key]
        name = unique(key)
        register(channel, name, trained.onnx, alias="champion")
        X = np.resize(trained.X, (rows, onnx_models.FEATURES))
        response = stub.Predict(predict_request(name, X, id="req-1"))
        assert (response.id, response.model, response.version) == ("req-1", name, 1)
        assert response.variant == inference_pb2.CHAMPION and response.request_id
        got = outputs_of(response)
        direct = dict(
            zip(
                outputs,
                ort.InferenceSession(trained.onnx).run(list(outputs), {"X": X}),
                strict=True,
            )
        )
        for out in outputs:
            np.testing.assert_array_equal(got[out], direct[out])
        if key == "lr":
            np.testing.assert_array_equal(got["label"], trained.estimator.predict(X))
            np.testing.assert_allclose(
                got["probabilities"], trained.estimator.predict_proba(X), rtol=1e-4, atol=1e-5
            )
        else:
            np.testing.assert_allclose(
                got["variable"].ravel(), trained.estimator.predict(X), rtol=1e-4, atol=1e-4
            )


def test_split_policy_through_the_server(
    channel: grpc.Channel, models: dict[str, onnx_models.TrainedModel]
) -> None:
    stub = inference_stub(channel)
    name = unique("split")
    register(channel, name, models["lr"].onnx, alias="champion")
    register(channel, name, models["lr2"].onnx, alias="challenger")
    policy = inference_pb2.TrafficPolicy(
        model=name, mode=inference_pb2.SPLIT, challenger_percent=10.0
    )
    assert stub.SetTrafficPolicy(inference_pb2.SetTrafficPolicyRequest(policy=policy)) == policy
    assert stub.GetTrafficPolicy(inference_pb2.GetTrafficPolicyRequest(model=name)) == policy
    X = models["lr"].X[:1]
    n = 1000
    variants = [stub.Predict(predict_request(name, X)).variant for _ in range(n)]
    hits = variants.count(inference_pb2.CHALLENGER)
    sd = math.sqrt(n * 0.1 * 0.9)
    assert n * 0.1 - 5 * sd <= hits <= n * 0.1 + 5 * sd
    for key in ("alice", "bob", "carol"):
        seen = {stub.Predict(predict_request(name, X, routing_key=key)).version for _ in range(10)}
        assert len(seen) == 1
    stats = stub.GetModelStats(inference_pb2.GetModelStatsRequest(model=name))
    by = {(v.version, v.variant): v for v in stats.variants}
    assert by[(2, inference_pb2.CHALLENGER)].requests >= hits
    assert sum(v.requests for v in stats.variants) == n + 30
    assert by[(1, inference_pb2.CHAMPION)].latency.p99_ms > 0


def test_traffic_policy_after_promote_and_rollback_says_what_routing_does(
    channel: grpc.Channel, models: dict[str, onnx_models.TrainedModel]
) -> None:
    stub, reg = inference_stub(channel), registry_stub(channel)
    name = unique("ended")
    register(channel, name, models["lr"].onnx, alias="champion")
    register(channel, name, models["lr2"].onnx, alias="challenger")
    split = inference_pb2.TrafficPolicy(
        model=name, mode=inference_pb2.SPLIT, challenger_percent=50.0
    )
    stub.SetTrafficPolicy(inference_pb2.SetTrafficPolicyRequest(policy=split))
    off = inference_pb2.TrafficPolicy(model=name, mode=inference_pb2.OFF, challenger_percent=0)
    get = inference_pb2.GetTrafficPolicyRequest(model=name)
    X = models["lr"].X[:1]

    reg.Promote(registry_pb2.PromoteRequest(model=name))
    assert stub.GetTrafficPolicy(get) == off
    reg.Rollback(registry_pb2.RollbackRequest(model=name))
    assert stub.GetTrafficPolicy(get) == off
    register(channel, name, models["lr2"].onnx, alias="challenger")
    assert stub.GetTrafficPolicy(get) == off
    variants = {
        stub.Predict(predict_request(name, X, routing_key=f"user-{i}")).variant for i in range(40)
    }
    assert variants == {inference_pb2.CHAMPION}  # what the policy says is what routing does


def test_shadow_stats_through_the_server(
    channel: grpc.Channel, models: dict[str, onnx_models.TrainedModel]
) -> None:
    stub = inference_stub(channel)
    name = unique("shadow")
    register(channel, name, models["lr"].onnx, alias="champion")
    register(channel, name, models["lr2"].onnx, alias="challenger")
    stub.SetTrafficPolicy(
        inference_pb2.SetTrafficPolicyRequest(
            policy=inference_pb2.TrafficPolicy(model=name, mode=inference_pb2.SHADOW)
        )
    )
    for _ in range(10):
        response = stub.Predict(predict_request(name, models["lr"].X[:20]))
        assert (response.version, response.variant) == (1, inference_pb2.CHAMPION)
    for _ in range(200):  # the copies run off the request path
        shadow = stub.GetModelStats(inference_pb2.GetModelStatsRequest(model=name)).shadow
        if shadow.compared + shadow.dropped + shadow.errors == 10:
            break
    assert shadow.compared + shadow.dropped == 10 and shadow.compared >= 1
    assert 0 < shadow.label_agreement <= 1 and shadow.max_abs_diff > 0


def test_predict_stream_answers_every_message_and_survives_bad_ones(
    channel: grpc.Channel, models: dict[str, onnx_models.TrainedModel]
) -> None:
    stub = inference_stub(channel)
    name = unique("stream")
    register(channel, name, models["lr"].onnx, alias="champion")
    X = models["lr"].X[:3]
    requests = [
        predict_request(name, X, id="a"),
        predict_request(name, X.astype(np.float64), id="bad-dtype"),
        predict_request("no-such-model", X, id="ghost"),
        predict_request(name, X, id="b"),
    ]
    answers = {r.id: r for r in stub.PredictStream(iter(requests))}
    assert list(answers) == ["a", "bad-dtype", "ghost", "b"]
    assert answers["bad-dtype"].error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert "dtype" in answers["bad-dtype"].error.message
    assert answers["ghost"].error.code == grpc.StatusCode.NOT_FOUND.value[0]
    for ok in ("a", "b"):
        assert not answers[ok].HasField("error")
        np.testing.assert_array_equal(
            outputs_of(answers[ok])["label"], models["lr"].estimator.predict(X)
        )


def _bad_requests(
    name: str, X: np.ndarray
) -> list[tuple[str, inference_pb2.PredictRequest, grpc.StatusCode]]:
    good = to_tensor(X, "X")

    def tensor(**changes: object) -> common_pb2.Tensor:
        t = common_pb2.Tensor()
        t.CopyFrom(good)
        for k, v in changes.items():
            if k == "shape":
                del t.shape[:]
                t.shape.extend(v)  # type: ignore[arg-type]
            else:
                setattr(t, k, v)
        return t

    req = inference_pb2.PredictRequest
    invalid = grpc.StatusCode.INVALID_ARGUMENT
    return [
        ("unknown input", req(model=name, inputs=[tensor(name="Y")]), invalid),
        ("missing input", req(model=name, inputs=[]), invalid),
        ("duplicate input", req(model=name, inputs=[good, good]), invalid),
        ("dtype", req(model=name, inputs=[tensor(dtype=common_pb2.INT32)]), invalid),
        ("unknown dtype", req(model=name, inputs=[tensor(dtype=99)]), invalid),
        ("rank", req(model=name, inputs=[tensor(shape=[X.size])]), invalid),
        ("fixed dim", req(model=name, inputs=[tensor(shape=[X.shape[0] * 2, 8])]), invalid),
        ("byte length", req(model=name, inputs=[tensor(raw_data=good.raw_data[:-1])]), invalid),
        ("negative dim", req(model=name, inputs=[tensor(shape=[-1, 16])]), invalid),
        ("unknown output", req(model=name, inputs=[good], output_names=["nope"]), invalid),
        ("version and alias", req(model=name, inputs=[good], version=1, alias="x"), invalid),
        ("unknown version", req(model=name, inputs=[good], version=42), grpc.StatusCode.NOT_FOUND),
        ("unknown model", req(model="ghost-model", inputs=[good]), grpc.StatusCode.NOT_FOUND),
        ("no model", req(inputs=[good]), invalid),
    ]


def test_every_malformed_input_is_refused_and_the_server_keeps_serving(
    channel: grpc.Channel, models: dict[str, onnx_models.TrainedModel]
) -> None:
    stub = inference_stub(channel)
    name = unique("bad")
    register(channel, name, models["lr"].onnx, alias="champion")
    X = models["lr"].X[:2]
    for label, request, code in _bad_requests(name, X):
        with pytest.raises(grpc.RpcError) as info:
            stub.Predict(request)
        assert info.value.code() == code, (label, info.value.details())
        assert info.value.details(), label
    assert stub.Predict(predict_request(name, X)).version == 1


def test_no_champion_is_failed_precondition_naming_the_model(
    channel: grpc.Channel, models: dict[str, onnx_models.TrainedModel]
) -> None:
    stub = inference_stub(channel)
    name = unique("nochamp")
    register(channel, name, models["lr"].onnx)
    with pytest.raises(grpc.RpcError) as info:
        stub.Predict(predict_request(name, models["lr"].X[:1]))
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert name in info.value.details()
    pinned = stub.Predict(predict_request(name, models["lr"].X[:1], version=1))
    assert pinned.variant == inference_pb2.PINNED


def test_predict_from_request_context_through_the_default_feature_vector(
    channel: grpc.Channel,
) -> None:
    from skl2onnx import to_onnx
    from sklearn.linear_model import LinearRegression

    from llmopt.features.context import RequestContext, default_context

    rng = np.random.default_rng(3)
    X = rng.random((200, 10), dtype=np.float32)
    est = LinearRegression().fit(X, X @ rng.normal(size=10))
    name = unique("ctx")
    register(channel, name, to_onnx(est, X[:1], target_opset=17).SerializeToString(), "champion")
    context = common_pb2.RequestContext(
        task_type="summarization", input_length=300, priority=7, hour_of_day=13, day_of_week=2
    )
    response = inference_stub(channel).Predict(
        inference_pb2.PredictRequest(model=name, context=context)
    )
    vector = default_context(
        RequestContext(
            task_type="summarization", input_length=300, priority=7, hour_of_day=13, day_of_week=2
        )
    ).astype(np.float32)
    (got,) = outputs_of(response).values()
    np.testing.assert_allclose(got.ravel(), est.predict(vector[None, :]), rtol=1e-4, atol=1e-4)
    with pytest.raises(grpc.RpcError) as info:  # tensors and a context at once
        inference_stub(channel).Predict(
            inference_pb2.PredictRequest(
                model=name, context=context, inputs=[to_tensor(X[:1], "X")]
            )
        )
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT

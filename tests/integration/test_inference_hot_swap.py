"""Promote and rollback under continuous concurrent load: no request fails, and every answer
comes from a version that was champion or challenger while the request ran."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable

import grpc
import numpy as np
import pytest

from llmopt.api.convert import from_tensor
from llmopt.gen.llmopt.v1 import inference_pb2, registry_pb2
from tests.support import onnx_models
from tests.support.inference_client import (
    inference_stub,
    predict_request,
    register,
    registry_stub,
)

pytestmark = pytest.mark.integration

State = tuple[int | None, int | None]


def test_twenty_promote_rollback_cycles_under_load_fail_no_request(channel: grpc.Channel) -> None:
    lr, lr2 = onnx_models.logistic_regression(0), onnx_models.logistic_regression(1)
    name = f"swap-{uuid.uuid4().hex[:8]}"
    register(channel, name, lr.onnx, alias="champion")
    register(channel, name, lr2.onnx)
    stub, reg = inference_stub(channel), registry_stub(channel)
    split = inference_pb2.SetTrafficPolicyRequest(
        policy=inference_pb2.TrafficPolicy(
            model=name, mode=inference_pb2.SPLIT, challenger_percent=50
        )
    )
    stub.SetTrafficPolicy(split)
    X = lr.X[:8]
    expected = {1: lr.estimator.predict(X), 2: lr2.estimator.predict(X)}
    request = predict_request(name, X)

    changes: list[tuple[float, float, State]] = [(float("-inf"), float("-inf"), (1, None))]
    results: list[tuple[float, float, int]] = []
    failures: list[BaseException] = []
    stop = threading.Event()

    def client() -> None:
        mine: list[tuple[float, float, int]] = []
        while not stop.is_set():
            start = time.monotonic()
            try:
                response = stub.Predict(request, timeout=30)
                labels = from_tensor(response.outputs[0])
                np.testing.assert_array_equal(labels, expected[response.version])
            except BaseException as exc:
                failures.append(exc)
                return
            mine.append((start, time.monotonic(), response.version))
        results.extend(mine)

    def change(call: Callable[[], object], state: State) -> None:
        before = time.monotonic()
        call()
        changes.append((before, time.monotonic(), state))

    clients = [threading.Thread(target=client) for _ in range(4)]
    for t in clients:
        t.start()
    try:
        for _ in range(20):
            change(
                lambda: reg.SetAlias(
                    registry_pb2.SetAliasRequest(model=name, alias="challenger", version=2)
                ),
                (1, 2),
            )
            # Promote ends the split (the policy turns OFF): each cycle's experiment sets it.
            change(lambda: stub.SetTrafficPolicy(split), (1, 2))
            change(lambda: reg.Promote(registry_pb2.PromoteRequest(model=name)), (2, None))
            change(lambda: reg.Rollback(registry_pb2.RollbackRequest(model=name)), (1, None))
            time.sleep(0.01)
    finally:
        stop.set()
        for t in clients:
            t.join()
    assert not failures, failures[:3]
    assert len(results) >= 100
    for start, end, version in results:
        allowed: set[int | None] = set()
        for i, (began, _, state) in enumerate(changes):
            next_done = changes[i + 1][1] if i + 1 < len(changes) else float("inf")
            if began <= end and next_done >= start:
                allowed.update(state)
        assert version in allowed, (start, end, version)
    assert {v for _, _, v in results} == {1, 2}
    stats = stub.GetModelStats(inference_pb2.GetModelStatsRequest(model=name))
    assert sum(v.errors for v in stats.variants) == 0

"""Dynamic batching through the engine: a policy with batching merges concurrent predictions of
one version into shared runs (statistics count each run once and each request with its wait),
answers equal unbatched ones, a passed deadline is dropped before compute, and turning batching
off or unloading the model closes the batchers."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import numpy as np
import pytest

from llmopt import errors
from llmopt.inference import InferenceEngine
from llmopt.inference.batching import BatchingConfig
from llmopt.inference.routing import TrafficPolicy
from llmopt.registry import Registry
from tests.support import onnx_models
from tests.unit.inference.conftest import upload

Engine = Callable[..., InferenceEngine]
THREADS = 8


@pytest.fixture(scope="module")
def gbm() -> onnx_models.TrainedModel:
    return onnx_models.gradient_boosting(0, trees=20)


def _concurrently(engine: InferenceEngine, X: np.ndarray) -> list[dict[str, np.ndarray]]:
    """One 2-row prediction per thread, all released at once."""
    out: list[dict[str, np.ndarray]] = [{}] * THREADS
    barrier = threading.Barrier(THREADS)

    def call(i: int) -> None:
        barrier.wait()
        out[i] = engine.predict("gbm", {"X": X[2 * i : 2 * i + 2]}).outputs

    threads = [threading.Thread(target=call, args=(i,)) for i in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out


def test_concurrent_predictions_share_runs_and_answer_as_unbatched(
    registry: Registry, make_engine: Engine, gbm: onnx_models.TrainedModel
) -> None:
    upload(registry, "gbm", gbm.onnx, alias="champion")
    engine = make_engine()
    engine.warm_up()
    alone = [engine.predict("gbm", {"X": gbm.X[2 * i : 2 * i + 2]}).outputs for i in range(THREADS)]
    # A batch runs when its 16 rows are there (max_batch_size), long before the 10 s delay.
    batching = BatchingConfig(2 * THREADS, 10_000_000)
    engine.set_policy(TrafficPolicy("gbm", batching=batching))
    (before,) = engine.statistics("gbm")
    batched = _concurrently(engine, gbm.X)
    for a, b in zip(alone, batched, strict=True):
        assert a.keys() == b.keys()
        for name in a:
            np.testing.assert_array_equal(a[name], b[name])
    (after,) = engine.statistics("gbm")
    assert after.inference_count - before.inference_count == 2 * THREADS
    assert after.success.count - before.success.count == THREADS
    assert after.execution_count - before.execution_count == 1  # one merged run
    assert any(b.batch_size == 2 * THREADS for b in after.batches)
    assert after.queue.ns > before.queue.ns  # the requests waited for each other


def test_a_passed_deadline_is_dropped_before_compute(
    registry: Registry, make_engine: Engine, gbm: onnx_models.TrainedModel
) -> None:
    upload(registry, "gbm", gbm.onnx, alias="champion")
    engine = make_engine()
    engine.warm_up()
    engine.set_policy(TrafficPolicy("gbm", batching=BatchingConfig(64, 1000)))
    (before,) = engine.statistics("gbm")
    with pytest.raises(errors.DeadlineExceeded):
        engine.predict("gbm", {"X": gbm.X[:2]}, deadline=time.monotonic() - 1)
    (after,) = engine.statistics("gbm")
    assert after.execution_count == before.execution_count
    assert after.fail.count == before.fail.count + 1


def test_turning_batching_off_or_unloading_closes_the_batchers(
    registry: Registry, make_engine: Engine, gbm: onnx_models.TrainedModel
) -> None:
    upload(registry, "gbm", gbm.onnx, alias="champion")
    engine = make_engine()
    engine.warm_up()
    engine.set_policy(TrafficPolicy("gbm", batching=BatchingConfig(64, 100)))
    engine.predict("gbm", {"X": gbm.X[:2]})
    [(_, _, batcher)] = engine._batchers.values()
    engine.set_policy(TrafficPolicy("gbm"))
    assert batcher.closed and not engine._batchers
    engine.predict("gbm", {"X": gbm.X[:2]})  # unbatched now
    assert not engine._batchers
    engine.set_policy(TrafficPolicy("gbm", batching=BatchingConfig(64, 100)))
    engine.predict("gbm", {"X": gbm.X[:2]})
    [(_, _, batcher)] = engine._batchers.values()
    engine.unload("gbm")
    assert batcher.closed and not engine._batchers

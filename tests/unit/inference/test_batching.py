"""DynamicBatcher over real onnxruntime sessions: merged answers equal unbatched ones, limits in
rows, preferred sizes, deadlines, errors, the unsplittable fallback and close.

Tests that need requests to meet in one batch use a long queue delay and a max_batch_size the
submitted rows fill exactly, so the batch runs because it is full, never because of timing.
"""

from __future__ import annotations

import doctest
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from onnx import TensorProto, helper

from llmopt import errors
from llmopt.inference import batching
from llmopt.inference.batching import BatchingConfig, BatchResult, DynamicBatcher
from llmopt.inference.session import LoadedModel, SessionConfig
from tests.support import onnx_models

LONG_US = 10_000_000  # the longest delay: a batch that waits for it is a failing test


@pytest.fixture(scope="module")
def gbm() -> LoadedModel:
    return LoadedModel("gbm", 1, onnx_models.gradient_boosting(0, trees=30).onnx, SessionConfig())


@pytest.fixture(scope="module")
def lr_model() -> LoadedModel:
    return LoadedModel("lr", 1, onnx_models.logistic_regression(0).onnx, SessionConfig())


class Recorder:
    """The model's real ``run``, remembering the row count of every call."""

    def __init__(self, model: LoadedModel) -> None:
        self.model = model
        self.calls: list[int] = []
        self._lock = threading.Lock()

    def __call__(
        self, inputs: Mapping[str, np.ndarray], output_names: Sequence[str] | None = None
    ) -> dict[str, np.ndarray]:
        with self._lock:
            self.calls.append(next(iter(inputs.values())).shape[0])
        return self.model.run(inputs, output_names)


def rows(n: int, seed: int) -> dict[str, np.ndarray]:
    X = np.random.default_rng(seed).normal(size=(n, onnx_models.FEATURES)).astype(np.float32)
    return {"X": X}


def submit_all(
    batcher: DynamicBatcher,
    feeds: Sequence[Mapping[str, np.ndarray]],
    output_names: Sequence[str] | None = None,
) -> list[BatchResult]:
    """Every feed submitted from its own thread at once; results in feed order."""
    with ThreadPoolExecutor(max_workers=len(feeds)) as pool:
        futures = [pool.submit(batcher.submit, feed, output_names) for feed in feeds]
        return [f.result() for f in futures]


# -- config ---------------------------------------------------------------------------------------


def test_config_docstring_examples_run() -> None:
    failures, tried = doctest.testmod(batching)
    assert tried > 0 and failures == 0


@pytest.mark.parametrize(
    ("config", "field"),
    [
        (BatchingConfig(-1, 0), "max_batch_size"),
        (BatchingConfig(65_537, 0), "max_batch_size"),
        (BatchingConfig(8, -1), "max_queue_delay_us"),
        (BatchingConfig(8, 10_000_001), "max_queue_delay_us"),
        (BatchingConfig(8, 0, (0,)), "preferred_batch_sizes"),
        (BatchingConfig(8, 0, (9,)), "preferred_batch_sizes"),
        (BatchingConfig(8, 0, (4, 2)), "preferred_batch_sizes"),
        (BatchingConfig(8, 0, (2, 2)), "preferred_batch_sizes"),
    ],
)
def test_config_refuses_out_of_range_values_naming_the_field(
    config: BatchingConfig, field: str
) -> None:
    with pytest.raises(errors.InvalidArgument, match=rf"^model\.batching\.{field}: "):
        config.validate("model.batching")


def test_config_limits_and_off() -> None:
    assert BatchingConfig(65_536, 10_000_000, (1, 65_536)).validate().enabled
    assert not BatchingConfig().validate().enabled


# -- answers --------------------------------------------------------------------------------------


def test_gbm_answers_equal_unbatched_over_mixed_sizes_and_threads(gbm: LoadedModel) -> None:
    sizes = [1, 3, 1, 7, 2, 16, 1, 5, 9, 1, 4, 30, 1, 2, 11, 6] * 3
    feeds = [rows(n, seed) for seed, n in enumerate(sizes)]
    recorder = Recorder(gbm)
    batcher = DynamicBatcher(recorder, BatchingConfig(64, 2_000), "gbm")
    try:
        results = submit_all(batcher, feeds)
    finally:
        batcher.close()
    for feed, result in zip(feeds, results, strict=True):
        alone = gbm.run(feed)
        assert result.outputs.keys() == alone.keys()
        for name, value in alone.items():
            assert np.array_equal(result.outputs[name], value), name
        assert result.batch_rows <= 64
    # Limits count rows: no run went past 64 rows, and every row ran exactly once.
    assert max(recorder.calls) <= 64
    assert sum(recorder.calls) == sum(sizes)


def test_full_batch_is_one_run_split_back_by_rows(gbm: LoadedModel) -> None:
    sizes = [1, 4, 2, 9]
    feeds = [rows(n, 100 + i) for i, n in enumerate(sizes)]
    recorder = Recorder(gbm)
    batcher = DynamicBatcher(recorder, BatchingConfig(sum(sizes), LONG_US), "gbm")
    try:
        results = submit_all(batcher, feeds, ["probabilities"])
    finally:
        batcher.close()
    assert recorder.calls == [sum(sizes)]
    assert sum(r.first_in_batch for r in results) == 1
    for feed, result in zip(feeds, results, strict=True):
        assert (result.batch_rows, result.batch_requests) == (sum(sizes), len(sizes))
        assert list(result.outputs) == ["probabilities"]
        assert np.array_equal(result.outputs["probabilities"], gbm.run(feed)["probabilities"])


def test_logistic_regression_answers_equal_unbatched(lr_model: LoadedModel) -> None:
    """Exact for requests of two rows or more. onnxruntime's LinearClassifier computes a lone
    row through another kernel than a block of rows (another summation order of the dot
    product), so a one-row request merged with others may differ from the same row run alone by
    a few float32 rounding steps of its score (measured: up to 3.3e-7 in a probability); the
    label does not change."""
    sizes = [2, 5, 1, 3, 1, 8, 2, 1, 13, 4, 1, 7]
    feeds = [rows(n, 200 + i) for i, n in enumerate(sizes)]
    batcher = DynamicBatcher(lr_model.run, BatchingConfig(sum(sizes), LONG_US), "lr")
    try:
        results = submit_all(batcher, feeds)
    finally:
        batcher.close()
    for n, feed, result in zip(sizes, feeds, results, strict=True):
        alone = lr_model.run(feed)
        assert result.batch_requests == len(sizes)
        assert np.array_equal(result.outputs["label"], alone["label"])
        if n > 1:
            assert np.array_equal(result.outputs["probabilities"], alone["probabilities"])
        else:
            np.testing.assert_allclose(
                result.outputs["probabilities"], alone["probabilities"], rtol=1e-5, atol=1e-6
            )


def test_requests_for_other_outputs_do_not_share_a_batch(gbm: LoadedModel) -> None:
    recorder = Recorder(gbm)
    batcher = DynamicBatcher(recorder, BatchingConfig(4, LONG_US), "gbm")
    feeds = [rows(2, i) for i in range(4)]
    try:
        with ThreadPoolExecutor(max_workers=4) as pool:
            labels = [pool.submit(batcher.submit, f, ["label"]) for f in feeds[:2]]
            probs = [pool.submit(batcher.submit, f, ["probabilities"]) for f in feeds[2:]]
            done = [f.result() for f in labels + probs]
    finally:
        batcher.close()
    assert recorder.calls == [4, 4]
    assert [list(r.outputs) for r in done] == [["label"]] * 2 + [["probabilities"]] * 2


# -- when a batch runs ----------------------------------------------------------------------------


def test_request_bigger_than_max_batch_runs_alone_at_once(gbm: LoadedModel) -> None:
    recorder = Recorder(gbm)
    batcher = DynamicBatcher(recorder, BatchingConfig(4, LONG_US), "gbm")
    feed = rows(10, 1)
    try:
        result = batcher.submit(feed)
    finally:
        batcher.close()
    assert (result.queue_ns, result.batch_rows, result.batch_requests) == (0, 10, 1)
    assert recorder.calls == [10]
    assert np.array_equal(result.outputs["probabilities"], gbm.run(feed)["probabilities"])


def test_preferred_size_runs_without_waiting_for_max(gbm: LoadedModel) -> None:
    # max 64 and a 10 s delay: only the preferred size 2 can start these batches.
    recorder = Recorder(gbm)
    batcher = DynamicBatcher(recorder, BatchingConfig(64, LONG_US, (2,)), "gbm")
    try:
        results = submit_all(batcher, [rows(1, i) for i in range(6)])
    finally:
        batcher.close()
    assert [r.batch_rows for r in results] == [2] * 6
    assert recorder.calls == [2, 2, 2]


def test_delay_runs_a_batch_that_is_not_full(gbm: LoadedModel) -> None:
    batcher = DynamicBatcher(gbm.run, BatchingConfig(64, 1_000), "gbm")
    try:
        result = batcher.submit(rows(3, 1))
    finally:
        batcher.close()
    assert (result.batch_rows, result.batch_requests) == (3, 1)


def test_request_that_does_not_fit_waits_for_the_next_batch(gbm: LoadedModel) -> None:
    recorder = Recorder(gbm)
    batcher = DynamicBatcher(recorder, BatchingConfig(8, LONG_US), "gbm")
    feeds = [rows(5, 1), rows(3, 2), rows(4, 3), rows(4, 4)]
    try:
        results = submit_all(batcher, feeds)
    finally:
        batcher.close()
    assert sum(recorder.calls) == 16 and max(recorder.calls) <= 8
    for feed, result in zip(feeds, results, strict=True):
        assert np.array_equal(result.outputs["label"], gbm.run(feed)["label"])


# -- deadlines, errors, fallback, close -----------------------------------------------------------


def test_deadline_already_passed_is_dropped_before_compute(gbm: LoadedModel) -> None:
    recorder = Recorder(gbm)
    batcher = DynamicBatcher(recorder, BatchingConfig(64, LONG_US), "gbm")
    try:
        with pytest.raises(errors.DeadlineExceeded, match="'gbm'"):
            batcher.submit(rows(1, 1), deadline=time.monotonic() - 1.0)
    finally:
        batcher.close()
    assert recorder.calls == []


def test_deadline_passing_in_the_queue_is_dropped_before_compute(gbm: LoadedModel) -> None:
    recorder = Recorder(gbm)
    batcher = DynamicBatcher(recorder, BatchingConfig(64, LONG_US), "gbm")
    try:
        with pytest.raises(errors.DeadlineExceeded, match="waited for its batch"):
            batcher.submit(rows(2, 1), deadline=time.monotonic() + 0.05)
    finally:
        batcher.close()
    assert recorder.calls == []


def test_only_the_request_past_its_deadline_is_dropped_from_its_batch(gbm: LoadedModel) -> None:
    recorder = Recorder(gbm)
    batcher = DynamicBatcher(recorder, BatchingConfig(64, 200_000), "gbm")
    patient, hurried = rows(3, 1), rows(2, 2)
    try:
        with ThreadPoolExecutor(max_workers=2) as pool:
            kept = pool.submit(batcher.submit, patient)
            dropped = pool.submit(batcher.submit, hurried, None, time.monotonic() + 0.02)
            assert isinstance(dropped.exception(), errors.DeadlineExceeded)
            result = kept.result()
    finally:
        batcher.close()
    assert recorder.calls == [3]
    assert (result.batch_rows, result.batch_requests) == (3, 1)
    assert np.array_equal(result.outputs["label"], gbm.run(patient)["label"])


def test_error_of_the_merged_run_reaches_every_request() -> None:
    model = LoadedModel("gather", 1, onnx_models.gather_model(), SessionConfig())
    good = {"data": np.ones(3, np.float32), "idx": np.array([0, 1, 2], np.int64)}
    bad = {"data": np.ones(2, np.float32), "idx": np.array([0, 99], np.int64)}
    batcher = DynamicBatcher(model.run, BatchingConfig(5, LONG_US), "gather")
    try:
        with ThreadPoolExecutor(max_workers=2) as pool:
            futures = [pool.submit(batcher.submit, feed) for feed in (good, bad)]
            raised = [f.exception() for f in futures]
    finally:
        batcher.close()
    assert all(isinstance(e, errors.LLMOptError) for e in raised)
    assert raised[0] is not raised[1]
    assert type(raised[0]) is type(raised[1]) and str(raised[0]) == str(raised[1])
    assert "gather" in str(raised[0])


def _sum_model() -> bytes:
    """Y = sum of every element of X: one value whatever the rows, so it cannot be split."""
    graph = helper.make_graph(
        [helper.make_node("ReduceSum", ["X"], ["Y"], keepdims=0)],
        "sum_all",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [None, 4])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


def test_outputs_that_cannot_be_split_fall_back_to_unbatched_runs() -> None:
    model = LoadedModel("sum", 1, _sum_model(), SessionConfig())
    recorder = Recorder(model)
    feeds = [{"X": np.full((n, 4), float(n), np.float32)} for n in (1, 2, 3)]
    batcher = DynamicBatcher(recorder, BatchingConfig(6, LONG_US), "sum")
    try:
        results = submit_all(batcher, feeds)
        later = batcher.submit(feeds[1])  # the group now skips the queue
    finally:
        batcher.close()
    for feed, result in zip(feeds, results, strict=True):
        assert result.batch_requests == 1
        assert np.array_equal(result.outputs["Y"], model.run(feed)["Y"])
    assert later.batch_requests == 1 and later.queue_ns == 0
    assert sorted(recorder.calls) == [1, 2, 2, 3, 6]  # one merged try, then each alone


def test_signature_validates_before_queueing(gbm: LoadedModel) -> None:
    recorder = Recorder(gbm)
    batcher = DynamicBatcher(recorder, BatchingConfig(64, LONG_US), "gbm", signature=gbm.signature)
    try:
        with pytest.raises(errors.InvalidArgument, match=r"inputs\['X'\]\.dtype"):
            batcher.submit({"X": np.zeros((2, onnx_models.FEATURES), np.float64)})
    finally:
        batcher.close()
    assert recorder.calls == []


def test_model_with_a_fixed_first_dimension_runs_unbatched() -> None:
    graph = helper.make_graph(
        [helper.make_node("Neg", ["X"], ["Y"])],
        "neg",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [2, 4])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [2, 4])],
    )
    onnx = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.ir_version = 8
    model = LoadedModel("neg", 1, onnx.SerializeToString(), SessionConfig())
    assert not batching.batchable(model.signature)
    batcher = DynamicBatcher(
        model.run, BatchingConfig(4, LONG_US), "neg", signature=model.signature
    )
    try:
        results = submit_all(batcher, [{"X": np.ones((2, 4), np.float32)}] * 2)
    finally:
        batcher.close()
    assert [r.batch_requests for r in results] == [1, 1]
    assert all(np.array_equal(r.outputs["Y"], -np.ones((2, 4))) for r in results)


def test_close_runs_what_is_queued_and_later_submits_run_unbatched(gbm: LoadedModel) -> None:
    batcher = DynamicBatcher(gbm.run, BatchingConfig(64, LONG_US), "gbm")
    feed = rows(3, 7)
    queued: list[BatchResult] = []
    waiter = threading.Thread(target=lambda: queued.append(batcher.submit(feed)))
    waiter.start()
    _until(lambda: bool(batcher._groups) or not waiter.is_alive())
    batcher.close()
    waiter.join()
    assert batcher.closed
    assert batcher._worker is not None and not batcher._worker.is_alive()
    after = batcher.submit(feed)
    assert after.batch_requests == 1 and after.queue_ns == 0
    expected = gbm.run(feed)["probabilities"]
    assert np.array_equal(queued[0].outputs["probabilities"], expected)
    assert np.array_equal(after.outputs["probabilities"], expected)
    batcher.close()  # twice is fine


def _until(condition: Callable[[], bool]) -> None:
    """Wait until ``condition()`` (the queued request is in); a 10 s guard, never asserted."""
    end = time.monotonic() + 10.0
    while not condition() and time.monotonic() < end:
        time.sleep(0.001)

"""The engine's Open Inference Protocol side against the real registry and onnxruntime:
per version statistics, unload and load, every servable version, string tensors."""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import pytest

from llmopt import errors
from llmopt.inference import InferenceEngine, LoadedModel, SessionConfig, Variant
from llmopt.inference.stats import ModelStatsBook
from llmopt.registry import Registry
from tests.support import onnx_models
from tests.unit.inference.conftest import upload

Engine = Callable[..., InferenceEngine]


def test_run_timed_equals_run_and_times_its_parts(lr: onnx_models.TrainedModel) -> None:
    loaded = LoadedModel("m", 1, lr.onnx, SessionConfig())
    X = lr.X[:9]
    outputs, timing = loaded.run_timed({"X": X})
    plain = loaded.run({"X": X})
    assert outputs.keys() == plain.keys() == {"label", "probabilities"}
    for name in plain:
        np.testing.assert_array_equal(outputs[name], plain[name])
    assert all(isinstance(ns, int) and ns >= 0 for ns in timing)
    assert timing.infer_ns > 0
    with pytest.raises(errors.InvalidArgument, match="output_names"):
        loaded.run_timed({"X": X}, ["nope"])


def test_statistics_count_rows_runs_failures_and_batch_sizes(
    registry: Registry, make_engine: Engine, lr: onnx_models.TrainedModel
) -> None:
    upload(registry, "clf", lr.onnx, alias="champion")
    engine = make_engine()
    engine.warm_up()
    (before,) = engine.statistics("clf")
    assert (before.version, before.inference_count, before.execution_count) == (1, 0, 0)
    assert before.last_inference_ms == 0
    started_ms = time.time_ns() // 1_000_000
    for rows in (3, 3, 5):
        engine.predict("clf", {"X": lr.X[:rows]})
    with pytest.raises(errors.InvalidArgument):
        engine.predict("clf", {"X": lr.X[:2, :3]})
    (stats,) = engine.statistics("clf")
    assert stats.model == "clf" and stats.version == 1
    assert stats.inference_count == 11 and stats.execution_count == 3
    assert stats.success.count == 3 and stats.fail.count == 1
    assert stats.queue.count == 3 and stats.queue.ns == 0  # no batching: no wait
    assert stats.compute_infer.count == 3 and stats.compute_infer.ns > 0
    assert stats.compute_input.count == stats.compute_output.count == 3
    # The whole request includes its parts.
    parts = stats.compute_input.ns + stats.compute_infer.ns + stats.compute_output.ns
    assert stats.success.ns >= parts
    assert stats.last_inference_ms >= started_ms
    assert [(b.batch_size, b.compute_infer.count) for b in stats.batches] == [(3, 2), (5, 1)]
    assert sum(b.compute_infer.ns for b in stats.batches) == stats.compute_infer.ns
    assert engine.statistics("clf", 1) == [stats]
    assert [s.model for s in engine.statistics()] == ["clf"]


def test_statistics_of_unknown_model_or_version_is_not_found(
    registry: Registry, make_engine: Engine, lr: onnx_models.TrainedModel
) -> None:
    upload(registry, "clf", lr.onnx, alias="champion")
    engine = make_engine()
    with pytest.raises(errors.NotFound):
        engine.statistics("ghost")
    with pytest.raises(errors.NotFound):
        engine.statistics("clf", 9)
    assert engine.knows("clf") and not engine.knows("ghost") and not engine.knows("")


def test_describe_lists_every_registry_version(
    registry: Registry,
    make_engine: Engine,
    lr: onnx_models.TrainedModel,
    lr2: onnx_models.TrainedModel,
) -> None:
    upload(registry, "clf", lr.onnx)
    upload(registry, "clf", lr2.onnx, alias="champion")
    upload(registry, "clf", lr.onnx)
    desc = make_engine().describe("clf")
    assert (desc.version, desc.versions, desc.servable) == (2, (2,), (1, 2, 3))


def test_unload_refuses_requests_until_load_and_registry_keeps_versions(
    registry: Registry,
    make_engine: Engine,
    lr: onnx_models.TrainedModel,
    lr2: onnx_models.TrainedModel,
) -> None:
    upload(registry, "clf", lr.onnx, alias="champion")
    upload(registry, "clf", lr2.onnx, alias="challenger")
    engine = make_engine()
    X = lr.X[:4]
    engine.predict("clf", {"X": X}, version=1)
    assert ("clf", 1) in engine.loaded_versions() and ("clf", 2) in engine.loaded_versions()
    engine.unload("clf")
    assert [v for v in engine.loaded_versions() if v[0] == "clf"] == []
    assert not engine.is_ready("clf") and not engine.is_ready("clf", 1)
    for version in (0, 1):
        with pytest.raises(errors.Unavailable, match="unloaded"):
            engine.predict("clf", {"X": X}, version=version)
    with pytest.raises(errors.Unavailable, match="unloaded"):
        engine.describe("clf")
    assert [(e.model, e.state, e.reason) for e in engine.index()] == [
        ("clf", "UNAVAILABLE", "unloaded")
    ]
    assert registry.aliases("clf") == {"champion": 1, "challenger": 2}
    engine.load("clf")
    assert engine.is_ready("clf")
    assert {(e.version, e.state) for e in engine.index()} == {(1, "READY"), (2, "READY")}
    got = engine.predict("clf", {"X": X})
    np.testing.assert_array_equal(got.outputs["label"], lr.estimator.predict(X))


def test_load_reads_alias_changes_made_while_unloaded(
    registry: Registry,
    make_engine: Engine,
    lr: onnx_models.TrainedModel,
    lr2: onnx_models.TrainedModel,
) -> None:
    upload(registry, "clf", lr.onnx, alias="champion")
    engine = make_engine()
    engine.unload("clf")
    upload(registry, "clf", lr2.onnx, alias="champion")
    assert not engine.is_ready("clf")
    engine.load("clf")
    assert engine.predict("clf", {"X": lr.X[:2]}).version == 2


def test_load_without_a_champion_names_the_reason(
    registry: Registry, make_engine: Engine, lr: onnx_models.TrainedModel
) -> None:
    upload(registry, "clf", lr.onnx)
    engine = make_engine()
    with pytest.raises(errors.FailedPrecondition, match="no champion"):
        engine.load("clf")
    with pytest.raises(errors.NotFound):
        engine.load("ghost")
    with pytest.raises(errors.NotFound):
        engine.unload("ghost")


def test_string_inputs_and_outputs_run(registry: Registry, make_engine: Engine) -> None:
    upload(registry, "words", onnx_models.string_model(), alias="champion")
    engine = make_engine()
    text = np.array(["red", "blue", "grün", ""], dtype=object)
    got = engine.predict("words", {"text": text})
    np.testing.assert_array_equal(got.outputs["code"], [0, 2, -1, -1])
    assert got.outputs["echo"].tolist() == ["red", "blue", "grün", ""]


def test_a_batched_run_counts_once_and_its_requests_each() -> None:
    """The batcher's path: two requests (2 and 3 rows) recorded with their wait, their one merged
    run recorded once."""
    book = ModelStatsBook("m")
    book.record(4, Variant.CHAMPION, 2, 0.001, True, queue_ns=300)
    book.record(4, Variant.CHAMPION, 3, 0.002, True, queue_ns=100)
    book.executed(4, 5, (10, 200, 5))
    (s,) = book.statistics((4,))
    assert (s.inference_count, s.execution_count) == (5, 1)
    assert (s.success.count, s.success.ns) == (2, 3_000_000)
    assert (s.queue.count, s.queue.ns) == (2, 400)
    assert (s.compute_infer.count, s.compute_infer.ns) == (1, 200)
    assert [(b.batch_size, b.compute_input.ns, b.compute_output.ns) for b in s.batches] == [
        (5, 10, 5)
    ]
    assert [v.version for v in book.statistics((1, 4))] == [1, 4]

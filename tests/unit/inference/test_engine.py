"""The engine against the real registry and real onnxruntime sessions."""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import onnxruntime as ort
import pytest

from llmopt import errors
from llmopt.inference import InferenceEngine, TrafficMode, TrafficPolicy, Variant
from llmopt.inference.explain.traffic import TrafficSample
from llmopt.inference.session import SessionConfig
from llmopt.registry import Registry
from tests.support import onnx_models
from tests.unit.inference.conftest import upload

Engine = Callable[..., InferenceEngine]


@pytest.mark.parametrize("rows", [1, 1000])
def test_classifier_predictions_equal_onnxruntime_and_sklearn(
    registry: Registry, make_engine: Engine, lr: onnx_models.TrainedModel, rows: int
) -> None:
    upload(registry, "clf", lr.onnx, alias="champion")
    engine = make_engine()
    X = np.resize(lr.X, (rows, onnx_models.FEATURES))
    got = engine.predict("clf", {"X": X})
    assert (got.version, got.variant) == (1, Variant.CHAMPION)
    direct = ort.InferenceSession(lr.onnx).run(None, {"X": X})
    np.testing.assert_array_equal(got.outputs["label"], direct[0])
    np.testing.assert_array_equal(got.outputs["probabilities"], direct[1])
    np.testing.assert_array_equal(got.outputs["label"], lr.estimator.predict(X))
    np.testing.assert_allclose(
        got.outputs["probabilities"], lr.estimator.predict_proba(X), rtol=1e-4, atol=1e-5
    )


@pytest.mark.parametrize("rows", [1, 1000])
def test_regression_predictions_equal_onnxruntime_and_sklearn(
    registry: Registry, make_engine: Engine, linreg: onnx_models.TrainedModel, rows: int
) -> None:
    upload(registry, "reg", linreg.onnx, alias="champion")
    engine = make_engine()
    X = np.resize(linreg.X, (rows, onnx_models.FEATURES))
    got = engine.predict("reg", {"X": X}, output_names=["variable"])
    (direct,) = ort.InferenceSession(linreg.onnx).run(None, {"X": X})
    np.testing.assert_array_equal(got.outputs["variable"], direct)
    np.testing.assert_allclose(
        got.outputs["variable"].ravel(), linreg.estimator.predict(X), rtol=1e-4, atol=1e-4
    )


def test_pinned_version_and_alias(
    registry: Registry,
    make_engine: Engine,
    lr: onnx_models.TrainedModel,
    lr2: onnx_models.TrainedModel,
) -> None:
    upload(registry, "m", lr.onnx, alias="champion")
    upload(registry, "m", lr2.onnx, alias="staging")
    engine = make_engine()
    X = lr.X[:10]
    assert engine.predict("m", {"X": X}).version == 1
    pinned = engine.predict("m", {"X": X}, version=2)
    assert (pinned.version, pinned.variant) == (2, Variant.PINNED)
    np.testing.assert_array_equal(pinned.outputs["label"], lr2.estimator.predict(X))
    assert engine.predict("m", {"X": X}, alias="staging").version == 2
    assert engine.predict("m", {"X": X}, alias="champion").variant is Variant.CHAMPION
    with pytest.raises(errors.NotFound):
        engine.predict("m", {"X": X}, version=9)
    with pytest.raises(errors.InvalidArgument, match="not both"):
        engine.predict("m", {"X": X}, version=1, alias="staging")


def test_unknown_model_no_champion_and_bad_inputs(
    registry: Registry, make_engine: Engine, lr: onnx_models.TrainedModel
) -> None:
    upload(registry, "nochamp", lr.onnx)
    engine = make_engine()
    with pytest.raises(errors.NotFound):
        engine.predict("ghost", {"X": lr.X[:1]})
    with pytest.raises(errors.FailedPrecondition, match="'nochamp' has no champion"):
        engine.predict("nochamp", {"X": lr.X[:1]})
    registry.set_alias("nochamp", "champion", 1)
    with pytest.raises(errors.InvalidArgument, match="dtype"):
        engine.predict("nochamp", {"X": lr.X[:1].astype(np.float64)})
    with pytest.raises(errors.InvalidArgument, match="dimension 1 must be 16"):
        engine.predict("nochamp", {"X": lr.X[:1, :3]})
    with pytest.raises(errors.InvalidArgument, match="unknown output"):
        engine.predict("nochamp", {"X": lr.X[:1]}, output_names=["nope"])
    stats = engine.stats("nochamp")
    (row,) = stats.variants
    assert (row.requests, row.errors, row.rows) == (3, 3, 0)
    assert engine.predict("nochamp", {"X": lr.X[:2]}).version == 1


def test_onnxruntime_run_errors_become_invalid_argument(
    registry: Registry, make_engine: Engine
) -> None:
    upload(registry, "gather", onnx_models.gather_model(), alias="champion")
    engine = make_engine()
    data = np.arange(3, dtype=np.float32)
    got = engine.predict("gather", {"data": data, "idx": np.array([2, 0], np.int64)})
    np.testing.assert_array_equal(got.outputs["out"], [2.0, 0.0])
    with pytest.raises(errors.InvalidArgument, match="refused them"):
        engine.predict("gather", {"data": data, "idx": np.array([7], np.int64)})


def test_split_policy_routes_a_share_to_the_challenger_and_is_durable(
    registry: Registry,
    make_engine: Engine,
    lr: onnx_models.TrainedModel,
    lr2: onnx_models.TrainedModel,
) -> None:
    upload(registry, "m", lr.onnx, alias="champion")
    upload(registry, "m", lr2.onnx, alias="challenger")
    engine = make_engine()
    assert engine.get_policy("m") == TrafficPolicy("m", TrafficMode.OFF, 0.0)
    engine.set_policy(TrafficPolicy("m", TrafficMode.SPLIT, 25.0))
    seen = [engine.predict("m", {"X": lr.X[:1]}) for _ in range(400)]
    challenger = [p for p in seen if p.variant is Variant.CHALLENGER]
    assert 50 <= len(challenger) <= 150 and {p.version for p in challenger} == {2}
    sticky = {engine.predict("m", {"X": lr.X[:1]}, routing_key="alice").variant for _ in range(50)}
    assert len(sticky) == 1
    engine.close()
    again = make_engine()
    assert again.get_policy("m") == TrafficPolicy("m", TrafficMode.SPLIT, 25.0)


def test_shadow_runs_copies_on_the_challenger_and_compares(
    registry: Registry,
    make_engine: Engine,
    lr: onnx_models.TrainedModel,
    lr2: onnx_models.TrainedModel,
) -> None:
    upload(registry, "m", lr.onnx, alias="champion")
    upload(registry, "m", lr2.onnx, alias="challenger")
    engine = make_engine()
    engine.set_policy(TrafficPolicy("m", TrafficMode.SHADOW, 0.0))
    X = lr.X[:50]
    for _ in range(20):
        assert engine.predict("m", {"X": X}).variant is Variant.CHAMPION
    engine.wait_for_shadow()
    stats = engine.stats("m")
    assert stats.shadow.compared + stats.shadow.dropped == 20
    assert stats.shadow.compared >= 1 and stats.shadow.errors == 0
    expected = np.mean(lr.estimator.predict(X) == lr2.estimator.predict(X))
    assert stats.shadow.label_agreement == pytest.approx(expected)
    diff = np.abs(lr.estimator.predict_proba(X) - lr2.estimator.predict_proba(X))
    assert stats.shadow.max_abs_diff == pytest.approx(diff.max(), abs=1e-4)
    assert stats.shadow.mean_abs_diff == pytest.approx(diff.mean(), abs=1e-4)
    by_variant = {(v.version, v.variant): v for v in stats.variants}
    assert by_variant[(1, Variant.CHAMPION)].requests == 20
    assert by_variant[(2, Variant.SHADOW)].requests == stats.shadow.compared


def test_stats_count_requests_rows_and_latency(
    registry: Registry, make_engine: Engine, lr: onnx_models.TrainedModel
) -> None:
    upload(registry, "m", lr.onnx, alias="champion")
    engine = make_engine()
    for rows in (1, 2, 3):
        engine.predict("m", {"X": lr.X[:rows]})
    (row,) = engine.stats("m").variants
    assert (row.version, row.variant, row.requests, row.rows, row.errors) == (
        1,
        Variant.CHAMPION,
        3,
        6,
        0,
    )
    assert 0 < row.latency.p50_ms <= row.latency.p95_ms <= row.latency.p99_ms


def test_lru_unloads_pinned_versions_beyond_the_limit_but_never_routed_ones(
    registry: Registry,
    make_engine: Engine,
    lr: onnx_models.TrainedModel,
    lr2: onnx_models.TrainedModel,
) -> None:
    for i in range(4):
        upload(registry, "m", (lr if i % 2 == 0 else lr2).onnx, alias="champion" if i == 0 else "")
    engine = make_engine(max_loaded_models=2)
    for version in (2, 3, 4):
        engine.predict("m", {"X": lr.X[:1]}, version=version)
    loaded = engine.loaded_versions()
    assert ("m", 1) in loaded and ("m", 4) in loaded and len(loaded) == 2
    assert engine.predict("m", {"X": lr.X[:1]}, version=2).version == 2  # reloads on demand


def test_idle_pinned_versions_are_unloaded(
    registry: Registry, make_engine: Engine, lr: onnx_models.TrainedModel
) -> None:
    upload(registry, "m", lr.onnx, alias="champion")
    upload(registry, "m", lr.onnx)
    engine = make_engine(idle_seconds=0.2)
    engine.predict("m", {"X": lr.X[:1]}, version=2)
    assert ("m", 2) in engine.loaded_versions()
    deadline = time.monotonic() + 10
    while ("m", 2) in engine.loaded_versions() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert engine.loaded_versions() == [("m", 1)]


def test_missing_execution_provider_is_a_clear_error() -> None:
    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("CUDA is available here")
    with pytest.raises(errors.FailedPrecondition, match=r"'cuda'.*not available"):
        SessionConfig(providers=("cuda",)).ort_providers()
    with pytest.raises(errors.InvalidArgument, match="onnx_providers"):
        SessionConfig(providers=("gpu9000",))


def test_deleted_model_stops_being_served(
    registry: Registry, make_engine: Engine, lr: onnx_models.TrainedModel
) -> None:
    upload(registry, "m", lr.onnx, alias="champion")
    engine = make_engine()
    assert engine.predict("m", {"X": lr.X[:1]}).version == 1
    registry.delete_model("m", force=True)
    with pytest.raises(errors.NotFound):
        engine.predict("m", {"X": lr.X[:1]})
    assert engine.loaded_versions() == []


def test_without_a_champion_routed_requests_fail_even_with_a_challenger(
    registry: Registry, make_engine: Engine, lr: onnx_models.TrainedModel
) -> None:
    upload(registry, "m", lr.onnx, alias="challenger")
    engine = make_engine()
    engine.set_policy(TrafficPolicy("m", TrafficMode.SPLIT, 100.0))
    with pytest.raises(errors.FailedPrecondition, match="'m' has no champion"):
        engine.predict("m", {"X": lr.X[:1]})
    assert engine.predict("m", {"X": lr.X[:1]}, alias="challenger").variant is Variant.CHALLENGER


def test_feature_row_is_fed_to_the_single_float_input(
    registry: Registry, make_engine: Engine, lr: onnx_models.TrainedModel
) -> None:
    upload(registry, "m", lr.onnx, alias="champion")
    upload(registry, "gather", onnx_models.gather_model(), alias="champion")
    engine = make_engine()
    row = lr.X[3].astype(np.float64)  # converted to the input's dtype
    got = engine.predict("m", {}, row=row)
    np.testing.assert_array_equal(got.outputs["label"], lr.estimator.predict(lr.X[3:4]))
    assert engine.predict("m", {}, row=row, version=1).variant is Variant.PINNED
    with pytest.raises(errors.InvalidArgument, match="one float input"):
        engine.predict("gather", {}, row=row)


def test_split_10_percent_over_10000_routed_engine_requests(
    registry: Registry,
    make_engine: Engine,
    lr: onnx_models.TrainedModel,
    lr2: onnx_models.TrainedModel,
) -> None:
    upload(registry, "m", lr.onnx, alias="champion")
    upload(registry, "m", lr2.onnx, alias="challenger")
    engine = make_engine()
    engine.set_policy(TrafficPolicy("m", TrafficMode.SPLIT, 10.0))
    feed = {"X": lr.X[:1]}
    n = 10_000
    served = [engine.predict("m", feed) for _ in range(n)]
    hits = sum(p.variant is Variant.CHALLENGER for p in served)
    sd = (n * 0.1 * 0.9) ** 0.5
    assert n * 0.1 - 5 * sd <= hits <= n * 0.1 + 5 * sd
    assert {p.version for p in served if p.variant is Variant.CHALLENGER} == {2}
    assert {p.version for p in served if p.variant is Variant.CHAMPION} == {1}
    counts = {(v.version, v.variant): v.requests for v in engine.stats("m").variants}
    assert counts == {(1, Variant.CHAMPION): n - hits, (2, Variant.CHALLENGER): hits}


def test_open_dimensions_load_without_warm_up_and_shape_failures_are_the_callers(
    registry: Registry, make_engine: Engine
) -> None:
    upload(registry, "open", onnx_models.open_width_matmul(), alias="champion")
    engine = make_engine()
    X = np.ones((3, onnx_models.FEATURES), np.float32)
    got = engine.predict("open", {"X": X})
    np.testing.assert_array_equal(got.outputs["Y"], np.full((3, 1), 16.0, np.float32))
    with pytest.raises(errors.InvalidArgument, match="refused them"):
        engine.predict("open", {"X": np.ones((3, 5), np.float32)})
    assert engine.predict("open", {"X": X}).version == 1


@pytest.mark.parametrize("served_before", [True, False])
def test_promote_ends_the_split_durably_and_a_new_challenger_gets_no_traffic(
    registry: Registry,
    make_engine: Engine,
    lr: onnx_models.TrainedModel,
    lr2: onnx_models.TrainedModel,
    served_before: bool,
) -> None:
    upload(registry, "m", lr.onnx, alias="champion")
    upload(registry, "m", lr2.onnx, alias="challenger")
    engine = make_engine()
    engine.set_policy(TrafficPolicy("m", TrafficMode.SPLIT, 50.0))
    if not served_before:
        engine.close()
        engine = make_engine()  # the policy is stored but the model is not loaded yet
    registry.promote("m")
    off = TrafficPolicy("m", TrafficMode.OFF, 0.0)
    assert engine.get_policy("m") == off
    registry.rollback("m")
    assert engine.get_policy("m") == off
    upload(registry, "m", lr2.onnx, alias="challenger")  # the next experiment's challenger
    assert engine.get_policy("m") == off
    routed = {engine.predict("m", {"X": lr.X[:1]}, routing_key=f"u{i}").variant for i in range(60)}
    assert routed == {Variant.CHAMPION}
    engine.close()
    assert make_engine().get_policy("m") == off  # what was read is what was stored


def test_deleting_the_challenger_alias_ends_the_split_too(
    registry: Registry,
    make_engine: Engine,
    lr: onnx_models.TrainedModel,
    lr2: onnx_models.TrainedModel,
) -> None:
    upload(registry, "m", lr.onnx, alias="champion")
    upload(registry, "m", lr2.onnx, alias="challenger")
    engine = make_engine()
    engine.set_policy(TrafficPolicy("m", TrafficMode.SHADOW, 0.0))
    registry.delete_alias("m", "challenger")
    assert engine.get_policy("m") == TrafficPolicy("m", TrafficMode.OFF, 0.0)


def test_predictions_that_ran_hand_their_rows_to_the_sample(
    registry: Registry,
    make_engine: Engine,
    lr: onnx_models.TrainedModel,
    lr2: onnx_models.TrainedModel,
) -> None:
    upload(registry, "m", lr.onnx, alias="champion")
    upload(registry, "m", lr2.onnx, alias="challenger")
    engine = make_engine()
    sample = TrafficSample(rows=100)
    engine.sample_served_rows(sample)
    engine.predict("m", {"X": lr.X[:3]})
    engine.predict("m", {}, row=lr.X[3].astype(np.float64))  # a feature row, as float32
    total, rows = sample.recent("m", 1)  # type: ignore[misc]
    assert total == 4
    np.testing.assert_array_equal(rows, lr.X[:4])
    with pytest.raises(errors.InvalidArgument):
        engine.predict("m", {"X": lr.X[:2, :5]})  # refused: nothing kept
    assert sample.counts("m", 1) == (4, 4)
    engine.predict("m", {"X": lr.X[:2]}, alias="challenger")
    assert sample.counts("m", 2) == (2, 2) and sample.counts("m", 1) == (4, 4)
    engine.sample_served_rows(None)
    engine.predict("m", {"X": lr.X[:2]})
    assert sample.counts("m", 1) == (4, 4)


def test_shadow_copies_are_the_challengers_traffic_once_they_ran(
    registry: Registry,
    make_engine: Engine,
    lr: onnx_models.TrainedModel,
    lr2: onnx_models.TrainedModel,
) -> None:
    upload(registry, "m", lr.onnx, alias="champion")
    upload(registry, "m", lr2.onnx, alias="challenger")
    engine = make_engine()
    sample = TrafficSample(rows=100)
    engine.sample_served_rows(sample)
    engine.set_policy(TrafficPolicy("m", TrafficMode.SHADOW, 0.0))
    for i in range(5):
        engine.predict("m", {"X": lr.X[i : i + 1]})
    engine.wait_for_shadow()
    assert sample.counts("m", 1) == (5, 5)
    ran = engine.stats("m").shadow.compared
    assert sample.counts("m", 2) == (ran, ran) and ran >= 1
    engine.predict("m", {"X": lr.X[:1]}, alias="champion")  # named: no shadow copy
    engine.wait_for_shadow()
    assert sample.counts("m", 2) == (ran, ran)

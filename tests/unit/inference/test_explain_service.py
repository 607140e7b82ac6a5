"""The Explainer service against the real registry, engine and onnxruntime sessions."""

from __future__ import annotations

import doctest
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from llmopt import errors
from llmopt.inference import InferenceEngine, TrafficMode, TrafficPolicy
from llmopt.inference.explain import Explainer, ExplainerConfig, Method, kernel, service, traffic
from llmopt.inference.explain.traffic import RecentRows, TrafficSample
from llmopt.registry import Registry, VersionMetadata
from llmopt.registry.export import export_sklearn
from tests.support import onnx_models

Engine = Callable[..., InferenceEngine]
WIDTH = 6


def _fit(kind: str, seed: int = 0) -> tuple[bytes, np.ndarray]:
    from sklearn.ensemble import GradientBoostingRegressor
    from sklearn.linear_model import LinearRegression
    from sklearn.neural_network import MLPRegressor

    rng = np.random.default_rng(seed)
    X = rng.standard_normal((300, WIDTH)).astype(np.float32)
    y = X @ np.linspace(2, 0.2, WIDTH) + 0.5 * np.tanh(X[:, 0] * X[:, 1])
    estimator: Any = {
        "linear": LinearRegression(),
        "trees": GradientBoostingRegressor(n_estimators=20, max_depth=3, random_state=0),
        "mlp": MLPRegressor(hidden_layer_sizes=(8,), max_iter=200, random_state=0),
    }[kind]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        estimator.fit(X, y)
    return export_sklearn(estimator, sample=X[:50]).onnx_bytes, X


@pytest.fixture(scope="module")
def models() -> dict[str, tuple[bytes, np.ndarray]]:
    return {kind: _fit(kind) for kind in ("linear", "trees", "mlp")}


def add(
    reg: Registry,
    model: str,
    onnx: bytes,
    background: np.ndarray | None,
    alias: str = "champion",
    tags: dict[str, str] | None = None,
) -> int:
    if model not in {m.name for m in reg.list_models()}:
        reg.create_model(model)
    meta = VersionMetadata(alias=alias, background=background, tags=tags or {})
    return reg.upload_version(model, onnx, meta).version


@pytest.fixture
def explainer(registry: Registry, make_engine: Engine) -> Explainer:
    return Explainer(make_engine(), registry)


def check_sums(explanation: service.Explanation, atol: float) -> None:
    total = explanation.base_values + explanation.contributions.sum(axis=1)
    np.testing.assert_allclose(total, explanation.predictions, rtol=0, atol=atol)


def test_auto_picks_linear_then_trees_then_kernel(
    registry: Registry, explainer: Explainer, models: dict[str, tuple[bytes, np.ndarray]]
) -> None:
    for kind, method in (("linear", "linear"), ("trees", "tree_shap"), ("mlp", "kernel_shap")):
        onnx, X = models[kind]
        add(registry, kind, onnx, X[:80])
        got = explainer.explain(kind, {"input": X[200:205]})
        assert (got.model, got.version, got.method) == (kind, 1, method)
        assert got.contributions.shape == (5, WIDTH)
        assert got.feature_names == tuple(f"x{i}" for i in range(WIDTH))
        assert got.output_name == "variable" and got.output_index == 0
        assert got.background_rows == 80
        check_sums(got, atol=1e-4 if method != "kernel_shap" else 1e-9)
        if method == "kernel_shap":
            assert (got.samples, got.seed) == (kernel.DEFAULT_SAMPLES, 0)
        else:
            assert (got.samples, got.seed) == (0, 0)


def test_kernel_on_a_linear_graph_agrees_with_the_exact_answer(
    registry: Registry, explainer: Explainer, models: dict[str, tuple[bytes, np.ndarray]]
) -> None:
    onnx, X = models["linear"]
    add(registry, "lin", onnx, X[:50])
    rows = {"input": X[100:104]}
    exact = explainer.explain("lin", rows)
    sampled = explainer.explain("lin", rows, method=Method.KERNEL_SHAP, samples=20, seed=5)
    assert (sampled.method, sampled.samples, sampled.seed) == ("kernel_shap", 20, 5)
    np.testing.assert_allclose(sampled.contributions, exact.contributions, atol=1e-4)
    np.testing.assert_array_equal(sampled.predictions, exact.predictions)


def test_kernel_background_is_a_subsample_of_at_most_100_rows(
    registry: Registry, explainer: Explainer, models: dict[str, tuple[bytes, np.ndarray]]
) -> None:
    onnx, X = models["mlp"]
    add(registry, "mlp", onnx, X[:250])
    got = explainer.explain("mlp", {"input": X[:2]}, samples=30, seed=9)
    assert got.background_rows == kernel.MAX_BACKGROUND
    again = explainer.explain("mlp", {"input": X[:2]}, samples=30, seed=9)
    np.testing.assert_array_equal(got.contributions, again.contributions)
    other = explainer.explain("mlp", {"input": X[:2]}, samples=30, seed=10)
    assert np.abs(other.contributions - got.contributions).max() > 0


def test_explicit_exact_method_on_the_wrong_graph_is_a_failed_precondition(
    registry: Registry, explainer: Explainer, models: dict[str, tuple[bytes, np.ndarray]]
) -> None:
    add(registry, "mlp", models["mlp"][0], models["mlp"][1][:20])
    add(registry, "lin", models["linear"][0], models["linear"][1][:20])
    rows = {"input": models["mlp"][1][:1]}
    with pytest.raises(errors.FailedPrecondition, match=r"LINEAR.*'mlp' version 1.*not affine"):
        explainer.explain("mlp", rows, method=Method.LINEAR)
    with pytest.raises(
        errors.FailedPrecondition, match=r"TREE_SHAP.*'lin' version 1.*TreeEnsemble"
    ):
        explainer.explain("lin", rows, method=Method.TREE_SHAP)
    assert explainer.explain("lin", rows, method=Method.LINEAR).method == "linear"


def test_no_background_is_a_failed_precondition_naming_model_and_version(
    registry: Registry, explainer: Explainer, models: dict[str, tuple[bytes, np.ndarray]]
) -> None:
    add(registry, "bare", models["linear"][0], None)
    with pytest.raises(errors.FailedPrecondition, match=r"'bare' version 1 has no background"):
        explainer.explain("bare", {"input": models["linear"][1][:1]})


def test_feature_names_come_from_the_tag_when_it_fits(
    registry: Registry, explainer: Explainer, models: dict[str, tuple[bytes, np.ndarray]]
) -> None:
    onnx, X = models["linear"]
    names = "age,income,tenure,region,plan,usage"
    add(registry, "named", onnx, X[:20], tags={"feature_names": names})
    add(registry, "short", onnx, X[:20], tags={"feature_names": "a,b"})
    assert explainer.explain("named", {"input": X[:1]}).feature_names == tuple(names.split(","))
    assert explainer.explain("short", {"input": X[:1]}).feature_names[0] == "x0"


def test_versions_resolve_like_predict(
    registry: Registry, make_engine: Engine, models: dict[str, tuple[bytes, np.ndarray]]
) -> None:
    onnx, X = models["linear"]
    other, _ = _fit("linear", seed=1)
    add(registry, "m", onnx, X[:20], alias="champion")
    add(registry, "m", other, X[:20], alias="challenger")
    engine = make_engine()
    explainer = Explainer(engine, registry)
    rows = {"input": X[:1]}
    assert explainer.explain("m", rows).version == 1
    assert explainer.explain("m", rows, version=2).version == 2
    assert explainer.explain("m", rows, alias="challenger").version == 2
    engine.set_policy(TrafficPolicy("m", TrafficMode.SPLIT, 50.0))
    routed = {
        key: engine.predict("m", rows, routing_key=key).version for key in map(str, range(40))
    }
    assert set(routed.values()) == {1, 2}
    for key, version in routed.items():
        assert explainer.explain("m", rows, routing_key=key).version == version
    with pytest.raises(errors.NotFound):
        explainer.explain("m", rows, version=7)
    with pytest.raises(errors.NotFound):
        explainer.explain("nope", rows)
    with pytest.raises(errors.InvalidArgument, match=r"^version: "):
        explainer.explain("m", rows, version=1, alias="champion")


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"output_name": "nope"}, "output_name: 'nope'"),
        ({"output_index": 1}, "output_index: 1"),
        ({"output_index": -1}, "output_index: -1"),
        ({"samples": -5}, "samples: -5"),
        ({"samples": kernel.MAX_SAMPLES + 1}, f"samples: {kernel.MAX_SAMPLES + 1}"),
        ({"seed": -1}, "seed: -1"),
        ({"inputs": {"input": np.zeros((1, 3), np.float32)}}, "inputs['input'].shape"),
        ({"inputs": {"input": np.zeros((1, WIDTH))}}, "inputs['input'].dtype"),
        ({"inputs": {"other": np.zeros((1, WIDTH), np.float32)}}, "inputs: 'other'"),
        ({"inputs": {"input": np.zeros((0, WIDTH), np.float32)}}, "inputs['input'].shape"),
        ({"inputs": {"input": np.full((1, WIDTH), np.nan, np.float32)}}, "inputs['input']: "),
        ({"inputs": {"input": np.zeros((1001, WIDTH), np.float32)}}, "1 to 1000 rows"),
    ],
)
def test_bad_requests_are_invalid_arguments_naming_the_field(
    registry: Registry,
    explainer: Explainer,
    models: dict[str, tuple[bytes, np.ndarray]],
    change: dict[str, Any],
    field: str,
) -> None:
    onnx, X = models["mlp"]
    add(registry, "m", onnx, X[:20])
    request: dict[str, Any] = {"inputs": {"input": X[:2]}, "method": Method.KERNEL_SHAP}
    request.update(change)
    inputs = request.pop("inputs")
    with pytest.raises(errors.InvalidArgument) as caught:
        explainer.explain("m", inputs, **request)
    assert field in str(caught.value)


def test_kernel_work_per_request_is_bounded(
    registry: Registry, make_engine: Engine, models: dict[str, tuple[bytes, np.ndarray]]
) -> None:
    onnx, X = models["mlp"]
    add(registry, "m", onnx, X[:20])
    small = Explainer(make_engine(), registry, ExplainerConfig(max_kernel_evaluations=20_000))
    with pytest.raises(
        errors.InvalidArgument, match=r"inputs: '10 rows at 2048 samples over 20 background rows'"
    ):
        small.explain("m", {"input": X[:10]})
    assert small.explain("m", {"input": X[:10]}, samples=100).samples == 100


def test_label_outputs_are_not_explained_and_columns_are_picked(
    registry: Registry, explainer: Explainer
) -> None:
    lr = onnx_models.logistic_regression(0)
    add(registry, "clf", lr.onnx, lr.X[:30])
    got = explainer.explain("clf", {"X": lr.X[:3]}, output_index=1, samples=256)
    assert (got.output_name, got.output_index) == ("probabilities", 1)
    np.testing.assert_allclose(
        got.predictions, lr.estimator.predict_proba(lr.X[:3])[:, 1], atol=1e-5
    )
    check_sums(got, atol=1e-9)
    with pytest.raises(errors.InvalidArgument, match=r"output_name: 'label'.*float output"):
        explainer.explain("clf", {"X": lr.X[:3]}, output_name="label")


@pytest.mark.parametrize(("kind", "method"), [("linear", "linear"), ("trees", "tree_shap")])
def test_importance_is_the_mean_absolute_contribution_over_the_rows_served(
    registry: Registry,
    make_engine: Engine,
    models: dict[str, tuple[bytes, np.ndarray]],
    kind: str,
    method: str,
) -> None:
    onnx, X = models[kind]
    add(registry, "m", onnx, X[:40], tags={"feature_names": "a,b,c,d,e,f"})
    engine = make_engine()
    explainer = Explainer(engine, registry, ExplainerConfig(importance_seconds=0.0))
    before = explainer.feature_importance("m")
    assert (before.version, before.rows) == (1, 0)
    assert [name for name, _ in before.features] == list("abcdef")
    assert all(value == 0.0 for _, value in before.features)
    for start, stop in ((0, 1), (1, 30), (30, 31), (31, 120)):
        engine.predict("m", {"input": X[start:stop]})
    explained = explainer.explain("m", {"input": X[:120]})
    assert explained.method == method
    after = explainer.feature_importance("m")
    assert after.rows == 120  # what Explain was asked does not count: it is not traffic
    expected = np.abs(explained.contributions).mean(axis=0)
    by_name = dict(zip("abcdef", expected, strict=True))
    assert [name for name, _ in after.features] == sorted(by_name, key=lambda k: -by_name[k])
    for name, value in after.features:
        assert value == pytest.approx(by_name[name], rel=1e-9, abs=1e-12)
    assert explainer.feature_importance("m", version=1) == after
    assert explainer.feature_importance("m", alias="champion") == after


def test_the_sample_keeps_the_most_recent_rows_of_each_version(
    registry: Registry, make_engine: Engine, models: dict[str, tuple[bytes, np.ndarray]]
) -> None:
    onnx, X = models["linear"]
    add(registry, "m", onnx, X[:40])
    add(registry, "m", _fit("linear", seed=1)[0], X[:40], alias="")
    engine = make_engine()
    explainer = Explainer(
        engine, registry, ExplainerConfig(importance_rows=50, importance_seconds=0.0)
    )
    seen: list[np.ndarray] = []
    for size in (30, 40, 1, 80, 7):  # wraps, a request larger than the sample, wraps again
        rows = X[len(np.vstack(seen)) if seen else 0 :][:size]
        seen.append(rows)
        engine.predict("m", {"input": rows})
        recent = np.vstack(seen)[-50:]
        got = explainer.feature_importance("m")
        assert got.rows == len(recent)
        expected = np.abs(explainer.explain("m", {"input": recent}).contributions).mean(axis=0)
        np.testing.assert_allclose(
            [value for _, value in sorted(got.features)], expected, rtol=1e-9, atol=0
        )
    assert explainer.feature_importance("m", version=2).rows == 0  # no rows of version 1
    engine.predict("m", {"input": X[:3]}, version=2)
    assert explainer.feature_importance("m", version=2).rows == 3
    assert explainer.feature_importance("m", version=1).rows == 50


def test_recent_rows_wrap_around_in_the_inputs_dtype() -> None:
    ring = RecentRows(width=2, capacity=1500, dtype=np.dtype(np.float32))
    rng = np.random.default_rng(0)
    seen = []
    for size in (700, 900, 1, 2000, 333, 1499, 1500):
        rows = rng.standard_normal((size, 2)).astype(np.float32)
        seen.append(rows)
        ring.add(rows)
        total, held = ring.recent()
        assert total == sum(len(r) for r in seen)
        assert held.dtype == np.float64
        np.testing.assert_array_equal(held, np.vstack(seen)[-1500:])
        assert ring.counts() == (total, len(held))


def test_only_one_float_matrix_is_kept() -> None:
    sample = TrafficSample(rows=10)
    X = np.ones((2, 3), np.float32)
    sample.served("m", 1, {"ids": np.ones((2, 3), np.int64)})
    sample.served("m", 1, {"a": X, "b": X})
    sample.served("m", 1, {"cube": np.ones((2, 3, 1), np.float32)})
    sample.served("m", 1, {"flat": np.ones(3, np.float32)})
    assert sample.recent("m", 1) is None and sample.counts("m", 1) == (0, 0)
    sample.served("m", 1, {"X": X})
    sample.served("m", 2, {"X": 2 * X})
    total, rows = sample.recent("m", 1)  # type: ignore[misc]
    assert total == 2
    np.testing.assert_array_equal(rows, X)
    sample.served("m", 1, {"X": np.zeros((1, 5), np.float32)})  # a new width starts afresh
    assert sample.counts("m", 1) == (1, 1)
    assert sample.counts("m", 2) == (2, 2)


def test_a_wide_input_keeps_fewer_rows_and_old_versions_make_way() -> None:
    sample = TrafficSample(rows=1000, versions=2)
    wide = np.zeros((1, traffic.MAX_RING_BYTES // 8 // 100), np.float64)  # 100 rows fit
    sample.served("m", 1, {"X": np.repeat(wide, 300, axis=0)})
    assert sample.counts("m", 1) == (300, 100)
    sample.served("m", 2, {"X": np.ones((1, 2))})
    sample.served("m", 3, {"X": np.ones((1, 2))})
    assert sample.recent("m", 1) is None  # the sample begun longest ago
    assert sample.counts("m", 3) == (1, 1)
    with pytest.raises(errors.InvalidArgument, match=r"^rows: 0"):
        TrafficSample(rows=0)


def test_gather_and_other_inputs_leave_no_rows(registry: Registry, make_engine: Engine) -> None:
    add(registry, "gather", onnx_models.gather_model(), None)
    engine = make_engine()
    explainer = Explainer(engine, registry)
    engine.predict("gather", {"data": np.ones(4, np.float32), "idx": np.zeros(2, np.int64)})
    assert explainer.traffic.counts("gather", 1) == (0, 0)
    with pytest.raises(errors.FailedPrecondition, match=r"'gather' version 1 has no background"):
        explainer.feature_importance("gather")


def test_importance_answers_are_reused_until_new_rows_and_time_or_a_doubled_sample(
    registry: Registry, make_engine: Engine, models: dict[str, tuple[bytes, np.ndarray]]
) -> None:
    onnx, X = models["linear"]
    add(registry, "m", onnx, X[:40])
    engine = make_engine()
    explainer = Explainer(engine, registry, ExplainerConfig(importance_seconds=3600.0))
    assert explainer.feature_importance("m").rows == 0
    engine.predict("m", {"input": X[:10]})
    first = explainer.feature_importance("m")
    assert first.rows == 10  # the zeros of no traffic are not kept once rows arrive
    engine.predict("m", {"input": X[10:20]})
    assert explainer.feature_importance("m") is first  # 20 rows: not more than doubled
    engine.predict("m", {"input": X[20:21]})
    assert explainer.feature_importance("m").rows == 21  # 21 > 2 x 10: recomputed at once
    again = explainer.feature_importance("m")
    assert explainer.feature_importance("m", version=1) is again


def test_kernel_importance_explains_a_seeded_choice_within_the_budget(
    registry: Registry, make_engine: Engine, models: dict[str, tuple[bytes, np.ndarray]]
) -> None:
    onnx, X = models["mlp"]
    add(registry, "m", onnx, X[:20])
    config = ExplainerConfig(importance_kernel_evaluations=service.IMPORTANCE_SAMPLES * 20 * 4)
    answers = []
    for _ in range(2):
        engine = make_engine()
        explainer = Explainer(engine, registry, config)
        engine.predict("m", {"input": X[:30]})
        answers.append(explainer.feature_importance("m"))
    assert answers[0].rows == 4  # 4 rows x IMPORTANCE_SAMPLES x 20 background rows
    assert answers[0] == answers[1]
    assert all(value > 0 for _, value in answers[0].features)


def test_importance_errors(
    registry: Registry, explainer: Explainer, models: dict[str, tuple[bytes, np.ndarray]]
) -> None:
    onnx, X = models["linear"]
    add(registry, "m", onnx, X[:10], alias="")
    with pytest.raises(errors.NotFound):
        explainer.feature_importance("nope")
    with pytest.raises(errors.NotFound, match=r"no version 4"):
        explainer.feature_importance("m", version=4)
    with pytest.raises(errors.FailedPrecondition, match=r"'m' has no champion"):
        explainer.feature_importance("m")
    with pytest.raises(errors.InvalidArgument, match=r"^version: "):
        explainer.feature_importance("m", version=-1)
    assert explainer.feature_importance("m", version=1).rows == 0


def test_explainers_are_built_once_per_version_and_output(
    registry: Registry, make_engine: Engine, models: dict[str, tuple[bytes, np.ndarray]]
) -> None:
    onnx, X = models["mlp"]
    add(registry, "m", onnx, X[:20])
    reads: list[str] = []

    class Counting:
        """The real registry, counting what the explainer reads of it."""

        def __getattr__(self, name: str) -> Any:
            if name in ("background", "read_artifact"):
                reads.append(name)
            return getattr(registry, name)

    explainer = Explainer(make_engine(), Counting())  # type: ignore[arg-type]
    for _ in range(3):
        explainer.explain("m", {"input": X[:1]}, samples=50)
    assert reads == ["background", "read_artifact"]


def test_config_is_validated() -> None:
    with pytest.raises(errors.InvalidArgument, match=r"^max_rows: 0"):
        ExplainerConfig(max_rows=0)
    with pytest.raises(errors.InvalidArgument, match=r"^importance_seconds: -1"):
        ExplainerConfig(importance_seconds=-1)


def test_doctests() -> None:
    for module in (service, kernel):
        failures, tried = doctest.testmod(module)
        assert failures == 0 and tried > 0

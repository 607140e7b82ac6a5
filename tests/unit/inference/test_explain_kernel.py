"""KernelSHAP (llmopt.inference.explain.kernel) against brute-force Shapley values and shap."""

from __future__ import annotations

import itertools
import math
import warnings
from collections.abc import Callable

import numpy as np
import onnxruntime as ort
import pytest
from scipy.stats import spearmanr

from llmopt import errors
from llmopt.inference.explain import kernel
from llmopt.inference.explain.kernel import KernelExplainer

Predict = Callable[[np.ndarray], np.ndarray]


def mlp_model(width: int, seed: int = 0) -> tuple[Predict, np.ndarray]:
    """An sklearn MLPRegressor exported to ONNX, run through onnxruntime, and its training
    rows."""
    from sklearn.neural_network import MLPRegressor

    from llmopt.registry.export import export_sklearn

    rng = np.random.default_rng(seed)
    X = rng.standard_normal((400, width)).astype(np.float32)
    y = X @ np.linspace(3, 0.25, width) + 0.5 * np.sin(X[:, 0]) * X[:, 1] + 0.2 * X[:, 2] ** 2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence warnings: the fit need not be good
        fitted = MLPRegressor(hidden_layer_sizes=(16,), max_iter=300, random_state=0).fit(X, y)
    session = ort.InferenceSession(
        export_sklearn(fitted, sample=X[:50]).onnx_bytes, providers=["CPUExecutionProvider"]
    )

    def predict(rows: np.ndarray) -> np.ndarray:
        out = session.run(None, {"input": np.asarray(rows, np.float32)})[0]
        return np.asarray(out, np.float64).reshape(-1)

    return predict, X.astype(np.float64)


@pytest.fixture(scope="module")
def mlp8() -> tuple[Predict, np.ndarray]:
    return mlp_model(8)


@pytest.fixture(scope="module")
def mlp16() -> tuple[Predict, np.ndarray]:
    return mlp_model(16)


def brute_force_shapley(f: Predict, background: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Shapley values of v(S) = mean_b f(x_S, b_~S), by the definition."""
    m = len(x)
    values: dict[tuple[int, ...], float] = {}
    for size in range(m + 1):
        for members in itertools.combinations(range(m), size):
            rows = background.copy()
            rows[:, list(members)] = x[list(members)]
            values[members] = float(f(rows).mean())
    phi = np.zeros(m)
    for i in range(m):
        others = [j for j in range(m) if j != i]
        for size in range(m):
            weight = math.factorial(size) * math.factorial(m - size - 1) / math.factorial(m)
            for members in itertools.combinations(others, size):
                with_i = tuple(sorted((*members, i)))
                phi[i] += weight * (values[with_i] - values[members])
    return phi


def shap_values(f: Predict, background: np.ndarray, X: np.ndarray, samples: int) -> np.ndarray:
    import shap

    # l1_reg=False: the plain Shapley-kernel regression (shap's default keeps 10 features).
    explainer = shap.KernelExplainer(f, background)
    return np.asarray(explainer.shap_values(X, nsamples=samples, silent=True, l1_reg=False))


def test_every_coalition_evaluated_gives_the_exact_shapley_values(mlp8) -> None:
    f, X = mlp8
    background = X[:30]
    explainer = KernelExplainer(f, background)
    phi, base = explainer.explain(X[200:203])  # 2**8 - 2 = 254 <= 2048: every coalition
    assert base == pytest.approx(float(f(background).mean()), abs=1e-12)
    for row, x in zip(phi, X[200:203], strict=True):
        np.testing.assert_allclose(row, brute_force_shapley(f, background, x), atol=1e-9)


def test_exact_case_matches_shap(mlp8) -> None:
    f, X = mlp8
    background, rows = X[:30], X[200:206]
    phi, _ = KernelExplainer(f, background).explain(rows)
    reference = shap_values(f, background, rows, 2048)
    np.testing.assert_allclose(phi, reference, atol=1e-6)


def test_sampled_contributions_rank_like_shap(mlp16) -> None:
    f, X = mlp16
    background, rows = X[:40], X[100:110]
    phi, base = KernelExplainer(f, background).explain(rows, samples=2048, seed=3)
    reference = shap_values(f, background, rows, 2048)  # 2**16 - 2 > 2048: both sample
    for ours, theirs in zip(phi, reference, strict=True):
        assert spearmanr(ours, theirs).statistic >= 0.99
    np.testing.assert_allclose(base + phi.sum(axis=1), f(rows), rtol=0, atol=1e-9)


def test_sum_is_the_prediction_minus_the_base_exactly(mlp16) -> None:
    f, X = mlp16
    explainer = KernelExplainer(f, X[:20])
    rows = X[300:305]
    predictions = f(rows)
    phi, base = explainer.explain(rows, samples=300, seed=1, predictions=predictions)
    np.testing.assert_allclose(phi.sum(axis=1), predictions - base, rtol=0, atol=1e-12)


def test_same_seed_same_result_other_seed_differs(mlp16) -> None:
    f, X = mlp16
    explainer = KernelExplainer(f, X[:20])
    rows = X[300:302]
    first, _ = explainer.explain(rows, samples=500, seed=11)
    again, _ = explainer.explain(rows, samples=500, seed=11)
    other, _ = explainer.explain(rows, samples=500, seed=12)
    np.testing.assert_array_equal(first, again)
    assert np.abs(first - other).max() > 1e-6
    # A row's answer depends on the row and the seed, not on the rows sent with it.
    alone, _ = explainer.explain(rows[1:], samples=500, seed=11)
    np.testing.assert_array_equal(alone[0], first[1])


def test_more_samples_approach_the_exact_values(mlp16) -> None:
    f, X = mlp16
    explainer = KernelExplainer(f, X[:10])
    row = X[250:251]
    exact, _ = explainer.explain(row, samples=kernel.MAX_SAMPLES)  # 2**16 - 2: enumerated
    rough, _ = explainer.explain(row, samples=256, seed=0)
    fine, _ = explainer.explain(row, samples=8192, seed=0)
    assert np.abs(fine - exact).max() < np.abs(rough - exact).max()
    assert np.abs(fine - exact).max() < 0.05 * np.abs(exact).max()


def test_features_equal_to_every_background_row_get_zero() -> None:
    w = np.array([1.0, -2.0, 0.5, 3.0])
    background = np.zeros((5, 4))
    background[:, 0] = np.arange(5)
    explainer = KernelExplainer(lambda rows: np.tanh(rows @ w), background)
    x = np.array([[2.0, 0.0, 1.0, 0.0]])  # features 1 and 3 equal the background's everywhere
    phi, base = explainer.explain(x)
    assert phi[0, 1] == 0.0 and phi[0, 3] == 0.0
    assert base + phi.sum() == pytest.approx(np.tanh(x @ w)[0], abs=1e-12)
    single = KernelExplainer(lambda rows: rows @ w, np.zeros((3, 4)))
    only, _ = single.explain(np.array([[0.0, 0.0, 2.0, 0.0]]))
    assert only.tolist() == [[0.0, 0.0, 1.0, 0.0]]


def test_the_model_runs_in_batches_not_per_coalition(mlp8) -> None:
    f, X = mlp8
    calls: list[int] = []

    def counted(rows: np.ndarray) -> np.ndarray:
        calls.append(len(rows))
        return f(rows)

    background = X[:30]
    KernelExplainer(counted, background).explain(X[200:202])
    # One call for the base, one for the two predictions, one per row: 254 coalitions x 30.
    assert calls == [30, 2, 254 * 30, 254 * 30]
    calls.clear()
    small = KernelExplainer(counted, background, batch_elements=100 * 30 * 8)
    phi_small, _ = small.explain(X[200:201])
    assert calls[2:] == [100 * 30, 100 * 30, 54 * 30]
    phi, _ = KernelExplainer(f, background).explain(X[200:201])
    np.testing.assert_allclose(phi_small, phi, atol=1e-12)


def test_coalitions_are_paired_weighted_and_within_budget() -> None:
    m = 20
    rng = np.random.default_rng(0)
    masks, weights = kernel.coalitions(m, 2000, rng)
    sizes = masks.sum(axis=1)
    assert len(masks) <= 2000
    assert sizes.min() >= 1 and sizes.max() <= m - 1
    assert len(np.unique(masks, axis=0)) == len(masks)  # identical draws merged
    total = sum((m - 1) / (s * (m - s)) for s in range(1, m))
    assert weights.sum() == pytest.approx(total)
    # Sizes 1 and m - 1 (the heaviest) are enumerated whole: 20 + 20 coalitions.
    assert (sizes == 1).sum() == m and (sizes == m - 1).sum() == m
    seen = {row.tobytes() for row in masks}
    assert all((~row).tobytes() in seen for row in masks)  # every coalition with its complement
    every, every_weights = kernel.coalitions(5, 30, rng)
    assert len(every) == 30 and every_weights.min() > 0


@pytest.mark.parametrize("samples", [-1, kernel.MAX_SAMPLES + 1, 2.5, True])
def test_samples_outside_the_range_are_refused(samples: object) -> None:
    with pytest.raises(errors.InvalidArgument, match=r"^samples: "):
        kernel.check_samples(samples)  # type: ignore[arg-type]
    assert kernel.check_samples(0) == kernel.DEFAULT_SAMPLES
    assert kernel.check_samples(kernel.MAX_SAMPLES) == kernel.MAX_SAMPLES


def test_subsample_is_seeded_and_bounded() -> None:
    rows = np.arange(1000.0).reshape(500, 2)
    picked = kernel.subsample(rows, 100)
    assert picked.shape == (100, 2)
    np.testing.assert_array_equal(picked, kernel.subsample(rows, 100))
    assert np.all(np.diff(picked[:, 0]) > 0)  # kept in order
    assert kernel.subsample(rows[:50], 100) is not None and len(kernel.subsample(rows[:50])) == 50

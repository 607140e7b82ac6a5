"""The Gaussian process: scikit-learn's posterior and likelihood at the same hyperparameters,
analytic gradients against finite differences, block conditioning, and fitting."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.gaussian_process import GaussianProcessRegressor
from sklearn.gaussian_process.kernels import ConstantKernel, Matern, WhiteKernel

from llmopt.tuning import gp


def data(n: int = 30, d: int = 3, seed: int = 0, noise: float = 0.05):
    rng = np.random.default_rng(seed)
    X = rng.random((n, d))
    y = np.sin(6 * X[:, 0]) + X[:, 1] ** 2 + 3.0 + noise * rng.standard_normal(n)
    return X, y


PARAMS = gp.GPParams(np.array([0.3, 0.7, 1.5]), 1.3, 0.02)


def sklearn_gp(X: np.ndarray, y: np.ndarray, params: gp.GPParams) -> GaussianProcessRegressor:
    kernel = ConstantKernel(params.signal_variance) * Matern(
        params.length_scales, nu=2.5
    ) + WhiteKernel(params.noise_variance)
    # normalize_y standardizes as gp does (mean, std with ddof=0); alpha is gp's jitter.
    return GaussianProcessRegressor(kernel, optimizer=None, normalize_y=True, alpha=gp.JITTER).fit(
        X, y
    )


def test_posterior_and_likelihood_equal_scikit_learns() -> None:
    X, y = data()
    ours = gp.GaussianProcess(X, y, PARAMS)
    ref = sklearn_gp(X, y, PARAMS)
    Q = np.random.default_rng(1).random((50, 3))
    mean, var_noisy = ours.predict(Q, with_noise=True)
    ref_mean, ref_std = ref.predict(Q, return_std=True)
    np.testing.assert_allclose(mean, ref_mean, rtol=0, atol=1e-6)
    np.testing.assert_allclose(np.sqrt(var_noisy), ref_std, rtol=0, atol=1e-6)
    # The latent variance is the predictive one less the noise (in the units of y).
    _, var = ours.predict(Q)
    np.testing.assert_allclose(var, var_noisy - PARAMS.noise_variance * np.std(y) ** 2, atol=1e-12)
    assert ours.log_marginal_likelihood() == pytest.approx(
        ref.log_marginal_likelihood_value_, abs=1e-6
    )
    theta = PARAMS.to_vector()
    z = (y - y.mean()) / y.std()
    assert gp.neg_log_marginal_likelihood(theta, X, z)[0] == pytest.approx(
        -ref.log_marginal_likelihood_value_, abs=1e-6
    )


@pytest.mark.parametrize("noise", [0.02, 1e-6])
def test_likelihood_gradient_matches_finite_differences(noise: float) -> None:
    X, y = data(n=25)
    z = (y - y.mean()) / y.std()
    theta = gp.GPParams(PARAMS.length_scales, 1.3, noise).to_vector()
    _, grad = gp.neg_log_marginal_likelihood(theta, X, z)
    h = 1e-6
    fd = np.array(
        [
            (
                gp.neg_log_marginal_likelihood(theta + h * e, X, z)[0]
                - gp.neg_log_marginal_likelihood(theta - h * e, X, z)[0]
            )
            / (2 * h)
            for e in np.eye(len(theta))
        ]
    )
    np.testing.assert_allclose(grad, fd, rtol=1e-4, atol=1e-5)


def test_prior_gradient_matches_finite_differences() -> None:
    theta = np.array([-1.0, 0.3, 2.0, 0.5, -4.0])
    _, grad = gp.log_prior(theta, 3)
    h = 1e-6
    fd = [
        (gp.log_prior(theta + h * e, 3)[0] - gp.log_prior(theta - h * e, 3)[0]) / (2 * h)
        for e in np.eye(5)
    ]
    np.testing.assert_allclose(grad, fd, rtol=1e-6, atol=1e-8)


def test_posterior_gradients_match_finite_differences() -> None:
    X, y = data()
    model = gp.GaussianProcess(X, y, PARAMS)
    Q = np.random.default_rng(2).random((4, 3))
    Q[0] = X[0] + 1e-3  # next to an observation, where the variance is small
    mean, var, dmean, dvar = model.predict_with_grad(Q)
    plain_mean, plain_var = model.predict(Q)
    np.testing.assert_allclose(mean, plain_mean, atol=1e-12)
    np.testing.assert_allclose(var, plain_var, atol=1e-12)
    h = 1e-6
    for j in range(3):
        step = np.zeros(3)
        step[j] = h
        up, down = model.predict(Q + step), model.predict(Q - step)
        np.testing.assert_allclose(dmean[:, j], (up[0] - down[0]) / (2 * h), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(dvar[:, j], (up[1] - down[1]) / (2 * h), rtol=1e-4, atol=1e-6)


def test_condition_on_extends_the_factor_to_the_full_posterior() -> None:
    X, y = data()
    model = gp.GaussianProcess(X, y, PARAMS)
    rng = np.random.default_rng(3)
    X_new, y_new = rng.random((3, 3)), rng.normal(3.0, 1.0, 3)
    grown = model.condition_on(X_new, y_new)
    full = gp.GaussianProcess(
        np.vstack([X, X_new]),
        np.concatenate([y, y_new]),
        PARAMS,
        y_mean=model.y_mean,
        y_std=model.y_std,
    )
    np.testing.assert_allclose(grown.L, full.L, atol=1e-10)
    Q = rng.random((20, 3))
    for a, b in zip(grown.predict(Q), full.predict(Q), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-10)
    assert grown.n == 33 and model.n == 30  # the original is untouched
    # Conditioning at the posterior mean (a Kriging believer) keeps the mean, shrinks the variance.
    believed = model.condition_on(X_new, model.predict(X_new)[0])
    np.testing.assert_allclose(believed.predict(X_new)[0], model.predict(X_new)[0], atol=1e-8)
    assert np.all(believed.predict(X_new)[1] < model.predict(X_new)[1])


def test_fit_finds_the_irrelevant_dimension_and_the_noise() -> None:
    rng = np.random.default_rng(4)
    X = rng.random((40, 3))
    y = np.sin(6 * X[:, 0]) + 0.1 * rng.standard_normal(40)  # x2, x3 irrelevant
    params = gp.fit_params(X, y, noise=True, rng=np.random.default_rng(0), restarts=2)
    ls = params.length_scales
    assert ls[0] < 0.5 and ls[1] > 2 * ls[0] and ls[2] > 2 * ls[0]
    # The noise sd 0.1 against y's sd of about 0.7: a variance ratio near 0.02.
    assert 0.003 < params.noise_variance < 0.1
    clean = gp.fit_params(X, np.sin(6 * X[:, 0]), noise=True, rng=np.random.default_rng(0))
    assert clean.noise_variance < 1e-3
    fixed = gp.fit_params(X, y, noise=False, rng=np.random.default_rng(0), restarts=1)
    assert fixed.noise_variance == pytest.approx(gp.FIXED_NOISE)


def test_fit_is_deterministic_and_warm_starts() -> None:
    X, y = data(n=40)
    a = gp.fit_params(X, y, noise=True, rng=np.random.default_rng(7), restarts=3)
    b = gp.fit_params(X, y, noise=True, rng=np.random.default_rng(7), restarts=3)
    np.testing.assert_array_equal(a.to_vector(), b.to_vector())
    warm = gp.fit_params(X, y, noise=True, rng=np.random.default_rng(8), warm=a, restarts=3)
    z = (y - y.mean()) / y.std()
    nll_a = gp.neg_log_marginal_likelihood(a.to_vector(), X, z)[0]
    nll_w = gp.neg_log_marginal_likelihood(warm.to_vector(), X, z)[0]
    assert nll_w <= nll_a + 1e-3


def test_large_data_fits_on_a_subset_and_conditions_on_at_most_the_cap() -> None:
    rng = np.random.default_rng(5)
    X = rng.random((gp.MAX_CONDITION + 200, 2))
    y = np.sin(5 * X[:, 0]) + np.cos(3 * X[:, 1])
    model = gp.fit(X, y, noise=True, rng=np.random.default_rng(0), restarts=0, maxiter=20)
    assert model.n == gp.MAX_CONDITION
    # The best rows are always kept.
    best = X[np.argsort(y)[: gp.CONDITION_BEST]]
    kept = {row.tobytes() for row in model.X}
    assert all(row.tobytes() in kept for row in best)
    Q = rng.random((200, 2))
    mean, _ = model.predict(Q)
    truth = np.sin(5 * Q[:, 0]) + np.cos(3 * Q[:, 1])
    assert np.abs(mean - truth).max() < 0.05


def test_constant_observations_do_not_break_the_posterior() -> None:
    X = np.random.default_rng(6).random((5, 2))
    model = gp.fit(X, np.full(5, 2.0), noise=True, rng=np.random.default_rng(0), restarts=1)
    mean, var = model.predict(X)
    np.testing.assert_allclose(mean, 2.0, atol=1e-6)
    assert np.all(np.isfinite(var)) and np.all(var >= 0)


def test_grouped_columns_share_a_length_scale() -> None:
    rng = np.random.default_rng(9)
    X = np.zeros((20, 4))
    X[:, 0] = rng.random(20)
    X[np.arange(20), 1 + rng.integers(0, 3, 20)] = 1.0  # a one-hot block of 3
    y = X[:, 0] ** 2 + X[:, 2]
    groups = np.array([0, 1, 1, 1])
    grouped = gp.GaussianProcess(X, y, gp.GPParams(np.array([0.4, 0.9]), 1.1, 1e-3), groups=groups)
    flat = gp.GaussianProcess(X, y, gp.GPParams(np.array([0.4, 0.9, 0.9, 0.9]), 1.1, 1e-3))
    Q = np.hstack([rng.random((5, 1)), np.eye(3)[rng.integers(0, 3, 5)]])
    for a, b in zip(grouped.predict_with_grad(Q), flat.predict_with_grad(Q), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-10)
    assert grouped.log_marginal_likelihood() == pytest.approx(flat.log_marginal_likelihood())
    theta = np.log([0.4, 0.9, 1.1, 1e-3])
    z = (y - y.mean()) / y.std()
    _, grad = gp.neg_log_marginal_likelihood(theta, X, z, groups=groups)
    h = 1e-6
    fd = [
        (
            gp.neg_log_marginal_likelihood(theta + h * e, X, z, groups=groups)[0]
            - gp.neg_log_marginal_likelihood(theta - h * e, X, z, groups=groups)[0]
        )
        / (2 * h)
        for e in np.eye(4)
    ]
    np.testing.assert_allclose(grad, fd, rtol=1e-4, atol=1e-5)
    fitted = gp.fit(X, y, noise=True, rng=np.random.default_rng(0), restarts=1, groups=groups)
    assert fitted.params.length_scales.shape == (2,)
    assert fitted.condition_on(Q[:2], [0.0, 1.0]).predict(Q)[0].shape == (5,)

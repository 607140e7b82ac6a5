"""Acquisitions: log forms equal the logs where both are finite, stay finite in the far tail,
gradients (through a GP's mean and sd) match finite differences, and the monotone facts."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
from scipy import special

from llmopt.tuning import acquisition as acq
from llmopt.tuning import gp

Z = np.linspace(-5.0, 5.0, 201)


def test_log_ei_is_the_log_of_ei_where_ei_is_not_tiny() -> None:
    mean = -Z * 0.7  # best 0, sd 0.7: z = Z
    sd = np.full_like(Z, 0.7)
    ei, _ = acq.ei(mean, sd, 0.0)
    log_ei, _ = acq.log_ei(mean, sd, 0.0)
    assert np.all(ei > 1e-8)
    np.testing.assert_allclose(log_ei, np.log(ei), rtol=1e-9, atol=1e-9)


def test_log_ei_is_finite_and_right_where_ei_underflows() -> None:
    z = np.array([-40.0, -200.0, -5e3, -1e6])
    mean, sd = -z, np.ones(4)
    ei, _ = acq.ei(mean, sd, 0.0)
    assert ei[0] == 0.0  # the plain form underflows
    log_ei, _ = acq.log_ei(mean, sd, 0.0)
    assert np.all(np.isfinite(log_ei))
    # Asymptotically EI = phi(z) / z^2 (1 - 3 / z^2 + ...).
    expected = -0.5 * z**2 - 0.5 * np.log(2 * np.pi) - 2 * np.log(-z) + np.log1p(-3 / z**2)
    np.testing.assert_allclose(log_ei, expected, rtol=1e-6)
    # Continuous and increasing across the branches (z = -1 and z = -1e3).
    grid = np.concatenate([np.linspace(-1e3 - 1, -1e3 + 1, 41), np.linspace(-1.5, -0.5, 41)])
    h = acq.log_h(grid)
    assert np.all(np.diff(h) > 0)
    for edge in (-1.0, -1e3):
        near = acq.log_h(np.array([edge - 1e-9, edge + 1e-9]))
        assert abs(near[1] - near[0]) < 1e-6 * max(1.0, abs(edge))


def test_log_pi_is_finite_in_the_tail() -> None:
    value, _ = acq.log_pi(np.array([40.0]), np.array([1.0]), 0.0)
    assert np.isfinite(value[0]) and value[0] < -700
    small, _ = acq.pi(np.array([0.5]), np.array([1.0]), 0.0)
    assert acq.log_pi(np.array([0.5]), np.array([1.0]), 0.0)[0][0] == pytest.approx(
        np.log(small[0])
    )


def test_monotone_facts() -> None:
    means = np.linspace(2.0, -2.0, 50)  # improving
    sd = np.full(50, 0.5)
    for fn in (acq.ei, acq.log_ei, acq.pi, acq.log_pi):
        assert np.all(np.diff(fn(means, sd, 0.0)[0]) > 0), fn.__name__
    assert np.all(np.diff(acq.ucb(means, sd, 2.0)[0]) > 0)
    sds = np.linspace(0.1, 3.0, 50)  # more uncertain at a fixed mean above the incumbent
    mean = np.full(50, 1.0)
    for fn in (acq.ei, acq.log_ei, acq.pi):
        assert np.all(np.diff(fn(mean, sds, 0.0)[0]) > 0), fn.__name__
    assert np.all(np.diff(acq.ucb(mean, sds, 2.0)[0]) > 0)
    # UCB is -mean + sqrt(beta) * sd.
    assert acq.ucb(np.array([1.0]), np.array([2.0]), 4.0)[0][0] == pytest.approx(3.0)


def test_feasibility_is_the_probability_of_the_interval() -> None:
    mean = np.array([0.0, 1.0, 5.0, -30.0])
    sd = np.array([1.0, 0.5, 2.0, 1.0])
    both, _ = acq.log_feasibility(mean, sd, -1.0, 2.0)
    m, s = mean[:3], sd[:3]
    expected = np.log(special.ndtr((2.0 - m) / s) - special.ndtr((-1.0 - m) / s))
    np.testing.assert_allclose(both[:3], expected, rtol=1e-10)
    assert np.isfinite(both[3]) and both[3] < -300  # far below low, still finite
    upper, _ = acq.log_feasibility(mean, sd, None, 2.0)
    np.testing.assert_allclose(upper, special.log_ndtr((2.0 - mean) / sd))
    lower, _ = acq.log_feasibility(mean, sd, -1.0, None)
    np.testing.assert_allclose(lower, special.log_ndtr((mean + 1.0) / sd))
    # Both bounds in the upper tail: P(40 <= c <= 41) for c ~ N(0, 1) is tiny but finite.
    tail, _ = acq.log_feasibility(np.zeros(1), np.ones(1), 40.0, 41.0)
    assert np.isfinite(tail[0]) and tail[0] < -790


def test_penalizer_is_small_near_a_centre_and_vanishes_far_away() -> None:
    centres = np.array([[0.5, 0.5]])
    X = np.array([[0.5, 0.5], [0.52, 0.5], [1.0, 1.0]])
    value, _ = acq.log_penalizer(X, centres, np.array([1.0]), np.array([0.1]), 10.0, 0.0)
    assert value[0] < value[1] < value[2]
    assert value[0] < -10 and value[2] > -1e-6


GP_X = np.random.default_rng(0).random((15, 2))
MODEL = gp.GaussianProcess(
    GP_X, np.sin(5 * GP_X[:, 0]) + GP_X[:, 1], gp.GPParams(np.array([0.3, 0.5]), 1.0, 1e-4)
)


def through_gp(fn: Callable, X: np.ndarray, grad: bool):
    if not grad:
        mean, var = MODEL.predict(X)
        return fn(mean, np.sqrt(var), None, None)[0]
    mean, var, dmean, dvar = MODEL.predict_with_grad(X)
    sd = np.sqrt(var)
    return fn(mean, sd, dmean, dvar / (2 * sd)[:, None])


BEST = float(MODEL.predict(GP_X)[0].min())
ACQUISITIONS = {
    "ei": lambda m, s, dm, ds: acq.ei(m, s, BEST, dm, ds),
    "log_ei": lambda m, s, dm, ds: acq.log_ei(m, s, BEST - 2.0, dm, ds),  # deep in the tail
    "pi": lambda m, s, dm, ds: acq.pi(m, s, BEST, dm, ds),
    "log_pi": lambda m, s, dm, ds: acq.log_pi(m, s, BEST - 1.0, dm, ds),
    "ucb": lambda m, s, dm, ds: acq.ucb(m, s, 2.0, dm, ds),
    "feasible_max": lambda m, s, dm, ds: acq.log_feasibility(m, s, None, 0.2, dm, ds),
    "feasible_min": lambda m, s, dm, ds: acq.log_feasibility(m, s, 0.4, None, dm, ds),
    "feasible_both": lambda m, s, dm, ds: acq.log_feasibility(m, s, 0.1, 0.6, dm, ds),
}


@pytest.mark.parametrize("name", sorted(ACQUISITIONS))
def test_gradients_match_finite_differences(name: str) -> None:
    fn = ACQUISITIONS[name]
    X = np.random.default_rng(1).random((6, 2))
    value, grad = through_gp(fn, X, True)
    np.testing.assert_allclose(value, through_gp(fn, X, False), atol=1e-12)
    h = 1e-6
    for j in range(2):
        step = np.zeros(2)
        step[j] = h
        fd = (through_gp(fn, X + step, False) - through_gp(fn, X - step, False)) / (2 * h)
        np.testing.assert_allclose(grad[:, j], fd, rtol=1e-4, atol=1e-6 * max(1, abs(fd).max()))


def test_penalizer_gradient_matches_finite_differences() -> None:
    rng = np.random.default_rng(2)
    centres = rng.random((3, 2))
    cm, cs = np.array([0.5, 0.2, 0.9]), np.array([0.1, 0.3, 0.2])
    X = rng.random((5, 2))
    _, grad = acq.log_penalizer(X, centres, cm, cs, 4.0, 0.0, grad=True)
    h = 1e-6
    for j in range(2):
        step = np.zeros(2)
        step[j] = h
        up = acq.log_penalizer(X + step, centres, cm, cs, 4.0, 0.0)[0]
        down = acq.log_penalizer(X - step, centres, cm, cs, 4.0, 0.0)[0]
        np.testing.assert_allclose(grad[:, j], (up - down) / (2 * h), rtol=1e-5, atol=1e-7)

"""Acquisition functions, each with its gradient, for minimization.

Every function takes the posterior ``mean`` and standard deviation ``sd`` at ``m`` points (arrays
of shape ``(m,)``), and, for the gradient forms, their gradients ``dmean`` and ``dsd`` of shape
``(m, d)`` with respect to the points; ``best`` is the incumbent (the lowest value observed).
The optimizer turns a maximization into a minimization by sign before it calls them.

* ``ei``: expected improvement ``E[max(best - f, 0)] = sd * h(z)``, ``z = (best - mean) / sd``,
  ``h(z) = z Phi(z) + phi(z)``.
* ``log_ei``: ``log EI``, finite far into the tail where ``EI`` underflows to 0 (at ``z = -40``
  ``EI`` is ``~1e-350``): ``h(z) = phi(z) (1 + z sqrt(pi/2) erfcx(-z / sqrt(2)))`` for ``z < -1``
  (the scaled complementary error function keeps ``Phi / phi`` finite), and the asymptotic
  series ``h(z) ~ phi(z) / z^2 (1 - 3/z^2 + 15/z^4)`` below ``-1e3``.
* ``pi``, ``log_pi``: the probability of improvement ``Phi(z)`` (``log_ndtr``).
* ``ucb``: the upper confidence bound of ``-f``: ``-mean + sqrt(beta) * sd`` (GP-UCB's
  convention: ``beta`` multiplies the variance).
* ``log_feasibility``: ``log P(low <= c <= high)`` of a constraint metric's GP.
* ``log_penalizer``: local penalization (Gonzalez et al., 2016, "Batch Bayesian Optimization via
  Local Penalization"): around a point ``x_j`` already chosen (or pending), the ball that cannot
  hold the minimum if ``f`` is ``lipschitz``-Lipschitz, ``r_j = (f(x_j) - best) / lipschitz``,
  penalized by ``P(||x - x_j|| > r_j) = Phi((lipschitz ||x - x_j|| - mean_j + best) / sd_j)``,
  summed in log space.

Each returns ``(value, grad)`` with ``grad`` None when no gradients were given.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import special

LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)
SQRT_HALF_PI = math.sqrt(0.5 * math.pi)
TAIL = -1.0
FAR_TAIL = -1e3

Grad = np.ndarray | None


def _z(mean: np.ndarray, sd: np.ndarray, best: float) -> np.ndarray:
    return (best - mean) / sd


def log_phi(z: np.ndarray) -> np.ndarray:
    return -0.5 * z * z - LOG_SQRT_2PI


def log_h(z: np.ndarray) -> np.ndarray:
    """``log(z Phi(z) + phi(z))``, stable for every finite ``z``."""
    z = np.asarray(z, dtype=float)
    out = np.empty_like(z)
    mid = z >= TAIL
    zm = z[mid]
    out[mid] = np.log(zm * special.ndtr(zm) + np.exp(log_phi(zm)))
    tail = (z < TAIL) & (z >= FAR_TAIL)
    zt = z[tail]
    out[tail] = log_phi(zt) + np.log1p(zt * SQRT_HALF_PI * special.erfcx(-zt / math.sqrt(2.0)))
    far = z < FAR_TAIL
    zf = z[far]
    inv2 = 1.0 / (zf * zf)
    out[far] = log_phi(zf) + np.log(inv2) + np.log1p(-3.0 * inv2 + 15.0 * inv2 * inv2)
    return out


def ei(
    mean: np.ndarray,
    sd: np.ndarray,
    best: float,
    dmean: Grad = None,
    dsd: Grad = None,
) -> tuple[np.ndarray, Grad]:
    z = _z(mean, sd, best)
    cdf = special.ndtr(z)
    pdf = np.exp(log_phi(z))
    value = sd * (z * cdf + pdf)
    if dmean is None or dsd is None:
        return value, None
    return value, -cdf[:, None] * dmean + pdf[:, None] * dsd


def log_ei(
    mean: np.ndarray,
    sd: np.ndarray,
    best: float,
    dmean: Grad = None,
    dsd: Grad = None,
) -> tuple[np.ndarray, Grad]:
    z = _z(mean, sd, best)
    lh = log_h(z)
    value = np.log(sd) + lh
    if dmean is None or dsd is None:
        return value, None
    # d EI / d mean = -Phi(z), d EI / d sd = phi(z); divided by EI = sd h(z) in log space.
    cdf_ratio = np.exp(special.log_ndtr(z) - lh) / sd
    pdf_ratio = np.exp(log_phi(z) - lh) / sd
    return value, -cdf_ratio[:, None] * dmean + pdf_ratio[:, None] * dsd


def pi(
    mean: np.ndarray,
    sd: np.ndarray,
    best: float,
    dmean: Grad = None,
    dsd: Grad = None,
) -> tuple[np.ndarray, Grad]:
    z = _z(mean, sd, best)
    value = special.ndtr(z)
    if dmean is None or dsd is None:
        return value, None
    pdf = np.exp(log_phi(z))
    return value, (-pdf / sd)[:, None] * dmean + (-pdf * z / sd)[:, None] * dsd


def log_pi(
    mean: np.ndarray,
    sd: np.ndarray,
    best: float,
    dmean: Grad = None,
    dsd: Grad = None,
) -> tuple[np.ndarray, Grad]:
    z = _z(mean, sd, best)
    value = special.log_ndtr(z)
    if dmean is None or dsd is None:
        return value, None
    ratio = np.exp(log_phi(z) - value)  # phi / Phi, stable in the tail
    return value, (-ratio / sd)[:, None] * dmean + (-ratio * z / sd)[:, None] * dsd


def ucb(
    mean: np.ndarray,
    sd: np.ndarray,
    beta: float,
    dmean: Grad = None,
    dsd: Grad = None,
) -> tuple[np.ndarray, Grad]:
    root = math.sqrt(beta)
    value = -mean + root * sd
    if dmean is None or dsd is None:
        return value, None
    return value, -dmean + root * dsd


def _log_diff_ndtr(hi: np.ndarray, lo: np.ndarray) -> np.ndarray:
    """``log(Phi(hi) - Phi(lo))`` for ``hi >= lo``, computed on the side away from 1."""
    flip = lo > 0  # both in the upper tail: Phi(hi) - Phi(lo) = Phi(-lo) - Phi(-hi)
    a = np.where(flip, -lo, hi)
    b = np.where(flip, -hi, lo)
    la = special.log_ndtr(a)
    lb = special.log_ndtr(b)
    with np.errstate(divide="ignore"):
        return la + np.log1p(-np.exp(np.minimum(lb - la, 0.0)))


def log_feasibility(
    mean: np.ndarray,
    sd: np.ndarray,
    low: float | None,
    high: float | None,
    dmean: Grad = None,
    dsd: Grad = None,
) -> tuple[np.ndarray, Grad]:
    """``log P(low <= c <= high)`` for ``c ~ N(mean, sd^2)`` (either bound may be None)."""
    if high is not None and low is None:  # Phi((high - mean) / sd)
        return log_pi(mean, sd, high, dmean, dsd)
    if low is not None and high is None:  # Phi((mean - low) / sd)
        return log_pi(-mean, sd, -low, None if dmean is None else -dmean, dsd)
    if low is None or high is None:
        raise ValueError("a constraint needs a bound")
    zh = (high - mean) / sd
    zl = (low - mean) / sd
    value = _log_diff_ndtr(zh, zl)
    if dmean is None or dsd is None:
        return value, None
    ph = np.exp(log_phi(zh) - value)
    pl = np.exp(log_phi(zl) - value)
    # d/dmean: (phi(zl) - phi(zh)) / sd; d/dsd: (phi(zl) zl - phi(zh) zh) / sd, over P.
    gm = (pl - ph) / sd
    gs = (pl * zl - ph * zh) / sd
    return value, gm[:, None] * dmean + gs[:, None] * dsd


def log_penalizer(
    X: np.ndarray,
    centers: np.ndarray,
    center_mean: np.ndarray,
    center_sd: np.ndarray,
    lipschitz: float,
    best: float,
    grad: bool = False,
) -> tuple[np.ndarray, Grad]:
    """Sum over ``centers`` of the log local penalizer at the rows of ``X`` (see the module)."""
    diff = X[:, None, :] - centers[None, :, :]  # (m, c, d)
    dist = np.sqrt((diff * diff).sum(-1) + 1e-24)
    z = (lipschitz * dist - center_mean[None, :] + best) / center_sd[None, :]
    logs = special.log_ndtr(z)
    value = logs.sum(1)
    if not grad:
        return value, None
    ratio = np.exp(log_phi(z) - logs) * lipschitz / center_sd[None, :] / dist
    return value, np.einsum("mc,mcd->md", ratio, diff)


def softplus(x: np.ndarray) -> np.ndarray:
    return np.logaddexp(0.0, x)

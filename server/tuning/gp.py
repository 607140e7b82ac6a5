"""A Gaussian process regressor for Bayesian optimization: Matérn-5/2 with a length scale per
dimension, a signal variance and Gaussian observation noise, on rows of the unit cube.

Written here rather than taken from scikit-learn's ``GaussianProcessRegressor`` because the
optimizer needs four things that one does not give: hyperparameters warm-started from the
previous suggest (and fewer restarts when they are); cheap fantasized updates (a Kriging believer
appends rows to the Cholesky factor, ``condition_on``, instead of refitting and refactoring);
analytic gradients of the posterior mean and variance with respect to the inputs, for
optimizing the acquisition by L-BFGS-B; and a 50 ms budget per suggest at 100 observations,
which its per-call validation, kernel objects and optimizer loop do not leave room for.

The model. ``y`` is standardized inside (its mean subtracted, divided by its standard deviation,
``ddof=0``), so the hyperparameters are in units of the standardized variance::

    k(x, x') = s2 * (1 + sqrt(5) r + 5/3 r^2) * exp(-sqrt(5) r),  r^2 = sum_j ((x_j - x'_j) / l_j)^2
    y = f(x) + e,  e ~ N(0, n2),  f ~ GP(0, k)

Columns may be grouped (``groups``, the group of every column): a group's columns share one
length scale, which is how the optimizer gives a categorical's one-hot columns one between them
(a space of wide categoricals keeps one hyperparameter per parameter, and its ``(n, n, groups)``
distance array stays small).

Hyperparameters (``GPParams``) are fitted by maximizing the log marginal likelihood plus a mild
prior (``log_prior``: a normal on each log length scale around ``log(0.5 * sqrt(d))``, ``d``
the number of length scales, sd ``LOG_LENGTH_PRIOR_SD`` = 1.5, which keeps a length scale from
running off to its bound on a handful of points; and a normal of sd 2 on the log signal variance
around 0), in log space, by L-BFGS-B within the ``LOG_*_BOUNDS`` (at most ``FIT_MAXITER``
iterations a start): length scales in [1e-2, 1e2] (the inputs are the unit cube), signal variance in
[1e-2, 1e2], noise variance in [1e-6, 1] (or fixed at 1e-6 when ``noise=False``). Starts: the
warm start (the previous fit) when there is one, else a default, plus ``restarts`` random starts
from the seeded generator (the optimizer asks for fewer when it has a warm start).

Size. Beyond ``MAX_FIT`` (200) observations the hyperparameters are fitted on a subset (the best
third of it and a random rest, seeded); the posterior conditions on up to ``MAX_CONDITION``
(1,000): the best ``CONDITION_BEST`` (300) and a random rest. The fit is the cost that grows
(its Cholesky and inverse are cubic), so it gets the smaller cap.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import linalg, optimize

SQRT5 = math.sqrt(5.0)
JITTER = 1e-10
"""Added to the diagonal of every kernel matrix of observations (standardized units)."""

MAX_FIT = 200
MAX_CONDITION = 1000
CONDITION_BEST = 300

LOG_LENGTH_BOUNDS = (math.log(1e-2), math.log(1e2))
LOG_SIGNAL_BOUNDS = (math.log(1e-2), math.log(1e2))
LOG_NOISE_BOUNDS = (math.log(1e-6), math.log(1.0))
FIXED_NOISE = 1e-6
LOG_LENGTH_PRIOR_SD = 1.5
LOG_SIGNAL_PRIOR_SD = 2.0
FIT_MAXITER = 100


@dataclass(frozen=True)
class GPParams:
    """Kernel hyperparameters, in units of the standardized ``y``."""

    length_scales: np.ndarray
    signal_variance: float
    noise_variance: float

    def to_vector(self) -> np.ndarray:
        return np.concatenate(
            [
                np.log(self.length_scales),
                [math.log(self.signal_variance), math.log(self.noise_variance)],
            ]
        )

    @classmethod
    def from_vector(cls, theta: np.ndarray) -> GPParams:
        theta = np.asarray(theta, dtype=float)
        return cls(np.exp(theta[:-2]), float(np.exp(theta[-2])), float(np.exp(theta[-1])))

    @classmethod
    def default(cls, dim: int, noise: bool = True) -> GPParams:
        return cls(np.full(dim, 0.5 * math.sqrt(dim)), 1.0, 1e-3 if noise else FIXED_NOISE)


def matern52(r: np.ndarray) -> np.ndarray:
    """The unit-variance Matérn-5/2 correlation at scaled distances ``r``."""
    s = SQRT5 * r
    return (1.0 + s + s * s / 3.0) * np.exp(-s)


def _scaled_sq_dist(A: np.ndarray, B: np.ndarray, ls: np.ndarray) -> np.ndarray:
    a = A / ls
    b = B / ls
    d2 = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T
    return np.maximum(d2, 0.0)


def column_scales(params: GPParams, groups: np.ndarray | None) -> np.ndarray:
    """The length scale of every column: a group's columns share theirs."""
    return params.length_scales if groups is None else params.length_scales[groups]


def kernel(
    A: np.ndarray, B: np.ndarray, params: GPParams, groups: np.ndarray | None = None
) -> np.ndarray:
    """``k(A, B)`` without noise, shape ``(len(A), len(B))``."""
    scales = column_scales(params, groups)
    return params.signal_variance * matern52(np.sqrt(_scaled_sq_dist(A, B, scales)))


def grouped_sq_diff(X: np.ndarray, groups: np.ndarray | None = None) -> np.ndarray:
    """``(n, n, g)``: per group of columns, the squared distances between the rows of ``X``."""
    if groups is None:
        return (X[:, None, :] - X[None, :, :]) ** 2
    n_groups = int(groups.max()) + 1
    out = np.empty((len(X), len(X), n_groups))
    for g in range(n_groups):
        A = X[:, groups == g]
        sq = (A * A).sum(1)
        out[:, :, g] = np.maximum(sq[:, None] + sq[None, :] - 2.0 * A @ A.T, 0.0)
    return out


def _cholesky(K: np.ndarray) -> np.ndarray:
    """Lower Cholesky factor, adding jitter in steps when ``K`` is not numerically positive."""
    jitter = 0.0
    for _ in range(6):
        try:
            return linalg.cholesky(K + jitter * np.eye(len(K)), lower=True, check_finite=False)
        except linalg.LinAlgError:
            jitter = 1e-8 if jitter == 0.0 else jitter * 100.0
    raise linalg.LinAlgError("the kernel matrix is not positive definite")


def _inverse_from_cholesky(L: np.ndarray) -> np.ndarray:
    """``K^-1`` from the lower Cholesky factor of ``K`` (LAPACK potri, both triangles)."""
    inv, info = linalg.lapack.dpotri(L, lower=1)
    if info != 0:
        return linalg.cho_solve((L, True), np.eye(len(L)), check_finite=False)
    lower = np.tril(inv)
    return lower + np.tril(inv, -1).T


def log_prior(theta: np.ndarray, dim: int) -> tuple[float, np.ndarray]:
    """The (unnormalized) log prior of the hyperparameters and its gradient."""
    mu = math.log(0.5 * math.sqrt(dim))
    grad = np.zeros_like(theta)
    dl = theta[:dim] - mu
    ds = theta[dim]
    value = -0.5 * float(dl @ dl) / LOG_LENGTH_PRIOR_SD**2 - 0.5 * ds * ds / LOG_SIGNAL_PRIOR_SD**2
    grad[:dim] = -dl / LOG_LENGTH_PRIOR_SD**2
    grad[dim] = -ds / LOG_SIGNAL_PRIOR_SD**2
    return value, grad


def neg_log_marginal_likelihood(
    theta: np.ndarray,
    X: np.ndarray,
    z: np.ndarray,
    sq_diff: np.ndarray | None = None,
    groups: np.ndarray | None = None,
) -> tuple[float, np.ndarray]:
    """``-log p(z | X, theta)`` and its gradient in ``theta`` = (log length scales, log signal
    variance, log noise variance); ``z`` standardized. ``sq_diff`` (n, n, d): the squared
    coordinate differences of ``X``, when the caller has them."""
    if sq_diff is None:
        sq_diff = grouped_sq_diff(X, groups)
    n, d = len(X), sq_diff.shape[2]
    ls2 = np.exp(2.0 * theta[:d])
    s2 = math.exp(theta[d])
    n2 = math.exp(theta[d + 1])
    r2 = sq_diff @ (1.0 / ls2)
    r = np.sqrt(r2)
    e = np.exp(-SQRT5 * r)
    Kf = s2 * (1.0 + SQRT5 * r + (5.0 / 3.0) * r2) * e
    K = Kf + (n2 + JITTER) * np.eye(n)
    try:
        L = linalg.cholesky(K, lower=True, check_finite=False)
    except linalg.LinAlgError:
        return 1e25, np.zeros_like(theta)
    alpha = linalg.cho_solve((L, True), z, check_finite=False)
    nll = 0.5 * float(z @ alpha) + float(np.log(np.diag(L)).sum()) + 0.5 * n * math.log(2 * math.pi)
    Kinv = _inverse_from_cholesky(L)
    W = np.outer(alpha, alpha) - Kinv  # d(log p)/dK = W / 2
    # dK/dlog l_j = s2 * 5/3 * (1 + sqrt5 r) exp(-sqrt5 r) * (x_j - x'_j)^2 / l_j^2
    M = W * (s2 * (5.0 / 3.0) * (1.0 + SQRT5 * r) * e)
    grad = np.empty_like(theta)
    grad[:d] = -0.5 * (M.reshape(-1) @ sq_diff.reshape(-1, d)) / ls2
    grad[d] = -0.5 * float((W * Kf).sum())
    grad[d + 1] = -0.5 * n2 * float(np.trace(W))
    return nll, grad


def _subset(y: np.ndarray, size: int, rng: np.random.Generator, best: int) -> np.ndarray:
    """Indices of ``size`` rows: the ``best`` lowest ``y`` and a random rest (seeded)."""
    order = np.argsort(y, kind="stable")
    keep = order[:best]
    rest = order[best:]
    pick = rng.choice(len(rest), size=size - best, replace=False)
    return np.sort(np.concatenate([keep, rest[np.sort(pick)]]))


def fit_params(
    X: np.ndarray,
    y: np.ndarray,
    *,
    noise: bool,
    rng: np.random.Generator,
    warm: GPParams | None = None,
    restarts: int = 4,
    maxiter: int = FIT_MAXITER,
    groups: np.ndarray | None = None,
) -> GPParams:
    """Hyperparameters by maximum a posteriori (marginal likelihood times the mild prior),
    L-BFGS-B from the warm start (or the default) and random restarts."""
    X = np.asarray(X, dtype=float)
    y = np.asarray(y, dtype=float)
    n, d = X.shape
    if n > MAX_FIT:
        idx = _subset(y, MAX_FIT, rng, MAX_FIT // 3)
        X, y = X[idx], y[idx]
        n = MAX_FIT
    z = _standardize(y)[0]
    sq_diff = grouped_sq_diff(X, groups)
    d = sq_diff.shape[2]
    bounds = [LOG_LENGTH_BOUNDS] * d + [LOG_SIGNAL_BOUNDS]
    fixed_noise = math.log(FIXED_NOISE)
    bounds.append(LOG_NOISE_BOUNDS if noise else (fixed_noise, fixed_noise))
    lo = np.array([b[0] for b in bounds])
    hi = np.array([b[1] for b in bounds])

    def objective(theta: np.ndarray) -> tuple[float, np.ndarray]:
        nll, grad = neg_log_marginal_likelihood(theta, X, z, sq_diff)
        lp, lp_grad = log_prior(theta, d)
        return nll - lp, grad - lp_grad

    first = (warm if warm is not None else GPParams.default(d, noise)).to_vector()
    if not noise:
        first[-1] = fixed_noise
    starts = [np.clip(first, lo, hi)]
    for _ in range(restarts):
        theta = np.empty(d + 2)
        theta[:d] = rng.uniform(math.log(0.05), math.log(2.0 * math.sqrt(d)), d)
        theta[d] = rng.uniform(math.log(0.3), math.log(3.0))
        theta[d + 1] = rng.uniform(math.log(1e-5), math.log(0.1)) if noise else fixed_noise
        starts.append(theta)
    best_theta, best_value = starts[0], math.inf
    for start in starts:
        result = optimize.minimize(
            objective,
            start,
            jac=True,
            method="L-BFGS-B",
            bounds=bounds,
            options={"maxiter": maxiter},
        )
        if np.isfinite(result.fun) and result.fun < best_value:
            best_theta, best_value = np.clip(result.x, lo, hi), float(result.fun)
    return GPParams.from_vector(best_theta)


def _standardize(y: np.ndarray) -> tuple[np.ndarray, float, float]:
    mean = float(np.mean(y))
    std = float(np.std(y))
    if not std > 1e-12 * max(1.0, abs(mean)):
        std = 1.0
    return (y - mean) / std, mean, std


class GaussianProcess:
    """The posterior of a GP with fixed hyperparameters on observations ``(X, y)``.

    ``predict`` and ``predict_with_grad`` answer in the units of ``y``; the variances are of the
    latent ``f`` unless ``with_noise``. ``condition_on`` adds observations under the same
    hyperparameters and the same standardization, extending the Cholesky factor by a block.
    """

    def __init__(
        self,
        X: np.ndarray,
        y: np.ndarray,
        params: GPParams,
        *,
        groups: np.ndarray | None = None,
        y_mean: float | None = None,
        y_std: float | None = None,
    ) -> None:
        self.X = np.asarray(X, dtype=float)
        self.groups = groups
        self._scales = column_scales(params, groups)
        y = np.asarray(y, dtype=float)
        self.params = params
        if y_mean is None or y_std is None:
            z, self.y_mean, self.y_std = _standardize(y)
        else:
            self.y_mean, self.y_std = y_mean, y_std
            z = (y - y_mean) / y_std
        self.z = z
        K = kernel(self.X, self.X, params, groups)
        K[np.diag_indices_from(K)] += params.noise_variance + JITTER
        self.L = _cholesky(K)
        self.alpha = linalg.cho_solve((self.L, True), z, check_finite=False)

    @classmethod
    def _from_parts(
        cls,
        X: np.ndarray,
        z: np.ndarray,
        params: GPParams,
        y_mean: float,
        y_std: float,
        L: np.ndarray,
        groups: np.ndarray | None,
    ) -> GaussianProcess:
        gp = cls.__new__(cls)
        gp.X, gp.z, gp.params, gp.y_mean, gp.y_std, gp.L = X, z, params, y_mean, y_std, L
        gp.groups = groups
        gp._scales = column_scales(params, groups)
        gp.alpha = linalg.cho_solve((L, True), z, check_finite=False)
        return gp

    @property
    def n(self) -> int:
        return len(self.X)

    def log_marginal_likelihood(self) -> float:
        """``log p(z | X)`` of the standardized observations."""
        return float(
            -0.5 * self.z @ self.alpha
            - np.log(np.diag(self.L)).sum()
            - 0.5 * self.n * math.log(2 * math.pi)
        )

    def predict(self, Xq: np.ndarray, with_noise: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Posterior mean and variance at the rows of ``Xq``, in the units of ``y``."""
        Xq = np.atleast_2d(np.asarray(Xq, dtype=float))
        Ks = kernel(Xq, self.X, self.params, self.groups)
        mean = Ks @ self.alpha
        v = linalg.solve_triangular(self.L, Ks.T, lower=True, check_finite=False)
        var = self.params.signal_variance - (v * v).sum(0)
        var = np.maximum(var, 1e-12 * self.params.signal_variance)
        if with_noise:
            var = var + self.params.noise_variance
        return self.y_mean + self.y_std * mean, var * self.y_std**2

    def predict_with_grad(
        self, Xq: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Mean, latent variance and their gradients ``(m, d)`` with respect to each row."""
        Xq = np.atleast_2d(np.asarray(Xq, dtype=float))
        ls2 = self._scales**2
        diff = Xq[:, None, :] - self.X[None, :, :]  # (m, n, d)
        r = np.sqrt(np.maximum((diff * diff) @ (1.0 / ls2), 0.0))
        e = np.exp(-SQRT5 * r)
        s2 = self.params.signal_variance
        Ks = s2 * (1.0 + SQRT5 * r + (5.0 / 3.0) * r * r) * e
        # dk/dx_j = -5/3 s2 (1 + sqrt5 r) exp(-sqrt5 r) (x_j - x'_j) / l_j^2
        dK = (-(5.0 / 3.0) * s2 * (1.0 + SQRT5 * r) * e)[:, :, None] * diff / ls2
        mean = Ks @ self.alpha
        dmean = np.einsum("mnd,n->md", dK, self.alpha)
        Kinv_ks = linalg.cho_solve((self.L, True), Ks.T, check_finite=False)  # (n, m)
        var = s2 - (Ks.T * Kinv_ks).sum(0)
        floor = 1e-12 * s2
        dvar = -2.0 * np.einsum("mnd,nm->md", dK, Kinv_ks)
        dvar[var <= floor] = 0.0
        var = np.maximum(var, floor)
        c = self.y_std
        return self.y_mean + c * mean, var * c * c, c * dmean, dvar * c * c

    def condition_on(self, X_new: np.ndarray, y_new: np.ndarray) -> GaussianProcess:
        """A new posterior with ``(X_new, y_new)`` added (same hyperparameters and
        standardization), the Cholesky factor extended by a block rather than refactored."""
        X_new = np.atleast_2d(np.asarray(X_new, dtype=float))
        z_new = (np.asarray(y_new, dtype=float).reshape(-1) - self.y_mean) / self.y_std
        K12 = kernel(self.X, X_new, self.params, self.groups)
        K22 = kernel(X_new, X_new, self.params, self.groups)
        K22[np.diag_indices_from(K22)] += self.params.noise_variance + JITTER
        B = linalg.solve_triangular(self.L, K12, lower=True, check_finite=False)
        C = _cholesky(K22 - B.T @ B)
        n, m = self.n, len(X_new)
        L = np.zeros((n + m, n + m))
        L[:n, :n] = self.L
        L[n:, :n] = B.T
        L[n:, n:] = C
        return GaussianProcess._from_parts(
            np.vstack([self.X, X_new]),
            np.concatenate([self.z, z_new]),
            self.params,
            self.y_mean,
            self.y_std,
            L,
            self.groups,
        )


def fit(
    X: np.ndarray,
    y: np.ndarray,
    *,
    noise: bool,
    rng: np.random.Generator,
    warm: GPParams | None = None,
    restarts: int = 4,
    maxiter: int = FIT_MAXITER,
    groups: np.ndarray | None = None,
) -> GaussianProcess:
    """Hyperparameters fitted (``fit_params``, on at most ``MAX_FIT`` rows) and the posterior on
    at most ``MAX_CONDITION`` rows (the best ``CONDITION_BEST`` and a random rest)."""
    X = np.asarray(X, dtype=float)
    y = np.asarray(y, dtype=float)
    params = fit_params(
        X, y, noise=noise, rng=rng, warm=warm, restarts=restarts, maxiter=maxiter, groups=groups
    )
    if len(X) > MAX_CONDITION:
        idx = _subset(y, MAX_CONDITION, rng, CONDITION_BEST)
        X, y = X[idx], y[idx]
    return GaussianProcess(X, y, params, groups=groups)

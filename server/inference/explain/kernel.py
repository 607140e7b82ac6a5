"""KernelSHAP: Shapley values of any model, estimated by a Shapley-kernel weighted regression.

A coalition ``z`` (the features taken from the explained row ``x``; the others from a
background row) is worth ``v(z) = mean_b f(x_z, b_~z)``, the model's mean output over the
background with the features outside ``z`` replaced. The Shapley values are the coefficients of
the linear fit of ``v`` on ``z`` under the Shapley kernel weight
``pi(z) = (M - 1) / (C(M, |z|) |z| (M - |z|))``, with ``phi_0 = E f`` and the efficiency
constraint ``sum(phi) = f(x) - E f`` held exactly (Lundberg and Lee, 2017).

When ``2**M - 2`` coalitions fit the budget every one of them is evaluated, and the answer is
the exact Shapley value of ``v``. Otherwise coalition sizes are taken in pairs ``(s, M - s)``
from the heaviest (1 and M - 1) inwards: a pair whose share of the kernel's weight pays for all
its coalitions is enumerated whole; the rest are sampled with the size drawn by the kernel's
weight, each subset with its complement (antithetic pairs), identical draws merged.

Features whose value in ``x`` equals every background row's cannot change ``v``: their value is
0 and they are left out of the regression. The model runs on the masked rows (coalitions times
background rows) in large batches, never once per coalition.

>>> import numpy as np
>>> w = np.array([1.0, -2.0, 0.5])
>>> explainer = KernelExplainer(lambda rows: rows @ w, np.zeros((4, 3)))
>>> phi, base = explainer.explain(np.array([[1.0, 1.0, 2.0]]))
>>> phi.round(6).tolist(), base
([[1.0, -2.0, 1.0]], 0.0)
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable

import numpy as np

from llmopt import errors

DEFAULT_SAMPLES = 2048
MAX_SAMPLES = 65536
# The most background rows KernelSHAP averages over (a seeded subsample of a larger one).
MAX_BACKGROUND = 100
# Elements (rows times features) of one batch of masked rows sent to the model.
BATCH_ELEMENTS = 1 << 21
_MAX_ENUMERATED_FEATURES = 30

# The model: rows [n, M] -> one output per row [n] (float64).
Predict = Callable[[np.ndarray], np.ndarray]


def check_samples(samples: int, field: str = "samples") -> int:
    """The coalition budget per row: 0 means DEFAULT_SAMPLES; 1..MAX_SAMPLES otherwise."""
    if isinstance(samples, bool) or not isinstance(samples, int | np.integer):
        raise errors.invalid(field, samples, f"an integer, 0 ({DEFAULT_SAMPLES}) to {MAX_SAMPLES}")
    if not 0 <= samples <= MAX_SAMPLES:
        raise errors.invalid(field, samples, f"0 (meaning {DEFAULT_SAMPLES}) to {MAX_SAMPLES}")
    return int(samples) or DEFAULT_SAMPLES


def subsample(background: np.ndarray, rows: int = MAX_BACKGROUND, seed: int = 0) -> np.ndarray:
    """At most ``rows`` rows of ``background``: all of them, or a seeded draw kept in order."""
    if len(background) <= rows:
        return background
    keep = np.random.default_rng(seed).choice(len(background), rows, replace=False)
    return background[np.sort(keep)]


def kernel_weight(m: int, size: int) -> float:
    """The Shapley kernel's weight of one coalition of ``size`` of ``m`` features."""
    return (m - 1) / (math.comb(m, size) * size * (m - size))


class KernelExplainer:
    """KernelSHAP of one model output against a background sample.

    ``predict`` maps rows ``[n, M]`` to the output explained ``[n]``; ``background`` is
    ``[rows, M]`` (used whole: subsample it first, see ``subsample``). ``base_value_`` is the
    mean output over the background, computed once here.
    """

    method = "kernel_shap"

    def __init__(
        self, predict: Predict, background: np.ndarray, *, batch_elements: int = BATCH_ELEMENTS
    ) -> None:
        background = np.asarray(background, dtype=np.float64)
        if background.ndim != 2 or len(background) == 0 or background.shape[1] == 0:
            raise errors.FailedPrecondition(
                f"background: shape {list(background.shape)} is not rows of features"
            )
        self.background_ = background
        self.batch_elements = batch_elements
        self.base_value_ = float(np.mean(_outputs(predict, background)))
        self._predict = predict

    @property
    def n_features(self) -> int:
        return int(self.background_.shape[1])

    def explain(
        self,
        X: np.ndarray,
        *,
        samples: int = DEFAULT_SAMPLES,
        seed: int = 0,
        predictions: np.ndarray | None = None,
        predict: Predict | None = None,
    ) -> tuple[np.ndarray, float]:
        """Contributions ``[n, M]`` (float64) of each row of ``X`` and the base value.

        ``samples``: coalitions per row (0: DEFAULT_SAMPLES); ``seed``: each row's coalitions
        are drawn from a generator seeded with it, so a row's answer depends on the row, the
        budget and the seed only. ``predictions`` (the model's outputs for ``X``, if already
        known) are what the contributions sum to with the base value. ``predict`` replaces the
        model given at construction (the same model, e.g. a newly opened session of it).
        """
        budget = check_samples(samples)
        fn = predict or self._predict
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != self.n_features:
            raise errors.invalid(
                "inputs", f"shape {list(X.shape)}", f"rows of {self.n_features} features"
            )
        fx = _outputs(fn, X) if predictions is None else np.asarray(predictions, np.float64)
        out = np.zeros(X.shape, dtype=np.float64)
        for i, x in enumerate(X):
            out[i] = self._row(fn, x, float(fx[i]), budget, seed)
        return out, self.base_value_

    def _row(self, fn: Predict, x: np.ndarray, fx: float, budget: int, seed: int) -> np.ndarray:
        phi = np.zeros(self.n_features, dtype=np.float64)
        delta = fx - self.base_value_
        varying = np.flatnonzero(np.any(self.background_ != x, axis=0))
        m = len(varying)
        if m == 0:
            return phi
        if m == 1:
            phi[varying[0]] = delta
            return phi
        masks, weights = coalitions(m, budget, np.random.default_rng(seed))
        values = self._values(fn, x, varying, masks) - self.base_value_
        phi[varying] = constrained_fit(masks, weights, values, delta)
        return phi

    def _values(
        self, fn: Predict, x: np.ndarray, varying: np.ndarray, masks: np.ndarray
    ) -> np.ndarray:
        """v(z) for each coalition: the mean output over the background with the features of
        ``z`` (indices into ``varying``) taken from ``x``; in batches of masked rows."""
        background = self.background_
        rows, width = background.shape
        full = np.zeros((len(masks), width), dtype=bool)
        full[:, varying] = masks
        per_batch = max(1, self.batch_elements // (rows * width))
        values = np.empty(len(masks), dtype=np.float64)
        for start in range(0, len(masks), per_batch):
            chunk = full[start : start + per_batch]
            data = np.where(chunk[:, None, :], x[None, None, :], background[None, :, :])
            outputs = _outputs(fn, data.reshape(-1, width))
            values[start : start + len(chunk)] = outputs.reshape(len(chunk), rows).mean(axis=1)
        return values


def _outputs(fn: Predict, rows: np.ndarray) -> np.ndarray:
    out = np.asarray(fn(rows), dtype=np.float64).reshape(-1)
    if len(out) != len(rows):
        raise errors.FailedPrecondition(
            f"output: the model answered {len(out)} values for {len(rows)} rows"
        )
    return out


def constrained_fit(
    masks: np.ndarray, weights: np.ndarray, values: np.ndarray, delta: float
) -> np.ndarray:
    """The weighted least-squares coefficients of ``values`` on ``masks`` (no intercept: the
    values are relative to the base) whose sum is exactly ``delta``.

    The last feature is eliminated (``phi_last = delta - sum(others)``), leaving an
    unconstrained fit of ``values - z_last * delta`` on ``z_i - z_last``.
    """
    z = masks.astype(np.float64)
    last = z[:, -1]
    design = z[:, :-1] - last[:, None]
    target = values - last * delta
    root = np.sqrt(weights)
    others, *_ = np.linalg.lstsq(design * root[:, None], target * root, rcond=None)
    return np.append(others, delta - others.sum())


def coalitions(m: int, budget: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Coalitions of ``m`` features (masks ``[S, m]``, none empty or full) and their weights,
    at most ``budget`` of them (exactly every coalition when ``2**m - 2 <= budget``)."""
    if m <= _MAX_ENUMERATED_FEATURES and 2**m - 2 <= budget:
        return _all_coalitions(m)
    size_mass = np.array([(m - 1) / (s * (m - s)) for s in range(1, m)])  # index s - 1
    masks: list[np.ndarray] = []
    weights: list[np.ndarray] = []
    left = budget
    mass_left = float(size_mass.sum())
    low = 1
    while low <= m - low:
        high = m - low
        sizes = (low,) if low == high else (low, high)
        count = sum(math.comb(m, s) for s in sizes)
        mass = float(sum(size_mass[s - 1] for s in sizes))
        if count > left * mass / mass_left:
            break
        for s in sizes:
            block = _of_size(m, s)
            masks.append(block)
            weights.append(np.full(len(block), kernel_weight(m, s)))
        left -= count
        mass_left -= mass
        low += 1
    pairs = left // 2
    if low <= m - low and pairs > 0:
        sampled = _sampled(m, low, pairs, size_mass, rng)
        unique, inverse = np.unique(sampled, axis=0, return_inverse=True)
        counts = np.bincount(inverse.reshape(-1), minlength=len(unique))
        masks.append(unique)
        weights.append(counts * (mass_left / len(sampled)))
    return np.concatenate(masks), np.concatenate(weights)


def _all_coalitions(m: int) -> tuple[np.ndarray, np.ndarray]:
    codes = np.arange(1, 2**m - 1, dtype=np.int64)
    masks = ((codes[:, None] >> np.arange(m)) & 1).astype(bool)
    sizes = masks.sum(axis=1)
    table = np.array([0.0] + [kernel_weight(m, s) for s in range(1, m)])
    return masks, table[sizes]


def _of_size(m: int, size: int) -> np.ndarray:
    masks = np.zeros((math.comb(m, size), m), dtype=bool)
    for row, members in enumerate(itertools.combinations(range(m), size)):
        masks[row, list(members)] = True
    return masks


def _sampled(
    m: int, low: int, pairs: int, size_mass: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """``pairs`` random coalitions with sizes in ``low .. m - low`` drawn by the kernel's
    weight, each followed by its complement."""
    sizes = np.arange(low, m - low + 1)
    p = size_mass[sizes - 1] / size_mass[sizes - 1].sum()
    drawn = rng.choice(sizes, size=pairs, p=p)
    ranks = np.argsort(np.argsort(rng.random((pairs, m)), axis=1), axis=1)
    subsets = ranks < drawn[:, None]
    out = np.empty((2 * pairs, m), dtype=bool)
    out[0::2] = subsets
    out[1::2] = ~subsets
    return out

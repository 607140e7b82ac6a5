"""Test functions of Bayesian optimization, over their natural domains, with their known minima:
the tuning tests and benchmarks both use them.

>>> round(float(BRANIN(np.array([[np.pi, 2.275]]))[0]), 6)
0.397887
>>> BRANIN.space().names
('x1', 'x2')
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

from llmopt.tuning.space import FloatParam, SearchSpace


@dataclass(frozen=True)
class Problem:
    """A function to minimize over a box: ``bounds`` is ``(d, 2)``, ``minimum`` its known
    minimum value."""

    name: str
    function: Callable[[np.ndarray], np.ndarray]
    bounds: tuple[tuple[float, float], ...]
    minimum: float

    @property
    def dim(self) -> int:
        return len(self.bounds)

    def __call__(self, X: np.ndarray) -> np.ndarray:
        """The function at the rows of ``X`` (natural units), vectorized."""
        return self.function(np.atleast_2d(np.asarray(X, dtype=float)))

    def space(self) -> SearchSpace:
        """One float parameter per dimension, ``x1`` ... ``xd``, over the bounds."""
        return SearchSpace(
            [FloatParam(f"x{i + 1}", lo, hi) for i, (lo, hi) in enumerate(self.bounds)]
        )

    def evaluate(self, values: Mapping[str, float | int | str]) -> float:
        """The function at a decoded suggestion of ``space()``."""
        x = np.array([[float(values[f"x{i + 1}"]) for i in range(self.dim)]])
        return float(self(x)[0])


def _branin(X: np.ndarray) -> np.ndarray:
    x1, x2 = X[:, 0], X[:, 1]
    b = 5.1 / (4 * np.pi**2)
    c = 5 / np.pi
    t = 1 / (8 * np.pi)
    return (x2 - b * x1**2 + c * x1 - 6) ** 2 + 10 * (1 - t) * np.cos(x1) + 10


_H6_ALPHA = np.array([1.0, 1.2, 3.0, 3.2])
_H6_A = np.array(
    [
        [10, 3, 17, 3.5, 1.7, 8],
        [0.05, 10, 17, 0.1, 8, 14],
        [3, 3.5, 1.7, 10, 17, 8],
        [17, 8, 0.05, 10, 0.1, 14],
    ]
)
_H6_P = 1e-4 * np.array(
    [
        [1312, 1696, 5569, 124, 8283, 5886],
        [2329, 4135, 8307, 3736, 1004, 9991],
        [2348, 1451, 3522, 2883, 3047, 6650],
        [4047, 8828, 8732, 5743, 1091, 381],
    ]
)


def _hartmann6(X: np.ndarray) -> np.ndarray:
    inner = (_H6_A[None, :, :] * (X[:, None, :] - _H6_P[None, :, :]) ** 2).sum(-1)
    return -(np.exp(-inner) * _H6_ALPHA[None, :]).sum(-1)


BRANIN = Problem("branin", _branin, ((-5.0, 10.0), (0.0, 15.0)), 0.397887)
HARTMANN6 = Problem("hartmann6", _hartmann6, ((0.0, 1.0),) * 6, -3.32237)

"""Every bandit policy: a frozen, validated config and the kernel that implements it.

``KERNELS`` maps each config type to its Cython kernel class and that kernel's arguments;
``NativePolicy`` wraps any of them. ``POLICY_TABLE`` maps each config type to its ``Policy``
class; ``make_policy`` builds one. The configs mirror the ``Policy`` oneof of
``protos/llmopt/v1/bandits.proto`` (``ONEOF`` gives each config's oneof field name, used in error
messages: ``epsilon_greedy.epsilon``). ``EXPLORATION`` says how a policy explores, which decides
the contract checks it gets (tests/unit/bandits derive their policy lists from ``POLICY_TABLE``
and it): ``"optimism"`` (an index, the best one chosen; an unpulled arm scores ``+inf``),
``"posterior"`` (Thompson sampling: Monte-Carlo propensities) or ``"randomized"`` (an arm drawn
with exact probabilities). The arithmetic runs in the kernels of
``llmopt.native.bandit_free`` and ``llmopt.native.bandit_linear``; the Python side owns
parameters, validation and documentation.

Conventions shared by every policy (see ``llmopt.bandits.policy`` for the contract):

* Rewards are in [0, 1]. Counts and statistics are learned from rewards (``update``), not from
  selections: with delayed rewards an arm stays "unpulled" until its first reward arrives.
* Removed or excluded slots are masked out by ``allowed``; a new slot starts cold. UCB-style
  policies (UCB1, UCB-Tuned, UCB-V, KL-UCB, discounted and sliding-window UCB, epsilon-greedy's
  greedy step, LinUCB, hybrid LinUCB) score an unpulled slot ``+inf`` so that it is tried first;
  Thompson policies sample it from the prior; softmax reads its mean as 1 (optimistic); EXP3 gives
  it the largest current weight.
* Ties are broken uniformly at random; the propensity is then exact (1 / number tied, mixed with
  the exploration probability for epsilon-greedy). Softmax and EXP3 propensities are the exact
  probabilities of the sampled arm.
* Thompson propensities are Monte-Carlo estimates: after the selection draw, the kernel makes
  ``PROPENSITY_DRAWS`` (16) further rounds of one draw of each eligible arm's *score*
  distribution (in antithetic pairs: the second round of a pair negates the first's standard
  normals, so 8 normals per arm give 16 exact rounds), and reports
  ``(1 + rounds won by the chosen arm) / (1 + PROPENSITY_DRAWS)`` (never 0, so
  inverse-propensity weighting stays finite). The score distribution is exact for the
  known-noise Gaussian, linear and diagonal Thompson policies (a 1-D normal for a given
  context); it is the normal with the Beta posterior's mean and variance for Beta-Bernoulli,
  and the normal with the location and standard deviation of the mean's Student t marginal
  for the learned-noise Gaussian (its degrees of freedom taken as at least 3, where the t's
  variance would be infinite). Arms whose score ``mean + 5 sd`` stays below the chosen arm's
  ``mean - 5 sd`` are not drawn (they would beat it with probability below 6e-7).
* Every policy explains a selection (``explain``, right after ``select``: no work is added to
  ``select`` itself) and reports what it has learned (``estimates``); ``llmopt.bandits.explain``
  reads both. An eligible arm's score is its exploitation part plus its exploration part: the
  mean (or theta . x) plus the bonus, computed from the bonus's own formula, for the UCB-style
  policies (an unpulled arm: 0 plus +inf; hybrid LinUCB: x . beta plus +inf); the posterior
  mean plus the draw's distance from it for Thompson policies; the weight share
  ``(1 - gamma) w_i / sum w`` plus ``gamma / K`` for EXP3; the probability plus 0 for softmax,
  and the mean plus 0 for epsilon-greedy. ``probability`` is exact for index policies (1 / ties
  at the maximum), epsilon-greedy (at the epsilon the selection drew with), EXP3 and softmax;
  Thompson policies know the chosen arm's (its propensity) only.
* Every policy takes a ``seed``: a ``numpy.random.PCG64(seed)`` feeds the kernel through numpy's C
  random API, so the same seed and the same calls give the same choices, and ``get_state`` /
  ``set_state`` (also used by pickling) resume the generator exactly.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any, ClassVar

import numpy as np

from llmopt import errors
from llmopt.bandits.policy import Policy, Selection
from llmopt.native import bandit_base as _base  # type: ignore[attr-defined]  # compiled
from llmopt.native import bandit_free as _free  # type: ignore[attr-defined]  # compiled
from llmopt.native import bandit_linear as _linear  # type: ignore[attr-defined]  # compiled

PROPENSITY_DRAWS = 16
"""Extra rounds of posterior draws behind a Thompson propensity estimate."""

MAX_DIM = 512
"""Largest context length: the contextual policies keep d x d matrices per arm."""

MAX_WINDOW = 1_000_000
"""Largest sliding window (two float64 ring buffers of this length are kept)."""


class EpsilonDecay(enum.IntEnum):
    """How epsilon shrinks with ``t``, the number of selections made (values = the proto enum)."""

    NONE = 0  # epsilon
    LINEAR = 1  # max(min_epsilon, epsilon - decay_rate * t)
    EXPONENTIAL = 2  # max(min_epsilon, epsilon * exp(-decay_rate * t))
    LOGARITHMIC = 3  # max(min_epsilon, epsilon / (1 + decay_rate * ln(1 + t)))


def _finite(field: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise errors.invalid(field, value, "must be a finite number")
    return float(value)


def _at_least(field: str, value: float, low: float) -> None:
    if _finite(field, value) < low:
        raise errors.invalid(field, value, f"must be >= {low}")


def _positive(field: str, value: float) -> None:
    if _finite(field, value) <= 0.0:
        raise errors.invalid(field, value, "must be > 0")


def _unit(field: str, value: float, *, open_low: bool = False) -> None:
    v = _finite(field, value)
    if not (0.0 < v <= 1.0 if open_low else 0.0 <= v <= 1.0):
        raise errors.invalid(field, value, "must be in (0, 1]" if open_low else "must be in [0, 1]")


# --------------------------------------------------------------------------------------------
# Configs
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EpsilonGreedy:
    """With probability epsilon_t pick an eligible arm uniformly, otherwise the best mean.

    ``epsilon_t`` follows ``decay`` (see ``EpsilonDecay``) over the number of selections made.

    >>> EpsilonGreedy(epsilon=0.2, decay=EpsilonDecay.EXPONENTIAL, decay_rate=0.01).epsilon
    0.2
    >>> EpsilonGreedy(epsilon=1.5)
    Traceback (most recent call last):
    ...
    llmopt.errors.InvalidArgument: epsilon_greedy.epsilon: 1.5 is invalid: must be in [0, 1]
    """

    ONEOF: ClassVar[str] = "epsilon_greedy"
    EXPLORATION: ClassVar[str] = "randomized"
    epsilon: float = 0.1
    decay: EpsilonDecay = EpsilonDecay.NONE
    decay_rate: float = 0.001
    min_epsilon: float = 0.01

    def __post_init__(self) -> None:
        _unit("epsilon_greedy.epsilon", self.epsilon)
        if not isinstance(self.decay, int) or self.decay not in set(EpsilonDecay):
            raise errors.invalid("epsilon_greedy.decay", self.decay, "must be one of EpsilonDecay")
        object.__setattr__(self, "decay", EpsilonDecay(self.decay))
        _at_least("epsilon_greedy.decay_rate", self.decay_rate, 0.0)
        _unit("epsilon_greedy.min_epsilon", self.min_epsilon)


@dataclass(frozen=True)
class UCB1:
    """Upper confidence bound: ``mean + exploration * sqrt(2 ln N / n)`` (Auer et al. 2002).

    >>> UCB1().exploration
    1.0
    >>> UCB1(exploration=-1)
    Traceback (most recent call last):
    ...
    llmopt.errors.InvalidArgument: ucb1.exploration: -1 is invalid: must be >= 0.0
    """

    ONEOF: ClassVar[str] = "ucb1"
    EXPLORATION: ClassVar[str] = "optimism"
    exploration: float = 1.0

    def __post_init__(self) -> None:
        _at_least("ucb1.exploration", self.exploration, 0.0)


@dataclass(frozen=True)
class UCBTuned:
    """UCB-Tuned: ``mean + sqrt(ln N / n * min(1/4, var + sqrt(2 ln N / n)))``; no parameters.

    >>> UCBTuned()
    UCBTuned()
    """

    ONEOF: ClassVar[str] = "ucb_tuned"
    EXPLORATION: ClassVar[str] = "optimism"


@dataclass(frozen=True)
class UCBV:
    """UCB-V (Audibert et al. 2009): ``mean + sqrt(2 var e ln N / n) + 3 e ln N / n``, with
    e = ``exploration`` and rewards bounded by 1.

    >>> UCBV(exploration=0.5).exploration
    0.5
    """

    ONEOF: ClassVar[str] = "ucb_v"
    EXPLORATION: ClassVar[str] = "optimism"
    exploration: float = 1.0

    def __post_init__(self) -> None:
        _positive("ucb_v.exploration", self.exploration)


@dataclass(frozen=True)
class KLUCB:
    """KL-UCB for rewards in [0, 1] (Garivier & Cappé 2011): the largest q with
    ``n * kl(mean, q) <= ln N + c ln ln N`` (Bernoulli KL; 0 is the recommended ``c``).

    >>> KLUCB().c
    0.0
    """

    ONEOF: ClassVar[str] = "kl_ucb"
    EXPLORATION: ClassVar[str] = "optimism"
    c: float = 0.0

    def __post_init__(self) -> None:
        _at_least("kl_ucb.c", self.c, 0.0)


@dataclass(frozen=True)
class DiscountedUCB:
    """Discounted UCB (Garivier & Moulines 2011): every update multiplies all counts and sums by
    ``gamma`` before adding the new reward; bonus ``exploration * sqrt(2 ln N_gamma / n_gamma)``.

    >>> DiscountedUCB(gamma=0.95).gamma
    0.95
    >>> DiscountedUCB(gamma=0)
    Traceback (most recent call last):
    ...
    llmopt.errors.InvalidArgument: discounted_ucb.gamma: 0 is invalid: must be in (0, 1]
    """

    ONEOF: ClassVar[str] = "discounted_ucb"
    EXPLORATION: ClassVar[str] = "optimism"
    gamma: float = 0.99
    exploration: float = 1.0

    def __post_init__(self) -> None:
        _unit("discounted_ucb.gamma", self.gamma, open_low=True)
        _at_least("discounted_ucb.exploration", self.exploration, 0.0)


@dataclass(frozen=True)
class SlidingWindowUCB:
    """UCB over the last ``window`` rewards of the bandit (all arms together).

    >>> SlidingWindowUCB(window=200).window
    200
    """

    ONEOF: ClassVar[str] = "sliding_window_ucb"
    EXPLORATION: ClassVar[str] = "optimism"
    window: int = 1000
    exploration: float = 1.0

    def __post_init__(self) -> None:
        if isinstance(self.window, bool) or not isinstance(self.window, int):
            raise errors.invalid("sliding_window_ucb.window", self.window, "must be an integer")
        if not 1 <= self.window <= MAX_WINDOW:
            raise errors.invalid(
                "sliding_window_ucb.window", self.window, f"must be in 1..{MAX_WINDOW}"
            )
        _at_least("sliding_window_ucb.exploration", self.exploration, 0.0)


@dataclass(frozen=True)
class ThompsonBeta:
    """Beta-Bernoulli Thompson sampling. A reward r in [0, 1] updates the posterior
    fractionally: ``alpha += r``, ``beta += 1 - r`` (a Bernoulli reward is the usual count).

    >>> ThompsonBeta().prior_alpha, ThompsonBeta().prior_beta
    (1.0, 1.0)
    """

    ONEOF: ClassVar[str] = "thompson_beta"
    EXPLORATION: ClassVar[str] = "posterior"
    prior_alpha: float = 1.0
    prior_beta: float = 1.0

    def __post_init__(self) -> None:
        _positive("thompson_beta.prior_alpha", self.prior_alpha)
        _positive("thompson_beta.prior_beta", self.prior_beta)


@dataclass(frozen=True)
class ThompsonGaussian:
    """Gaussian Thompson sampling, by default learning the rewards' noise variance.

    Learned noise (``noise_variance`` None, the default): each arm's rewards are read as
    N(mean, 1 / tau) with both unknown, under the Normal-Gamma prior
    ``mean | tau ~ N(prior_mean, 1 / (prior_kappa tau))``, ``tau ~ Gamma(prior_alpha, rate
    prior_beta)``; a score is one draw of the posterior's mean. When arms differ by about the
    noise's standard deviation (rewards of real LLM traffic sit in a narrow band), the learned
    variance shrinks to the data's and the policy settles on the best arm, where a fixed
    variance scaled for the whole [0, 1] range keeps exploring. ``prior_kappa`` is the prior
    mean's weight in pseudo-rewards; ``prior_beta / prior_alpha`` is the prior's guess of the
    noise variance, weighted as ``2 prior_alpha`` pseudo-rewards. The defaults are weak: the prior
    mean 0.5 weighs one reward, the variance guess 0.1 (a standard deviation of 0.32) two, so
    both narrow-band rewards and 0/1 rewards are learned within a few pulls each, without locking
    on an arm after its first rewards (tests/unit/bandits/test_simulation.py holds both).

    Known noise (``noise_variance`` set): the arm mean has a normal prior
    N(prior_mean, prior_variance); each reward is read as N(mean, noise_variance) (the only form
    before the learned one; bandits stored with it keep it). ``prior_kappa``, ``prior_alpha`` and
    ``prior_beta`` apply to the learned form only, ``prior_variance`` to the known one only.

    >>> ThompsonGaussian().learns_variance, ThompsonGaussian(noise_variance=0.25).learns_variance
    (True, False)
    >>> ThompsonGaussian(prior_alpha=0)
    Traceback (most recent call last):
    ...
    llmopt.errors.InvalidArgument: thompson_gaussian.prior_alpha: 0 is invalid: must be > 0
    """

    ONEOF: ClassVar[str] = "thompson_gaussian"
    EXPLORATION: ClassVar[str] = "posterior"
    prior_mean: float = 0.5
    prior_variance: float = 1.0
    noise_variance: float | None = None
    prior_kappa: float = 1.0
    prior_alpha: float = 1.0
    prior_beta: float = 0.1

    def __post_init__(self) -> None:
        _finite("thompson_gaussian.prior_mean", self.prior_mean)
        _positive("thompson_gaussian.prior_variance", self.prior_variance)
        if self.noise_variance is not None:
            _positive("thompson_gaussian.noise_variance", self.noise_variance)
        _positive("thompson_gaussian.prior_kappa", self.prior_kappa)
        _positive("thompson_gaussian.prior_alpha", self.prior_alpha)
        _positive("thompson_gaussian.prior_beta", self.prior_beta)

    @property
    def learns_variance(self) -> bool:
        """Whether the noise variance is learned (``noise_variance`` unset)."""
        return self.noise_variance is None


@dataclass(frozen=True)
class EXP3:
    """EXP3 (Auer et al. 2002): ``p_i = (1 - gamma) w_i / sum w + gamma / K``; a reward r of arm
    i chosen with probability p raises ``ln w_i`` by ``gamma * (r / p) / K``.

    >>> EXP3(gamma=0.2).gamma
    0.2
    """

    ONEOF: ClassVar[str] = "exp3"
    EXPLORATION: ClassVar[str] = "randomized"
    gamma: float = 0.1

    def __post_init__(self) -> None:
        _unit("exp3.gamma", self.gamma, open_low=True)


@dataclass(frozen=True)
class Softmax:
    """Boltzmann exploration: ``p_i proportional to exp(mean_i / temperature)``.

    >>> Softmax(temperature=0.05).temperature
    0.05
    """

    ONEOF: ClassVar[str] = "softmax"
    EXPLORATION: ClassVar[str] = "randomized"
    temperature: float = 0.1

    def __post_init__(self) -> None:
        _positive("softmax.temperature", self.temperature)


@dataclass(frozen=True)
class LinUCB:
    """Disjoint LinUCB (Li et al. 2010): per arm ridge regression ``A = lambda I + sum x x^T``,
    score ``x.theta + alpha sqrt(x^T A^-1 x)``; A^-1 is kept by Sherman-Morrison updates.

    >>> LinUCB(alpha=0.5).lambda_
    1.0
    """

    ONEOF: ClassVar[str] = "lin_ucb"
    EXPLORATION: ClassVar[str] = "optimism"
    alpha: float = 1.0
    lambda_: float = 1.0

    def __post_init__(self) -> None:
        _at_least("lin_ucb.alpha", self.alpha, 0.0)
        _positive("lin_ucb.lambda", self.lambda_)


@dataclass(frozen=True)
class HybridLinUCB:
    """Hybrid LinUCB (Li et al. 2010, algorithm 2): coefficients shared by all arms plus per-arm
    ones. The context vector serves as both the shared features z and the arm features x.

    >>> HybridLinUCB().alpha
    1.0
    """

    ONEOF: ClassVar[str] = "hybrid_lin_ucb"
    EXPLORATION: ClassVar[str] = "optimism"
    alpha: float = 1.0
    lambda_: float = 1.0

    def __post_init__(self) -> None:
        _at_least("hybrid_lin_ucb.alpha", self.alpha, 0.0)
        _positive("hybrid_lin_ucb.lambda", self.lambda_)


@dataclass(frozen=True)
class LinearThompson:
    """Linear Thompson sampling (Agrawal & Goyal 2013): theta ~ N(B^-1 f, v^2 B^-1) with
    ``B = lambda I + sum x x^T`` kept as its Cholesky factor (rank-one updates).

    >>> LinearThompson(v=0.25).v
    0.25
    """

    ONEOF: ClassVar[str] = "linear_thompson"
    EXPLORATION: ClassVar[str] = "posterior"
    v: float = 0.5
    lambda_: float = 1.0

    def __post_init__(self) -> None:
        _positive("linear_thompson.v", self.v)
        _positive("linear_thompson.lambda", self.lambda_)


@dataclass(frozen=True)
class DiagonalThompson:
    """Contextual Thompson sampling with independent normal posteriors per arm and feature
    (the reference system's diagonal approximation): precision ``P_j = 1/prior_variance +
    sum x_j^2 / noise_variance``, mean ``(sum r x_j / noise_variance) / P_j``.

    >>> DiagonalThompson().prior_variance
    1.0
    """

    ONEOF: ClassVar[str] = "diagonal_thompson"
    EXPLORATION: ClassVar[str] = "posterior"
    prior_variance: float = 1.0
    noise_variance: float = 0.25

    def __post_init__(self) -> None:
        _positive("diagonal_thompson.prior_variance", self.prior_variance)
        _positive("diagonal_thompson.noise_variance", self.noise_variance)


PolicyConfig = (
    EpsilonGreedy
    | UCB1
    | UCBTuned
    | UCBV
    | KLUCB
    | DiscountedUCB
    | SlidingWindowUCB
    | ThompsonBeta
    | ThompsonGaussian
    | EXP3
    | Softmax
    | LinUCB
    | HybridLinUCB
    | LinearThompson
    | DiagonalThompson
)


# --------------------------------------------------------------------------------------------
# Implementation
# --------------------------------------------------------------------------------------------


def _fields(config: Any) -> tuple[Any, ...]:
    """The config's parameters in declaration order: what most kernels take."""
    return tuple(getattr(config, f.name) for f in fields(config))


KernelArgs = Callable[[Any], tuple[Any, ...]]

KERNELS: dict[type, tuple[type, KernelArgs]] = {
    EpsilonGreedy: (
        _free.EpsilonGreedyKernel,
        lambda c: (c.epsilon, int(c.decay), c.decay_rate, c.min_epsilon),
    ),
    UCB1: (_free.UCB1Kernel, _fields),
    UCBTuned: (_free.UCBTunedKernel, _fields),
    UCBV: (_free.UCBVKernel, _fields),
    KLUCB: (_free.KLUCBKernel, _fields),
    DiscountedUCB: (_free.DiscountedUCBKernel, _fields),
    SlidingWindowUCB: (_free.SlidingWindowUCBKernel, _fields),
    ThompsonBeta: (
        _free.ThompsonBetaKernel,
        lambda c: (c.prior_alpha, c.prior_beta, PROPENSITY_DRAWS),
    ),
    ThompsonGaussian: (
        _free.ThompsonGaussianKernel,
        lambda c: (
            c.prior_mean,
            c.prior_variance,
            math.nan if c.noise_variance is None else c.noise_variance,
            c.prior_kappa,
            c.prior_alpha,
            c.prior_beta,
            PROPENSITY_DRAWS,
        ),
    ),
    EXP3: (_free.EXP3Kernel, _fields),
    Softmax: (_free.SoftmaxKernel, _fields),
    LinUCB: (_linear.LinUCBKernel, _fields),
    HybridLinUCB: (_linear.HybridLinUCBKernel, _fields),
    LinearThompson: (_linear.LinearThompsonKernel, lambda c: (c.v, c.lambda_, PROPENSITY_DRAWS)),
    DiagonalThompson: (
        _linear.DiagonalThompsonKernel,
        lambda c: (c.prior_variance, c.noise_variance, PROPENSITY_DRAWS),
    ),
}
"""Config type -> (``native.bandit_*`` kernel class, the kernel's arguments after ``(n_arms,
dim, bit_generator)`` from a config). Kernels of ``ContextKernel`` read the context vector."""


class NativePolicy(Policy):
    """Every policy of ``KERNELS``: its state and arithmetic live in a kernel object.

    >>> p = NativePolicy(LinUCB(alpha=0.5), n_arms=2, dim=3, seed=1)
    >>> p.contextual, p.n_arms
    (True, 2)
    """

    def __init__(self, config: Any, n_arms: int, dim: int, seed: int) -> None:
        kernel_type, kernel_args = KERNELS[type(config)]
        self.config = config
        self.dim = dim
        self.seed = seed
        self.contextual = issubclass(kernel_type, _base.ContextKernel)
        self._kernel = kernel_type(n_arms, dim, np.random.PCG64(seed), *kernel_args(config))

    def add_arm(self) -> int:
        return int(self._kernel.add_arm())

    def add_selections(self, n: int) -> None:
        self._kernel.add_selections(n)

    def select(self, x: np.ndarray | None, allowed: np.ndarray) -> Selection:
        try:
            arm, propensity, scores = self._kernel.select(x, allowed)
        except (ValueError, TypeError) as exc:
            raise errors.InvalidArgument(str(exc)) from None
        if arm < 0:
            raise errors.FailedPrecondition("arms: no arm is eligible (all removed or excluded)")
        return Selection(arm, propensity, scores)

    def explain(
        self, x: np.ndarray | None, allowed: np.ndarray, selection: Selection
    ) -> dict[str, np.ndarray]:
        try:
            raw: dict[str, np.ndarray] = self._kernel.explain(
                x, allowed, selection.scores, selection.arm, selection.propensity
            )
        except (ValueError, TypeError, OverflowError) as exc:
            raise errors.InvalidArgument(str(exc)) from None
        return raw

    def estimates(self, allowed: np.ndarray | None = None) -> dict[str, np.ndarray]:
        try:
            est: dict[str, np.ndarray] = self._kernel.estimates(allowed)
        except (ValueError, TypeError) as exc:
            raise errors.InvalidArgument(str(exc)) from None
        return est

    def update(
        self, arm: int, reward: float, x: np.ndarray | None, propensity: float | None = None
    ) -> None:
        """Learn one reward. ``propensity`` (the one logged at decision time) is used by EXP3's
        importance weighting; other policies ignore it."""
        try:
            self._kernel.update(arm, reward, x, math.nan if propensity is None else propensity)
        except (ValueError, TypeError, OverflowError) as exc:
            raise errors.InvalidArgument(str(exc)) from None

    def get_state(self) -> dict[str, Any]:
        state: dict[str, Any] = self._kernel.get_state()
        return state

    def set_state(self, state: dict[str, Any]) -> None:
        try:
            self._kernel.set_state(state)
        except (KeyError, ValueError, TypeError) as exc:
            raise errors.InvalidArgument(f"state: {exc}") from None

    @property
    def n_arms(self) -> int:
        return int(self._kernel.n_arms)

    def __reduce__(self) -> tuple[Any, ...]:
        return (_restore, (type(self), self.config, self.dim, self.seed, self.get_state()))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.config!r}, n_arms={self.n_arms}, dim={self.dim})"


def _restore(
    cls: type[NativePolicy], config: Any, dim: int, seed: int, state: dict[str, Any]
) -> NativePolicy:
    policy = cls(config, 0, dim, seed)
    policy.set_state(state)
    return policy


POLICY_TABLE: dict[type, type[NativePolicy]] = dict.fromkeys(KERNELS, NativePolicy)
"""Config type -> the ``Policy`` class implementing it (today every policy is a kernel)."""

CONFIG_BY_ONEOF: dict[str, type] = {cfg.ONEOF: cfg for cfg in POLICY_TABLE}  # type: ignore[attr-defined]
"""Config type by its ``Policy`` oneof field name (``"ucb1"`` -> ``UCB1``)."""


def make_policy(config: Any, n_arms: int, dim: int, seed: int) -> Policy:
    """Build the implementation of ``config`` over ``n_arms`` cold slots.

    ``dim`` is the context length (used by contextual policies only); ``seed`` a non-negative
    integer (uint64 in the proto).

    >>> p = make_policy(UCB1(), n_arms=3, dim=10, seed=7)
    >>> p.select(None, np.ones(3, dtype=np.uint8)).propensity  # three unpulled arms tie
    0.3333333333333333
    >>> p.update(0, 1.0, None)
    """
    impl = POLICY_TABLE.get(type(config))
    if impl is None:
        raise errors.invalid("policy", type(config).__name__, "must be one of the policy configs")
    if isinstance(n_arms, bool) or not isinstance(n_arms, int) or n_arms < 0:
        raise errors.invalid("arms", n_arms, "must be a count >= 0")
    if isinstance(dim, bool) or not isinstance(dim, int) or not 1 <= dim <= MAX_DIM:
        raise errors.invalid("dim", dim, f"must be in 1..{MAX_DIM}")
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**64:
        raise errors.invalid("seed", seed, "must be an integer in [0, 2**64)")
    return impl(config, n_arms, dim, seed)

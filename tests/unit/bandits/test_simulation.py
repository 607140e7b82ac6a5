"""Seeded simulations: the policies learn what they should, on Bernoulli arms and on a routing
problem where the best arm depends on the task type of the default context vector."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from llmopt.bandits import policies as P
from llmopt.features.context import OutputLength, RequestContext, default_context

# Kernel tests: CI also runs them against the bounds-checked build (make test-kernels-debug).
pytestmark = pytest.mark.kernels

PROBS = np.array([0.1, 0.15, 0.3, 0.12, 0.1])
HORIZON = 4000
BOUND = 0.075 * HORIZON  # uniform choice loses 0.146 a step; greedy locks on a bad arm too often


def regret(config: Any, seed: int, probs: np.ndarray = PROBS, horizon: int = HORIZON) -> float:
    policy = P.make_policy(config, len(probs), 10, seed)
    draws = np.random.default_rng(seed + 77).random(horizon)
    allowed = np.ones(len(probs), dtype=np.uint8)
    best = probs.max()
    total = 0.0
    for t in range(horizon):
        arm = policy.select(None, allowed).arm
        total += best - probs[arm]
        policy.update(arm, float(draws[t] < probs[arm]), None)
    return total


def mean_regret(config: Any, seeds: range) -> float:
    return float(np.mean([regret(config, s) for s in seeds]))


def is_contextual(kind: type) -> bool:
    return P.make_policy(kind(), 1, 10, 0).contextual


# Every context-free policy of the table (a new one is held to the bound by being registered),
# with the parameters that suit a stationary problem of 4000 steps where its defaults do not.
TUNED = {
    P.DiscountedUCB: P.DiscountedUCB(gamma=0.9998),
    P.SlidingWindowUCB: P.SlidingWindowUCB(window=3000),
    P.Softmax: P.Softmax(temperature=0.05),
}
STATIONARY = [TUNED.get(k) or k() for k in P.POLICY_TABLE if not is_contextual(k)] + [
    P.EpsilonGreedy(epsilon=0.3, decay=P.EpsilonDecay.LOGARITHMIC, decay_rate=1.0),
    P.ThompsonGaussian(noise_variance=0.25),  # the known-noise form
]
# Every contextual policy but the reference system's diagonal approximation, which ignores the
# correlation of features and does not learn this routing (about 75 % of optimal).
CONTEXTUAL = [k() for k in P.POLICY_TABLE if is_contextual(k) and k is not P.DiagonalThompson]


def test_the_bound_separates_uniform_and_greedy() -> None:
    uniform = HORIZON * (PROBS.max() - PROBS.mean())
    greedy = mean_regret(P.EpsilonGreedy(epsilon=0.0), range(100, 140))
    assert uniform > BOUND
    assert greedy > BOUND


@pytest.mark.parametrize("config", STATIONARY, ids=repr)
def test_regret_below_the_bound(config: Any) -> None:
    assert mean_regret(config, range(6)) < BOUND


def test_kl_ucb_and_thompson_beat_ucb1() -> None:
    ucb1 = mean_regret(P.UCB1(), range(6))
    assert mean_regret(P.KLUCB(), range(6)) < ucb1
    assert mean_regret(P.ThompsonBeta(), range(6)) < ucb1
    assert mean_regret(P.ThompsonGaussian(), range(6)) < ucb1


NARROW_MEANS = np.array([0.70, 0.72, 0.74, 0.76, 0.78])  # arms a noise sd apart
NARROW_SD = 0.02
WINDOW = 50


def narrow_band_windows(config: Any, seed: int, horizon: int = 600) -> np.ndarray:
    """Rewards of real LLM traffic: N(mean, 0.02^2) clipped to [0, 1], the arms' means 0.02
    apart. The best arm's share of each 50-request window."""
    policy = P.make_policy(config, len(NARROW_MEANS), 10, seed)
    env = np.random.default_rng(seed + 31)
    allowed = np.ones(len(NARROW_MEANS), dtype=np.uint8)
    best = int(NARROW_MEANS.argmax())
    picks = np.empty(horizon, dtype=np.int64)
    for t in range(horizon):
        arm = policy.select(None, allowed).arm
        picks[t] = arm
        reward = float(np.clip(env.normal(NARROW_MEANS[arm], NARROW_SD), 0.0, 1.0))
        policy.update(arm, reward, None)
    return (picks.reshape(-1, WINDOW) == best).mean(axis=1)


def settled_by(shares: np.ndarray) -> int | None:
    """The request from which every 50-request window gives the best arm above 50 %."""
    for i in range(len(shares)):
        if (shares[i:] > 0.5).all():
            return i * WINDOW
    return None


def test_learned_noise_variance_settles_on_the_best_of_a_narrow_band() -> None:
    """Issue 19: the learned form settles on the best arm (above 50 % of every 50-request
    window, through 600 requests) within 300 requests, on every one of 8 seeds; the known-noise
    form with its usual variance (0.25, scaled for the whole [0, 1] range) has not settled by
    300 on any seed, and its best-arm share after 300 stays far below the learned form's."""
    seeds = range(8)
    learned = [narrow_band_windows(P.ThompsonGaussian(), s) for s in seeds]
    fixed = [narrow_band_windows(P.ThompsonGaussian(noise_variance=0.25), s) for s in seeds]
    for seed, shares in zip(seeds, learned, strict=True):
        at = settled_by(shares)
        assert at is not None and at <= 300, (seed, shares)
    for seed, shares in zip(seeds, fixed, strict=True):
        at = settled_by(shares)
        assert at is None or at > 300, (seed, shares)
    late = slice(300 // WINDOW, None)
    assert np.mean([s[late].mean() for s in learned]) > 0.8
    assert np.mean([s[late].mean() for s in fixed]) < 0.5


def test_learned_noise_variance_does_not_lock_on_an_arm_of_0_1_rewards() -> None:
    """The learned form's prior is weak but not so weak that an arm's first few 0 rewards look
    like a certain 0 (with a variance learned from them as 0): on every one of 12 seeds its
    regret on the Bernoulli arms stays below the bound (locking on a bad arm costs ~600)."""
    for seed in range(12):
        assert regret(P.ThompsonGaussian(), seed) < BOUND / 2, seed


def share_after_switch(config: Any, seed: int) -> float:
    """Arm 0 is best (0.8) for 4000 steps, then arm 1 (0.7 against 0.4): the share of arm 1 in
    the last 500 of the 1000 steps after the change."""
    policy = P.make_policy(config, 3, 10, seed)
    env = np.random.default_rng(seed + 5)
    allowed = np.ones(3, dtype=np.uint8)
    late = 0
    for t in range(5000):
        probs = (0.8, 0.5, 0.3) if t < 4000 else (0.4, 0.7, 0.3)
        arm = policy.select(None, allowed).arm
        late += t >= 4500 and arm == 1
        policy.update(arm, float(env.random() < probs[arm]), None)
    return late / 500


def test_discounted_and_sliding_window_ucb_recover_after_the_best_arm_changes() -> None:
    seeds = range(3)
    ucb1 = np.mean([share_after_switch(P.UCB1(exploration=0.5), s) for s in seeds])
    discounted = np.mean(
        [share_after_switch(P.DiscountedUCB(gamma=0.995, exploration=0.5), s) for s in seeds]
    )
    window = np.mean(
        [share_after_switch(P.SlidingWindowUCB(window=500, exploration=0.5), s) for s in seeds]
    )
    assert ucb1 < 0.5
    assert discounted > 0.7
    assert window > 0.7


TASKS = ("classification", "generation", "extraction", "summarization")


def expected_rewards(task_code: float) -> np.ndarray:
    """Arm 0 suits classification, arm 2 summarization, arm 1 the tasks in between."""
    return np.array([0.9 - 0.9 * task_code, 0.65, 0.9 * task_code])


def routing_efficiency(config: Any, seed: int, horizon: int = 1500, warmup: int = 500) -> float:
    """Expected reward of the chosen arms over the optimal, after warm-up."""
    policy = P.make_policy(config, 3, 10, seed)
    env = np.random.default_rng(seed + 9)
    allowed = np.ones(3, dtype=np.uint8)
    got = best = 0.0
    for t in range(horizon):
        ctx = RequestContext(
            task_type=TASKS[env.integers(4)],
            input_length=int(env.integers(0, 4000)),
            priority=int(env.integers(1, 11)),
            hour_of_day=int(env.integers(0, 24)),
            day_of_week=int(env.integers(0, 7)),
            output_length=OutputLength(int(env.integers(1, 4))),
        )
        x = default_context(ctx)
        means = expected_rewards(x[7])
        arm = policy.select(x, allowed).arm
        if t >= warmup:
            got += means[arm]
            best += means.max()
        policy.update(arm, float(env.random() < means[arm]), x)
    return got / best


@pytest.mark.parametrize("config", CONTEXTUAL, ids=repr)
def test_contextual_policies_learn_the_task_routing(config: Any) -> None:
    for seed in range(2):
        assert routing_efficiency(config, seed) >= 0.9


def test_context_free_policy_cannot_route_by_task() -> None:
    """The routing problem needs the context: the best single arm gets about 84 % of optimal."""
    means = np.array([expected_rewards(c) for c in (0.0, 0.33, 0.67, 1.0)])
    assert means.mean(axis=0).max() / means.max(axis=1).mean() < 0.9

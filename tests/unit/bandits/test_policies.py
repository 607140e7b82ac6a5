"""The Cython policy kernels against the numpy reference, and the contract every policy keeps."""

from __future__ import annotations

import dataclasses
import doctest
import math
import pickle
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from llmopt import errors
from llmopt.bandits import policies as P
from llmopt.bandits.policy import Policy
from llmopt.native import bandit_free as native
from tests.unit.bandits import reference as R

# Kernel tests: CI also runs them against the bounds-checked build (make test-kernels-debug).
pytestmark = pytest.mark.kernels

DIM = 10

# Parameters worth a run of their own, by policy. Every policy of ``P.POLICY_TABLE`` runs the
# whole battery: with these, or with its defaults when it has none here, so a policy gets every
# contract check below by being registered.
EXAMPLES: dict[type, list[Any]] = {
    P.EpsilonGreedy: [
        P.EpsilonGreedy(epsilon=0.2),
        P.EpsilonGreedy(
            epsilon=0.5, decay=P.EpsilonDecay.LINEAR, decay_rate=0.002, min_epsilon=0.05
        ),
        P.EpsilonGreedy(epsilon=0.5, decay=P.EpsilonDecay.EXPONENTIAL, decay_rate=0.01),
        P.EpsilonGreedy(epsilon=0.5, decay=P.EpsilonDecay.LOGARITHMIC, decay_rate=1.0),
    ],
    P.UCB1: [P.UCB1(exploration=0.7)],
    P.UCBV: [P.UCBV(exploration=0.5)],
    P.KLUCB: [P.KLUCB(c=1.0)],
    P.DiscountedUCB: [P.DiscountedUCB(gamma=0.97, exploration=0.8)],
    P.SlidingWindowUCB: [P.SlidingWindowUCB(window=37, exploration=0.9)],
    P.ThompsonBeta: [P.ThompsonBeta(prior_alpha=1.5, prior_beta=0.7)],
    P.ThompsonGaussian: [
        P.ThompsonGaussian(prior_mean=0.3, prior_variance=0.5, noise_variance=0.2),
        P.ThompsonGaussian(),  # learned noise variance, the default
        P.ThompsonGaussian(prior_mean=0.3, prior_kappa=0.5, prior_alpha=2.0, prior_beta=0.05),
    ],
    P.EXP3: [P.EXP3(gamma=0.15)],
    P.Softmax: [P.Softmax(temperature=0.2)],
    P.LinUCB: [P.LinUCB(alpha=0.8, lambda_=0.5)],
    P.HybridLinUCB: [P.HybridLinUCB(alpha=0.6, lambda_=2.0)],
    P.LinearThompson: [P.LinearThompson(v=0.3, lambda_=1.5)],
    P.DiagonalThompson: [P.DiagonalThompson(prior_variance=2.0, noise_variance=0.3)],
}

CONFIGS: list[Any] = [c for kind in P.POLICY_TABLE for c in EXAMPLES.get(kind) or [kind()]]


def by_exploration(kind: str) -> list[Any]:
    return [c for c in CONFIGS if kind == c.EXPLORATION]


def cid(config: Any) -> str:
    return repr(config).replace(" ", "")


def contexts(n: int, seed: int) -> np.ndarray:
    """Rows shaped like the default context vector (values in [-1, 1], bias 1, padding 0)."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1.0, 1.0, size=(n, DIM))
    x[:, 0:3] = np.abs(x[:, 0:3])
    x[:, 8] = 1.0
    x[:, 9] = 0.0
    return x


def drive(
    policy: Any, steps: int, seed: int, k: int, start: int = 0
) -> list[tuple[int, float, np.ndarray]]:
    """Select and learn ``steps`` times on Bernoulli arms (probabilities 0.1 .. 0.9 by slot), with
    an arm excluded on every third step; returns (arm, propensity, scores) per step."""
    env = np.random.default_rng(seed + 1000)
    xs = contexts(start + steps, seed)
    out = []
    for t in range(start, start + steps):
        allowed = np.ones(policy_arms(policy), dtype=np.uint8)
        if t % 3 == 0:
            allowed[t % len(allowed)] = 0
        x = xs[t] if policy.contextual else None
        got = policy.select(x, allowed)
        arm, prop, scores = (
            (got.arm, got.propensity, got.scores) if isinstance(policy, Policy) else got
        )
        p_win = 0.1 + 0.8 * arm / max(k - 1, 1)
        reward = float(env.random() < p_win)
        policy.update(arm, reward, x)
        out.append((arm, prop, scores))
    return out


def policy_arms(policy: Any) -> int:
    return policy.n_arms if isinstance(policy, Policy) else policy.k


def same_scores(a: np.ndarray, b: np.ndarray) -> bool:
    return bool(np.allclose(a, b, rtol=1e-9, atol=1e-9, equal_nan=True))


# --- kernel versus reference -------------------------------------------------------------------


@pytest.mark.parametrize("config", CONFIGS, ids=cid)
def test_same_seed_same_choices_as_reference(config: Any) -> None:
    k = 5
    steps = 150 if config.ONEOF in ("hybrid_lin_ucb", "linear_thompson") else 400
    policy = P.make_policy(config, k, DIM, seed=42)
    ref = R.make_reference(config, k, DIM, seed=42)
    first = drive(policy, steps, seed=3, k=k)
    expected = drive(ref, steps, seed=3, k=k)
    # A new arm mid-run: both start it cold.
    assert policy.add_arm() == ref.add_arm() == k
    first += drive(policy, 100, seed=4, k=k + 1, start=steps)
    expected += drive(ref, 100, seed=4, k=k + 1, start=steps)
    for t, ((arm, prop, scores), (r_arm, r_prop, r_scores)) in enumerate(
        zip(first, expected, strict=True)
    ):
        assert arm == r_arm, f"step {t}"
        assert prop == pytest.approx(r_prop, rel=1e-9), f"step {t}"
        assert same_scores(scores, r_scores), f"step {t}: {scores} != {r_scores}"
    arms = {a for a, _, _ in first}
    assert len(arms) > 1


@pytest.mark.parametrize("config", CONFIGS, ids=cid)
def test_same_statistics_as_reference_after_10000_updates(config: Any) -> None:
    k, n = 4, 10_000
    policy = P.make_policy(config, k, DIM, seed=5)
    ref = R.make_reference(config, k, DIM, seed=5)
    rng = np.random.default_rng(9)
    xs = contexts(n, 11)
    arms = rng.integers(0, k, size=n)
    rewards = rng.random(n)  # fractional rewards
    if config.ONEOF == "exp3":  # EXP3 weights use the selection probability: select first
        allowed = np.ones(k, dtype=np.uint8)
        for t in range(n):
            arm = policy.select(None, allowed).arm
            assert ref.select(None, allowed)[0] == arm
            policy.update(arm, rewards[t], None)
            ref.update(arm, rewards[t])
    else:
        for t in range(n):
            x = xs[t] if policy.contextual else None
            policy.update(int(arms[t]), float(rewards[t]), x)
            ref.update(int(arms[t]), float(rewards[t]), x)
    state = policy.get_state()
    for name, expected in ref.state().items():
        np.testing.assert_allclose(state[name], expected, rtol=1e-9, atol=1e-9, err_msg=name)


def test_beta_posterior_takes_fractional_rewards() -> None:
    policy = P.make_policy(P.ThompsonBeta(prior_alpha=1.0, prior_beta=2.0), 2, DIM, seed=0)
    policy.update(1, 0.25, None)
    policy.update(1, 1.0, None)
    state = policy.get_state()
    assert state["alpha"].tolist() == [1.0, 2.25]
    assert state["beta"].tolist() == [2.0, 2.75]


def test_linucb_keeps_the_inverse_by_sherman_morrison() -> None:
    policy = P.make_policy(P.LinUCB(lambda_=0.5), 1, DIM, seed=0)
    xs = contexts(50, 1)
    for x in xs:
        policy.update(0, 0.5, x)
    a = 0.5 * np.eye(DIM) + xs.T @ xs
    np.testing.assert_allclose(policy.get_state()["ainv"][0] @ a, np.eye(DIM), atol=1e-9)


def test_kl_ucb_index_is_the_kl_root() -> None:
    for mean, n, budget in [(0.3, 10.0, 2.0), (0.9, 100.0, 5.0), (0.0, 3.0, 1.0)]:
        q = native.kl_ucb_index(mean, n, budget)
        assert mean <= q <= 1.0
        assert n * R.kl_bernoulli(mean, q) == pytest.approx(budget, rel=1e-9)
    assert native.kl_ucb_index(1.0, 5.0, 2.0) == 1.0
    assert native.kl_ucb_index(0.5, 1.0, 100.0) == 1.0


# --- contract checks, parametrised over every policy --------------------------------------------


def run(policy: Policy, steps: int, seed: int) -> list[tuple[int, float]]:
    return [(a, p) for a, p, _ in drive(policy, steps, seed, policy.n_arms)]


@pytest.mark.parametrize("config", CONFIGS, ids=cid)
def test_same_seed_same_result_other_seed_differs(config: Any) -> None:
    a = run(P.make_policy(config, 4, DIM, seed=1), 200, seed=2)
    b = run(P.make_policy(config, 4, DIM, seed=1), 200, seed=2)
    c = run(P.make_policy(config, 4, DIM, seed=2), 200, seed=2)
    assert a == b
    assert a != c


@pytest.mark.parametrize("config", CONFIGS, ids=cid)
def test_state_round_trip_resumes_identically(config: Any) -> None:
    policy = P.make_policy(config, 4, DIM, seed=8)
    run(policy, 120, seed=1)
    state = policy.get_state()
    after = run(policy, 80, seed=2)
    fresh = P.make_policy(config, 0, DIM, seed=999)
    fresh.set_state(state)
    assert fresh.n_arms == 4
    assert run(fresh, 80, seed=2) == after
    # get_state hands out copies: running on does not change a snapshot.
    again = P.make_policy(config, 0, DIM, seed=0)
    again.set_state(state)
    assert run(again, 80, seed=2) == after


@pytest.mark.parametrize("config", CONFIGS, ids=cid)
def test_pickle_round_trip(config: Any) -> None:
    policy = P.make_policy(config, 3, DIM, seed=4)
    run(policy, 60, seed=1)
    clone = pickle.loads(pickle.dumps(policy))
    assert type(clone) is type(policy) and clone.config == config
    assert run(clone, 40, seed=5) == run(policy, 40, seed=5)


@pytest.mark.parametrize("config", CONFIGS, ids=cid)
def test_inputs_not_mutated(config: Any) -> None:
    policy = P.make_policy(config, 4, DIM, seed=4)
    x = contexts(1, 0)[0]
    allowed = np.array([1, 0, 1, 1], dtype=np.uint8)
    x0, allowed0 = x.copy(), allowed.copy()
    for _ in range(20):
        s = policy.select(x if policy.contextual else None, allowed)
        policy.update(s.arm, 0.7, x if policy.contextual else None)
    assert np.array_equal(x, x0) and np.array_equal(allowed, allowed0)


@pytest.mark.parametrize("config", CONFIGS, ids=cid)
def test_selection_respects_the_mask_and_reports_scores(config: Any) -> None:
    policy = P.make_policy(config, 5, DIM, seed=6)
    xs = contexts(200, 2)
    for t in range(200):
        allowed = np.array([1, 0, 1, 0, 1], dtype=np.uint8) if t % 2 else np.ones(5, np.uint8)
        x = xs[t] if policy.contextual else None
        s = policy.select(x, allowed)
        assert allowed[s.arm] == 1
        assert 0.0 < s.propensity <= 1.0
        assert s.scores.shape == (5,)
        assert np.isnan(s.scores[allowed == 0]).all()
        assert not np.isnan(s.scores[allowed == 1]).any()
        policy.update(s.arm, float(s.arm == 4), x)


@pytest.mark.parametrize("config", CONFIGS, ids=cid)
def test_new_arm_starts_cold_and_is_explored(config: Any) -> None:
    policy = P.make_policy(config, 3, DIM, seed=2)
    run(policy, 300, seed=1)
    new = policy.add_arm()
    assert new == 3 and policy.n_arms == 4
    state = policy.get_state()
    fresh = P.make_policy(config, 4, DIM, seed=0).get_state()
    for name in (
        "n",
        "s",
        "mean",
        "m2",
        "alpha",
        "beta",
        "pulls",
        "prec",
        "bvec",
        "ainv",
        "chol",
        "f",
    ):
        if name in state and name in fresh and len(state[name]) == 4:  # per slot
            np.testing.assert_array_equal(state[name][new], fresh[name][new], err_msg=name)
    xs = contexts(200, 3)
    picked = 0
    for t in range(200):
        x = xs[t] if policy.contextual else None
        picked += policy.select(x, np.ones(4, dtype=np.uint8)).arm == new
    assert picked > 0


UCB_STYLE = by_exploration("optimism")


@pytest.mark.parametrize("config", UCB_STYLE, ids=cid)
def test_ucb_style_scores_an_unpulled_arm_infinite(config: Any) -> None:
    policy = P.make_policy(config, 2, DIM, seed=0)
    x = contexts(1, 0)[0] if policy.contextual else None
    policy.update(0, 1.0, x)
    s = policy.select(x, np.ones(2, dtype=np.uint8))
    assert s.arm == 1 and s.propensity == 1.0 and math.isinf(s.scores[1])


def test_ties_are_broken_uniformly_with_exact_propensity() -> None:
    policy = P.make_policy(P.UCB1(), 4, DIM, seed=0)
    allowed = np.array([1, 1, 0, 1], dtype=np.uint8)
    counts = np.zeros(4)
    for _ in range(3000):
        s = policy.select(None, allowed)
        assert s.propensity == pytest.approx(1 / 3)
        counts[s.arm] += 1
    assert counts[2] == 0
    assert np.all(np.abs(counts[[0, 1, 3]] / 3000 - 1 / 3) < 0.04)


@pytest.mark.parametrize("config", by_exploration("randomized"), ids=cid)
def test_exact_propensities_match_observed_frequencies(config: Any) -> None:
    """Frozen state (no updates): the reported propensity is the frequency of each choice."""
    policy = P.make_policy(config, 3, DIM, seed=1)
    for arm, r in [(0, 0.2), (1, 0.9), (2, 0.5), (1, 0.8)]:
        policy.update(arm, r, None, propensity=0.5)
    allowed = np.ones(3, dtype=np.uint8)
    state = policy.get_state()
    seen: dict[int, float] = {}
    counts = np.zeros(3)
    n = 4000
    for _ in range(n):
        s = policy.select(None, allowed)
        seen[s.arm] = s.propensity
        counts[s.arm] += 1
        g = policy.get_state()
        state["rng"] = g["rng"]
        policy.set_state(state)  # keep epsilon's t and EXP3's state fixed
    for arm, p in seen.items():
        assert abs(counts[arm] / n - p) < 0.03, (arm, counts / n, seen)


@pytest.mark.parametrize("config", by_exploration("posterior"), ids=cid)
def test_thompson_propensity_estimates_the_choice_frequency(config: Any) -> None:
    policy = P.make_policy(config, 3, DIM, seed=3)
    x = contexts(1, 5)[0] if policy.contextual else None
    for t in range(30):
        policy.update(t % 3, [0.3, 0.5, 0.6][t % 3], x)
    allowed = np.ones(3, dtype=np.uint8)
    counts = np.zeros(3)
    props = np.zeros(3)
    n = 3000
    for _ in range(n):
        s = policy.select(x, allowed)
        counts[s.arm] += 1
        props[s.arm] += s.propensity
    for arm in range(3):
        if counts[arm] > 100:
            assert abs(props[arm] / counts[arm] - counts[arm] / n) < 0.1


def test_exp3_uses_the_logged_propensity() -> None:
    a = P.make_policy(P.EXP3(gamma=0.2), 2, DIM, seed=0)
    b = P.make_policy(P.EXP3(gamma=0.2), 2, DIM, seed=0)
    a.update(0, 1.0, None, propensity=0.5)
    b.update(0, 1.0, None, propensity=0.25)
    gain_a, gain_b = a.get_state()["logw"][0], b.get_state()["logw"][0]
    assert gain_b == pytest.approx(2 * gain_a)


# --- bad input -------------------------------------------------------------------------------


BAD_CONFIGS: list[tuple[Callable[[], Any], str]] = [
    (lambda: P.EpsilonGreedy(epsilon=-0.1), "epsilon_greedy.epsilon"),
    (lambda: P.EpsilonGreedy(decay=7), "epsilon_greedy.decay"),  # type: ignore[arg-type]
    (lambda: P.EpsilonGreedy(decay_rate=-1.0), "epsilon_greedy.decay_rate"),
    (lambda: P.EpsilonGreedy(min_epsilon=2.0), "epsilon_greedy.min_epsilon"),
    (lambda: P.UCB1(exploration=math.nan), "ucb1.exploration"),
    (lambda: P.UCBV(exploration=0.0), "ucb_v.exploration"),
    (lambda: P.KLUCB(c=-1.0), "kl_ucb.c"),
    (lambda: P.DiscountedUCB(gamma=1.5), "discounted_ucb.gamma"),
    (lambda: P.DiscountedUCB(exploration=-2.0), "discounted_ucb.exploration"),
    (lambda: P.SlidingWindowUCB(window=0), "sliding_window_ucb.window"),
    (lambda: P.SlidingWindowUCB(window=2.5), "sliding_window_ucb.window"),  # type: ignore[arg-type]
    (lambda: P.ThompsonBeta(prior_alpha=0.0), "thompson_beta.prior_alpha"),
    (lambda: P.ThompsonBeta(prior_beta=math.inf), "thompson_beta.prior_beta"),
    (lambda: P.ThompsonGaussian(prior_variance=-1.0), "thompson_gaussian.prior_variance"),
    (lambda: P.ThompsonGaussian(noise_variance=0.0), "thompson_gaussian.noise_variance"),
    (lambda: P.ThompsonGaussian(prior_mean=math.nan), "thompson_gaussian.prior_mean"),
    (lambda: P.EXP3(gamma=0.0), "exp3.gamma"),
    (lambda: P.Softmax(temperature=0.0), "softmax.temperature"),
    (lambda: P.LinUCB(alpha=-1.0), "lin_ucb.alpha"),
    (lambda: P.LinUCB(lambda_=0.0), "lin_ucb.lambda"),
    (lambda: P.HybridLinUCB(lambda_=-1.0), "hybrid_lin_ucb.lambda"),
    (lambda: P.LinearThompson(v=0.0), "linear_thompson.v"),
    (lambda: P.LinearThompson(lambda_="1"), "linear_thompson.lambda"),  # type: ignore[arg-type]
    (lambda: P.DiagonalThompson(prior_variance=0.0), "diagonal_thompson.prior_variance"),
    (lambda: P.DiagonalThompson(noise_variance=-1.0), "diagonal_thompson.noise_variance"),
]


@pytest.mark.parametrize("make,field", BAD_CONFIGS, ids=[f for _, f in BAD_CONFIGS])
def test_bad_config_is_refused_naming_the_field(make: Callable[[], Any], field: str) -> None:
    with pytest.raises(errors.InvalidArgument, match=rf"^{field}: "):
        make()


def test_every_policy_runs_the_battery_and_names_how_it_explores() -> None:
    assert {type(c) for c in CONFIGS} == set(P.POLICY_TABLE) == set(R.REFERENCES)
    assert set(EXAMPLES) <= set(P.POLICY_TABLE)
    for kind in P.POLICY_TABLE:
        assert kind.EXPLORATION in ("optimism", "posterior", "randomized"), kind


def test_every_proto_policy_has_a_config_and_an_implementation() -> None:
    from llmopt.gen.llmopt.v1 import bandits_pb2

    oneof = {f.name for f in bandits_pb2.Policy.DESCRIPTOR.oneofs_by_name["kind"].fields}
    assert set(P.CONFIG_BY_ONEOF) == oneof
    for cfg, impl in P.POLICY_TABLE.items():
        assert issubclass(impl, Policy)
        proto_fields = {
            f.name
            for f in bandits_pb2.Policy.DESCRIPTOR.fields_by_name[cfg.ONEOF].message_type.fields
        }
        ours = {f.name.rstrip("_") for f in dataclasses.fields(cfg)}
        assert ours == proto_fields, cfg


def test_make_policy_refuses_bad_arguments() -> None:
    with pytest.raises(errors.InvalidArgument, match=r"^policy: "):
        P.make_policy(object(), 2, DIM, 0)
    with pytest.raises(errors.InvalidArgument, match=r"^arms: "):
        P.make_policy(P.UCB1(), -1, DIM, 0)
    with pytest.raises(errors.InvalidArgument, match=r"^dim: "):
        P.make_policy(P.LinUCB(), 2, 0, 0)
    with pytest.raises(errors.InvalidArgument, match=r"^seed: "):
        P.make_policy(P.UCB1(), 2, DIM, -3)


@pytest.mark.parametrize("config", [kind() for kind in P.POLICY_TABLE], ids=cid)
def test_bad_calls_are_refused(config: Any) -> None:
    policy = P.make_policy(config, 3, DIM, seed=0)
    x = contexts(1, 0)[0] if policy.contextual else None
    with pytest.raises(errors.InvalidArgument, match="allowed"):
        policy.select(x, np.ones(2, dtype=np.uint8))
    with pytest.raises(errors.InvalidArgument, match="allowed"):
        policy.select(x, np.ones(3, dtype=np.float64))
    with pytest.raises(errors.FailedPrecondition, match="arms"):
        policy.select(x, np.zeros(3, dtype=np.uint8))
    with pytest.raises(errors.InvalidArgument, match="arm"):
        policy.update(3, 0.5, x)
    with pytest.raises(errors.InvalidArgument, match="reward"):
        policy.update(0, 1.5, x)
    with pytest.raises(errors.InvalidArgument, match="reward"):
        policy.update(0, math.nan, x)
    with pytest.raises(errors.InvalidArgument):
        policy.update(0, "high", x)  # type: ignore[arg-type]
    with pytest.raises(errors.InvalidArgument):
        policy.select(x, [1, 1, 1])  # type: ignore[arg-type]
    if policy.contextual:
        with pytest.raises(errors.InvalidArgument, match="context_vector"):
            policy.select(np.ones(DIM - 1), np.ones(3, dtype=np.uint8))
        with pytest.raises(errors.InvalidArgument, match="context_vector"):
            policy.update(0, 0.5, np.full(DIM, np.inf))
        with pytest.raises(errors.InvalidArgument, match="context_vector"):
            policy.select(None, np.ones(3, dtype=np.uint8))


def test_set_state_refuses_a_foreign_state() -> None:
    a = P.make_policy(P.LinUCB(), 2, DIM, seed=0)
    b = P.make_policy(P.LinUCB(), 2, 4, seed=0)
    with pytest.raises(errors.InvalidArgument, match=r"^state: "):
        b.set_state(a.get_state())
    with pytest.raises(errors.InvalidArgument, match=r"^state: "):
        P.make_policy(P.UCB1(), 2, DIM, 0).set_state(a.get_state())


def test_docstring_examples() -> None:
    result = doctest.testmod(P, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 10 and result.failed == 0


@pytest.mark.parametrize("decay", [P.EpsilonDecay.LINEAR, P.EpsilonDecay.EXPONENTIAL])
def test_epsilon_decay_counts_selections_restored_after_a_crash(decay: P.EpsilonDecay) -> None:
    """A restart adds the selections logged after the snapshot (add_selections): epsilon is then
    where it would have been, which the chosen arm's exact propensity shows."""
    config = P.EpsilonGreedy(epsilon=0.5, decay=decay, decay_rate=0.01, min_epsilon=0.0)
    allowed = np.ones(2, dtype=np.uint8)
    ran, restored, cold = (P.make_policy(config, 2, 1, seed=5) for _ in range(3))
    for p in (ran, restored, cold):
        p.update(0, 1.0, None)  # arm 0 is the greedy one
        p.update(1, 0.0, None)
    for _ in range(40):
        ran.select(None, allowed)
    restored.add_selections(40)

    def epsilon(p: Any) -> float:  # two arms: greedy 1 - eps/2, the other eps/2
        sel = p.select(None, allowed)
        return 2 * (1 - sel.propensity) if sel.arm == 0 else 2 * sel.propensity

    eps = [epsilon(p) for p in (ran, restored, cold)]
    assert eps[0] == pytest.approx(eps[1], abs=1e-12)
    assert eps[0] < 0.5 * 0.75 and eps[2] == pytest.approx(0.5)  # without it, eps starts over
    with pytest.raises(ValueError):
        restored.add_selections(-1)

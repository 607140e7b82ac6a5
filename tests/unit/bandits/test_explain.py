"""Explanations of selections and the learned estimates, for every policy of ``POLICY_TABLE``.

Each policy is trained on a seeded simulation beside its numpy reference (``reference.py``: the
same choices draw for draw), then explains random contexts with some arms excluded and one
removed; the parts are checked against the scores, and the estimates against the reference's
own maths."""

from __future__ import annotations

import doctest
import json
import math
import pickle
from typing import Any

import numpy as np
import pytest

from llmopt import errors
from llmopt.bandits import explain as E
from llmopt.bandits import policies as P
from tests.unit.bandits import reference as R
from tests.unit.bandits.test_policies import CONFIGS, DIM, cid, contexts

pytestmark = pytest.mark.kernels

K = 5
REMOVED = 1  # the slot removed from every trained bandit
SLOTS = tuple(f"slot_{j}" for j in range(DIM))
IDS = [f"arm-{i}" for i in range(K + 1)]
TOL = 1e-9


def same(a: Any, b: Any, tol: float = TOL) -> bool:
    """Elementwise equal within ``tol`` (relative for large values), NaN equal to NaN."""
    return bool(np.allclose(a, b, rtol=tol, atol=tol, equal_nan=True))


def trained(config: Any, seed: int = 7) -> tuple[Any, R.Reference, np.random.Generator]:
    """A policy and its reference after 250 lockstep selections and rewards on Bernoulli arms
    (slot i wins with probability 0.1 + 0.2 i), plus one cold slot added at the end."""
    policy = P.make_policy(config, K, DIM, seed=seed)
    ref = R.make_reference(config, K, DIM, seed=seed)
    env = np.random.default_rng(seed + 1)
    xs = contexts(250, seed)
    for t in range(250):
        allowed = np.ones(K, dtype=np.uint8)
        allowed[t % K] = t % 4 != 0
        x = xs[t] if policy.contextual else None
        arm = policy.select(x, allowed).arm
        assert ref.select(x, allowed)[0] == arm
        reward = float(env.random() < 0.1 + 0.2 * arm)
        policy.update(arm, reward, x)
        ref.update(arm, reward, x)
    assert policy.add_arm() == ref.add_arm() == K
    return policy, ref, env


def queries(policy: Any, ref: R.Reference, env: np.random.Generator, n: int) -> list[Any]:
    """``n`` explained selections of random contexts: slot REMOVED masked out as removed, and
    others excluded at random (at least one slot stays eligible). Each item: (x, allowed,
    removed, selection, explanation, the reference's scores, the reference's exploitation)."""
    out = []
    xs = contexts(n, 99)
    removed = [i == REMOVED for i in range(K + 1)]
    for t in range(n):
        allowed = (env.random(K + 1) < 0.7).astype(np.uint8)
        allowed[REMOVED] = 0
        if not allowed.any():
            allowed[t % 2 * 2] = 1
        x = xs[t] if policy.contextual else None
        ref_exploit = ref.exploitation(x, allowed)  # before select: EXP3's select keeps state
        sel = policy.select(x, allowed)
        e = E.explain_selection(policy, x, allowed, removed, IDS, SLOTS, sel)
        r_arm, _, r_scores = ref.select(x, allowed)
        assert r_arm == sel.arm
        out.append((x, allowed, removed, sel, e, r_scores, ref_exploit))
    return out


@pytest.fixture(scope="module", params=CONFIGS, ids=cid)
def explained(request: pytest.FixtureRequest) -> tuple[Any, Any, R.Reference, list[Any]]:
    config = request.param
    policy, ref, env = trained(config)
    return config, policy, ref, queries(policy, ref, env, 40)


# --- the battery, per policy -----------------------------------------------------------------


def test_parts_sum_to_the_score_and_match_the_reference(explained: Any) -> None:
    config, _, _, qs = explained
    for _, allowed, _, sel, e, r_scores, r_exploit in qs:
        for i, a in enumerate(e.arms):
            if not allowed[i]:
                continue
            assert a.score == sel.scores[i]
            if math.isinf(a.score):  # untried under optimism: all exploration
                assert config.EXPLORATION in ("optimism", "randomized")
                assert math.isfinite(a.exploitation) and a.exploration == math.inf
            else:
                assert abs(a.exploitation + a.exploration - a.score) <= TOL, (i, a)
            # The parts by the reference's own maths: exploitation from its sums, exploration
            # as its score minus that (the kernel computes the bonus from the bonus formula).
            assert same(a.exploitation, r_exploit[i]), (i, a.exploitation, r_exploit[i])
            if math.isfinite(r_scores[i]):
                assert same(a.exploration, r_scores[i] - r_exploit[i]), (i, a, r_scores[i])


def test_statuses_and_the_slots_not_eligible(explained: Any) -> None:
    config, policy, _, qs = explained
    for _, allowed, removed, _, e, _, _ in qs:
        assert [a.arm_id for a in e.arms] == IDS
        for i, a in enumerate(e.arms):
            want = (
                E.ArmStatus.ELIGIBLE
                if allowed[i]
                else E.ArmStatus.REMOVED
                if removed[i]
                else E.ArmStatus.EXCLUDED
            )
            assert a.status == want
            if not allowed[i]:
                assert math.isnan(a.score) and math.isnan(a.exploitation)
                assert math.isnan(a.exploration) and a.probability == 0.0
    # mean and pulls are reported for every slot, eligible or not: they match estimates().
    x, allowed, _, _, e, _, _ = qs[-1]
    est = policy.estimates()
    means = est["theta"] @ x if policy.contextual else est["mean"]
    assert same([a.mean for a in e.arms], means)
    assert same([a.pulls for a in e.arms], est["pulls"])
    if config.ONEOF != "exp3":  # EXP3 keeps weights, no mean
        assert not math.isnan(e.arms[REMOVED].mean)


def test_choice_propensity_and_probabilities(explained: Any) -> None:
    config, _, _, qs = explained
    for _, allowed, _, sel, e, _, _ in qs:
        assert e.chosen_arm_id == IDS[sel.arm]
        assert e.propensity == sel.propensity
        assert e.policy == config.ONEOF and e.exploration_kind == config.EXPLORATION
        chosen = e.arms[sel.arm]
        assert chosen.status == E.ArmStatus.ELIGIBLE
        assert chosen.probability == pytest.approx(sel.propensity, rel=1e-12)
        probs = np.array([a.probability for a in e.arms])
        if config.EXPLORATION == "posterior":  # only the chosen arm's is estimated
            others = [i for i in range(K + 1) if allowed[i] and i != sel.arm]
            assert np.isnan(probs[others]).all()
        else:
            assert probs.sum() == pytest.approx(1.0, abs=1e-12)
            assert (probs >= 0.0).all()
            assert (probs[allowed == 0] == 0.0).all()
        if config.EXPLORATION == "optimism":  # the best score's ties share the choice
            best = np.nanmax(sel.scores)
            tied = (sel.scores == best) & (allowed == 1)
            assert same(probs, np.where(tied, 1.0 / tied.sum(), 0.0))


def test_thompson_posteriors_are_the_reference_ones(explained: Any) -> None:
    config, _, ref, qs = explained
    if config.EXPLORATION != "posterior":
        for _, _, _, _, e, _, _ in qs:
            assert all(math.isnan(a.posterior_mean) for a in e.arms)
        return
    x, _, _, _, e, _, _ = qs[-1]
    pm = np.array([a.posterior_mean for a in e.arms])
    sd = np.array([a.posterior_sd for a in e.arms])
    if ref.contextual:
        assert isinstance(ref, R.LinearThompsonRef | R.DiagonalThompsonRef)
        assert same(pm, ref.estimates()["theta"] @ x)
        assert same(sd, ref.score_sd(x))
    else:
        est = ref.estimates()
        assert same(pm, est["mean"]) and same(sd, est["sd"])
    assert (sd > 0).all()


def test_linear_contributions_sum_to_the_estimate_and_are_theta_times_x(explained: Any) -> None:
    _, policy, ref, qs = explained
    if not policy.contextual:
        for _, _, _, _, e, _, _ in qs:
            assert all(a.contributions == () for a in e.arms)
        return
    theta = policy.estimates()["theta"]
    assert same(theta, ref.estimates()["theta"], 1e-8)
    for x, allowed, _, _, e, _, _ in qs:
        for i, a in enumerate(e.arms):
            assert [c.name for c in a.contributions] == list(SLOTS)
            assert [c.value for c in a.contributions] == x.tolist()
            parts = np.array([c.contribution for c in a.contributions])
            assert same(parts, theta[i] * x)
            assert abs(parts.sum() - a.mean) <= TOL
            if allowed[i]:
                assert abs(parts.sum() - a.exploitation) <= TOL


def test_estimates_agree_with_the_reference(explained: Any) -> None:
    config, policy, ref, _ = explained
    got = policy.estimates()
    want = ref.estimates()
    assert set(want) <= set(got)
    for name, value in want.items():
        assert got[name].shape == value.shape, name
        assert same(got[name], value, 1e-8), (name, got[name], value)
    if config.ONEOF in ("exp3", "softmax"):
        assert got["probability"].sum() == pytest.approx(1.0)


def test_json_round_trip_is_equal(explained: Any) -> None:
    _, _, _, qs = explained
    for _, _, _, _, e, _, _ in qs:
        text = e.to_json()
        json.loads(text, parse_constant=_refuse)  # strict JSON: no NaN or Infinity tokens
        back = E.Explanation.from_json(text)
        assert back == e
        assert back.to_json() == text
        for a, b in zip(back.arms, e.arms, strict=True):
            assert a.contributions == b.contributions
            assert math.isinf(a.score) == math.isinf(b.score)
            assert math.isnan(a.score) == math.isnan(b.score)


def test_stored_form_round_trip_is_equal(explained: Any) -> None:
    _, policy, _, qs = explained
    for _, _, _, _, e, _, _ in qs:
        data = e.to_bytes()
        assert data.startswith(E.MAGIC)
        back = E.Explanation.from_bytes(data)
        assert back == e and hash(back) == hash(e) and repr(back) == repr(e)
        assert back.to_bytes() == data
        c, d = back.columns(), e.columns()
        assert c.status == d.status and np.array_equal(c.numbers, d.numbers, equal_nan=True)
        assert (c.theta_x is None) == (not policy.contextual)
        for a, b in zip(back.arms, e.arms, strict=True):
            assert a.contributions == b.contributions
            assert math.isinf(a.score) == math.isinf(b.score)
            assert math.isnan(a.score) == math.isnan(b.score)


def test_an_explanation_of_columns_equals_the_one_of_its_arms(explained: Any) -> None:
    """``explain_selection`` keeps arrays; the same explanation built arm by arm (by hand, or
    from a message) is equal to it, hashes the same and is stored to the same value."""
    _, _, _, qs = explained
    e = qs[-1][4]
    hand = E.Explanation(
        e.policy,
        e.exploration_kind,
        e.chosen_arm_id,
        e.propensity,
        e.reason,
        [E.ArmExplanation(*a[:10], contributions=a.contributions) for a in e.arms],
    )
    assert hand == e and e == hand and hash(hand) == hash(e)
    assert E.Explanation.from_bytes(hand.to_bytes()) == e
    assert E.Explanation.from_json(hand.to_json()) == e
    assert pickle.loads(pickle.dumps(e)) == e


def test_reason_names_the_choice(explained: Any) -> None:
    _, policy, _, qs = explained
    for _, _, _, sel, e, _, _ in qs:
        assert e.reason.startswith(f"chose {IDS[sel.arm]}: "), e.reason
        assert "\n" not in e.reason
        chosen = e.arms[sel.arm]
        if policy.contextual and math.isfinite(chosen.score):
            parts = [c.contribution for c in chosen.contributions]
            top = SLOTS[int(np.argmax(np.abs(parts)))]
            assert f", with {top}=" in e.reason, e.reason


def _refuse(token: str) -> None:
    raise ValueError(f"non-standard JSON token {token}")


# --- reasons, one policy at a time ------------------------------------------------------------


def explain_once(policy: Any, x: Any = None, allowed: Any = None) -> E.Explanation:
    k = policy.n_arms
    allowed = np.ones(k, dtype=np.uint8) if allowed is None else allowed
    sel = policy.select(x, allowed)
    return E.explain_selection(
        policy, x, allowed, [False] * k, [f"m{i}" for i in range(k)], SLOTS[: policy.dim], sel
    )


def test_untried_arms_of_optimistic_policies_are_all_exploration() -> None:
    policy = P.make_policy(P.UCB1(), 3, 1, seed=0)
    policy.update(0, 1.0, None)
    e = explain_once(policy)
    assert e.chosen_arm_id in ("m1", "m2")
    assert e.reason.startswith(f"chose {e.chosen_arm_id}: untried: every arm without a reward")
    assert "(2 tied, drawn uniformly)" in e.reason
    assert e.arms[0].exploration < math.inf and e.arms[1].exploration == math.inf
    assert e.arms[1].exploitation == 0.0 and math.isnan(e.arms[1].mean)


def test_ucb_reason_states_the_bound_and_its_parts() -> None:
    policy = P.make_policy(P.UCB1(), 2, 1, seed=0)
    for arm, r in [(0, 1.0), (0, 1.0), (1, 0.0), (1, 1.0)]:
        policy.update(arm, r, None)
    e = explain_once(policy)
    bonus = math.sqrt(2 * math.log(4) / 2)
    assert (
        e.reason == f"chose m0: highest upper bound {1 + bonus:.2f} = mean 1.00 + bonus {bonus:.2f}"
    )
    assert e.arms[0].exploration == pytest.approx(bonus, rel=1e-12)


def test_lin_ucb_reason_names_the_largest_contribution() -> None:
    policy = P.make_policy(P.LinUCB(alpha=0.1), 1, 3, seed=0)
    x = np.array([0.2, 0.7, 1.0])
    for _ in range(20):
        policy.update(0, 0.9, x)
    e = explain_once(policy, x)
    a = e.arms[0]
    assert e.reason.startswith("chose m0: highest upper bound ")
    top = max(a.contributions, key=lambda c: abs(c.contribution))
    assert f"with {top.name}={top.value:.3g} contributing {top.contribution:+.2f}" in e.reason
    assert a.mean == pytest.approx(sum(c.contribution for c in a.contributions), abs=1e-12)


def test_thompson_reason_states_the_draw_and_posterior() -> None:
    policy = P.make_policy(P.ThompsonBeta(), 2, 1, seed=3)
    for _ in range(5):
        policy.update(0, 1.0, None)
    e = explain_once(policy)
    a = next(a for a in e.arms if a.arm_id == e.chosen_arm_id)
    assert e.reason == (
        f"chose {a.arm_id}: highest posterior draw {a.score:.2f} (posterior mean"
        f" {a.posterior_mean:.2f}, sd {a.posterior_sd:.2f})"
    )


def test_epsilon_greedy_reason_says_whether_it_explored() -> None:
    policy = P.make_policy(P.EpsilonGreedy(epsilon=0.3), 3, 1, seed=1)
    for arm, r in [(0, 0.9), (1, 0.2), (2, 0.4)]:
        policy.update(arm, r, None)
    seen = set()
    for _ in range(60):
        e = explain_once(policy)
        p = next(a.probability for a in e.arms if a.arm_id == e.chosen_arm_id)
        if e.chosen_arm_id == "m0":
            assert p == pytest.approx(0.7 + 0.1)
            assert (
                e.reason
                == "chose m0: drawn with probability 0.80 (exploiting: the highest mean 0.90)"
            )
        else:
            assert p == pytest.approx(0.1)
            assert e.reason.endswith("(exploring: epsilon 0.30 spread over 3 arms)"), e.reason
        seen.add(e.chosen_arm_id == "m0")
    assert seen == {True, False}


def test_epsilon_probability_is_the_one_drawn_with_under_decay() -> None:
    """select counts itself before explain runs: the explanation must use the epsilon the
    choice had, which the propensity shows."""
    config = P.EpsilonGreedy(epsilon=0.9, decay=P.EpsilonDecay.LINEAR, decay_rate=0.05)
    policy = P.make_policy(config, 2, 1, seed=2)
    policy.update(0, 1.0, None)
    policy.update(1, 0.0, None)
    for t in range(12):
        e = explain_once(policy)
        eps = max(0.9 - 0.05 * t, 0.01)
        assert e.arms[0].probability == pytest.approx(1 - eps / 2, rel=1e-12)
        assert e.arms[1].probability == pytest.approx(eps / 2, rel=1e-12)
        assert e.propensity == pytest.approx(
            e.arms[0 if e.chosen_arm_id == "m0" else 1].probability
        )


def test_exp3_and_softmax_reasons() -> None:
    exp3 = P.make_policy(P.EXP3(gamma=0.2), 2, 1, seed=0)
    exp3.update(0, 1.0, None, propensity=0.5)
    e = explain_once(exp3)
    a = next(a for a in e.arms if a.arm_id == e.chosen_arm_id)
    assert a.exploration == pytest.approx(0.1)
    assert e.reason == (
        f"chose {a.arm_id}: drawn with probability {a.probability:.2f} = weight share"
        f" {a.exploitation:.2f} + exploration share 0.10 (gamma 0.20 over 2 arms)"
    )
    soft = P.make_policy(P.Softmax(temperature=0.5), 2, 1, seed=0)
    soft.update(0, 0.25, None)
    e = explain_once(soft)
    assert e.arms[0].mean == 0.25 and e.arms[1].mean == 1.0  # untried: read as 1
    assert e.arms[1].probability == pytest.approx(1 / (1 + math.exp(-1.5)))
    why = "untried, read as mean 1" if e.chosen_arm_id == "m1" else "mean 0.25"
    assert e.reason.endswith(f"(softmax of {why} at temperature 0.50)"), e.reason


def test_every_policy_has_its_reason_wording() -> None:
    assert set(E._REASONS) == {cfg.ONEOF for cfg in P.POLICY_TABLE}


# --- estimates -------------------------------------------------------------------------------


@pytest.mark.parametrize("config", CONFIGS, ids=cid)
def test_arm_estimates(config: Any) -> None:
    policy, ref, _ = trained(config, seed=3)
    removed = [i == REMOVED for i in range(K + 1)]
    got = E.arm_estimates("b", policy, IDS, removed, SLOTS)
    assert got.bandit == "b" and got.policy == config.ONEOF
    assert [a.arm_id for a in got.arms] == IDS
    assert [a.removed for a in got.arms] == removed
    want = ref.estimates()
    for i, a in enumerate(got.arms):
        assert same(a.pulls, want["pulls"][i], 1e-8)
        assert same(a.mean, want["mean"][i], 1e-8) and same(a.sd, want["sd"][i], 1e-8)
        assert same(a.ci_low, a.mean - 1.959963984540054 * a.sd)
        assert same(a.ci_high, a.mean + 1.959963984540054 * a.sd)
    if policy.contextual:
        assert got.slot_names == SLOTS
        assert same(np.array([a.theta for a in got.arms]), want["theta"], 1e-8)
        assert same(np.array([a.theta_sd for a in got.arms]), want["theta_sd"], 1e-8)
        assert all(math.isnan(a.mean) for a in got.arms)
    else:
        assert got.slot_names == () and all(a.theta == () for a in got.arms)
    probs = np.array([a.probability for a in got.arms])
    if config.ONEOF in ("exp3", "softmax"):  # among the arms not removed
        assert probs[REMOVED] == 0.0 and probs.sum() == pytest.approx(1.0)
    else:
        assert np.isnan(probs).all()


def test_hybrid_theta_sd_is_the_bonus_scale_of_each_slot() -> None:
    """At a unit context e_j, hybrid LinUCB's bonus is alpha * theta_sd_j."""
    policy, _, _ = trained(P.HybridLinUCB(alpha=0.6, lambda_=2.0))
    sd = np.array(policy.estimates()["theta_sd"])
    for j in (0, 4, 8):
        x = np.zeros(DIM)
        x[j] = 1.0
        allowed = np.ones(K + 1, dtype=np.uint8)
        allowed[K] = 0  # the cold slot scores +inf
        e = explain_once(policy, x, allowed)
        for i in range(K):
            assert e.arms[i].exploration == pytest.approx(0.6 * sd[i, j], rel=1e-9)


# --- values and errors -----------------------------------------------------------------------


def test_hand_built_explanations_round_trip_and_are_immutable() -> None:
    arm = E.ArmExplanation(
        "a",
        E.ArmStatus.ELIGIBLE,
        0.5,
        0.4,
        0.1,
        0.4,
        math.nan,
        math.nan,
        1.0,
        3.0,
        contributions=(E.FeatureContribution("f", 2.0, 0.4),),
    )
    other = E.ArmExplanation(
        "b", E.ArmStatus.REMOVED, math.nan, math.nan, math.nan, -math.inf, 0, 0, 0.0, 0.0
    )
    e = E.Explanation("lin_ucb", "optimism", "a", 1.0, "chose a: because", (arm, other))
    back = E.Explanation.from_json(e.to_json())
    assert back == e and back.arms[0].contributions == arm.contributions
    assert back.arms[1].mean == -math.inf
    assert back != E.Explanation("lin_ucb", "optimism", "a", 1.0, "chose a: other", (arm, other))
    assert arm != other and arm == pickle.loads(pickle.dumps(arm))
    assert hash(arm) == hash(pickle.loads(pickle.dumps(arm)))
    with pytest.raises(AttributeError):
        arm.score = 1.0  # type: ignore[misc]
    with pytest.raises(errors.InvalidArgument, match=r"^explanation: "):
        E.Explanation.from_json('{"arm_id": ["a"]}')
    with pytest.raises(errors.InvalidArgument, match=r"^explanation: "):
        E.Explanation.from_json("not json")
    with pytest.raises(AttributeError):
        e.reason = "other"  # type: ignore[misc]
    assert pickle.loads(pickle.dumps(e)) == e and hash(pickle.loads(pickle.dumps(e))) == hash(e)
    # The stored form: contributions per arm, over different slots, names in any script.
    odd = E.ArmExplanation(
        "ü", 2, -0.0, math.inf, math.nan, 0.0, 1, 2, 3, 4, [E.FeatureContribution("", -1, 0)]
    )
    mixed = E.Explanation("ucb1", "optimism", "a", math.nan, "ñ", (arm, other, odd))
    back = E.Explanation.from_bytes(mixed.to_bytes())
    assert back == mixed and [a.contributions for a in back.arms] == [
        a.contributions for a in mixed.arms
    ]
    assert math.copysign(1.0, back.arms[2].score) == -1.0 and math.isnan(back.propensity)
    empty = E.Explanation("", "", "", 0.0, "", ())
    assert E.Explanation.from_bytes(empty.to_bytes()) == empty


def test_the_stored_form_refuses_anything_else() -> None:
    policy = P.make_policy(P.LinUCB(), 3, 2, seed=0)
    e = explain_once(policy, np.array([0.5, -1.0]))
    data = e.to_bytes()
    status_at = len(data) - 8 * (3 * 8 + 2 + 3 * 2) - 3  # the arrays' bytes follow the statuses
    assert data[status_at : status_at + 3] == b"\x01\x01\x01"
    bad = [
        *(data[:n] for n in range(len(data))),  # every truncation
        data + b"\x00",  # a byte after the end
        b"XXXX" + data[4:],  # not the magic
        data[:status_at] + b"\x00" + data[status_at + 1 :],  # a status out of 1..3
        data[:12] + b"\x03" + data[13:],  # an unknown mode
        data[:12] + b"\x00" + data[13:],  # slot names without contributions
    ]
    for item in bad:
        with pytest.raises(errors.InvalidArgument, match=r"^explanation: not a stored "):
            E.Explanation.from_bytes(item)
    with pytest.raises(errors.InvalidArgument, match=r"^explanation: not a stored "):
        E.Explanation.from_bytes(data.decode("latin-1"))  # type: ignore[arg-type]
    with pytest.raises(errors.InvalidArgument, match=r"^explanation: .*codec can't decode"):
        E.Explanation.from_bytes(data.replace(b"m0", b"\xff\xfe", 1))  # a name not utf-8


def test_explain_refuses_bad_calls() -> None:
    policy = P.make_policy(P.LinUCB(), 2, 3, seed=0)
    x = np.ones(3)
    allowed = np.ones(2, dtype=np.uint8)
    sel = policy.select(x, allowed)
    with pytest.raises(errors.InvalidArgument, match="scores"):
        policy.explain(x, allowed, sel._replace(scores=np.ones(3)))
    with pytest.raises(errors.InvalidArgument, match="context_vector"):
        policy.explain(np.ones(2), allowed, sel)
    with pytest.raises(errors.InvalidArgument, match="allowed"):
        policy.explain(x, np.ones(3, dtype=np.uint8), sel)
    with pytest.raises(errors.InvalidArgument, match=r"^arm_ids: "):
        E.explain_selection(policy, x, allowed, [False], ["a"], ("a", "b", "c"), sel)
    with pytest.raises(errors.InvalidArgument, match=r"^selection\.arm: "):
        E.explain_selection(policy, x, allowed, [False] * 2, ["a", "b"], "ab", sel._replace(arm=9))
    with pytest.raises(errors.InvalidArgument, match=r"^slot_names: "):
        E.explain_selection(policy, x, allowed, [False] * 2, ["a", "b"], ("a",), sel)
    with pytest.raises(errors.InvalidArgument, match="allowed"):
        policy.estimates(np.ones(5, dtype=np.uint8))


def test_explain_changes_nothing() -> None:
    """Explaining reads the state only: the next choices are those of a policy never asked."""
    a, _, _ = trained(P.ThompsonGaussian(), seed=4)
    b, _, _ = trained(P.ThompsonGaussian(), seed=4)
    allowed = np.ones(K + 1, dtype=np.uint8)
    for _ in range(30):
        sa, sb = a.select(None, allowed), b.select(None, allowed)
        assert sa.arm == sb.arm and same(sa.scores, sb.scores)
        E.explain_selection(a, None, allowed, [False] * (K + 1), IDS, (), sa)
        a.estimates()
    assert same(a.get_state()["n"], b.get_state()["n"])


def test_docstring_examples() -> None:
    result = doctest.testmod(E, optionflags=doctest.ELLIPSIS)
    assert result.attempted >= 4 and result.failed == 0

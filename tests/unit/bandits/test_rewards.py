"""The reward calculator of DESIGN.md: weights, presets, maxima, quality, the retry penalty."""

from __future__ import annotations

import doctest

import pytest
from hypothesis import given
from hypothesis import strategies as st

from llmopt import errors
from llmopt.bandits import rewards
from llmopt.bandits.rewards import (
    Feedback,
    Outcome,
    RewardConfig,
    check_raw_reward,
    compute_reward,
    feedback_quality,
    outcome_quality,
)


def test_doctests() -> None:
    result = doctest.testmod(rewards)
    assert result.attempted > 5 and result.failed == 0


@pytest.mark.parametrize(
    ("preset", "weights"),
    [
        ("", (0.6, 0.3, 0.1)),
        ("balanced", (0.6, 0.3, 0.1)),
        ("quality-focused", (0.8, 0.15, 0.05)),
        ("cost-focused", (0.4, 0.5, 0.1)),
        ("latency-focused", (0.4, 0.3, 0.3)),
        ("Cost-Focused", (0.4, 0.5, 0.1)),
    ],
)
def test_presets(preset: str, weights: tuple[float, float, float]) -> None:
    assert RewardConfig.from_spec(preset=preset).weights == weights


def test_custom_weights_are_normalised_and_maxima_default() -> None:
    cfg = RewardConfig.from_spec(weights=(1.0, 1.0, 0.0), max_cost=0.0, max_latency_ms=2000.0)
    assert cfg.weights == (0.5, 0.5, 0.0)
    assert cfg.max_cost == 1.0 and cfg.max_latency_ms == 2000.0
    assert cfg.preset == ""


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"preset": "fast"}, "reward.preset"),
        ({"preset": "balanced", "weights": (1.0, 0.0, 0.0)}, "reward.preset"),
        ({"weights": (-1.0, 1.0, 1.0)}, "reward.quality_weight"),
        ({"weights": (1.0, float("nan"), 1.0)}, "reward.cost_weight"),
        ({"max_cost": -1.0}, "reward.max_cost"),
        ({"max_latency_ms": float("inf")}, "reward.max_latency_ms"),
    ],
)
def test_bad_reward_configs_are_refused(kwargs: dict, field: str) -> None:
    with pytest.raises(errors.InvalidArgument, match=field.replace(".", r"\.")):
        RewardConfig.from_spec(**kwargs)


def test_feedback_increments() -> None:
    assert feedback_quality(Feedback()) == 0.5
    assert feedback_quality(Feedback(task_completed=True)) == pytest.approx(0.8)
    assert feedback_quality(Feedback(retried=True)) == pytest.approx(0.1)
    assert feedback_quality(Feedback(edited=True)) == pytest.approx(0.4)
    assert feedback_quality(Feedback(dwell_seconds=10.0)) == pytest.approx(0.7)
    assert feedback_quality(Feedback(dwell_seconds=120.0)) == pytest.approx(0.7)
    assert feedback_quality(Feedback(dwell_seconds=5.0)) == 0.5  # neither engaged nor bounced
    assert feedback_quality(Feedback(dwell_seconds=2.9)) == pytest.approx(0.3)
    assert feedback_quality(Feedback(dwell_seconds=None)) == 0.5  # not measured: no bounce
    assert feedback_quality(Feedback(saved=True)) == pytest.approx(0.7)
    assert feedback_quality(Feedback(task_completed=True, saved=True, dwell_seconds=60)) == 1.0


def test_rating_wins_over_measured_quality() -> None:
    assert outcome_quality(Outcome(quality_score=0.0, feedback=Feedback(rating=5))) == 1.0
    assert outcome_quality(Outcome(quality_score=0.6, feedback=Feedback(rating=2))) == 0.4


def test_a_score_without_feedback_is_the_quality_itself() -> None:
    # No implicit signal was sent: the neutral 0.5 of the feedback term is not averaged in.
    assert outcome_quality(Outcome(quality_score=0.6)) == 0.6
    assert outcome_quality(Outcome(quality_score=0.0)) == 0.0
    assert outcome_quality(Outcome(quality_score=1.0, feedback=Feedback(dwell_seconds=None))) == 1.0
    cfg = RewardConfig()
    assert compute_reward(Outcome(quality_score=0.9), cfg) == pytest.approx(0.6 * 0.9 + 0.4)


@pytest.mark.parametrize(
    ("feedback", "inferred"),
    [
        (Feedback(task_completed=True), 0.8),
        (Feedback(retried=True), 0.1),
        (Feedback(edited=True), 0.4),
        (Feedback(saved=True), 0.7),
        (Feedback(dwell_seconds=5.0), 0.5),  # measured, neutral: still a signal
        (Feedback(dwell_seconds=0.0), 0.3),
    ],
)
def test_each_feedback_signal_blends_with_the_score(feedback: Feedback, inferred: float) -> None:
    assert feedback.has_signal
    got = outcome_quality(Outcome(quality_score=0.6, feedback=feedback))
    assert got == pytest.approx((0.6 + inferred) / 2)


def test_no_flag_and_no_dwell_is_no_signal() -> None:
    assert not Feedback().has_signal
    assert not Feedback(rating=3).has_signal  # explicit, not implicit
    assert outcome_quality(Outcome()) == 0.5  # nothing measured at all: neutral


def test_reward_formula_and_maxima() -> None:
    cfg = RewardConfig.from_spec(max_cost=0.1, max_latency_ms=1000.0)
    outcome = Outcome(cost=0.05, latency_ms=250.0, feedback=Feedback(rating=4))
    expected = 0.6 * 0.8 + 0.3 * 0.5 + 0.1 * 0.75
    assert compute_reward(outcome, cfg) == pytest.approx(expected)
    # cost and latency beyond their maxima contribute 0, never a negative term
    expensive = Outcome(cost=5.0, latency_ms=1e6, feedback=Feedback(rating=5))
    assert compute_reward(expensive, cfg) == pytest.approx(0.6)


def test_penalty_for_low_quality_or_retry() -> None:
    cfg = RewardConfig()
    low = Outcome(feedback=Feedback(rating=1))  # quality 0.2 < 0.3
    assert compute_reward(low, cfg) == pytest.approx((0.6 * 0.2 + 0.3 + 0.1) * 0.8)
    retried = Outcome(feedback=Feedback(rating=5, retried=True))
    assert compute_reward(retried, cfg) == pytest.approx(0.8)
    at_threshold = Outcome(quality_score=0.3, feedback=Feedback(rating=0, edited=True))
    # quality (0.3 + 0.4) / 2 = 0.35: no penalty
    assert compute_reward(at_threshold, cfg) == pytest.approx(0.6 * 0.35 + 0.4)


def test_penalty_boundary_is_strictly_below_0_3() -> None:
    cfg = RewardConfig()
    assert rewards.LOW_QUALITY == 0.3
    at = Outcome(quality_score=0.3)  # quality exactly 0.3: no penalty
    assert outcome_quality(at) == 0.3
    assert compute_reward(at, cfg) == 0.6 * 0.3 + 0.3 + 0.1
    below = Outcome(quality_score=0.29999999999999993)  # the float just below 0.3
    assert outcome_quality(below) < 0.3
    assert compute_reward(below, cfg) == pytest.approx((0.6 * 0.3 + 0.4) * 0.8)


@pytest.mark.parametrize(
    ("outcome", "field"),
    [
        (Outcome(quality_score=1.5), "outcome.quality_score"),
        (Outcome(quality_score=float("nan")), "outcome.quality_score"),
        (Outcome(cost=-0.01), "outcome.cost"),
        (Outcome(latency_ms=float("inf")), "outcome.latency_ms"),
        (Outcome(tokens=-1), "outcome.tokens"),
        (Outcome(feedback=Feedback(rating=6)), "outcome.feedback.rating"),
        (Outcome(feedback=Feedback(dwell_seconds=-2.0)), "outcome.feedback.dwell_seconds"),
    ],
)
def test_bad_outcomes_are_refused(outcome: Outcome, field: str) -> None:
    with pytest.raises(errors.InvalidArgument, match=field.replace(".", r"\.")):
        compute_reward(outcome, RewardConfig())


@pytest.mark.parametrize("value", [-0.1, 1.01, float("nan"), float("inf")])
def test_raw_rewards_outside_unit_interval_are_refused(value: float) -> None:
    with pytest.raises(errors.InvalidArgument, match="reward"):
        check_raw_reward(value)


finite = st.floats(min_value=0.0, max_value=1e12, allow_nan=False)
weights = st.tuples(finite, finite, finite).filter(lambda w: sum(w) > 1e-9)


@given(
    quality=st.one_of(st.none(), st.floats(0.0, 1.0)),
    cost=finite,
    latency=finite,
    rating=st.integers(0, 5),
    flags=st.tuples(st.booleans(), st.booleans(), st.booleans(), st.booleans()),
    dwell=st.one_of(st.none(), finite),
    w=weights,
    max_cost=st.floats(1e-9, 1e9),
    max_latency=st.floats(1e-9, 1e9),
)
def test_reward_always_in_unit_interval(
    quality, cost, latency, rating, flags, dwell, w, max_cost, max_latency
) -> None:
    cfg = RewardConfig.from_spec(weights=w, max_cost=max_cost, max_latency_ms=max_latency)
    completed, retried, edited, saved = flags
    outcome = Outcome(
        quality_score=quality,
        cost=cost,
        latency_ms=latency,
        feedback=Feedback(rating, completed, retried, edited, dwell, saved),
    )
    reward = compute_reward(outcome, cfg)
    assert 0.0 <= reward <= 1.0
    assert 0.0 <= outcome_quality(outcome) <= 1.0

"""Bandit proto <-> domain converters (llmopt.api.convert_bandits), both ways."""

from __future__ import annotations

import pytest
from google.protobuf.duration_pb2 import Duration

from llmopt import errors
from llmopt.api import convert_bandits as cb
from llmopt.bandits import policies as P
from llmopt.bandits.arms import Arm, LLMConfig
from llmopt.bandits.types import BanditInfo
from llmopt.gen.llmopt.v1 import bandits_pb2 as pb
from llmopt.gen.llmopt.v1 import common_pb2

# Non-default parameters, then the defaults of every registered policy (a new one round-trips
# by being registered).
EXAMPLES = [
    P.EpsilonGreedy(epsilon=0.0, decay=P.EpsilonDecay.LOGARITHMIC, decay_rate=0.5, min_epsilon=0),
    P.UCB1(exploration=0.0),
    P.UCBTuned(),
    P.UCBV(exploration=0.3),
    P.KLUCB(c=3.0),
    P.DiscountedUCB(gamma=0.9, exploration=2.0),
    P.SlidingWindowUCB(window=50, exploration=0.5),
    P.ThompsonBeta(prior_alpha=2.0, prior_beta=3.0),
    P.ThompsonGaussian(prior_mean=0.0, prior_variance=2.0, noise_variance=0.1),
    P.ThompsonGaussian(prior_mean=0.2, prior_kappa=2.0, prior_alpha=3.0, prior_beta=0.5),
    P.EXP3(gamma=0.2),
    P.Softmax(temperature=0.3),
    P.LinUCB(alpha=0.0, lambda_=2.0),
    P.HybridLinUCB(alpha=0.7, lambda_=0.5),
    P.LinearThompson(v=0.1, lambda_=3.0),
    P.DiagonalThompson(prior_variance=4.0, noise_variance=0.5),
]
ALL_CONFIGS = EXAMPLES + [kind() for kind in P.POLICY_TABLE]


@pytest.mark.parametrize("config", ALL_CONFIGS, ids=repr)
def test_every_policy_round_trips(config) -> None:
    msg = cb.to_policy(config)
    assert msg.WhichOneof("kind") == config.ONEOF
    assert cb.from_policy(pb.Policy.FromString(msg.SerializeToString())) == config


def test_gaussian_thompson_learns_its_variance_unless_noise_variance_is_set() -> None:
    learned = cb.from_policy(pb.Policy(thompson_gaussian=pb.ThompsonGaussian()))
    assert learned == P.ThompsonGaussian() and learned.learns_variance
    msg = cb.to_policy(learned)
    assert not msg.thompson_gaussian.HasField("noise_variance")
    assert msg.thompson_gaussian.prior_beta == P.ThompsonGaussian().prior_beta
    fixed = cb.from_policy(pb.Policy(thompson_gaussian=pb.ThompsonGaussian(noise_variance=0.25)))
    assert fixed.noise_variance == 0.25 and not fixed.learns_variance
    with pytest.raises(errors.InvalidArgument, match=r"thompson_gaussian\.prior_kappa"):
        cb.from_policy(pb.Policy(thompson_gaussian=pb.ThompsonGaussian(prior_kappa=0.0)))
    with pytest.raises(errors.InvalidArgument, match=r"thompson_gaussian\.noise_variance"):
        cb.from_policy(pb.Policy(thompson_gaussian=pb.ThompsonGaussian(noise_variance=0.0)))


def test_unset_parameters_take_defaults_and_zero_is_kept() -> None:
    assert cb.from_policy(pb.Policy()) == P.UCB1()
    assert cb.from_policy(pb.Policy(epsilon_greedy=pb.EpsilonGreedy())) == P.EpsilonGreedy()
    explicit_zero = pb.Policy(epsilon_greedy=pb.EpsilonGreedy(epsilon=0.0))
    assert cb.from_policy(explicit_zero).epsilon == 0.0
    assert cb.from_policy(pb.Policy(lin_ucb=pb.LinUCB(**{"lambda": 4.0}))) == P.LinUCB(lambda_=4.0)


def test_bandit_round_trips() -> None:
    msg = pb.Bandit(
        name="router",
        policy=pb.Policy(softmax=pb.Softmax(temperature=0.2)),
        arms=[
            common_pb2.Arm(
                arm_id="a",
                config=common_pb2.LLMConfig(
                    model="gpt-4o",
                    temperature=0.3,
                    top_p=0.9,
                    max_tokens=512,
                    system_prompt="be brief",
                ),
                metadata={"owner": "team-x"},
            )
        ],
        reward=pb.RewardConfig(quality_weight=2, cost_weight=1, latency_weight=1, max_cost=0.5),
        reward_wait=Duration(seconds=90, nanos=500_000_000),
        default_reward=0.0,
        seed=7,
        description="d",
    )
    msg.arms[0].config.extra.update({"top_k": 40, "stop": ["\n"]})
    spec = cb.from_bandit(msg)
    assert spec.reward_wait == 90.5 and spec.default_reward == 0.0
    assert spec.reward.weights == (0.5, 0.25, 0.25) and spec.reward.max_latency_ms == 5000.0
    assert spec.arms[0].config.extra == {"top_k": 40, "stop": ["\n"]}
    removed = Arm("old", LLMConfig("m"))
    back = cb.to_bandit(BanditInfo(spec, ((spec.arms[0], False), (removed, True)), 10, 1.5))
    assert back.context_dim == 10 and back.create_time.seconds == 1
    assert [a.arm_id for a in back.removed_arms] == ["old"]
    assert back.arms[0] == msg.arms[0]
    assert back.reward_wait == msg.reward_wait and back.default_reward == 0.0
    again = cb.from_bandit(
        pb.Bandit(
            name=back.name,
            policy=back.policy,
            arms=back.arms,
            reward=back.reward,
            reward_wait=back.reward_wait,
            default_reward=back.default_reward,
            seed=back.seed,
            description=back.description,
        )
    )
    assert again == spec


def test_outcome_optional_fields() -> None:
    bare = cb.from_outcome(pb.Outcome(cost=0.1))
    assert bare.quality_score is None and bare.feedback.dwell_seconds is None
    full = cb.from_outcome(
        pb.Outcome(quality_score=0.0, error=True, feedback=pb.Feedback(dwell_seconds=0.0, rating=2))
    )
    assert full.quality_score == 0.0 and full.feedback.dwell_seconds == 0.0 and full.error


@pytest.mark.parametrize(
    ("msg", "field"),
    [
        (pb.Bandit(name="x", reward_wait=Duration(seconds=0)), "bandit.reward_wait"),
        (pb.Bandit(name="x", context_dim=3), "bandit.context_dim"),
        (pb.Bandit(name="x", removed_arms=[common_pb2.Arm(arm_id="a")]), "bandit.removed_arms"),
        (pb.Bandit(name="x", policy=pb.Policy(ucb_v=pb.UCBV(exploration=0))), "ucb_v.exploration"),
    ],
)
def test_bad_bandits_are_refused(msg: pb.Bandit, field: str) -> None:
    with pytest.raises(errors.InvalidArgument, match=field.replace(".", r"\.")):
        cb.from_bandit(msg)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_numbers_in_config_extra_are_refused_naming_their_path(bad: float) -> None:
    arm = common_pb2.Arm(arm_id="a", config=common_pb2.LLMConfig(model="m"))
    arm.config.extra.update({"ok": 1.5, "deep": {"list": [1, {"x": bad}]}})
    bandit = pb.Bandit(name="b", arms=[common_pb2.Arm(arm_id="z"), arm])
    with pytest.raises(
        errors.InvalidArgument,
        match=r"^bandit\.arms\[1\]\.config\.extra\['deep'\]\['list'\]\[1\]\['x'\]: ",
    ):
        cb.from_bandit(bandit)
    with pytest.raises(errors.InvalidArgument, match=r"^arm\.config\.extra\['deep'\]"):
        cb.from_arm(arm)  # AddArm's arm
    arm.config.extra["deep"]["list"][1]["x"] = 2.0
    assert cb.from_arm(arm).config.extra == {"ok": 1.5, "deep": {"list": [1, {"x": 2.0}]}}


# -- explanations, estimates and the decision log -------------------------------------------------

import math  # noqa: E402

import numpy as np  # noqa: E402

from llmopt.bandits.explain import (  # noqa: E402
    ArmEstimate,
    ArmEstimates,
    ArmExplanation,
    ArmStatus,
    Explanation,
    FeatureContribution,
)
from llmopt.bandits.rewards import Feedback, Outcome  # noqa: E402
from llmopt.bandits.types import Decision, DecisionStatus, LoggedDecision  # noqa: E402
from llmopt.features.context import RequestContext  # noqa: E402

NAN, INF = math.nan, math.inf
EXPLANATION = Explanation(
    policy="lin_ucb",
    exploration_kind="optimism",
    chosen_arm_id="a",
    propensity=1.0,
    reason="chose a: highest upper bound",
    arms=(
        ArmExplanation(
            "a", ArmStatus.ELIGIBLE, 0.9, 0.7, 0.2, 0.7, NAN, NAN, 1.0, 3.0,
            (FeatureContribution("bias", 1.0, 0.5), FeatureContribution("task_type", 0.5, 0.2)),
        ),
        ArmExplanation("b", ArmStatus.ELIGIBLE, INF, 0.0, INF, 0.0, NAN, NAN, 0.0, 0.0),
        ArmExplanation("c", ArmStatus.REMOVED, NAN, NAN, NAN, 0.4, NAN, NAN, NAN, 7.0),
    ),
)  # fmt: skip


def test_an_explanation_round_trips() -> None:
    msg = cb.to_explanation(EXPLANATION)
    assert msg.arms[2].status == pb.REMOVED and msg.arms[1].score == INF
    assert [c.name for c in msg.arms[0].contributions] == ["bias", "task_type"]
    assert cb.from_explanation(pb.Explanation.FromString(msg.SerializeToString())) == EXPLANATION


def test_an_explained_decision_answer_is_the_plain_one_with_field_7_appended() -> None:
    arm = Arm("a", LLMConfig("m"))
    scores = np.array([0.9, INF, NAN])
    plain = Decision("d-1", "b", arm, 1.0, ("a", "b", "c"), scores, 12.5)
    explained = Decision("d-1", "b", arm, 1.0, ("a", "b", "c"), scores, 12.5, EXPLANATION)
    arm_bytes = lambda a: cb.to_arm(a).SerializeToString()  # noqa: E731
    before = cb.decision_answer(plain, arm_bytes)
    after = cb.decision_answer(explained, arm_bytes)
    assert after.startswith(before)
    parsed = pb.Decision.FromString(after)
    assert parsed.explanation == cb.to_explanation(EXPLANATION)
    parsed.ClearField("explanation")
    assert parsed == pb.Decision.FromString(before)
    assert not pb.Decision.FromString(before).HasField("explanation")


def test_a_logged_decision_converts_every_field() -> None:
    ctx = RequestContext(task_type="summarization", hour_of_day=3, metadata={"k": "v"})
    outcome = Outcome(quality_score=0.5, cost=0.1, feedback=Feedback(rating=4, dwell_seconds=2.0))
    d = LoggedDecision(
        decision_id="d-1",
        bandit="b",
        arm=Arm("a", LLMConfig("m")),
        propensity=0.5,
        arm_ids=("a", "b"),
        arm_scores=np.array([0.25, NAN]),
        time=100.5,
        expire_time=200.0,
        context=ctx,
        context_vector=np.arange(3.0),
        slot_names=("x", "y", "z"),
        status=DecisionStatus.REWARDED,
        reward=0.75,
        outcome=outcome,
        reward_time=150.25,
        explanation=EXPLANATION,
        explanation_recomputed=True,
    )
    msg = cb.to_logged_decision(d)
    assert (msg.decision_id, msg.bandit, msg.arm.arm_id, msg.propensity) == ("d-1", "b", "a", 0.5)
    assert [(s.arm_id, s.score) for s in msg.scores] == [("a", 0.25)]
    assert msg.time.seconds == 100 and msg.time.nanos == 500_000_000
    assert msg.expire_time.seconds == 200 and msg.reward_time.nanos == 250_000_000
    assert msg.context.task_type == "summarization" and msg.context.hour_of_day == 3
    assert dict(msg.context.metadata) == {"k": "v"}
    assert list(msg.context_vector) == [0.0, 1.0, 2.0] and list(msg.slot_names) == ["x", "y", "z"]
    assert msg.status == pb.REWARDED and msg.reward == 0.75
    assert msg.outcome.quality_score == 0.5 and msg.outcome.feedback.dwell_seconds == 2.0
    assert cb.from_explanation(msg.explanation) == EXPLANATION and msg.explanation_recomputed
    assert not msg.degraded
    bare = cb.to_logged_decision(
        LoggedDecision(
            "d-2", "b", Arm("a", LLMConfig("m")), 1.0, ("a",), np.array([1.0]), 1.0, 2.0, None,
            np.zeros(1), ("x",), DecisionStatus.OPEN,
        )
    )  # fmt: skip
    assert not bare.HasField("context") and not bare.HasField("reward")
    assert not bare.HasField("outcome") and not bare.HasField("explanation")
    assert not bare.HasField("reward_time") and bare.status == pb.OPEN


def test_arm_estimates_convert() -> None:
    est = ArmEstimates(
        "b",
        "lin_ucb",
        ("x", "y"),
        (
            ArmEstimate("a", False, 3.0, NAN, NAN, NAN, NAN, (0.5, -0.25), (0.1, 0.2)),
            ArmEstimate("c", True, 1.0, 0.5, 0.1, 0.3, 0.7, probability=0.25),
        ),
    )
    msg = cb.to_arm_estimates(est)
    assert list(msg.slot_names) == ["x", "y"] and msg.policy == "lin_ucb"
    assert list(msg.arms[0].theta) == [0.5, -0.25] and list(msg.arms[0].theta_sd) == [0.1, 0.2]
    assert math.isnan(msg.arms[0].mean) and msg.arms[1].removed
    assert (msg.arms[1].ci_low, msg.arms[1].ci_high, msg.arms[1].probability) == (0.3, 0.7, 0.25)


def test_a_list_decisions_request_converts_and_bad_nanos_name_the_field() -> None:
    msg = pb.ListDecisionsRequest(bandit="b", page=common_pb2.PageRequest(page_size=5))
    assert cb.from_list_decisions(msg) == ("b", None, None, 5, "")
    msg.start_time.seconds, msg.start_time.nanos = 10, 500_000_000
    msg.end_time.seconds = 20
    assert cb.from_list_decisions(msg)[1:3] == (10.5, 20.0)
    msg.end_time.nanos = -1
    with pytest.raises(errors.InvalidArgument, match=r"end_time\.nanos"):
        cb.from_list_decisions(msg)
    msg.end_time.nanos, msg.start_time.seconds = 0, 2**62  # found by the fuzzer
    with pytest.raises(errors.InvalidArgument, match=r"start_time\.seconds"):
        cb.from_list_decisions(msg)

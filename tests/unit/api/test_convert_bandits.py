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

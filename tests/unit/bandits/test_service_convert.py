"""Bandit proto <-> domain converters (llmopt.api.convert_bandits), both ways."""

from __future__ import annotations

import numpy as np
import pytest
from google.protobuf.duration_pb2 import Duration
from llmopt import errors
from llmopt.api import convert_bandits as cb
from llmopt.bandits import policies as P
from llmopt.bandits.arms import Arm, LLMConfig
from llmopt.bandits.types import MAX_ARMS, BanditInfo, Decision, RewardReceipt
from llmopt.gen.llmopt.v1 import bandits_pb2 as pb
from llmopt.gen.llmopt.v1 import common_pb2

ALL_CONFIGS = [
    P.EpsilonGreedy(epsilon=0.0, decay=P.EpsilonDecay.LOGARITHMIC, decay_rate=0.5, min_epsilon=0),
    P.UCB1(exploration=0.0),
    P.UCBTuned(),
    P.UCBV(exploration=0.3),
    P.KLUCB(c=3.0),
    P.DiscountedUCB(gamma=0.9, exploration=2.0),
    P.SlidingWindowUCB(window=50, exploration=0.5),
    P.ThompsonBeta(prior_alpha=2.0, prior_beta=3.0),
    P.ThompsonGaussian(prior_mean=0.0, prior_variance=2.0, noise_variance=0.1),
    P.EXP3(gamma=0.2),
    P.Softmax(temperature=0.3),
    P.LinUCB(alpha=0.0, lambda_=2.0),
    P.HybridLinUCB(alpha=0.7, lambda_=0.5),
    P.LinearThompson(v=0.1, lambda_=3.0),
    P.DiagonalThompson(prior_variance=4.0, noise_variance=0.5),
]


@pytest.mark.parametrize("config", ALL_CONFIGS, ids=lambda c: type(c).__name__)
def test_every_policy_round_trips(config) -> None:
    msg = cb.to_policy(config)
    assert msg.WhichOneof("kind") == config.ONEOF
    assert cb.from_policy(pb.Policy.FromString(msg.SerializeToString())) == config


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


def _library_decision(d: Decision, arm: common_pb2.Arm) -> pb.Decision:
    """The Decision as protobuf's own runtime builds it: what the native answer must equal."""
    msg = pb.Decision(
        decision_id=d.decision_id,
        bandit=d.bandit,
        arm=arm,
        propensity=d.propensity,
        time=cb.to_timestamp(d.time),
    )
    for arm_id, score in d.scores:
        msg.scores.add(arm_id=arm_id, score=score)
    return msg


ARM = Arm("a1", LLMConfig(model="gpt-x", temperature=0.3, max_tokens=256), {"tier": "b"})


@pytest.mark.parametrize(
    ("ids", "scores", "propensity", "when"),
    [
        (("a1", "a2", "a3"), [0.5, float("nan"), 0.0], 0.25, 1_764_151_200.123456),
        (("a1", "a2", "a3"), [1e300, -1e-300], 1.0, 1_700_000_000.999999999),  # fewer scores
        (("a1",), [-0.0], -0.0, -1.5),  # -0.0 is written, as protobuf writes it
        (("a1", "ünïcode"), [2.0, 3.0], 0.0, 0.0),  # zero propensity and time left out
        (tuple(f"arm-{i}" for i in range(300)), [float(i) for i in range(300)], 0.5, 12.5),
    ],
)
def test_the_native_decision_answer_is_the_bytes_protobuf_would_write(
    ids: tuple[str, ...], scores: list[float], propensity: float, when: float
) -> None:
    d = Decision("dec-1", "router", ARM, propensity, ids, np.array(scores), when)
    arm = cb.to_arm(ARM)
    answer = cb.decision_answer(d, lambda a: cb.to_arm(a).SerializeToString())
    assert answer == _library_decision(d, arm).SerializeToString()
    parsed = pb.Decision.FromString(answer)
    assert [(s.arm_id, s.score) for s in parsed.scores] == list(d.scores)


def test_the_native_decision_answer_takes_scores_of_any_float_layout() -> None:
    ids = ("a1", "a2", "a3")
    expected = Decision("d", "b", ARM, 0.5, ids, np.array([1.0, 2.0, 3.0]), 1.0)
    for scores in (
        np.array([1.0, 2.0, 3.0], dtype=">f8"),
        np.array([1.0, 2.0, 3.0], dtype=np.float32),
        np.arange(1.0, 6.0)[::2][[0, 0, 0]] * [1, 2, 3],
    ):
        d = Decision("d", "b", ARM, 0.5, ids, scores, 1.0)
        assert cb.decision_answer(d, lambda a: b"") == cb.decision_answer(expected, lambda a: b"")


def test_the_native_decision_answer_lists_as_many_arms_as_a_bandit_may_have() -> None:
    ids = tuple(f"a{i}" for i in range(MAX_ARMS))
    d = Decision("d", "b", ARM, 0.5, ids, np.linspace(-1.0, 1.0, MAX_ARMS), 1.0)
    answer = cb.decision_answer(d, lambda a: cb.to_arm(a).SerializeToString())
    assert answer == _library_decision(d, cb.to_arm(ARM)).SerializeToString()


@pytest.mark.parametrize(
    "receipt",
    [
        RewardReceipt("dec-1", "arm-ä", 0.75),
        RewardReceipt("", "", 0.0),  # empty and zero fields are left out
        RewardReceipt("d" * 300, "a", -0.0),  # -0.0 is written, as protobuf writes it
    ],
)
def test_the_native_reward_answer_is_the_bytes_protobuf_would_write(receipt: RewardReceipt) -> None:
    expected = pb.RecordRewardResponse(
        decision_id=receipt.decision_id, arm_id=receipt.arm_id, reward=receipt.reward
    )
    assert cb.reward_answer(receipt) == expected.SerializeToString()

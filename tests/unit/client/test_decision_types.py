"""The client's decision-log values read from the contract's messages (llmopt.client.types)."""

from __future__ import annotations

import math

from llmopt.client import types as ct
from llmopt.gen.llmopt.v1 import bandits_pb2 as pb
from llmopt.gen.llmopt.v1 import common_pb2


def explanation_msg() -> pb.Explanation:
    return pb.Explanation(
        policy="lin_ucb",
        exploration_kind="optimism",
        chosen_arm_id="a",
        propensity=1.0,
        reason="chose a",
        arms=[
            pb.ArmExplanation(
                arm_id="a",
                status=pb.ELIGIBLE,
                score=0.9,
                exploitation=0.7,
                exploration=0.2,
                contributions=[pb.FeatureContribution(name="bias", value=1.0, contribution=0.7)],
            ),
            pb.ArmExplanation(arm_id="b", status=pb.EXCLUDED, score=math.nan),
        ],
    )


def test_a_decision_carries_its_explanation_only_when_the_answer_has_one() -> None:
    msg = pb.Decision(decision_id="d", bandit="b", arm=common_pb2.Arm(arm_id="a"))
    assert ct.from_decision(msg).explanation is None
    msg.explanation.CopyFrom(explanation_msg())
    e = ct.from_decision(msg).explanation
    assert e is not None and e.chosen_arm_id == "a" and e.reason == "chose a"
    assert [a.status for a in e.arms] == ["eligible", "excluded"]
    assert e.arms[0].contributions == (ct.FeatureContribution("bias", 1.0, 0.7),)
    assert math.isnan(e.arms[1].score)


def test_a_logged_decision_reads_every_field() -> None:
    msg = pb.LoggedDecision(
        decision_id="d",
        bandit="b",
        arm=common_pb2.Arm(arm_id="a"),
        propensity=0.5,
        scores=[pb.ArmScore(arm_id="a", score=0.25)],
        context=common_pb2.RequestContext(
            task_type="summarization", output_length_category=common_pb2.LONG, hour_of_day=0
        ),
        context_vector=[1.0, 2.0],
        slot_names=["x", "y"],
        status=pb.REWARDED,
        reward=0.0,
        outcome=pb.Outcome(quality_score=0.5, feedback=pb.Feedback(rating=3)),
        explanation=explanation_msg(),
        explanation_recomputed=True,
    )
    msg.time.seconds = 100
    msg.reward_time.seconds = 150
    msg.expire_time.seconds = 200
    d = ct.from_logged_decision(msg)
    assert (d.decision_id, d.bandit, d.arm.arm_id, d.scores) == ("d", "b", "a", {"a": 0.25})
    assert d.context == ct.Context(task_type="summarization", output_length="long", hour_of_day=0)
    assert d.context_vector == (1.0, 2.0) and d.slot_names == ("x", "y")
    assert d.status == "rewarded" and d.reward == 0.0  # a zero reward is a reward
    assert d.outcome is not None and d.outcome.quality_score == 0.5
    assert d.outcome.feedback.rating == 3 and d.outcome.feedback.dwell_seconds is None
    assert (d.time, d.reward_time, d.expire_time) == (100.0, 150.0, 200.0)
    assert d.explanation is not None and d.explanation_recomputed and not d.degraded
    bare = ct.from_logged_decision(pb.LoggedDecision(decision_id="e", status=pb.OPEN))
    assert bare.context is None and bare.reward is None and bare.outcome is None
    assert bare.reward_time is None and bare.explanation is None and bare.status == "open"


def test_arm_estimates_read_by_arm_id() -> None:
    msg = pb.ArmEstimates(
        bandit="b",
        policy="ucb1",
        arms=[
            pb.ArmEstimate(arm_id="a", pulls=3, mean=0.5, ci_low=0.2, ci_high=0.8),
            pb.ArmEstimate(arm_id="c", removed=True, theta=[0.1], theta_sd=[0.2]),
        ],
    )
    est = ct.from_arm_estimates(msg)
    assert list(est.arms) == ["a", "c"] and est.arms["a"].mean == 0.5
    assert est.arms["c"].removed and est.arms["c"].theta == (0.1,)

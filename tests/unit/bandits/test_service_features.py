"""Bandits reading a feature set's vectors and feeding per-arm outcome aggregates, with the real
FeatureService of the server."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from llmopt import errors
from llmopt.bandits import policies as P
from llmopt.bandits.arms import Arm, LLMConfig
from llmopt.bandits.rewards import Feedback, Outcome
from llmopt.bandits.service import BanditService
from llmopt.bandits.types import BanditSpec
from llmopt.features import ARM_OUTCOMES_SET, FeatureService, RequestContext
from llmopt.features.spec import Feature, FeatureSet


@pytest.fixture
def features(tmp_path: Path) -> Iterator[FeatureService]:
    fs = FeatureService(tmp_path / "features")
    fs.warm_up()
    fs.create_set(
        FeatureSet(
            name="users",
            entity_key="user_id",
            features=(
                Feature("spend"),
                Feature("tenure"),
                Feature("length", source="context.input_length"),
            ),
        )
    )
    fs.write("users", [("u1", {"spend": 3.5, "tenure": 2.0}, None)])
    yield fs
    fs.close()


@pytest.fixture
def svc(tmp_path: Path, features: FeatureService) -> Iterator[BanditService]:
    service = BanditService(tmp_path / "bandits", features=features, sweep_interval=0)
    service.warm_up()
    yield service
    service.close()


ARMS = (Arm("small", LLMConfig("m-small")), Arm("large", LLMConfig("m-large")))


def test_bandit_reads_the_feature_set_vector(svc: BanditService, features: FeatureService) -> None:
    info = svc.create_bandit(BanditSpec("fs", P.LinUCB(), ARMS, feature_set="users", seed=1))
    assert info.dim == features.vector_width("users") == 3
    ctx = RequestContext(user_id="u1", input_length=42)
    d = svc.select_arm("fs", ctx)
    bandit = svc._bandits["fs"]
    logged = bandit._open[d.decision_id].x
    expected = features.vector("users", ctx).values.astype(np.float64)
    np.testing.assert_array_equal(logged, expected)
    assert logged[:2].tolist() == [3.5, 2.0]
    # entity_ids name the entity explicitly
    d2 = svc.select_arm("fs", RequestContext(input_length=1), entity_ids={"user_id": "u1"})
    assert svc._bandits["fs"]._open[d2.decision_id].x[0] == 3.5
    svc.record_reward(d.decision_id, reward=1.0)
    with pytest.raises(errors.InvalidArgument, match="needs 3"):
        svc.select_arm("fs", vector=np.ones(10))


def test_unknown_feature_set_is_refused(svc: BanditService) -> None:
    with pytest.raises(errors.NotFound, match="nope"):
        svc.create_bandit(BanditSpec("bad", P.LinUCB(), ARMS, feature_set="nope"))


def test_rewards_feed_the_arm_outcome_aggregates(
    svc: BanditService, features: FeatureService
) -> None:
    svc.create_bandit(BanditSpec("costs", P.UCB1(), ARMS))
    d = svc.select_arm("costs")
    svc.record_reward(
        d.decision_id,
        outcome=Outcome(cost=0.02, latency_ms=850.0, feedback=Feedback(rating=4)),
    )
    d2 = svc.select_arm("costs")
    svc.record_reward(d2.decision_id, outcome=Outcome(latency_ms=30000.0, error=True))
    keys = {f"costs/{d.arm.arm_id}", f"costs/{d2.arm.arm_id}"}
    counts = {}
    for key in keys:
        for _ in range(100):  # the aggregate row is committed in the background
            (row,) = features.read(ARM_OUTCOMES_SET, [key], ["latency_ms_count_1h"])
            if row.values["latency_ms_count_1h"].value:
                break
            time.sleep(0.02)
        counts[key] = row.values["latency_ms_count_1h"].value
    assert sum(counts.values()) == 2


def test_an_explanation_names_the_feature_sets_slots(
    svc: BanditService, features: FeatureService
) -> None:
    svc.create_bandit(BanditSpec("named", P.LinUCB(), ARMS, feature_set="users", seed=1))
    names = features.vector("users", RequestContext(user_id="u1")).slot_names
    assert len(names) == 3
    ctx = RequestContext(user_id="u1", input_length=42)
    d = svc.select_arm("named", ctx, explain=True)
    assert d.explanation is not None
    for arm in d.explanation.arms:
        assert [c.name for c in arm.contributions] == list(names)
        assert [c.value for c in arm.contributions][:2] == [3.5, 2.0]
    logged = svc.get_decision(d.decision_id)
    assert logged.slot_names == tuple(names) and logged.context == ctx
    assert svc.arm_estimates("named").slot_names == tuple(names)

"""Bandits and features together through the server: SelectArm on a feature set's vector (stored
entity values joined with the request's facts), and rewards feeding the per-arm aggregates."""

from __future__ import annotations

import time

import pytest

from llmopt.client import Arm, Client, ClientError, Context, Feature


@pytest.fixture
def client(server):
    with Client(server.address) as c:
        yield c


def test_select_on_a_feature_set_and_outcomes_feed_arm_aggregates(client):
    client.create_feature_set(
        "itdf-users",
        [
            Feature("tier", "float", "minmax", {"lo": 0, "hi": 3}, default=0.0),
            Feature(
                "task",
                "category",
                "one_hot",
                {"vocabulary": ["generation", "classification"]},
                source="context.task_type",
            ),
        ],
        entity_key="user_id",
    )
    client.write_features("itdf-users", {"gold-user": {"tier": 3.0}})
    vec = client.get_feature_vector(
        "itdf-users",
        Context(task_type="generation", user_id="gold-user"),
    )
    assert dict(zip(vec.slot_names, vec.values.tolist(), strict=True))["tier"] == 1.0

    arms = [Arm(arm_id=f"itdf-{m}", model=m) for m in ("small", "large")]
    bandit = client.create_bandit("itdf-router", arms, policy="lin_ucb", feature_set="itdf-users")
    assert bandit.feature_set == "itdf-users"
    decision = client.select_arm(
        "itdf-router",
        Context(task_type="generation", user_id="gold-user"),
        entity_ids={"user_id": "gold-user"},
    )
    assert decision.arm.arm_id in {"itdf-small", "itdf-large"}
    client.record_reward(decision.decision_id, quality=0.9, cost=0.01, latency_ms=800.0)

    key = f"itdf-router/{decision.arm.arm_id}"
    deadline = time.monotonic() + 10  # outcome rows are committed in the background
    while True:
        values = client.get_features("arm_outcomes", [key])[key]
        if values.get("latency_ms_mean_5m") is not None:
            break
        assert time.monotonic() < deadline, values
        time.sleep(0.05)
    assert values["latency_ms_mean_5m"] == pytest.approx(800.0)
    assert values["cost_mean_5m"] == pytest.approx(0.01)


def test_bandit_on_an_unknown_feature_set_is_refused(client):
    with pytest.raises(ClientError) as err:
        client.create_bandit("itdf-bad", [Arm(arm_id="a", model="m")], feature_set="no-such-set")
    assert "no-such-set" in err.value.message

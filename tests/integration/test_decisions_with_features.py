"""Bandits and features together through the server: SelectArm on a feature set's vector (stored
entity values joined with the request's facts), and rewards feeding the per-arm aggregates."""

from __future__ import annotations

import time

import pytest

from llmopt.client import AlreadyExists, Arm, Client, ClientError, Context, Feature


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


def test_a_retry_is_the_same_request_even_after_its_features_moved(client):
    """A retry is told from another request by what the caller sent, not by the vector built
    from it: the entity's stored features may change between the two."""
    client.create_feature_set(
        "itdf-retry",
        [Feature("tier", "float", "minmax", {"lo": 0, "hi": 3}, default=0.0)],
        entity_key="user_id",
    )
    client.write_features("itdf-retry", {"u1": {"tier": 1.0}, "u2": {"tier": 2.0}})
    arms = [Arm(arm_id=f"itdr-{m}", model=m) for m in ("small", "large")]
    client.create_bandit("itdf-retry-router", arms, policy="lin_ucb", feature_set="itdf-retry")
    ctx = Context(task_type="generation", user_id="u1")
    first = client.select_arm(
        "itdf-retry-router", ctx, decision_id="itdr-1", entity_ids={"user_id": "u1"}
    )
    client.write_features("itdf-retry", {"u1": {"tier": 3.0}})
    again = client.select_arm(
        "itdf-retry-router", ctx, decision_id="itdr-1", entity_ids={"user_id": "u1"}
    )
    assert (again.decision_id, again.arm, again.propensity) == (
        first.decision_id,
        first.arm,
        first.propensity,
    )
    with pytest.raises(AlreadyExists) as err:
        client.select_arm(
            "itdf-retry-router", ctx, decision_id="itdr-1", entity_ids={"user_id": "u2"}
        )
    assert "itdr-1" in err.value.message
    assert client.bandit_stats("itdf-retry-router").decisions == 1

"""``llmopt-server --demo``: the demo is there on first start, and never seeded twice."""

from __future__ import annotations

import grpc
import numpy as np
import pytest

from llmopt.client import Client, ClientError
from llmopt.demo import (
    DEMO_ARMS,
    DEMO_BANDIT,
    DEMO_CHALLENGER_PERCENT,
    DEMO_FEATURE_SET,
    DEMO_MODEL,
    QUALITY_FEATURES,
)


def demo_server(server_factory, data_dir=None):  # type: ignore[no-untyped-def]
    proc = server_factory("--demo", data_dir=data_dir)
    if "demo:" not in proc.log():
        pytest.skip("the server does not call llmopt.demo.seed_demo yet (App.start wiring)")
    return proc


def test_demo_is_seeded_once(server_factory, tmp_path):
    data = tmp_path / "demo-data"
    proc = demo_server(server_factory, data)
    with Client(proc.address) as client:
        bandit = client.get_bandit(DEMO_BANDIT)
        assert [a.arm_id for a in bandit.arms] == [a.arm_id for a in DEMO_ARMS]
        for arm in bandit.arms:
            assert arm.model and arm.max_tokens > 0
            assert float(arm.metadata["price_per_1k_output_tokens"]) > 0
        decision = client.select_arm(DEMO_BANDIT)
        client.record_reward(decision.decision_id, quality=0.9, cost=0.001, latency_ms=500)

        model = client.get_model(DEMO_MODEL)
        assert model.aliases == {"champion": 1, "challenger": 2}
        policy = client.get_traffic_policy(DEMO_MODEL)
        assert (policy.mode, policy.challenger_percent) == ("split", DEMO_CHALLENGER_PERCENT)
        rows = np.array([[0.6, 1.0, 0.55, 0.40], [0.6, 1.0, 0.55, 0.85]], dtype=np.float32)
        assert rows.shape[1] == len(QUALITY_FEATURES)
        quality = client.predict(DEMO_MODEL, rows, alias="champion")
        assert quality.shape == (2, 1) and quality[0, 0] < quality[1, 0]  # capability matters
        variants = {client.infer(DEMO_MODEL, rows, routing_key=f"k{i}").variant for i in range(60)}
        assert variants == {"champion", "challenger"}

        fs = client.get_feature_set(DEMO_FEATURE_SET)
        assert fs.version == 1 and fs.entity_key == "user_id"
        assert client.get_features(DEMO_FEATURE_SET, ["demo-user"], ["avg_quality_7d"]) == {
            "demo-user": {"avg_quality_7d": pytest.approx(0.91)}
        }
    proc.terminate()

    again = server_factory("--demo", data_dir=data)
    assert "demo: seeded" not in again.log().split("received SIGTERM")[-1]
    with Client(again.address) as client:
        assert client.bandit_stats(DEMO_BANDIT).rewards == 1  # the state survived, not re-made
        assert client.get_model(DEMO_MODEL).latest_version == 2
        assert client.get_feature_set(DEMO_FEATURE_SET).version == 1
        assert len([b for b in client.list_bandits() if b.name == DEMO_BANDIT]) == 1


def test_demo_leaves_a_used_data_dir_alone(server_factory, tmp_path):
    data = tmp_path / "used"
    plain = server_factory(data_dir=data)
    with Client(plain.address) as client:
        client.create_model("mine")
    plain.terminate()
    proc = server_factory("--demo", data_dir=data)
    if "demo:" not in proc.log():
        pytest.skip("the server does not call llmopt.demo.seed_demo yet (App.start wiring)")
    with Client(proc.address) as client, pytest.raises(ClientError) as exc:
        client.get_bandit(DEMO_BANDIT)
    assert exc.value.code == grpc.StatusCode.NOT_FOUND


def test_seed_demo_in_process(tmp_path):
    """seed_demo on a running App's context (what App.start calls with --demo)."""
    from llmopt.app import create_app
    from llmopt.config import Settings
    from llmopt.demo import seed_demo

    app = create_app(Settings(port=0, data_dir=tmp_path / "inproc"))
    try:
        app.start()
        assert seed_demo(app.context) == ["features", "bandit", "model"]
        assert seed_demo(app.context) == []  # nothing twice
        with Client(app.address) as client:
            bandit = client.get_bandit(DEMO_BANDIT)
            assert bandit.reward.quality_weight == pytest.approx(0.85)
            assert bandit.policy == "lin_ucb" and bandit.feature_set == DEMO_FEATURE_SET
            assert client.get_model(DEMO_MODEL).aliases == {"champion": 1, "challenger": 2}
            assert client.get_traffic_policy(DEMO_MODEL).mode == "split"
            assert client.get_feature_set(DEMO_FEATURE_SET).version == 1
    finally:
        app.stop(0)

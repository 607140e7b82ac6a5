"""The Python client against the real server: every wrapper, its doctests, errors and retries."""

from __future__ import annotations

import contextlib
import doctest
import io
import socket
import threading
from collections.abc import Iterator

import grpc
import numpy as np
import pytest

import llmopt.client
import llmopt.client.client
import llmopt.client.errors
import llmopt.client.types
from llmopt.client import (
    Arm,
    Client,
    ClientError,
    Context,
    Feature,
    Feedback,
    RetryPolicy,
)


@contextlib.contextmanager
def unless_unimplemented() -> Iterator[None]:
    """Skip (at run time) when the service behind the call is not built yet."""
    try:
        yield
    except ClientError as exc:
        if exc.code == grpc.StatusCode.UNIMPLEMENTED:
            pytest.skip(f"{exc.method} is not implemented yet: {exc.message}")
        raise


@pytest.fixture(scope="module")
def client(server) -> Iterator[Client]:
    with Client(server.address) as c:
        yield c


class CountingRetry(RetryPolicy):
    """No sleeping; counts the retries actually taken."""

    def __init__(self, attempts: int) -> None:
        super().__init__(attempts=attempts)
        object.__setattr__(self, "taken", [])

    def delays(self, rng):  # type: ignore[no-untyped-def]
        for _ in range(self.attempts - 1):
            self.taken.append(1)  # type: ignore[attr-defined]
            yield 0.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- doctests -------------------------------------------------------------------------------------


# The package's overview first, then each module's examples in source order (later ones use
# what earlier ones made on the server).
DOC_MODULES = (llmopt.client, llmopt.client.errors, llmopt.client.client, llmopt.client.types)


def test_docstring_examples_run(server):
    """Every example in server/client/, in source order, against the shared server."""
    finder = doctest.DocTestFinder()
    tests = [
        t
        for module in DOC_MODULES
        for t in sorted(finder.find(module), key=lambda t: t.lineno or 0)
        if t.examples
    ]
    assert len(tests) >= 10
    with Client(server.address) as c:
        globs = {k: v for m in DOC_MODULES for k, v in vars(m).items()}
        globs.update(client=c, address=server.address, np=np)
        runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
        for test in tests:
            test.globs = dict(globs)
            out = io.StringIO()
            result = runner.run(test, out=out.write)
            if result.failed and "UNIMPLEMENTED" in out.getvalue():
                pytest.skip(f"{test.name}: a service is not implemented yet")
            assert result.failed == 0, out.getvalue()
            globs.update(test.globs)


# -- bandits --------------------------------------------------------------------------------------

ARMS = [
    Arm(
        "mini",
        model="gpt-4o-mini",
        temperature=0.2,
        max_tokens=512,
        metadata={"price_per_1k_tokens": "0.0006"},
    ),
    Arm(
        "large",
        model="gpt-4o",
        temperature=0.2,
        max_tokens=1024,
        extra={"seed": 3},
        metadata={"price_per_1k_tokens": "0.01"},
    ),
]


def test_bandit_round_trip(client):
    with unless_unimplemented():
        created = client.create_bandit(
            "client-bandit",
            ARMS,
            policy="lin_ucb",
            policy_params={"alpha": 0.5},
            seed=3,
            reward="cost-focused",
            description="client test",
        )
    assert created.policy == "lin_ucb" and created.policy_params["alpha"] == 0.5
    assert created.arms[1].model == "gpt-4o" and created.arms[1].extra == {"seed": 3}
    assert created.arms[0].metadata == {"price_per_1k_tokens": "0.0006"}
    assert created.context_dim == 10 and created.reward.preset == "cost-focused"
    assert client.get_bandit("client-bandit") == created
    assert "client-bandit" in [b.name for b in client.list_bandits()]

    ctx = Context(task_type="summarization", input_length=900, output_length="long", priority=8)
    decision = client.select_arm("client-bandit", ctx)
    assert decision.bandit == "client-bandit" and decision.arm.arm_id in ("mini", "large")
    assert set(decision.scores) == {"mini", "large"} and 0 < decision.propensity <= 1
    # the client-made decision id makes SelectArm idempotent: the same id, the same decision
    again = client.select_arm("client-bandit", ctx, decision_id=decision.decision_id)
    assert again.decision_id == decision.decision_id and again.arm == decision.arm

    receipt = client.record_reward(
        decision.decision_id,
        quality=0.8,
        cost=0.02,
        latency_ms=1200,
        tokens=900,
        feedback=Feedback(task_completed=True, dwell_seconds=30.0),
    )
    assert receipt.arm_id == decision.arm.arm_id and 0 < receipt.reward <= 1
    with pytest.raises(ClientError) as dup:
        client.record_reward(decision.decision_id, 0.5)
    assert dup.value.code == grpc.StatusCode.ALREADY_EXISTS

    by_vector = client.select_arm("client-bandit", vector=np.full(10, 0.5), excluded=["large"])
    assert by_vector.arm.arm_id == "mini"
    client.record_reward(by_vector.decision_id, 0.25)

    stats = client.bandit_stats("client-bandit")
    assert stats.decisions == 2 and stats.rewards == 2
    assert sum(a.pulls for a in stats.arms.values()) == 2

    grown = client.add_arm("client-bandit", Arm("haiku", model="claude-3-haiku"))
    assert [a.arm_id for a in grown.arms] == ["mini", "large", "haiku"]
    shrunk = client.remove_arm("client-bandit", "large")
    assert [a.arm_id for a in shrunk.removed_arms] == ["large"]
    client.delete_bandit("client-bandit")
    with pytest.raises(ClientError) as gone:
        client.get_bandit("client-bandit")
    assert gone.value.code == grpc.StatusCode.NOT_FOUND


def test_errors_carry_code_and_message(client):
    with unless_unimplemented(), pytest.raises(ClientError) as bad:
        client.create_bandit("client bad name!", ARMS)
    assert bad.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "bandit.name" in bad.value.message and "CreateBandit" in str(bad.value)
    with pytest.raises(ValueError, match="policy"):
        client.create_bandit("client-x", ARMS, policy="no-such-policy")


# -- registry and inference -----------------------------------------------------------------------


def test_registry_and_predict(client):
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    X = rng.standard_normal((200, 3)).astype(np.float32)
    y = (X[:, 0] + 0.5 * X[:, 1] > 0).astype(np.int64)
    champion = LogisticRegression().fit(X, y)
    challenger = LogisticRegression(C=0.01).fit(X, y)
    with unless_unimplemented():
        v1 = client.register_sklearn_model(
            "client-clf",
            champion,
            task="classification",
            alias="champion",
            metrics={"accuracy": 0.9},
            semver="1.0.0",
        )
    assert v1.version == 1 and v1.aliases == ("champion",) and v1.metrics == {"accuracy": 0.9}
    assert [o.name for o in v1.outputs] == ["label", "probabilities"]
    assert client.get_model("client-clf").task == "classification"

    data = client.download_version("client-clf", 1)
    assert len(data) == v1.size_bytes
    v2 = client.upload_onnx(
        "client-clf", data, parent_version=1, alias="challenger", tags={"note": "copy"}
    )
    assert v2.version == 2 and v2.parent_version == 1 and v2.sha256 == v1.sha256

    from llmopt.registry.export import export_sklearn

    v3 = client.upload_onnx(
        "client-clf", export_sklearn(challenger).onnx_bytes, parent_version=1, chunk_size=1000
    )
    change = client.set_alias("client-clf", "challenger", v3.version, reason="better C")
    assert (change.from_version, change.to_version) == (2, 3)

    labels = client.predict("client-clf", X[:20], output="label", alias="champion")
    assert labels.dtype == np.int64 and labels.tolist() == champion.predict(X[:20]).tolist()
    proba = client.predict("client-clf", X[:5].astype(np.float64), output="probabilities")
    np.testing.assert_allclose(proba, champion.predict_proba(X[:5]), atol=1e-5)
    full = client.infer("client-clf", {"input": X[:2]}, alias="challenger")
    assert full.version == 3 and full.variant == "challenger"
    assert set(full.outputs) == {"label", "probabilities"}

    with unless_unimplemented():
        policy = client.set_traffic_policy("client-clf", "split", 25)
    assert (policy.mode, policy.challenger_percent) == ("split", 25.0)
    assert client.get_traffic_policy("client-clf") == policy
    variants = {
        client.infer("client-clf", X[:1], routing_key=f"user-{i}").variant for i in range(40)
    }
    assert variants == {"champion", "challenger"}

    promoted = client.promote("client-clf", reason="challenger wins")
    assert (promoted.alias, promoted.to_version) == ("champion", 3)
    rolled = client.rollback("client-clf", reason="oops")
    assert (rolled.alias, rolled.to_version) == ("champion", 1)
    history = client.alias_history("client-clf", "champion")
    assert [c.kind for c in history[:2]] == ["rollback", "promote"]
    assert sorted(v.version for v in client.list_versions("client-clf")) == [1, 2, 3]

    with pytest.raises(ClientError) as missing:
        client.predict("client-no-such-model", X[:1], version=1)
    assert missing.value.code == grpc.StatusCode.NOT_FOUND
    assert client.delete_model("client-clf", force=True) == 3


# -- features -------------------------------------------------------------------------------------


def test_features(client):
    with unless_unimplemented():
        fs = client.create_feature_set(
            "client-users",
            [
                Feature("spend", "float", "log1p", default=0.0),
                Feature("tier", "category", "one_hot", {"vocabulary": ["free", "pro"]}),
                Feature(
                    "task",
                    "category",
                    "one_hot",
                    {"vocabulary": ["generation"]},
                    source="context.task_type",
                ),
            ],
            entity_key="user_id",
            ttl_seconds=3600,
        )
    assert fs.version == 1 and fs.ttl_seconds == 3600 and fs.entity_key == "user_id"
    assert fs.features[1].params == {"vocabulary": ["free", "pro"]}
    # the same definition is not a new version (why CreateFeatureSet is safe to retry)
    again = client.create_feature_set(
        "client-users", [_f for _f in fs.features], entity_key="user_id", ttl_seconds=3600
    )
    assert again.version == 1
    assert client.write_features("client-users", [("u7", {"spend": 99.0, "tier": "pro"}, None)])
    assert client.get_features("client-users", ["u7", "u8"], ["tier"]) == {
        "u7": {"tier": "pro"},
        "u8": {"tier": None},
    }
    vector = client.get_feature_vector(
        "client-users", Context(task_type="generation"), entity_ids=["u7"]
    )
    assert vector.values.dtype == np.float32 and len(vector.values) == len(vector.slot_names)
    by_slot = dict(zip(vector.slot_names, vector.values.tolist(), strict=True))
    assert by_slot["spend"] == pytest.approx(np.log1p(99.0), rel=1e-6)
    assert by_slot["tier=pro"] == 1.0 and by_slot["task=generation"] == 1.0
    assert "client-users" in [s.name for s in client.list_feature_sets()]


# -- retries --------------------------------------------------------------------------------------


def test_idempotent_calls_retry_until_the_server_is_up(server_factory):
    port = free_port()
    retry = RetryPolicy(attempts=200, initial_backoff=0.05, max_backoff=0.5)
    started = threading.Event()

    def start_later() -> None:
        started.wait(10)
        server_factory("--port", str(port))

    thread = threading.Thread(target=start_later)
    thread.start()
    try:
        with Client(f"127.0.0.1:{port}", retry=retry, timeout=5) as c:
            started.set()
            assert c.list_bandits() == []  # UNAVAILABLE until the server listens and serves
    finally:
        thread.join()


def test_only_idempotent_calls_are_retried():
    address = f"127.0.0.1:{free_port()}"  # nothing listens there
    idempotent = CountingRetry(attempts=3)
    with Client(address, retry=idempotent, timeout=2) as c, pytest.raises(ClientError) as exc:
        c.get_bandit("anything")
    assert exc.value.code == grpc.StatusCode.UNAVAILABLE and len(idempotent.taken) == 2

    for call in (
        lambda c: c.create_bandit("b", ARMS),
        lambda c: c.create_model("m"),
        lambda c: c.upload_onnx("m", b"not onnx"),
        lambda c: c.promote("m"),
        lambda c: c.rollback("m"),
        lambda c: c.write_features("fs", {"e": {"x": 1.0}}),
    ):
        once = CountingRetry(attempts=3)
        with Client(address, retry=once, timeout=2) as c, pytest.raises(ClientError) as exc:
            call(c)
        assert exc.value.code == grpc.StatusCode.UNAVAILABLE and once.taken == []

    # SelectArm carries a decision id (made by the client when not given): retried
    select = CountingRetry(attempts=3)
    with Client(address, retry=select, timeout=2) as c, pytest.raises(ClientError):
        c.select_arm("b", Context())
    assert len(select.taken) == 2


def test_health_lists_every_service_and_ready_follows_it(client):
    health = client.health()
    assert health[""] == "SERVING"
    for service in ("llmopt.v1.Bandits", "llmopt.v1.Registry", "llmopt.v1.Features",
                    "llmopt.v1.Inference", "inference.GRPCInferenceService"):  # fmt: skip
        assert health[service] == "SERVING", health
    assert client.ready() is True

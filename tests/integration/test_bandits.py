"""llmopt.v1.Bandits through the real server: the decision/reward loop, exactly-once rewards,
expiry with a default reward, arms at run time, refused inputs, kill -9 recovery, concurrency."""

from __future__ import annotations

import itertools
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration

from llmopt.bandits import policies as P
from llmopt.gen.llmopt.v1 import bandits_pb2 as pb
from llmopt.gen.llmopt.v1 import bandits_pb2_grpc, common_pb2

pytestmark = pytest.mark.integration
Code = grpc.StatusCode


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def arm(arm_id: str, model: str = "gpt-4o-mini", **kw) -> common_pb2.Arm:
    return common_pb2.Arm(arm_id=arm_id, config=common_pb2.LLMConfig(model=model, **kw))


def bandit(name: str, n_arms: int = 3, **kw) -> pb.Bandit:
    kw.setdefault("policy", pb.Policy(ucb1=pb.UCB1()))
    return pb.Bandit(name=name, arms=[arm(f"arm{i}", f"model-{i}") for i in range(n_arms)], **kw)


@pytest.fixture
def stub(channel: grpc.Channel) -> bandits_pb2_grpc.BanditsStub:
    return bandits_pb2_grpc.BanditsStub(channel)


def refused(call, request, code: Code, *words: str) -> str:
    with pytest.raises(grpc.RpcError) as err:
        call(request, timeout=10)
    assert err.value.code() == code, err.value.details()
    for word in words:
        assert word in err.value.details(), err.value.details()
    return err.value.details()


def test_decision_reward_loop(stub) -> None:
    name = unique("loop")
    created = stub.CreateBandit(pb.CreateBanditRequest(bandit=bandit(name)), timeout=10)
    assert created.context_dim == 10 and created.policy.WhichOneof("kind") == "ucb1"
    assert created.policy.ucb1.exploration == 1.0  # the documented default, filled in
    assert created.reward_wait.seconds == 24 * 3600 and created.reward.preset == "balanced"
    assert stub.GetBandit(pb.GetBanditRequest(name=name), timeout=10) == created
    total = 0.0
    for i in range(12):
        d = stub.SelectArm(
            pb.SelectArmRequest(
                bandit=name,
                context=common_pb2.RequestContext(task_type="generation", input_length=100 + i),
            ),
            timeout=10,
        )
        assert d.bandit == name and d.arm.config.model.startswith("model-")
        assert 0 < d.propensity <= 1 and len(d.scores) == 3
        if i % 2:
            r = stub.RecordReward(
                pb.RecordRewardRequest(decision_id=d.decision_id, reward=0.5), timeout=10
            )
        else:
            outcome = pb.Outcome(
                quality_score=0.8, cost=0.01, latency_ms=400, feedback=pb.Feedback(rating=4)
            )
            r = stub.RecordReward(
                pb.RecordRewardRequest(decision_id=d.decision_id, outcome=outcome), timeout=10
            )
            assert r.reward == pytest.approx(0.6 * 0.8 + 0.3 * 0.99 + 0.1 * 0.92)
        assert r.arm_id == d.arm.arm_id
        total += r.reward
    stats = stub.GetStats(pb.GetStatsRequest(bandit=name), timeout=10)
    assert stats.decisions == 12 and stats.rewards == 12 and stats.open_decisions == 0
    assert sum(a.pulls for a in stats.arms) == 12
    assert sum(a.reward_sum for a in stats.arms) == pytest.approx(total)
    assert all(a.last_selected.seconds > 0 for a in stats.arms if a.pulls)


def default_policy(oneof: str) -> pb.Policy:
    policy = pb.Policy()
    getattr(policy, oneof).SetInParent()
    return policy


@pytest.mark.parametrize("oneof", [kind.ONEOF for kind in P.POLICY_TABLE])
def test_every_policy_decides_and_learns_over_the_wire(stub, oneof: str) -> None:
    """Every registered policy, with the defaults the wire leaves unset: created, deciding on
    the default context, learning from outcomes, shown back as it was created."""
    name = unique(oneof.replace("_", "-"))
    created = stub.CreateBandit(
        pb.CreateBanditRequest(bandit=bandit(name, 3, policy=default_policy(oneof))), timeout=10
    )
    assert created.policy.WhichOneof("kind") == oneof
    chosen = set()
    for i in range(30):
        # The hour and day are given: left unset they are the server's clock's, and the run
        # would depend on when it ran (diagonal Thompson kept to one arm at some hours).
        ctx = common_pb2.RequestContext(
            task_type=["generation", "extraction"][i % 2], priority=3, hour_of_day=14, day_of_week=2
        )
        d = stub.SelectArm(pb.SelectArmRequest(bandit=name, context=ctx), timeout=10)
        assert 0.0 < d.propensity <= 1.0
        chosen.add(d.arm.arm_id)
        # Quality, cost and latency move together, so the balanced reward spans [0, 1] (a
        # free, instant call would earn at least 0.4 whatever its quality).
        q = (i % 5) / 4
        outcome = pb.Outcome(quality_score=q, cost=1 - q, latency_ms=5000 * (1 - q))
        stub.RecordReward(
            pb.RecordRewardRequest(decision_id=d.decision_id, outcome=outcome), timeout=10
        )
    stats = stub.GetStats(pb.GetStatsRequest(bandit=name), timeout=10)
    assert stats.decisions == stats.rewards == 30 and stats.open_decisions == 0
    assert len(chosen) > 1
    assert stub.GetBandit(pb.GetBanditRequest(name=name), timeout=10).policy == created.policy


def test_gaussian_thompson_learns_its_variance_unless_one_is_given(stub) -> None:
    learned, fixed = unique("ng"), unique("known")
    got = stub.CreateBandit(
        pb.CreateBanditRequest(
            bandit=bandit(learned, 2, policy=default_policy("thompson_gaussian"))
        ),
        timeout=10,
    ).policy.thompson_gaussian
    assert not got.HasField("noise_variance")  # unset: learned
    assert got.prior_kappa == P.ThompsonGaussian().prior_kappa
    known = pb.Policy(thompson_gaussian=pb.ThompsonGaussian(noise_variance=0.25))
    got = stub.CreateBandit(
        pb.CreateBanditRequest(bandit=bandit(fixed, 2, policy=known)), timeout=10
    ).policy.thompson_gaussian
    assert got.HasField("noise_variance") and got.noise_variance == 0.25
    refused(
        stub.CreateBandit,
        pb.CreateBanditRequest(
            bandit=bandit(
                unique("bad"),
                2,
                policy=pb.Policy(thompson_gaussian=pb.ThompsonGaussian(prior_beta=-1)),
            )
        ),
        Code.INVALID_ARGUMENT,
        "thompson_gaussian.prior_beta",
    )


def test_rewards_are_exactly_once(stub) -> None:
    name = unique("once")
    stub.CreateBandit(pb.CreateBanditRequest(bandit=bandit(name)), timeout=10)
    d = stub.SelectArm(pb.SelectArmRequest(bandit=name), timeout=10)
    stub.RecordReward(pb.RecordRewardRequest(decision_id=d.decision_id, reward=1.0), timeout=10)
    before = stub.GetStats(pb.GetStatsRequest(bandit=name), timeout=10)
    refused(
        stub.RecordReward,
        pb.RecordRewardRequest(decision_id=d.decision_id, reward=0.0),
        Code.ALREADY_EXISTS,
        d.decision_id,
        "already has a reward",
    )
    assert stub.GetStats(pb.GetStatsRequest(bandit=name), timeout=10) == before
    refused(
        stub.RecordReward,
        pb.RecordRewardRequest(decision_id="no-such-decision", reward=1),
        Code.NOT_FOUND,
        "no-such-decision",
    )


def test_idempotent_select_with_caller_chosen_id(stub) -> None:
    name = unique("idem")
    stub.CreateBandit(
        pb.CreateBanditRequest(
            bandit=bandit(name, 5, policy=pb.Policy(epsilon_greedy=pb.EpsilonGreedy(epsilon=1.0)))
        ),
        timeout=10,
    )
    decision_id = unique("req")
    req = pb.SelectArmRequest(bandit=name, decision_id=decision_id)
    first = stub.SelectArm(req, timeout=10)
    assert first.decision_id == decision_id
    for _ in range(4):
        assert stub.SelectArm(req, timeout=10) == first
    assert stub.GetStats(pb.GetStatsRequest(bandit=name), timeout=10).decisions == 1


def test_a_reused_decision_id_with_another_request_is_already_exists(stub) -> None:
    name, other = unique("reuse"), unique("reuse")
    for n in (name, other):
        stub.CreateBandit(pb.CreateBanditRequest(bandit=bandit(n, 3)), timeout=10)
    decision_id = unique("req")
    ctx = common_pb2.RequestContext(task_type="generation", priority=4)
    req = pb.SelectArmRequest(bandit=name, decision_id=decision_id, context=ctx)
    first = stub.SelectArm(req, timeout=10)
    assert stub.SelectArm(req, timeout=10) == first
    changed = [
        pb.SelectArmRequest(bandit=other, decision_id=decision_id, context=ctx),
        pb.SelectArmRequest(
            bandit=name,
            decision_id=decision_id,
            context=common_pb2.RequestContext(task_type="generation", priority=5),
        ),
        pb.SelectArmRequest(bandit=name, decision_id=decision_id, context_vector=[0.5] * 10),
        pb.SelectArmRequest(
            bandit=name, decision_id=decision_id, context=ctx, excluded_arms=["arm0"]
        ),
    ]
    for request in changed:
        refused(stub.SelectArm, request, Code.ALREADY_EXISTS, decision_id, "different request")
    # Nothing refused made a decision; the original still takes its reward, and after it the
    # same request still gets its answer while a different one is still refused.
    assert stub.GetStats(pb.GetStatsRequest(bandit=name), timeout=10).decisions == 1
    assert stub.GetStats(pb.GetStatsRequest(bandit=other), timeout=10).decisions == 0
    stub.RecordReward(pb.RecordRewardRequest(decision_id=decision_id, reward=1.0), timeout=10)
    assert stub.SelectArm(req, timeout=10).arm == first.arm
    refused(stub.SelectArm, changed[1], Code.ALREADY_EXISTS, decision_id)


def test_expiry_applies_the_default_reward(stub) -> None:
    name = unique("expiry")
    stub.CreateBandit(
        pb.CreateBanditRequest(
            bandit=bandit(name, 2, reward_wait=Duration(nanos=300_000_000), default_reward=0.2)
        ),
        timeout=10,
    )
    d = stub.SelectArm(pb.SelectArmRequest(bandit=name), timeout=10)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        stats = stub.GetStats(pb.GetStatsRequest(bandit=name), timeout=10)
        if stats.expired_decisions:
            break
        time.sleep(0.05)
    assert stats.expired_decisions == 1 and stats.rewards == 1 and stats.open_decisions == 0
    assert stats.mean_reward == pytest.approx(0.2)
    refused(
        stub.RecordReward,
        pb.RecordRewardRequest(decision_id=d.decision_id, reward=1.0),
        Code.FAILED_PRECONDITION,
        "expired",
    )


def test_add_and_remove_arms(stub) -> None:
    name = unique("arms")
    stub.CreateBandit(pb.CreateBanditRequest(bandit=bandit(name, 2)), timeout=10)
    for _ in range(2):
        d = stub.SelectArm(pb.SelectArmRequest(bandit=name), timeout=10)
        stub.RecordReward(pb.RecordRewardRequest(decision_id=d.decision_id, reward=0.9))
    added = stub.AddArm(pb.AddArmRequest(bandit=name, arm=arm("fresh", "model-new")), timeout=10)
    assert [a.arm_id for a in added.arms] == ["arm0", "arm1", "fresh"]
    assert stub.SelectArm(pb.SelectArmRequest(bandit=name), timeout=10).arm.arm_id == "fresh"
    on_arm0 = stub.SelectArm(pb.SelectArmRequest(bandit=name, excluded_arms=["arm1", "fresh"]))
    assert on_arm0.arm.arm_id == "arm0"
    removed = stub.RemoveArm(pb.RemoveArmRequest(bandit=name, arm_id="arm0"), timeout=10)
    assert [a.arm_id for a in removed.arms] == ["arm1", "fresh"]
    assert [a.arm_id for a in removed.removed_arms] == ["arm0"]
    for _ in range(10):
        assert stub.SelectArm(pb.SelectArmRequest(bandit=name), timeout=10).arm.arm_id != "arm0"
    r = stub.RecordReward(pb.RecordRewardRequest(decision_id=on_arm0.decision_id, reward=1.0))
    assert r.arm_id == "arm0"  # open decisions of a removed arm still take their reward
    stats = stub.GetStats(pb.GetStatsRequest(bandit=name), timeout=10)
    assert {a.arm_id: a.removed for a in stats.arms} == {
        "arm0": True,
        "arm1": False,
        "fresh": False,
    }


def test_list_and_delete(stub) -> None:
    prefix = unique("list")
    names = [f"{prefix}-{i}" for i in range(3)]
    for n in names:
        stub.CreateBandit(pb.CreateBanditRequest(bandit=bandit(n, 1)), timeout=10)
    seen, token = [], ""
    while True:
        page = stub.ListBandits(
            pb.ListBanditsRequest(page=common_pb2.PageRequest(page_size=2, page_token=token)),
            timeout=10,
        )
        seen += [b.name for b in page.bandits]
        token = page.next_page_token
        if not token:
            break
    assert [n for n in seen if n.startswith(prefix)] == names
    stub.DeleteBandit(pb.DeleteBanditRequest(name=names[1]), timeout=10)
    refused(stub.GetBandit, pb.GetBanditRequest(name=names[1]), Code.NOT_FOUND, names[1])


BAD_CREATES = [
    (pb.Bandit(name="", arms=[arm("a")]), "bandit.name"),
    (pb.Bandit(name="has space", arms=[arm("a")]), "bandit.name"),
    (pb.Bandit(name="x", arms=[arm("a"), arm("a")]), "bandit.arms[1].arm_id"),
    (pb.Bandit(name="x", arms=[arm("a", model="")]), "bandit.arms[0].config.model"),
    (pb.Bandit(name="x", arms=[arm("a", temperature=9)]), "bandit.arms[0].config.temperature"),
    (
        pb.Bandit(
            name="x", arms=[arm("a")], policy=pb.Policy(epsilon_greedy=pb.EpsilonGreedy(epsilon=2))
        ),
        "epsilon_greedy.epsilon",
    ),
    (
        pb.Bandit(
            name="x",
            arms=[arm("a")],
            policy=pb.Policy(sliding_window_ucb=pb.SlidingWindowUCB(window=0)),
        ),
        "sliding_window_ucb.window",
    ),
    (
        pb.Bandit(
            name="x", arms=[arm("a")], policy=pb.Policy(lin_ucb=pb.LinUCB(**{"lambda": -1.0}))
        ),
        "lin_ucb.lambda",
    ),
    (
        pb.Bandit(name="x", arms=[arm("a")], reward=pb.RewardConfig(preset="fastest")),
        "reward.preset",
    ),
    (
        pb.Bandit(name="x", arms=[arm("a")], reward=pb.RewardConfig(cost_weight=-1)),
        "reward.cost_weight",
    ),
    (pb.Bandit(name="x", arms=[arm("a")], reward_wait=Duration(seconds=-5)), "bandit.reward_wait"),
    (pb.Bandit(name="x", arms=[arm("a")], default_reward=1.5), "bandit.default_reward"),
    (pb.Bandit(name="x", arms=[arm("a")], context_dim=4), "bandit.context_dim"),
]


@pytest.mark.parametrize(("msg", "field"), BAD_CREATES, ids=[f for _, f in BAD_CREATES])
def test_bad_definitions_are_refused(stub, msg: pb.Bandit, field: str) -> None:
    refused(stub.CreateBandit, pb.CreateBanditRequest(bandit=msg), Code.INVALID_ARGUMENT, field)


def test_bad_calls_are_refused_with_clear_messages(stub) -> None:
    name = unique("bad")
    stub.CreateBandit(pb.CreateBanditRequest(bandit=bandit(name, 2)), timeout=10)
    refused(
        stub.CreateBandit, pb.CreateBanditRequest(bandit=bandit(name, 1)), Code.ALREADY_EXISTS, name
    )
    refused(stub.SelectArm, pb.SelectArmRequest(bandit="ghost"), Code.NOT_FOUND, "ghost")
    refused(stub.SelectArm, pb.SelectArmRequest(bandit=""), Code.INVALID_ARGUMENT, "bandit")
    refused(
        stub.SelectArm,
        pb.SelectArmRequest(bandit=name, context_vector=[1.0, 2.0]),
        Code.INVALID_ARGUMENT,
        "context_vector",
        "needs 10",
    )
    refused(
        stub.SelectArm,
        pb.SelectArmRequest(bandit=name, context=common_pb2.RequestContext(priority=11)),
        Code.INVALID_ARGUMENT,
        "context.priority",
    )
    refused(
        stub.SelectArm,
        pb.SelectArmRequest(bandit=name, excluded_arms=["nope"]),
        Code.INVALID_ARGUMENT,
        "excluded_arms",
        "nope",
    )
    refused(
        stub.SelectArm,
        pb.SelectArmRequest(bandit=name, excluded_arms=["arm0", "arm1"]),
        Code.FAILED_PRECONDITION,
        "no arm left",
    )
    refused(
        stub.SelectArm,
        pb.SelectArmRequest(bandit=name, decision_id="bad id!"),
        Code.INVALID_ARGUMENT,
        "decision_id",
    )
    d = stub.SelectArm(pb.SelectArmRequest(bandit=name), timeout=10)
    refused(
        stub.RecordReward,
        pb.RecordRewardRequest(decision_id=d.decision_id, reward=-0.5),
        Code.INVALID_ARGUMENT,
        "reward",
        "[0, 1]",
    )
    refused(
        stub.RecordReward,
        pb.RecordRewardRequest(decision_id=d.decision_id),
        Code.INVALID_ARGUMENT,
        "exactly one of reward or outcome",
    )
    refused(
        stub.RecordReward,
        pb.RecordRewardRequest(
            decision_id=d.decision_id, outcome=pb.Outcome(feedback=pb.Feedback(rating=9))
        ),
        Code.INVALID_ARGUMENT,
        "outcome.feedback.rating",
    )
    refused(
        stub.RecordReward,
        pb.RecordRewardRequest(decision_id=d.decision_id, outcome=pb.Outcome(latency_ms=-1)),
        Code.INVALID_ARGUMENT,
        "outcome.latency_ms",
    )
    refused(
        stub.AddArm, pb.AddArmRequest(bandit=name, arm=arm("arm0")), Code.ALREADY_EXISTS, "arm0"
    )
    refused(
        stub.AddArm, pb.AddArmRequest(bandit=name, arm=arm("")), Code.INVALID_ARGUMENT, "arm.arm_id"
    )
    refused(stub.RemoveArm, pb.RemoveArmRequest(bandit=name, arm_id="nope"), Code.NOT_FOUND, "nope")
    refused(stub.GetStats, pb.GetStatsRequest(bandit="ghost"), Code.NOT_FOUND, "ghost")
    refused(
        stub.ListBandits,
        pb.ListBanditsRequest(page=common_pb2.PageRequest(page_size=5000)),
        Code.INVALID_ARGUMENT,
        "page_size",
    )
    # Nothing above changed the bandit: the decision is still open and takes its reward.
    stub.RecordReward(pb.RecordRewardRequest(decision_id=d.decision_id, reward=0.5), timeout=10)
    assert stub.GetStats(pb.GetStatsRequest(bandit=name), timeout=10).rewards == 1


def test_sixteen_threads_leave_statistics_exact(stub) -> None:
    name = unique("busy")
    stub.CreateBandit(
        pb.CreateBanditRequest(
            bandit=bandit(name, 4, policy=pb.Policy(thompson_beta=pb.ThompsonBeta()))
        ),
        timeout=10,
    )
    counter = itertools.count()

    def worker(_: int) -> list[tuple[str, float]]:
        acked = []
        for _ in range(25):
            d = stub.SelectArm(pb.SelectArmRequest(bandit=name), timeout=30)
            r = (next(counter) % 10) / 10
            stub.RecordReward(
                pb.RecordRewardRequest(decision_id=d.decision_id, reward=r), timeout=30
            )
            acked.append((d.arm.arm_id, r))
        return acked

    with ThreadPoolExecutor(16) as pool:
        acked = [x for part in pool.map(worker, range(16)) for x in part]
    stats = stub.GetStats(pb.GetStatsRequest(bandit=name), timeout=10)
    assert stats.decisions == stats.rewards == len(acked) == 400
    for a in stats.arms:
        mine = [r for arm_id, r in acked if arm_id == a.arm_id]
        assert a.pulls == a.rewards == len(mine)
        assert a.reward_sum == pytest.approx(sum(mine))


def test_kill_9_recovery(server_factory) -> None:
    names = ("lin", "ucb", "ng")
    proc = server_factory()
    with proc.channel() as ch:
        stub = bandits_pb2_grpc.BanditsStub(ch)
        stub.CreateBandit(
            pb.CreateBanditRequest(
                bandit=bandit("lin", 3, policy=pb.Policy(lin_ucb=pb.LinUCB(alpha=0.3)), seed=4)
            ),
            timeout=10,
        )
        stub.CreateBandit(pb.CreateBanditRequest(bandit=bandit("ucb", 3)), timeout=10)
        ng = bandit("ng", 3, policy=default_policy("thompson_gaussian"), seed=2)  # learned noise
        stub.CreateBandit(pb.CreateBanditRequest(bandit=ng), timeout=10)
        open_ids: list[str] = []
        lock = threading.Lock()

        def worker(k: int) -> None:
            for i in range(20):
                for name in names:
                    ctx = common_pb2.RequestContext(
                        task_type=["generation", "extraction"][i % 2], input_length=10 * i + k
                    )
                    d = stub.SelectArm(pb.SelectArmRequest(bandit=name, context=ctx), timeout=30)
                    if (i + k) % 4 == 0:
                        with lock:
                            open_ids.append(d.decision_id)
                    else:
                        stub.RecordReward(
                            pb.RecordRewardRequest(
                                decision_id=d.decision_id, reward=((i * 7 + k) % 11) / 10
                            ),
                            timeout=30,
                        )

        with ThreadPoolExecutor(8) as pool:
            list(pool.map(worker, range(8)))
        stub.AddArm(pb.AddArmRequest(bandit="ucb", arm=arm("late")), timeout=10)
        stub.RemoveArm(pb.RemoveArmRequest(bandit="ucb", arm_id="arm2"), timeout=10)
        before = {n: stub.GetStats(pb.GetStatsRequest(bandit=n), timeout=10) for n in names}
        defs = {n: stub.GetBandit(pb.GetBanditRequest(name=n), timeout=10) for n in names}
    proc.kill()
    again = server_factory(data_dir=proc.data_dir)
    with again.channel() as ch:
        stub = bandits_pb2_grpc.BanditsStub(ch)
        for n in names:
            assert stub.GetStats(pb.GetStatsRequest(bandit=n), timeout=10) == before[n]
            assert stub.GetBandit(pb.GetBanditRequest(name=n), timeout=10) == defs[n]
        assert len(open_ids) == sum(b.open_decisions for b in before.values()) > 0
        for decision_id in open_ids:
            stub.RecordReward(
                pb.RecordRewardRequest(decision_id=decision_id, reward=1.0), timeout=10
            )
        after = [stub.GetStats(pb.GetStatsRequest(bandit=n), timeout=10) for n in names]
        assert sum(s.open_decisions for s in after) == 0
        assert sum(s.rewards for s in after) == sum(b.rewards for b in before.values()) + len(
            open_ids
        )

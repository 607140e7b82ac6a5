"""BanditService in-process: the decision/reward loop, exactly-once rewards, expiry, arms,
recovery from the log and snapshots, and exact statistics under concurrency."""

from __future__ import annotations

import doctest
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from llmopt import errors
from llmopt.bandits import arms as arms_module
from llmopt.bandits import bandit as bandit_module
from llmopt.bandits import policies as P
from llmopt.bandits import service as service_module
from llmopt.bandits import store as store_module
from llmopt.bandits import types as types_module
from llmopt.bandits.arms import Arm, LLMConfig
from llmopt.bandits.rewards import Feedback, Outcome, RewardConfig, compute_reward
from llmopt.bandits.service import BanditService
from llmopt.bandits.types import BanditSpec
from llmopt.features.context import RequestContext, default_context


class Clock:
    """A settable clock so expiry is tested without sleeping."""

    def __init__(self, t: float = 1_700_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def arms(n: int = 3) -> tuple[Arm, ...]:
    return tuple(Arm(f"arm{i}", LLMConfig(model=f"model-{i}")) for i in range(n))


def open_service(root: Path, clock: Clock | None = None, **kw) -> BanditService:
    svc = BanditService(root, clock=clock or Clock(), sweep_interval=0, **kw)
    svc.warm_up()
    return svc


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def svc(tmp_path: Path, clock: Clock) -> Iterator[BanditService]:
    service = open_service(tmp_path / "bandits", clock)
    yield service
    service.close()


def learned_state(svc: BanditService, name: str) -> dict[str, np.ndarray]:
    """The policy arrays rebuilt from the log (not the generator, not select-time caches)."""
    svc.stats(name)  # applies every acknowledged change (the next locked call does)
    state = svc._bandits[name]._policy.get_state()
    out = {k: v for k, v in state.items() if isinstance(v, np.ndarray) and k not in ("last_p",)}
    if "logw" in out:
        del out["g"]  # EXP3: g[0] is the eligible count at the latest selection
    elif "g" in out:
        out["g"] = out["g"][:2]  # g[0] counts updates, g[1] selections (epsilon-greedy's decay)
    return out


def assert_same_learning(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_allclose(a[key], b[key], rtol=0, atol=1e-12, err_msg=key)


@pytest.mark.parametrize("module", [arms_module, bandit_module, types_module, service_module])
def test_doctests(module) -> None:
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


# -- the loop -------------------------------------------------------------------------------------


def test_decision_reward_loop_keeps_exact_statistics(svc: BanditService) -> None:
    svc.create_bandit(BanditSpec("loop", P.UCB1(), arms(3), seed=1))
    rewards: dict[str, list[float]] = {f"arm{i}": [] for i in range(3)}
    pulls = dict.fromkeys(rewards, 0)
    rng = np.random.default_rng(0)
    for _ in range(60):
        d = svc.select_arm("loop", RequestContext(task_type="generation"))
        pulls[d.arm.arm_id] += 1
        assert 0 < d.propensity <= 1
        assert {a for a, _ in d.scores} == set(rewards)
        r = float(rng.random())
        receipt = svc.record_reward(d.decision_id, reward=r)
        assert receipt.arm_id == d.arm.arm_id and receipt.reward == r
        rewards[d.arm.arm_id].append(r)
    stats = svc.stats("loop")
    assert stats.decisions == 60 and stats.rewards == 60 and stats.open_decisions == 0
    for a in stats.arms:
        values = np.array(rewards[a.arm_id])
        assert a.pulls == pulls[a.arm_id] and a.rewards == len(values)
        assert a.reward_sum == pytest.approx(values.sum())
        assert a.mean == pytest.approx(values.mean())
        assert a.variance == pytest.approx(values.var(ddof=1))
        assert a.ci_low <= a.mean <= a.ci_high
        assert a.last_selected is not None
    all_rewards = np.concatenate([np.array(v) for v in rewards.values()])
    assert stats.mean_reward == pytest.approx(all_rewards.mean())


def test_outcome_becomes_reward_with_the_bandits_config(svc: BanditService) -> None:
    cfg = RewardConfig.from_spec(preset="cost-focused", max_cost=0.1)
    svc.create_bandit(BanditSpec("outcomes", P.EpsilonGreedy(), arms(2), reward=cfg))
    d = svc.select_arm("outcomes")
    outcome = Outcome(
        quality_score=0.9,
        cost=0.02,
        latency_ms=800,
        feedback=Feedback(task_completed=True, dwell_seconds=30),
    )
    receipt = svc.record_reward(d.decision_id, outcome=outcome)
    assert receipt.reward == pytest.approx(compute_reward(outcome, cfg))
    assert svc.stats("outcomes").mean_reward == pytest.approx(receipt.reward)


def test_contextual_policy_learns_from_the_context_logged_at_decision(
    tmp_path: Path, clock: Clock
) -> None:
    svc = open_service(tmp_path / "b", clock)
    svc.create_bandit(BanditSpec("lin", P.LinUCB(alpha=0.5), arms(2), seed=5))
    ctx = RequestContext(task_type="summarization", input_length=200, hour_of_day=3, day_of_week=2)
    d = svc.select_arm("lin", ctx)
    svc.record_reward(d.decision_id, reward=1.0)
    # The same update applied by hand to a fresh policy gives the same learned state.
    ref = P.make_policy(P.LinUCB(alpha=0.5), 2, 10, 5)
    slot = int(d.arm.arm_id[-1])
    ref.update(slot, 1.0, default_context(ctx))
    svc.stats("lin")
    assert np.allclose(ref.get_state()["b"], svc._bandits["lin"]._policy.get_state()["b"])
    # A ready vector works too, and must have the bandit's dimension.
    d2 = svc.select_arm("lin", vector=np.ones(10))
    assert d2.arm.arm_id in {"arm0", "arm1"}
    with pytest.raises(errors.InvalidArgument, match="context_vector"):
        svc.select_arm("lin", vector=np.ones(3))
    with pytest.raises(errors.InvalidArgument, match="context_vector"):
        svc.select_arm("lin", vector=np.array([np.nan] * 10))
    svc.close()


# -- exactly once, unknown, expired ---------------------------------------------------------------


def test_rewards_are_exactly_once(svc: BanditService) -> None:
    svc.create_bandit(BanditSpec("once", P.ThompsonBeta(), arms(2)))
    d = svc.select_arm("once")
    svc.record_reward(d.decision_id, reward=1.0)
    before = svc.stats("once")
    with pytest.raises(errors.AlreadyExists, match="already has a reward"):
        svc.record_reward(d.decision_id, reward=0.0)
    assert svc.stats("once") == before
    with pytest.raises(errors.NotFound, match="nope"):
        svc.record_reward("nope", reward=1.0)


def test_concurrent_duplicate_rewards_count_once(svc: BanditService) -> None:
    svc.create_bandit(BanditSpec("race", P.UCB1(), arms(2)))
    d = svc.select_arm("race")
    outcomes: list[str] = []

    def reward() -> None:
        try:
            svc.record_reward(d.decision_id, reward=0.5)
            outcomes.append("ok")
        except errors.AlreadyExists:
            outcomes.append("dup")

    threads = [threading.Thread(target=reward) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["dup"] * 7 + ["ok"]
    assert svc.stats("race").rewards == 1


def test_bad_rewards_are_refused(svc: BanditService) -> None:
    svc.create_bandit(BanditSpec("bad", P.UCB1(), arms(2)))
    d = svc.select_arm("bad")
    with pytest.raises(errors.InvalidArgument, match="reward"):
        svc.record_reward(d.decision_id, reward=1.5)
    with pytest.raises(errors.InvalidArgument, match="exactly one"):
        svc.record_reward(d.decision_id)
    with pytest.raises(errors.InvalidArgument, match=r"outcome\.cost"):
        svc.record_reward(d.decision_id, outcome=Outcome(cost=-1))
    with pytest.raises(errors.InvalidArgument, match="decision_id"):
        svc.record_reward("", reward=1.0)
    assert svc.stats("bad").rewards == 0  # the decision is still open
    svc.record_reward(d.decision_id, reward=1.0)


@pytest.mark.parametrize(
    "bad",
    [1.5, -0.01, float("nan"), float("-inf"), "0.5", 10**400],
    ids=["above", "below", "nan", "-inf", "str", "huge-int"],
)
def test_a_reward_the_policy_would_refuse_is_refused_before_it_is_journaled(
    tmp_path: Path, clock: Clock, bad: object
) -> None:
    """A journaled reward is replayed at every start, so one that the policy's update refuses
    must never reach the journal: it is refused where it enters, nothing is logged, and the
    bandit reopens cleanly with the decision still open."""
    x = np.ones(10)
    with pytest.raises(errors.InvalidArgument):  # what the kernel itself says of it
        P.make_policy(P.LinUCB(), 2, 10, 0).update(0, bad, x)  # type: ignore[arg-type]
    root = tmp_path / "b"
    svc = open_service(root, clock)
    svc.create_bandit(BanditSpec("strict", P.LinUCB(), arms(2)))
    d = svc.select_arm("strict", vector=x)
    bandit_id = svc._bandits["strict"].id
    with pytest.raises(errors.InvalidArgument, match=r"^reward: "):
        svc.record_reward(d.decision_id, reward=bad)  # type: ignore[arg-type]
    svc._store.flush()
    assert svc._store.events_after(bandit_id, 0) == []
    stored = svc._store.find_decision(d.decision_id)
    assert stored is not None and stored.status == store_module.OPEN
    svc.close()
    again = open_service(root, clock)
    stats = again.stats("strict")
    assert stats.rewards == 0 and stats.open_decisions == 1
    assert again.record_reward(d.decision_id, reward=1.0).reward == 1.0
    again.close()


def test_expiry_applies_the_default_reward(svc: BanditService, clock: Clock) -> None:
    svc.create_bandit(BanditSpec("exp", P.UCB1(), arms(2), reward_wait=10.0, default_reward=0.25))
    svc.create_bandit(BanditSpec("nodefault", P.UCB1(), arms(2), reward_wait=10.0))
    d1 = svc.select_arm("exp")
    d2 = svc.select_arm("nodefault")
    clock.t += 5
    kept = svc.select_arm("exp")
    assert svc.sweep() == 0
    clock.t += 6  # d1 and d2 are 11 s old, kept 6 s
    with pytest.raises(errors.FailedPrecondition, match="expired"):
        svc.record_reward(d1.decision_id, reward=1.0)  # overdue, before the sweep ran
    assert svc.sweep() == 2
    with pytest.raises(errors.FailedPrecondition, match="expired"):
        svc.record_reward(d1.decision_id, reward=1.0)  # after the sweep: from the store
    stats = svc.stats("exp")
    assert stats.expired_decisions == 1 and stats.rewards == 1 and stats.open_decisions == 1
    assert stats.mean_reward == pytest.approx(0.25)
    nodefault = svc.stats("nodefault")
    assert nodefault.expired_decisions == 1 and nodefault.rewards == 0
    assert svc.record_reward(kept.decision_id, reward=1.0).reward == 1.0
    assert d2.decision_id


def test_rewarded_decisions_leave_the_expiry_queue(
    svc: BanditService, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rewarded decisions must not stay queued for expiry until their reward_wait is over (a
    day of ids at full rate): the sweep compacts the queue, and expiry still works after it."""
    monkeypatch.setattr(bandit_module, "_EXPIRY_SLACK", 10)
    svc.create_bandit(BanditSpec("q", P.UCB1(), arms(2), reward_wait=100.0))
    kept = [svc.select_arm("q") for _ in range(5)]
    for _ in range(200):
        svc.record_reward(svc.select_arm("q").decision_id, reward=1.0)
    queue = svc._bandit("q")._expiry
    assert len(queue) == 205  # every decision queued, rewarded ones too
    assert svc.sweep() == 0
    queue = svc._bandit("q")._expiry
    assert sorted(d for _, d in queue) == sorted(k.decision_id for k in kept)
    clock.t += 101
    assert svc.sweep() == 5  # the open ones still expire
    assert svc.stats("q").expired_decisions == 5


def test_sweeper_thread_expires_on_its_own(tmp_path: Path) -> None:
    svc = BanditService(tmp_path / "b", sweep_interval=0.02)
    svc.warm_up()
    svc.create_bandit(BanditSpec("fast", P.UCB1(), arms(2), reward_wait=0.05, default_reward=0.0))
    svc.select_arm("fast")
    deadline = threading.Event()
    for _ in range(200):
        if svc.stats("fast").expired_decisions == 1:
            break
        deadline.wait(0.02)
    assert svc.stats("fast").expired_decisions == 1
    svc.close()


# -- idempotent decisions -------------------------------------------------------------------------


def test_caller_chosen_decision_id_is_idempotent(svc: BanditService) -> None:
    svc.create_bandit(BanditSpec("idem", P.EpsilonGreedy(epsilon=1.0), arms(4), seed=2))
    svc.create_bandit(BanditSpec("other", P.UCB1(), arms(2)))
    first = svc.select_arm("idem", decision_id="req-42")
    for _ in range(5):
        assert svc.select_arm("idem", decision_id="req-42") == first
    assert svc.stats("idem").decisions == 1
    svc.record_reward("req-42", reward=1.0)
    assert svc.select_arm("idem", decision_id="req-42").arm == first.arm  # from the store
    with pytest.raises(errors.AlreadyExists, match="req-42"):
        svc.select_arm("other", decision_id="req-42")
    with pytest.raises(errors.InvalidArgument, match="decision_id"):
        svc.select_arm("idem", decision_id="has space")


def test_a_reused_decision_id_with_a_different_request_is_refused(tmp_path: Path) -> None:
    svc = open_service(tmp_path / "b")
    svc.create_bandit(BanditSpec("reuse", P.EpsilonGreedy(epsilon=1.0), arms(4), seed=2))
    svc.create_bandit(BanditSpec("reuse-vec", P.LinUCB(), arms(2)))
    ctx = RequestContext(task_type="generation", priority=7, metadata={"a": "1", "b": "2"})
    first = svc.select_arm("reuse", ctx, decision_id="r-1")
    # The same request again, metadata in another order: the same answer, no new decision.
    again = RequestContext(task_type="generation", priority=7, metadata={"b": "2", "a": "1"})
    assert svc.select_arm("reuse", again, decision_id="r-1") == first
    different = [
        {"context": RequestContext(task_type="generation", priority=8)},
        {"context": RequestContext(task_type="generation", priority=7, user_id="u")},
        {"context": ctx, "excluded": ["arm0"]},
        {"context": ctx, "entity_ids": {"user": "u1"}},
        {"context": None},
    ]
    for kw in different:
        with pytest.raises(errors.AlreadyExists, match="'r-1' is already used by a different"):
            svc.select_arm("reuse", decision_id="r-1", **kw)
    with pytest.raises(errors.AlreadyExists, match="r-1"):
        svc.select_arm("reuse-vec", ctx, decision_id="r-1")
    x = np.linspace(0.0, 1.0, 10)
    d = svc.select_arm("reuse-vec", vector=x, decision_id="v-1")
    assert svc.select_arm("reuse-vec", vector=x.copy(), decision_id="v-1") == d
    with pytest.raises(errors.AlreadyExists, match="v-1"):
        svc.select_arm("reuse-vec", vector=x + 1e-9, decision_id="v-1")
    assert svc.stats("reuse").decisions == 1 and svc.stats("reuse-vec").decisions == 1
    # Rewarded (closed, answered from the store) and after a restart: the same rules.
    svc.record_reward("r-1", reward=1.0)
    assert svc.select_arm("reuse", again, decision_id="r-1").arm == first.arm
    with pytest.raises(errors.AlreadyExists, match="r-1"):
        svc.select_arm("reuse", RequestContext(priority=2), decision_id="r-1")
    svc.close()
    svc = open_service(tmp_path / "b")
    assert svc.select_arm("reuse-vec", vector=x, decision_id="v-1") == d  # open, recovered
    with pytest.raises(errors.AlreadyExists, match="v-1"):
        svc.select_arm("reuse-vec", vector=x * 2, decision_id="v-1")
    assert svc.select_arm("reuse", again, decision_id="r-1").arm == first.arm
    with pytest.raises(errors.AlreadyExists, match="r-1"):
        svc.select_arm("reuse", ctx, excluded=["arm1"], decision_id="r-1")
    # An id the server made was never a caller's request: reusing it is refused too.
    made = svc.select_arm("reuse", ctx)
    with pytest.raises(errors.AlreadyExists, match=made.decision_id):
        svc.select_arm("reuse", ctx, decision_id=made.decision_id)
    svc.close()


def test_a_decision_logged_before_digests_answers_its_bandits_retries(tmp_path: Path) -> None:
    """Decisions stored by an older server have no digest: a retry of its bandit gets them as
    before (no way to tell the requests apart), another bandit is still refused."""
    svc = open_service(tmp_path / "b")
    svc.create_bandit(BanditSpec("old", P.UCB1(), arms(2)))
    svc.create_bandit(BanditSpec("other", P.UCB1(), arms(2)))
    first = svc.select_arm("old", RequestContext(priority=3), decision_id="legacy-1")
    svc.close()
    store = store_module.BanditStore(tmp_path / "b")
    store.db.write(
        lambda c: c.execute(
            "UPDATE decisions SET request_digest = NULL WHERE decision_id = ?", ("legacy-1",)
        )
    )
    store.close()
    svc = open_service(tmp_path / "b")
    assert svc.select_arm("old", RequestContext(priority=9), decision_id="legacy-1") == first
    with pytest.raises(errors.AlreadyExists, match="legacy-1"):
        svc.select_arm("other", decision_id="legacy-1")
    svc.close()


# -- arms -----------------------------------------------------------------------------------------


def test_add_and_remove_arms_at_run_time(svc: BanditService) -> None:
    svc.create_bandit(BanditSpec("arms", P.UCB1(), arms(2)))
    for _ in range(4):
        d = svc.select_arm("arms")
        svc.record_reward(d.decision_id, reward=0.5)
    info = svc.add_arm("arms", Arm("new", LLMConfig(model="model-new")))
    assert [a.arm_id for a, _ in info.arms] == ["arm0", "arm1", "new"]
    assert svc.select_arm("arms").arm.arm_id == "new"  # cold arm explored first (UCB +inf)
    open_on_arm0 = None
    for _ in range(20):
        d = svc.select_arm("arms", excluded=["new", "arm1"])
        assert d.arm.arm_id == "arm0"
        open_on_arm0 = d
    info = svc.remove_arm("arms", "arm0")
    assert dict((a.arm_id, r) for a, r in info.arms) == {"arm0": True, "arm1": False, "new": False}
    for _ in range(30):
        assert svc.select_arm("arms").arm.arm_id != "arm0"
    assert open_on_arm0 is not None
    assert svc.record_reward(open_on_arm0.decision_id, reward=1.0).arm_id == "arm0"
    with pytest.raises(errors.AlreadyExists, match="never reused"):
        svc.add_arm("arms", Arm("arm0", LLMConfig(model="m")))
    with pytest.raises(errors.FailedPrecondition, match="already removed"):
        svc.remove_arm("arms", "arm0")
    with pytest.raises(errors.NotFound, match="ghost"):
        svc.remove_arm("arms", "ghost")
    with pytest.raises(errors.InvalidArgument, match="excluded_arms"):
        svc.select_arm("arms", excluded=["ghost"])
    with pytest.raises(errors.FailedPrecondition, match="no arm left"):
        svc.select_arm("arms", excluded=["arm1", "new"])
    # Every arm removed: nothing to choose until an arm is added, which then takes every call.
    svc.remove_arm("arms", "arm1")
    svc.remove_arm("arms", "new")
    with pytest.raises(errors.FailedPrecondition, match="no arm left"):
        svc.select_arm("arms")
    svc.add_arm("arms", Arm("fresh", LLMConfig(model="m")))
    d = svc.select_arm("arms")
    assert d.arm.arm_id == "fresh"
    assert [arm_id for arm_id, _ in d.scores] == ["fresh"]
    with pytest.raises(errors.InvalidArgument, match=r"arm\.config\.temperature"):
        svc.add_arm("arms", Arm("hot", LLMConfig(model="m", temperature=3.0)))


# -- definitions ----------------------------------------------------------------------------------


def test_create_get_list_delete(svc: BanditService) -> None:
    for i in range(5):
        svc.create_bandit(
            BanditSpec(f"b{i}", P.Softmax(temperature=0.2), arms(2), description=f"number {i}")
        )
    with pytest.raises(errors.AlreadyExists, match="b1"):
        svc.create_bandit(BanditSpec("b1", P.UCB1(), arms(1)))
    info = svc.get_bandit("b3")
    assert info.spec.policy == P.Softmax(temperature=0.2) and info.spec.description == "number 3"
    assert info.dim == 10
    page, token = svc.list_bandits(page_size=2)
    names = [i.spec.name for i in page]
    while token:
        page, token = svc.list_bandits(page_size=2, page_token=token)
        names += [i.spec.name for i in page]
    assert names == [f"b{i}" for i in range(5)]
    d = svc.select_arm("b2")
    svc.delete_bandit("b2")
    for call in (
        lambda: svc.get_bandit("b2"),
        lambda: svc.select_arm("b2"),
        lambda: svc.record_reward(d.decision_id, reward=1.0),
        lambda: svc.delete_bandit("b2"),
    ):
        with pytest.raises(errors.NotFound):
            call()
    svc.create_bandit(BanditSpec("b2", P.UCB1(), arms(1)))  # the name is free again
    assert svc.stats("b2").decisions == 0
    with pytest.raises(errors.InvalidArgument, match="page_size"):
        svc.list_bandits(page_size=-1)
    with pytest.raises(errors.InvalidArgument, match="page_token"):
        svc.list_bandits(page_token="%%%")


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        (BanditSpec("bad name", P.UCB1(), arms(1)), "bandit.name"),
        (BanditSpec("dup", P.UCB1(), (*arms(2), arms(1)[0])), r"bandit.arms\[2\].arm_id"),
        (BanditSpec("wait", P.UCB1(), arms(1), reward_wait=0.0), "bandit.reward_wait"),
        (BanditSpec("dflt", P.UCB1(), arms(1), default_reward=2.0), "bandit.default_reward"),
        (BanditSpec("seed", P.UCB1(), arms(1), seed=-1), "bandit.seed"),
        (
            BanditSpec("model", P.UCB1(), (Arm("a", LLMConfig(model="")),)),
            r"bandit.arms\[0\].config.model",
        ),
    ],
)
def test_bad_definitions_are_refused(svc: BanditService, spec: BanditSpec, field: str) -> None:
    with pytest.raises(errors.InvalidArgument, match=field):
        svc.create_bandit(spec)


def test_feature_set_without_feature_store_is_refused(svc: BanditService) -> None:
    with pytest.raises(errors.FailedPrecondition, match="feature"):
        svc.create_bandit(BanditSpec("fs", P.LinUCB(), arms(2), feature_set="users"))


# -- durability and recovery ----------------------------------------------------------------------

# One bandit per registered policy (a new policy is covered by being registered), with the
# parameters that make its state move quickly here, and the known-noise Gaussian beside the
# default learned-noise one.
_QUICK = {
    P.DiscountedUCB: P.DiscountedUCB(gamma=0.9),
    P.SlidingWindowUCB: P.SlidingWindowUCB(window=7),
}
POLICIES: dict[str, Any] = {
    **{kind.__name__: _QUICK.get(kind) or kind() for kind in P.POLICY_TABLE},
    "ThompsonGaussianKnownNoise": P.ThompsonGaussian(noise_variance=0.25),
}


def drive(svc: BanditService, names: list[str], n: int, seed: int) -> list[str]:
    """n rounds on each bandit, leaving every 5th decision open; returns the open ids."""
    rng = np.random.default_rng(seed)
    left_open = []
    for i in range(n):
        for name in names:
            ctx = RequestContext(
                task_type=str(rng.choice(["generation", "extraction"])),
                input_length=int(rng.integers(1, 2000)),
                hour_of_day=1,
                day_of_week=1,
            )
            d = svc.select_arm(name, ctx)
            if i % 5 == 4:
                left_open.append(d.decision_id)
            else:
                svc.record_reward(d.decision_id, reward=float(rng.random()))
    return left_open


@pytest.mark.parametrize("snapshot_every", [7, 1_000_000])
def test_recovery_rebuilds_statistics_from_the_log(
    tmp_path: Path, clock: Clock, snapshot_every: int
) -> None:
    root = tmp_path / "b"
    svc = open_service(root, clock, snapshot_every=snapshot_every)
    names = list(POLICIES)
    for name, policy in POLICIES.items():
        svc.create_bandit(BanditSpec(name, policy, arms(3), seed=11))
    left_open = drive(svc, names, 20, seed=3)
    svc.add_arm("UCB1", Arm("late", LLMConfig(model="late")))
    svc.remove_arm("UCB1", "arm1")
    left_open += drive(svc, ["UCB1"], 10, seed=4)
    before = {n: svc.stats(n) for n in names}
    learned = {n: learned_state(svc, n) for n in names}
    # No close(): as after kill -9, the last snapshot (if any) is older than the log.
    again = open_service(root, clock, snapshot_every=snapshot_every)
    for n in names:
        assert again.stats(n) == before[n], n
        assert_same_learning(learned[n], learned_state(again, n))
    info = again.get_bandit("UCB1")
    assert dict((a.arm_id, r) for a, r in info.arms)["arm1"] is True
    for decision_id in left_open:  # unrewarded decisions can still be rewarded
        again.record_reward(decision_id, reward=1.0)
    assert sum(again.stats(n).open_decisions for n in names) == 0
    again.close()
    svc._stop.set()


def test_a_learned_variance_bandit_survives_a_restart(tmp_path: Path, clock: Clock) -> None:
    root = tmp_path / "b"
    svc = open_service(root, clock, snapshot_every=13)
    spec = BanditSpec("ng", P.ThompsonGaussian(prior_kappa=0.5), arms(3), seed=4)
    svc.create_bandit(spec)
    drive(svc, ["ng"], 40, seed=2)
    learned = learned_state(svc, "ng")
    assert set(learned) == {"n", "mean", "m2"} and learned["m2"].sum() > 0
    svc.close()  # a snapshot, then 7 more rewards only in the log (as after kill -9)
    svc = open_service(root, clock, snapshot_every=1_000_000)
    drive(svc, ["ng"], 8, seed=5)
    learned, stats = learned_state(svc, "ng"), svc.stats("ng")
    svc._stop.set()
    again = open_service(root, clock)
    assert again.get_bandit("ng").spec.policy == spec.policy
    assert again.get_bandit("ng").spec.policy.learns_variance
    assert again.stats("ng") == stats
    assert_same_learning(learned, learned_state(again, "ng"))
    again.close()


def test_a_gaussian_bandit_stored_before_learned_variance_keeps_its_fixed_variance(
    tmp_path: Path, clock: Clock
) -> None:
    """A bandit stored by an older server: its definition lacks the Normal-Gamma parameters and
    names its noise variance (it was always set then), and its snapshot holds the known-noise
    state (``n`` and ``s``). It loads as the known-noise form and picks as it did."""
    root = tmp_path / "b"
    svc = open_service(root, clock, snapshot_every=1_000_000)
    old = P.ThompsonGaussian(prior_mean=0.5, prior_variance=1.0, noise_variance=0.25)
    svc.create_bandit(BanditSpec("old", old, arms(3), seed=8))
    drive(svc, ["old"], 30, seed=1)
    svc.close()
    store = store_module.BanditStore(root)

    def as_old_server_wrote(conn: Any) -> None:
        (text,) = conn.execute("SELECT definition FROM bandits WHERE name = 'old'").fetchone()
        definition = json.loads(text)
        definition["policy"]["params"] = {
            "prior_mean": 0.5,
            "prior_variance": 1.0,
            "noise_variance": 0.25,
        }
        conn.execute(
            "UPDATE bandits SET definition = ? WHERE name = 'old'", (json.dumps(definition),)
        )

    store.db.write(as_old_server_wrote)
    store.close()
    again = open_service(root, clock)
    policy = again.get_bandit("old").spec.policy
    assert policy == old and not policy.learns_variance
    kernel_state = again._bandits["old"]._policy.get_state()
    assert {k for k, v in kernel_state.items() if isinstance(v, np.ndarray)} == {"n", "s"}
    # It picks exactly as the known-noise kernel with that state does.
    twin = P.make_policy(old, 3, 10, seed=8)
    twin.set_state(kernel_state)
    allowed = np.ones(3, dtype=np.uint8)
    for _ in range(20):
        d = again.select_arm("old", RequestContext(hour_of_day=1, day_of_week=1))
        assert d.arm.arm_id == f"arm{twin.select(None, allowed).arm}"
    again.close()


def test_close_writes_snapshots_that_bound_the_replay(tmp_path: Path, clock: Clock) -> None:
    root = tmp_path / "b"
    svc = open_service(root, clock, snapshot_every=1_000_000)
    svc.create_bandit(BanditSpec("snap", P.LinUCB(), arms(3), seed=1))
    drive(svc, ["snap"], 30, seed=1)
    before, learned = svc.stats("snap"), learned_state(svc, "snap")
    svc.close()
    store_svc = open_service(root, clock)
    bandit = store_svc._bandits["snap"]
    assert store_svc._store.events_after(bandit.id, bandit._event_seq) == []
    assert store_svc._store.load_snapshot(bandit.id) is not None
    assert store_svc.stats("snap") == before
    assert_same_learning(learned, learned_state(store_svc, "snap"))
    store_svc.close()


# -- concurrency ----------------------------------------------------------------------------------


def test_sixteen_threads_leave_statistics_exact(svc: BanditService) -> None:
    svc.create_bandit(BanditSpec("busy", P.ThompsonBeta(), arms(4), seed=9))
    acknowledged: list[list[tuple[str, float]]] = [[] for _ in range(16)]

    def worker(k: int) -> None:
        rng = np.random.default_rng(k)
        for _ in range(40):
            d = svc.select_arm("busy")
            r = float(rng.random())
            svc.record_reward(d.decision_id, reward=r)
            acknowledged[k].append((d.arm.arm_id, r))

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    flat = [x for part in acknowledged for x in part]
    stats = svc.stats("busy")
    assert stats.decisions == stats.rewards == len(flat) == 640
    for a in stats.arms:
        mine = [r for arm, r in flat if arm == a.arm_id]
        assert a.rewards == a.pulls == len(mine)
        assert a.reward_sum == pytest.approx(sum(mine))
    state = svc._bandits["busy"]._policy.get_state()
    assert state["alpha"].sum() + state["beta"].sum() == pytest.approx(640 + 2 * 4)


def test_quiet_bandit_snapshot_moves_its_watermark_to_the_log_end(
    tmp_path: Path, clock: Clock
) -> None:
    root = tmp_path / "b"
    svc = open_service(root, clock, snapshot_every=1_000_000)
    svc.create_bandit(BanditSpec("quiet", P.DiscountedUCB(gamma=0.8), arms(3), seed=1))
    svc.create_bandit(BanditSpec("busy", P.UCB1(), arms(3), seed=2))
    drive(svc, ["quiet", "busy"], 5, seed=1)
    drive(svc, ["busy"], 20, seed=2)
    quiet = svc._bandits["quiet"]
    written = quiet.maybe_snapshot(0.0)  # idle: the watermarks move past busy's later rows
    assert written is not None
    written.result()
    event_seq, _, _ = svc._store.load_snapshot(quiet.id)  # type: ignore[misc]
    top = svc._store.db.read(lambda c: c.execute("SELECT max(seq) FROM events").fetchone()[0])
    assert event_seq == top > quiet._event_seq
    drive(svc, ["busy", "quiet"], 6, seed=3)  # after the snapshot, then a crash
    before = {n: svc.stats(n) for n in ("quiet", "busy")}
    learned = {n: learned_state(svc, n) for n in ("quiet", "busy")}
    again = open_service(root, clock)
    for n in ("quiet", "busy"):
        assert again.stats(n) == before[n]
        assert_same_learning(learned[n], learned_state(again, n))
    again.close()
    svc._stop.set()


# -- explanations and the decision log ------------------------------------------------------------

from llmopt.bandits.explain import ArmStatus, Explanation  # noqa: E402
from llmopt.bandits.types import DecisionStatus  # noqa: E402
from llmopt.features.context import DEFAULT_CONTEXT_SLOTS, OutputLength  # noqa: E402

FULL_CONTEXT = RequestContext(
    user_id="u-7",
    task_type="summarization",
    input_length=300,
    output_length=OutputLength.LONG,
    priority=8,
    region="eu-wést",
    hour_of_day=13,
    day_of_week=4,
    language="de",
    metadata={"tenant": "acme", "ünï": "côde"},
    features={"urgency": 0.75},
)


def assert_parts_sum_to_scores(e: Explanation, scores: np.ndarray) -> None:
    for a, score in zip(e.arms, scores.tolist(), strict=True):
        if a.status == ArmStatus.ELIGIBLE:
            assert a.score == score or (np.isinf(a.score) and a.score == score)
            if np.isfinite(a.score):
                assert abs(a.exploitation + a.exploration - a.score) <= 1e-9
        else:
            assert np.isnan(a.score) and score != score


@pytest.mark.parametrize(
    "config", [P.UCB1(), P.LinUCB(alpha=0.4), P.ThompsonBeta(), P.EpsilonGreedy()]
)
def test_select_arm_explains_only_when_asked_and_the_parts_sum_to_the_scores(
    svc: BanditService, config: P.PolicyConfig
) -> None:
    svc.create_bandit(BanditSpec("why", config, arms(4), seed=3))
    svc.remove_arm("why", "arm3")
    for i in range(12):  # some learning, so that scores are finite
        d = svc.select_arm("why", FULL_CONTEXT)
        svc.record_reward(d.decision_id, reward=(i % 3) / 2)
    plain = svc.select_arm("why", FULL_CONTEXT, excluded=["arm1"])
    assert plain.explanation is None
    d = svc.select_arm("why", FULL_CONTEXT, excluded=["arm1"], explain=True)
    e = d.explanation
    assert e is not None and e.policy == config.ONEOF
    assert e.chosen_arm_id == d.arm.arm_id and e.propensity == d.propensity
    assert [a.arm_id for a in e.arms] == ["arm0", "arm1", "arm2", "arm3"]
    statuses = [a.status for a in e.arms]
    assert statuses == [
        ArmStatus.ELIGIBLE,
        ArmStatus.EXCLUDED,
        ArmStatus.ELIGIBLE,
        ArmStatus.REMOVED,
    ]
    assert_parts_sum_to_scores(e, d.arm_scores)
    if config.ONEOF == "lin_ucb":
        for a in e.arms:
            if a.status == ArmStatus.ELIGIBLE:
                assert [c.name for c in a.contributions] == list(DEFAULT_CONTEXT_SLOTS)
                assert sum(c.contribution for c in a.contributions) == pytest.approx(a.mean)


def test_a_retry_returns_the_decision_with_its_kept_explanation(
    tmp_path: Path, clock: Clock
) -> None:
    svc = open_service(tmp_path / "b", clock)
    svc.create_bandit(BanditSpec("retry", P.ThompsonBeta(), arms(3), seed=9))
    d = svc.select_arm("retry", FULL_CONTEXT, decision_id="req-1", explain=True)
    assert d.explanation is not None
    again = svc.select_arm("retry", FULL_CONTEXT, decision_id="req-1", explain=True)
    assert again == d and again.explanation == d.explanation  # open: read from the log
    assert svc.select_arm("retry", FULL_CONTEXT, decision_id="req-1").explanation == d.explanation
    plain = svc.select_arm("retry", FULL_CONTEXT, decision_id="req-2")
    assert svc.select_arm("retry", FULL_CONTEXT, decision_id="req-2", explain=True) == plain
    assert (
        svc.select_arm("retry", FULL_CONTEXT, decision_id="req-2", explain=True).explanation is None
    )
    svc.record_reward("req-1", reward=1.0)
    closed = svc.select_arm("retry", FULL_CONTEXT, decision_id="req-1")
    assert closed == d and closed.explanation == d.explanation  # rewarded: from the store
    svc.close()
    svc = open_service(tmp_path / "b", clock)
    try:
        restarted = svc.select_arm("retry", FULL_CONTEXT, decision_id="req-1")
        assert restarted == d and restarted.explanation == d.explanation
    finally:
        svc.close()


def test_get_decision_returns_an_open_decision_as_logged(svc: BanditService, clock: Clock) -> None:
    svc.create_bandit(BanditSpec("log", P.LinUCB(), arms(3), reward_wait=60.0, seed=1))
    d = svc.select_arm("log", FULL_CONTEXT, explain=True)
    got = svc.get_decision(d.decision_id)
    assert got.status == DecisionStatus.OPEN and got.bandit == "log"
    assert got.arm == d.arm and got.propensity == d.propensity and got.scores == d.scores
    assert got.time == clock.t and got.expire_time == clock.t + 60.0
    assert got.context == FULL_CONTEXT  # every field, unicode and maps included
    np.testing.assert_array_equal(got.context_vector, default_context(FULL_CONTEXT))
    assert got.slot_names == DEFAULT_CONTEXT_SLOTS
    assert got.explanation == d.explanation and not got.explanation_recomputed
    assert got.reward is None and got.outcome is None and got.reward_time is None
    assert not got.degraded
    svc._store.flush()  # the log keeps the compact stored form, read back exactly
    kept = svc._store.find_decision(d.decision_id)
    assert kept is not None and isinstance(kept.explanation, bytes)
    assert kept.explanation == d.explanation.to_bytes()  # type: ignore[union-attr]
    assert Explanation.from_bytes(kept.explanation) == d.explanation
    without = svc.select_arm("log")  # no context sent: none logged
    assert svc.get_decision(without.decision_id).context is None


def test_get_decision_joins_the_reward_and_outcome(svc: BanditService, clock: Clock) -> None:
    svc.create_bandit(BanditSpec("paid", P.UCB1(), arms(2)))
    d = svc.select_arm("paid", FULL_CONTEXT)
    clock.t += 5
    outcome = Outcome(
        quality_score=0.9,
        cost=0.02,
        latency_ms=800,
        tokens=120,
        feedback=Feedback(rating=4, task_completed=True, dwell_seconds=30.0),
    )
    receipt = svc.record_reward(d.decision_id, outcome=outcome)
    got = svc.get_decision(d.decision_id)
    assert got.status == DecisionStatus.REWARDED and got.reward == receipt.reward
    assert got.outcome == outcome and got.reward_time == clock.t
    raw = svc.select_arm("paid")
    svc.record_reward(raw.decision_id, reward=0.375)
    got = svc.get_decision(raw.decision_id)
    assert got.reward == 0.375 and got.outcome is None


def test_get_decision_of_an_expired_decision_has_the_default_reward(
    svc: BanditService, clock: Clock
) -> None:
    svc.create_bandit(BanditSpec("late", P.UCB1(), arms(2), reward_wait=10.0, default_reward=0.25))
    d = svc.select_arm("late")
    clock.t += 11
    assert svc.sweep() == 1
    got = svc.get_decision(d.decision_id)
    assert got.status == DecisionStatus.EXPIRED and got.reward == 0.25
    assert got.reward_time == clock.t and got.outcome is None


@pytest.mark.parametrize("config", [P.UCB1(), P.LinUCB(alpha=0.4), P.ThompsonBeta()])
def test_an_explanation_is_recomputed_on_request_from_the_logged_decision(
    svc: BanditService, config: P.PolicyConfig
) -> None:
    svc.create_bandit(BanditSpec("re", config, arms(3), seed=2))
    for i in range(9):
        d = svc.select_arm("re", FULL_CONTEXT)
        svc.record_reward(d.decision_id, reward=(i % 2) * 1.0)
    d = svc.select_arm("re", FULL_CONTEXT, excluded=["arm2"])
    assert svc.get_decision(d.decision_id).explanation is None  # not asked: none
    got = svc.get_decision(d.decision_id, explain=True)
    e = got.explanation
    assert e is not None and got.explanation_recomputed
    assert e.chosen_arm_id == d.arm.arm_id and e.propensity == d.propensity
    assert e.arms[2].status == ArmStatus.EXCLUDED  # no logged score: was not eligible
    # The logged scores stand (Thompson's draws), and nothing was learned since: same parts.
    assert_parts_sum_to_scores(e, d.arm_scores)


def test_get_decision_of_an_unknown_or_malformed_id_names_it(svc: BanditService) -> None:
    with pytest.raises(errors.NotFound, match="decision_id: 'nope' is not a known decision"):
        svc.get_decision("nope")
    with pytest.raises(errors.InvalidArgument, match="decision_id"):
        svc.get_decision("")


def test_list_decisions_pages_oldest_first_within_the_range(
    svc: BanditService, clock: Clock
) -> None:
    svc.create_bandit(BanditSpec("audit", P.UCB1(), arms(2)))
    svc.create_bandit(BanditSpec("other", P.UCB1(), arms(2)))
    t0 = clock.t
    made = []
    for i in range(25):
        clock.t = t0 + i // 2  # two decisions per second: ties are ordered by log order
        made.append(svc.select_arm("audit", decision_id=f"d{i:02}").decision_id)
        svc.select_arm("other")
    seen, token, pages = [], "", 0
    while True:
        page, token = svc.list_decisions("audit", page_size=4, page_token=token)
        seen += [d.decision_id for d in page]
        pages += 1
        if not token:
            break
    assert seen == made and pages == 7
    window, token = svc.list_decisions("audit", t0 + 3, t0 + 6)
    assert [d.decision_id for d in window] == made[6:12] and token == ""
    assert all(d.status == DecisionStatus.OPEN for d in window)
    assert svc.list_decisions("audit", t0 + 100)[0] == []


def test_list_decisions_refuses_bad_input_naming_the_field(svc: BanditService) -> None:
    svc.create_bandit(BanditSpec("audit", P.UCB1(), arms(2)))
    with pytest.raises(errors.InvalidArgument, match="end_time"):
        svc.list_decisions("audit", 100.0, 50.0)
    with pytest.raises(errors.InvalidArgument, match="end_time"):  # beyond any datetime
        svc.list_decisions("audit", 1e300, -1e300)
    with pytest.raises(errors.InvalidArgument, match=r"page\.page_token: 'garbage!'"):
        svc.list_decisions("audit", page_token="garbage!")
    forged = service_module._encode_token("not-a-cursor")
    with pytest.raises(errors.InvalidArgument, match=r"page\.page_token"):
        svc.list_decisions("audit", page_token=forged)
    with pytest.raises(errors.InvalidArgument, match=r"page\.page_size"):
        svc.list_decisions("audit", page_size=5000)
    with pytest.raises(errors.NotFound, match="bandit: bandit 'ghost' does not exist"):
        svc.list_decisions("ghost")


def test_decisions_still_in_the_journal_are_found_and_listed(
    tmp_path: Path, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    from llmopt.storage import sqlite

    monkeypatch.setattr(sqlite, "_IDLE_POLL_SECONDS", 3600)  # the writer waits to be woken
    svc = open_service(tmp_path / "b", clock)
    try:
        svc.create_bandit(BanditSpec("fresh", P.UCB1(), arms(2)))
        ids = [svc.select_arm("fresh", FULL_CONTEXT).decision_id for _ in range(5)]
        count = "SELECT count(*) FROM decisions"
        assert svc._store.db.read(lambda c: c.execute(count).fetchone()[0]) == 0  # journal only
        assert [d.decision_id for d in svc.list_decisions("fresh")[0]] == ids
        assert svc.get_decision(ids[-1]).context == FULL_CONTEXT
    finally:
        svc.close()


def test_arm_estimates_read_what_the_policy_learned(svc: BanditService) -> None:
    svc.create_bandit(BanditSpec("est", P.UCB1(), arms(3), seed=1))
    svc.remove_arm("est", "arm2")
    for _ in range(20):
        d = svc.select_arm("est")
        svc.record_reward(d.decision_id, reward=1.0 if d.arm.arm_id == "arm0" else 0.0)
    est = svc.arm_estimates("est")
    stats = {a.arm_id: a for a in svc.stats("est").arms}
    assert est.bandit == "est" and est.policy == "ucb1"
    assert [a.arm_id for a in est.arms] == ["arm0", "arm1", "arm2"]
    assert [a.removed for a in est.arms] == [False, False, True]
    for a in est.arms[:2]:
        assert a.pulls == stats[a.arm_id].rewards
        assert a.mean == pytest.approx(stats[a.arm_id].mean)
        assert a.ci_low <= a.mean <= a.ci_high
    with pytest.raises(errors.NotFound, match="ghost"):
        svc.arm_estimates("ghost")

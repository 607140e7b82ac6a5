"""The decision log through the real server: SelectArm with explain, GetDecision before and after
a reward and after kill -9, ListDecisions paging and ranges, GetArmEstimates, refused inputs, the
client's methods and ``llmopt-registry decisions`` as JSON lines."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import uuid

import grpc
import pytest

from llmopt.client import Client, Context, InvalidArgument, NotFound
from llmopt.gen.llmopt.v1 import bandits_pb2 as pb
from llmopt.gen.llmopt.v1 import bandits_pb2_grpc, common_pb2

pytestmark = pytest.mark.integration
Code = grpc.StatusCode

CONTEXT = common_pb2.RequestContext(
    task_type="summarization",
    input_length=420,
    output_length_category=common_pb2.LONG,
    priority=7,
    hour_of_day=9,
    day_of_week=1,
    metadata={"tenant": "acme"},
)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def create(stub, name: str, policy: pb.Policy, n_arms: int = 3, **kw) -> None:
    arms = [
        common_pb2.Arm(arm_id=f"arm{i}", config=common_pb2.LLMConfig(model=f"m{i}"))
        for i in range(n_arms)
    ]
    bandit = pb.Bandit(name=name, policy=policy, arms=arms, seed=3, **kw)
    stub.CreateBandit(pb.CreateBanditRequest(bandit=bandit), timeout=10)


@pytest.fixture
def stub(channel: grpc.Channel) -> bandits_pb2_grpc.BanditsStub:
    return bandits_pb2_grpc.BanditsStub(channel)


def refused(call, request, code: Code, *words: str) -> None:
    with pytest.raises(grpc.RpcError) as err:
        call(request, timeout=10)
    assert err.value.code() == code, err.value.details()
    for word in words:
        assert word in err.value.details(), err.value.details()


def assert_parts_sum_to_scores(d: pb.Decision) -> None:
    scores = {s.arm_id: s.score for s in d.scores}
    e = d.explanation
    assert e.chosen_arm_id == d.arm.arm_id and e.propensity == d.propensity
    eligible = [a for a in e.arms if a.status == pb.ELIGIBLE]
    assert {a.arm_id for a in eligible} == set(scores) and eligible
    for a in eligible:
        assert a.score == scores[a.arm_id]
        if math.isfinite(a.score):
            assert abs(a.exploitation + a.exploration - a.score) <= 1e-9


@pytest.mark.parametrize(
    "policy",
    [pb.Policy(ucb1=pb.UCB1()), pb.Policy(lin_ucb=pb.LinUCB(alpha=0.5))],
    ids=["ucb1", "lin_ucb"],
)
def test_select_arm_explains_over_the_wire_and_get_decision_returns_it(stub, policy) -> None:
    name = unique("why")
    create(stub, name, policy)
    stub.RemoveArm(pb.RemoveArmRequest(bandit=name, arm_id="arm2"), timeout=10)
    for i in range(8):  # learn a little: finite scores
        d = stub.SelectArm(pb.SelectArmRequest(bandit=name, context=CONTEXT), timeout=10)
        stub.RecordReward(
            pb.RecordRewardRequest(decision_id=d.decision_id, reward=(i % 2) * 1.0), timeout=10
        )
    plain = stub.SelectArm(pb.SelectArmRequest(bandit=name, context=CONTEXT), timeout=10)
    assert not plain.HasField("explanation")
    d = stub.SelectArm(pb.SelectArmRequest(bandit=name, context=CONTEXT, explain=True), timeout=10)
    assert_parts_sum_to_scores(d)
    assert [a.status for a in d.explanation.arms] == [pb.ELIGIBLE, pb.ELIGIBLE, pb.REMOVED]
    assert d.explanation.reason.startswith("chose ")
    if policy.WhichOneof("kind") == "lin_ucb":
        chosen = next(a for a in d.explanation.arms if a.arm_id == d.arm.arm_id)
        assert [c.name for c in chosen.contributions][7] == "task_type"
        assert sum(c.contribution for c in chosen.contributions) == pytest.approx(chosen.mean)

    got = stub.GetDecision(pb.GetDecisionRequest(decision_id=d.decision_id), timeout=10)
    assert got.status == pb.OPEN and got.bandit == name and got.arm == d.arm
    assert got.propensity == d.propensity and list(got.scores) == list(d.scores)
    assert got.time == d.time and got.expire_time.seconds == d.time.seconds + 24 * 3600
    assert got.context == CONTEXT and len(got.context_vector) == 10
    assert list(got.slot_names)[:3] == ["input_length_log", "output_length", "priority"]
    assert got.explanation == d.explanation and not got.explanation_recomputed
    assert not got.HasField("reward") and not got.HasField("reward_time") and not got.degraded

    outcome = pb.Outcome(
        quality_score=0.9, cost=0.01, latency_ms=300, feedback=pb.Feedback(rating=5)
    )
    receipt = stub.RecordReward(
        pb.RecordRewardRequest(decision_id=d.decision_id, outcome=outcome), timeout=10
    )
    got = stub.GetDecision(pb.GetDecisionRequest(decision_id=d.decision_id), timeout=10)
    assert got.status == pb.REWARDED and got.reward == receipt.reward
    assert got.outcome == outcome and got.reward_time.seconds >= got.time.seconds

    # Not explained at decision time: recomputed on request, and marked so.
    assert not stub.GetDecision(
        pb.GetDecisionRequest(decision_id=plain.decision_id), timeout=10
    ).HasField("explanation")
    again = stub.GetDecision(
        pb.GetDecisionRequest(decision_id=plain.decision_id, explain=True), timeout=10
    )
    assert again.explanation_recomputed and again.explanation.chosen_arm_id == plain.arm.arm_id


def test_a_retry_returns_the_explained_decision_as_it_was(stub) -> None:
    name = unique("retry")
    create(stub, name, pb.Policy(thompson_beta=pb.ThompsonBeta()))
    request = pb.SelectArmRequest(
        bandit=name, context=CONTEXT, decision_id=unique("id"), explain=True
    )
    first = stub.SelectArm(request, timeout=10)
    assert stub.SelectArm(request, timeout=10) == first
    stub.RecordReward(pb.RecordRewardRequest(decision_id=first.decision_id, reward=1.0), timeout=10)
    assert stub.SelectArm(request, timeout=10) == first  # rewarded: from the log


def test_list_decisions_pages_oldest_first_within_a_range(stub) -> None:
    name = unique("audit")
    create(stub, name, pb.Policy(ucb1=pb.UCB1()))
    made = [stub.SelectArm(pb.SelectArmRequest(bandit=name), timeout=10) for _ in range(23)]
    seen: list[pb.LoggedDecision] = []
    token, pages = "", 0
    while True:
        page = stub.ListDecisions(
            pb.ListDecisionsRequest(
                bandit=name, page=common_pb2.PageRequest(page_size=5, page_token=token)
            ),
            timeout=10,
        )
        seen += page.decisions
        pages += 1
        token = page.next_page_token
        if not token:
            break
    assert [d.decision_id for d in seen] == [d.decision_id for d in made] and pages == 5
    assert all(d.status == pb.OPEN and d.bandit == name for d in seen)
    # A range [start, end): from the 6th decision's time to the 11th's.
    ranged = pb.ListDecisionsRequest(bandit=name, start_time=made[5].time, end_time=made[10].time)
    window = stub.ListDecisions(ranged, timeout=10).decisions
    at = lambda d: (d.time.seconds, d.time.nanos)  # noqa: E731
    inside = [d.decision_id for d in made if at(made[5]) <= at(d) < at(made[10])]
    assert [d.decision_id for d in window] == inside and made[5].decision_id in inside


def test_arm_estimates_over_the_wire(stub) -> None:
    name = unique("est")
    create(stub, name, pb.Policy(lin_ucb=pb.LinUCB()), n_arms=2)
    for _ in range(6):
        d = stub.SelectArm(pb.SelectArmRequest(bandit=name, context=CONTEXT), timeout=10)
        stub.RecordReward(pb.RecordRewardRequest(decision_id=d.decision_id, reward=1.0), timeout=10)
    est = stub.GetArmEstimates(pb.GetArmEstimatesRequest(bandit=name), timeout=10)
    assert est.bandit == name and est.policy == "lin_ucb" and len(est.slot_names) == 10
    assert [a.arm_id for a in est.arms] == ["arm0", "arm1"]
    assert sum(a.pulls for a in est.arms) == 6
    assert all(len(a.theta) == 10 and len(a.theta_sd) == 10 for a in est.arms)
    assert all(math.isnan(a.mean) for a in est.arms)


def test_bad_input_is_refused_with_the_field_named(stub) -> None:
    name = unique("bad")
    create(stub, name, pb.Policy(ucb1=pb.UCB1()))
    refused(stub.GetDecision, pb.GetDecisionRequest(decision_id="nope"), Code.NOT_FOUND, "'nope'")
    refused(stub.GetDecision, pb.GetDecisionRequest(), Code.INVALID_ARGUMENT, "decision_id")
    refused(
        stub.ListDecisions,
        pb.ListDecisionsRequest(bandit=name, page=common_pb2.PageRequest(page_token="x!")),
        Code.INVALID_ARGUMENT,
        "page.page_token",
    )
    reversed_range = pb.ListDecisionsRequest(bandit=name)
    reversed_range.start_time.seconds, reversed_range.end_time.seconds = 200, 100
    refused(stub.ListDecisions, reversed_range, Code.INVALID_ARGUMENT, "end_time")
    bad_nanos = pb.ListDecisionsRequest(bandit=name)
    bad_nanos.start_time.nanos = -5
    refused(stub.ListDecisions, bad_nanos, Code.INVALID_ARGUMENT, "start_time.nanos")
    far = pb.ListDecisionsRequest(bandit=name)
    far.end_time.seconds = 2**62  # past year 9999: no Timestamp
    refused(stub.ListDecisions, far, Code.INVALID_ARGUMENT, "end_time.seconds")
    refused(
        stub.ListDecisions,
        pb.ListDecisionsRequest(bandit=name, page=common_pb2.PageRequest(page_size=5000)),
        Code.INVALID_ARGUMENT,
        "page.page_size",
    )
    refused(stub.ListDecisions, pb.ListDecisionsRequest(bandit="ghost"), Code.NOT_FOUND, "ghost")
    refused(stub.ListDecisions, pb.ListDecisionsRequest(), Code.INVALID_ARGUMENT, "bandit")
    refused(
        stub.GetArmEstimates, pb.GetArmEstimatesRequest(bandit="ghost"), Code.NOT_FOUND, "ghost"
    )


def test_decisions_survive_kill_9_and_are_exported_as_json_lines(server_factory) -> None:
    proc = server_factory()
    with proc.channel() as ch:
        stub = bandits_pb2_grpc.BanditsStub(ch)
        create(stub, "kept", pb.Policy(lin_ucb=pb.LinUCB(alpha=0.3)))
        explained = stub.SelectArm(
            pb.SelectArmRequest(bandit="kept", context=CONTEXT, explain=True), timeout=10
        )
        rewarded = stub.SelectArm(pb.SelectArmRequest(bandit="kept", context=CONTEXT), timeout=10)
        stub.RecordReward(
            pb.RecordRewardRequest(decision_id=rewarded.decision_id, reward=0.25), timeout=10
        )
        before = {
            d.decision_id: stub.GetDecision(
                pb.GetDecisionRequest(decision_id=d.decision_id), timeout=10
            )
            for d in (explained, rewarded)
        }
    proc.kill()
    again = server_factory(data_dir=proc.data_dir)
    with again.channel() as ch:
        stub = bandits_pb2_grpc.BanditsStub(ch)
        for decision_id, logged in before.items():
            assert stub.GetDecision(pb.GetDecisionRequest(decision_id=decision_id), timeout=10) == (
                logged
            )
        assert before[explained.decision_id].explanation == explained.explanation
        assert before[rewarded.decision_id].reward == 0.25

    with Client(again.address) as client:
        d = client.select_arm("kept", Context(task_type="generation"), explain=True)
        assert d.explanation is not None and d.explanation.chosen_arm_id == d.arm.arm_id
        assert client.select_arm("kept").explanation is None
        logged = client.get_decision(d.decision_id)
        assert logged.status == "open" and logged.context == Context(task_type="generation")
        assert repr(logged.explanation) == repr(d.explanation)  # NaN parts: equal as written
        ids = [x.decision_id for x in client.iter_decisions("kept", page_size=2)]
        assert ids[:2] == [explained.decision_id, rewarded.decision_id] and len(ids) == 4
        page = client.list_decisions("kept", page_size=3)
        assert len(page.items) == 3 and page.next_page_token
        assert client.get_arm_estimates("kept").policy == "lin_ucb"
        with pytest.raises(NotFound):
            client.get_decision("missing")
        with pytest.raises(InvalidArgument):
            client.list_decisions("kept", page_token="bad!")

    cli = [sys.executable, "-m", "llmopt.registry.cli", "--address", again.address, "decisions"]
    done = subprocess.run([*cli, "kept"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert [x["decision_id"] for x in lines] == ids
    first = lines[0]
    assert first["context"]["task_type"] == "summarization" and first["status"] == "open"
    assert first["explanation"]["chosen_arm_id"] == explained.arm.arm_id
    assert len(first["explanation"]["arms"]) == 3 and len(first["context_vector"]) == 10
    assert lines[1]["status"] == "rewarded" and lines[1]["reward"] == 0.25
    between = (lines[1]["time"] + lines[2]["time"]) / 2
    since = subprocess.run(
        [*cli, "kept", "--since", repr(between)], capture_output=True, text=True, timeout=120
    )
    assert [json.loads(x)["decision_id"] for x in since.stdout.splitlines()] == ids[2:]
    bad = subprocess.run([*cli, "ghost"], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 1 and "NOT_FOUND" in bad.stderr

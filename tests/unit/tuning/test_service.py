"""TuningService in process, over real SQLite stores: ask and tell, validation that changes
nothing, budgets, retries, restarts, and a study that drives a real BanditService."""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from llmopt import errors
from llmopt.bandits.arms import Arm, LLMConfig
from llmopt.bandits.policies import UCB1
from llmopt.bandits.rewards import Outcome
from llmopt.bandits.service import BanditService
from llmopt.bandits.types import BanditSpec
from llmopt.features import FeatureService
from llmopt.tuning import (
    BanditBinding,
    CategoricalParam,
    Constraint,
    FloatParam,
    IntParam,
    Objective,
    OptimizerConfig,
    SearchSpace,
    StudySpec,
    TuningService,
)

SPACE = SearchSpace(
    [
        FloatParam("temperature", 0.0, 2.0),
        IntParam("max_tokens", 16, 1024, log=True),
        CategoricalParam("variant", ("short", "long")),
    ]
)


def quality(params: dict) -> float:
    """A simulated LLM: best at temperature 0.7, 256 tokens, the long prompt."""
    t, n = params["temperature"], params["max_tokens"]
    bonus = 0.1 if params["variant"] == "long" else 0.0
    return 0.9 - (t - 0.7) ** 2 - 0.05 * (math.log2(n) - 8) ** 2 / 4 + bonus


@pytest.fixture
def svc(tmp_path: Path) -> Iterator[TuningService]:
    s = TuningService(tmp_path / "tuning")
    s.warm_up()
    yield s
    s.close()


def spec(name: str = "s", **kw) -> StudySpec:
    return StudySpec(name, SPACE, optimizer=OptimizerConfig(seed=3, initial_trials=4), **kw)


def test_ask_and_tell_keeps_the_best_trial(svc: TuningService) -> None:
    svc.create_study(spec())
    first = svc.suggest("s", 3)
    assert [t.number for t in first] == [1, 2, 3]
    assert all(t.state == "running" for t in first)
    assert set(first[0].params) == {"temperature", "max_tokens", "variant"}
    assert isinstance(first[0].params["max_tokens"], int)
    values = {}
    for t in first:
        values[t.number] = quality(t.params)
        done = svc.report("s", t.number, value=values[t.number])
        assert (done.state, done.value, done.feasible) == ("complete", values[t.number], True)
    best = max(values, key=values.__getitem__)
    assert svc.best_trial("s").number == best
    info = svc.get_study("s")
    assert (info.running, info.complete, info.failed, info.best.number) == (0, 3, 0, best)


def test_a_study_improves_on_its_initial_design(svc: TuningService) -> None:
    """The GP phase (trials 5..20) finds better configurations than the 4 design points."""
    svc.create_study(spec())
    scores = []
    for _ in range(20):
        [t] = svc.suggest("s")
        scores.append(quality(t.params))
        svc.report("s", t.number, value=scores[-1])
    assert max(scores[4:]) > max(scores[:4])
    assert max(scores) > 0.93  # the optimum is 1.0; the design's best was below 0.9 here
    assert svc.best_trial("s").value == max(scores)


def test_bad_reports_are_refused_naming_the_field_and_change_nothing(svc: TuningService) -> None:
    svc.create_study(spec(constraints=(Constraint("cost", max=0.01),)))
    [t] = svc.suggest("s")
    cases = [
        (dict(value=math.nan, metrics={"cost": 0.0}), errors.InvalidArgument, "value"),
        (dict(value=1.0), errors.InvalidArgument, "metrics"),  # the constraint's metric missing
        (dict(value=1.0, metrics={"cost": math.inf}), errors.InvalidArgument, "metrics['cost']"),
        (dict(failed=True, value=1.0), errors.InvalidArgument, "value"),
        (dict(value=1.0, metrics={"cost": 0}, failure="x"), errors.InvalidArgument, "failure"),
    ]
    for kwargs, error, field in cases:
        with pytest.raises(error, match=f"^{re.escape(field)}"):
            svc.report("s", t.number, **kwargs)
    with pytest.raises(errors.NotFound, match="trial: 9"):
        svc.report("s", 9, value=1.0, metrics={"cost": 0.0})
    with pytest.raises(errors.NotFound, match="study: 'nope'"):
        svc.report("nope", 1, value=1.0)
    with pytest.raises(errors.InvalidArgument, match=r"^trial"):
        svc.report("s", -1, value=1.0, metrics={"cost": 0.0})
    assert svc.list_trials("s")[0][0].state == "running"  # nothing changed


def test_the_same_report_twice_is_harmless_a_different_one_is_refused(
    svc: TuningService,
) -> None:
    svc.create_study(spec())
    [t] = svc.suggest("s")
    first = svc.report("s", t.number, value=0.5)
    assert svc.report("s", t.number, value=0.5) == first
    with pytest.raises(errors.AlreadyExists, match="already complete"):
        svc.report("s", t.number, value=0.6)
    with pytest.raises(errors.AlreadyExists):
        svc.report("s", t.number, failed=True)
    assert svc.list_trials("s")[0][0].value == 0.5


def test_constraints_decide_feasibility_and_the_best(svc: TuningService) -> None:
    svc.create_study(spec(constraints=(Constraint("latency_p95", max=500.0),)))
    a, b = svc.suggest("s", 2)
    svc.report("s", a.number, value=0.9, metrics={"latency_p95": 800.0})
    with pytest.raises(errors.FailedPrecondition, match="no complete trial"):
        svc.best_trial("s")
    done = svc.report("s", b.number, value=0.4, metrics={"latency_p95": 300.0})
    assert done.feasible
    assert svc.best_trial("s").number == b.number
    assert not svc.list_trials("s")[0][0].feasible


def test_a_named_objective_metric_is_the_value(svc: TuningService) -> None:
    svc.create_study(spec(objective=Objective("minimize", "cost_usd")))
    a, b = svc.suggest("s", 2)
    with pytest.raises(errors.InvalidArgument, match=r"^value"):
        svc.report("s", a.number, value=1.0, metrics={"cost_usd": 1.0})
    with pytest.raises(errors.InvalidArgument, match=r"^metrics.*cost_usd"):
        svc.report("s", a.number, metrics={"other": 1.0})
    svc.report("s", a.number, metrics={"cost_usd": 0.02})
    svc.report("s", b.number, metrics={"cost_usd": 0.01})
    assert svc.best_trial("s").number == b.number  # minimized


def test_failed_trials_count_and_are_never_best(svc: TuningService) -> None:
    svc.create_study(spec())
    a, b = svc.suggest("s", 2)
    failed = svc.report("s", a.number, failed=True, failure="provider timeout")
    assert (failed.state, failed.value, failed.failure) == ("failed", None, "provider timeout")
    svc.report("s", b.number, value=0.1)
    assert svc.best_trial("s").number == b.number
    assert svc.get_study("s").failed == 1
    [c] = svc.suggest("s")  # a failed trial does not stop the optimizer
    assert c.number == 3


def test_max_trials_caps_suggestions_and_completes_the_study(svc: TuningService) -> None:
    svc.create_study(spec(max_trials=3))
    trials = svc.suggest("s", 5)
    assert len(trials) == 3
    with pytest.raises(errors.FailedPrecondition, match="all of its 3 trials"):
        svc.suggest("s")
    for t in trials[:2]:
        svc.report("s", t.number, value=0.1)
    assert svc.get_study("s").state == "running"  # one still running
    svc.report("s", trials[2].number, value=0.2)
    assert svc.get_study("s").state == "completed"


def test_a_suggest_retry_with_its_request_id_gets_the_same_trials(svc: TuningService) -> None:
    svc.create_study(spec())
    first = svc.suggest("s", 2, request_id="req-1")
    assert svc.suggest("s", 2, request_id="req-1") == first
    assert [t.number for t in svc.suggest("s", 1, request_id="req-2")] == [3]


def test_stop_refuses_suggestions_but_takes_reports(svc: TuningService) -> None:
    svc.create_study(spec())
    [t] = svc.suggest("s")
    assert svc.stop_study("s").state == "stopped"
    with pytest.raises(errors.FailedPrecondition, match="stopped"):
        svc.suggest("s")
    assert svc.report("s", t.number, value=0.3).state == "complete"


def test_an_outside_evaluation_is_recorded_as_a_new_trial(svc: TuningService) -> None:
    svc.create_study(spec())
    params = {"temperature": 0.7, "max_tokens": 256.0, "variant": "long"}
    t = svc.report("s", 0, value=0.99, params=params)
    assert (t.number, t.state, t.params["max_tokens"]) == (1, "complete", 256)
    with pytest.raises(errors.InvalidArgument, match=r"^params.max_tokens"):
        svc.report("s", 0, value=0.5, params={**params, "max_tokens": 99999})
    with pytest.raises(errors.InvalidArgument, match=r"^params"):
        svc.report("s", 0, value=0.5)
    [nxt] = svc.suggest("s")
    assert nxt.number == 2


def test_bad_studies_are_refused_naming_the_field(svc: TuningService) -> None:
    cases = [
        (dataclasses.replace(spec(), name="a/b"), "study.name"),
        (spec(max_trials=-1), "study.max_trials"),
        (spec(objective=Objective("upward")), "study.objective.direction"),
        (spec(constraints=(Constraint("c", max=1.0), Constraint("c", min=0.0))), "study.constr"),
        (spec(constraints=(Constraint("c"),)), "study.constraints[0]"),
    ]
    for bad, field in cases:
        with pytest.raises(errors.InvalidArgument, match=rf"^{re.escape(field)}"):
            svc.create_study(bad)
    svc.create_study(spec())
    with pytest.raises(errors.AlreadyExists):
        svc.create_study(spec())
    with pytest.raises(errors.InvalidArgument, match=r"^count"):
        svc.suggest("s", 65)
    assert svc.list_studies()[0][0].spec.name == "s"
    assert len(svc.list_studies()[0]) == 1


def test_list_trials_pages_and_filters_by_state(svc: TuningService) -> None:
    svc.create_study(spec())
    trials = svc.suggest("s", 5)
    svc.report("s", trials[1].number, value=0.2)
    page, token = svc.list_trials("s", page_size=2)
    assert [t.number for t in page] == [1, 2] and token
    page, token = svc.list_trials("s", page_size=2, page_token=token)
    assert [t.number for t in page] == [3, 4]
    page, token = svc.list_trials("s", page_size=2, page_token=token)
    assert [t.number for t in page] == [5] and token == ""
    assert [t.number for t in svc.list_trials("s", state="complete")[0]] == [2]
    with pytest.raises(errors.InvalidArgument, match=r"^state"):
        svc.list_trials("s", state="done")


def test_a_restart_keeps_every_trial_and_continues_the_study(tmp_path: Path) -> None:
    root = tmp_path / "tuning"
    svc = TuningService(root)
    svc.warm_up()
    svc.create_study(spec(constraints=(Constraint("cost", max=1.0),)))
    trials = svc.suggest("s", 3)
    svc.report("s", trials[0].number, value=0.4, metrics={"cost": 0.5})
    svc.report("s", trials[1].number, failed=True)
    before = svc.list_trials("s")[0]
    svc.close()

    again = TuningService(root)
    again.warm_up()
    try:
        assert again.list_trials("s")[0] == before
        assert again.best_trial("s").number == trials[0].number
        info = again.get_study("s")
        assert (info.running, info.complete, info.failed) == (1, 1, 1)
        assert info.spec.constraints == (Constraint("cost", max=1.0),)
        [nxt] = again.suggest("s")
        assert nxt.number == 4
        again.report("s", trials[2].number, value=0.9, metrics={"cost": 0.1})
        assert again.best_trial("s").number == trials[2].number
    finally:
        again.close()


def test_delete_forgets_the_study(svc: TuningService, tmp_path: Path) -> None:
    svc.create_study(spec())
    svc.suggest("s")
    svc.delete_study("s")
    with pytest.raises(errors.NotFound):
        svc.get_study("s")
    svc.create_study(spec())  # the name is free again, with no trials
    assert svc.list_trials("s")[0] == []


# -- a study that drives a bandit -----------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def bound(tmp_path: Path) -> Iterator[tuple[TuningService, BanditService, Clock]]:
    clock = Clock()
    features = FeatureService(tmp_path / "features")
    features.warm_up()
    bandits = BanditService(tmp_path / "bandits", features=features)
    bandits.warm_up()
    base = Arm("baseline", LLMConfig("gpt-4o-mini", temperature=1.8))
    bandits.create_bandit(BanditSpec("router", UCB1(), (base,)))
    tuning = TuningService(
        tmp_path / "tuning", bandits=bandits, outcomes=features, step_seconds=0, clock=clock
    )
    tuning.warm_up()
    yield tuning, bandits, clock
    tuning.close()
    bandits.close()
    features.close()


BOUND_SPACE = SearchSpace([FloatParam("temperature", 0.0, 2.0), IntParam("max_tokens", 64, 512)])


def bound_spec(**kw) -> StudySpec:
    binding = BanditBinding(
        "router",
        LLMConfig("gpt-4o-mini", top_p=0.9),
        parallel_trials=2,
        rewards_per_trial=8,
        max_trial_seconds=120.0,
        keep_best=1,
    )
    return StudySpec(
        "temp",
        BOUND_SPACE,
        optimizer=OptimizerConfig(seed=5, initial_trials=4),
        binding=binding,
        **kw,
    )


def serve(bandits: BanditService, rng: np.random.Generator, rounds: int) -> None:
    """Route requests; each arm's quality peaks at temperature 0.7; latency grows with tokens."""
    for _ in range(rounds):
        d = bandits.select_arm("router")
        t = d.arm.config.temperature
        q = float(np.clip(0.95 - 0.8 * (t - 0.7) ** 2 + rng.normal(0, 0.05), 0, 1))
        latency = max(1.0, 2.0 * d.arm.config.max_tokens + rng.normal(0, 5))
        bandits.record_reward(
            d.decision_id, outcome=Outcome(quality_score=q, cost=0.001, latency_ms=latency)
        )


def test_a_bound_study_runs_its_trials_as_arms(bound) -> None:
    tuning, bandits, clock = bound
    tuning.create_study(bound_spec(constraints=(Constraint("latency_ms_p95_1h", max=900.0),)))
    arms = {a.arm_id: (a, removed) for a, removed in bandits.get_bandit("router").arms}
    running = tuning.list_trials("temp", state="running")[0]
    assert len(running) == 2  # parallel_trials arms added at once
    for t in running:
        arm, removed = arms[t.arm_id]
        assert not removed
        assert arm.config.temperature == t.params["temperature"]
        assert arm.config.max_tokens == t.params["max_tokens"]
        assert arm.config.top_p == 0.9  # from the base config
        assert arm.metadata == {"study": "temp", "trial": str(t.number)}
    with pytest.raises(errors.FailedPrecondition, match="drives bandit"):
        tuning.suggest("temp")
    with pytest.raises(errors.FailedPrecondition, match="drives bandit"):
        tuning.report("temp", running[0].number, value=1.0)

    rng = np.random.default_rng(0)
    for _ in range(60):
        serve(bandits, rng, 10)
        clock.now += 5
        tuning.step()
    done = tuning.list_trials("temp", state="complete")[0]
    assert len(done) >= 8
    stats = {a.arm_id: a for a in bandits.stats("router").arms}
    for t in done:
        arm = stats[t.arm_id]
        assert t.metrics["rewards"] >= 8
        if arm.rewards == t.metrics["rewards"]:  # pruned in the step that valued it
            assert t.value == pytest.approx(arm.mean)  # the trial's value: the arm's mean reward
        else:  # kept a while as the best: it served on, its trial kept the value it was given
            assert arm.rewards > t.metrics["rewards"]
        assert "latency_ms_p95_1h" in t.metrics
        assert t.feasible == (t.metrics["latency_ms_p95_1h"] <= 900.0)
    assert sum(stats[t.arm_id].rewards == t.metrics["rewards"] for t in done) >= len(done) - 3
    live = [t for t in done if not stats[t.arm_id].removed]
    assert [t.number for t in live] == [tuning.best_trial("temp").number]  # keep_best = 1
    best = tuning.best_trial("temp")
    assert abs(best.params["temperature"] - 0.7) < 0.4  # quality peaks at 0.7
    assert best.feasible


def test_stopping_a_bound_study_removes_its_running_arms(bound) -> None:
    tuning, bandits, _ = bound
    tuning.create_study(bound_spec())
    running = tuning.list_trials("temp", state="running")[0]
    info = tuning.stop_study("temp")
    assert (info.state, info.running, info.failed) == ("stopped", 0, 2)
    removed = {a.arm_id: r for a, r in bandits.get_bandit("router").arms}
    assert all(removed[t.arm_id] for t in running)
    assert tuning.list_trials("temp")[0][0].failure == "the study was stopped"


def test_a_bound_trial_without_rewards_fails_after_its_time(bound) -> None:
    tuning, _, clock = bound
    tuning.create_study(bound_spec())
    clock.now += 121
    assert tuning.step() == 2
    failed = tuning.list_trials("temp", state="failed")[0]
    assert [t.failure for t in failed] == ["no reward within 120 s"] * 2
    assert len(tuning.list_trials("temp", state="running")[0]) == 2  # replaced


def test_bound_studies_are_checked_against_the_bandit(bound) -> None:
    tuning, _, _ = bound
    other = dataclasses.replace(bound_spec().binding, bandit="missing")
    with pytest.raises(errors.NotFound, match=r"study\.binding\.bandit"):
        tuning.create_study(dataclasses.replace(bound_spec(), binding=other))
    wide = SearchSpace([FloatParam("temperature", 0.0, 3.0)])
    with pytest.raises(errors.InvalidArgument, match=r"^study.parameters\[0\]"):
        tuning.create_study(dataclasses.replace(bound_spec(), space=wide))
    with pytest.raises(errors.InvalidArgument, match=r"^study.constraints"):
        tuning.create_study(bound_spec(constraints=(Constraint("latency_p95", max=1.0),)))
    assert tuning.list_studies()[0] == []


def test_a_bound_study_stops_when_its_bandit_is_deleted(bound) -> None:
    tuning, bandits, _ = bound
    tuning.create_study(bound_spec())
    bandits.delete_bandit("router")
    assert tuning.step() == 2
    info = tuning.get_study("temp")
    assert (info.state, info.running, info.failed) == ("stopped", 0, 2)
    assert {t.failure for t in tuning.list_trials("temp")[0]} == {"the bandit was deleted"}
    assert tuning.step() == 0  # a stopped study is left alone

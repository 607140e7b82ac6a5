"""llmopt.v1.Tuning through the real server: ask and tell with the Python client, the status
codes of bad requests (never INTERNAL, nothing changed), acknowledged reports surviving kill -9,
and a study driving a bandit while requests are routed through it."""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Callable

import grpc
import numpy as np
import pytest

from llmopt.client import (
    AlreadyExists,
    Arm,
    Categorical,
    Client,
    Constraint,
    FailedPrecondition,
    FloatParameter,
    IntParameter,
    InvalidArgument,
    NotFound,
    StudyBinding,
)
from llmopt.gen.llmopt.v1 import tuning_pb2 as pb
from llmopt.gen.llmopt.v1 import tuning_pb2_grpc
from tests.support.server import ServerProcess

pytestmark = pytest.mark.integration

PARAMETERS = (
    FloatParameter("temperature", 0.0, 1.5),
    IntParameter("max_tokens", 64, 1024, log=True),
    Categorical("prompt", ("terse", "detailed")),
)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def simulated_llm(params: dict) -> tuple[float, float]:
    """(quality, cost per request): quality peaks at temperature 0.6 and the detailed prompt;
    cost grows with max_tokens."""
    q = 0.85 - 0.5 * (params["temperature"] - 0.6) ** 2
    q += 0.05 if params["prompt"] == "detailed" else 0.0
    q -= 0.02 * abs(math.log2(params["max_tokens"]) - 8)
    return q, 2e-6 * params["max_tokens"]


def test_ask_and_tell_through_the_client(server: ServerProcess) -> None:
    name = unique("study")
    with Client(server.address) as client:
        study = client.create_study(
            name,
            PARAMETERS,
            constraints=[Constraint("cost_usd", max=0.0015)],
            initial_trials=5,
            seed=11,
            max_trials=24,
        )
        assert (study.state, study.direction, study.trials_running) == ("running", "maximize", 0)
        assert study.parameters == PARAMETERS
        seen = []
        while len(seen) < 24:
            for trial in client.suggest(name, 4):
                quality, cost = simulated_llm(trial.params)
                done = client.report(name, trial.number, quality, metrics={"cost_usd": cost})
                assert done.state == "complete" and done.feasible == (cost <= 0.0015)
                seen.append((quality, cost, trial.number))
        best = client.best_trial(name)
        feasible = [s for s in seen if s[1] <= 0.0015]
        assert best.number == max(feasible)[2]
        assert best.value == pytest.approx(max(feasible)[0])
        assert best.value > 0.85  # the feasible optimum is 0.90
        study = client.get_study(name)
        assert (study.state, study.trials_complete, study.best_trial.number) == (
            "completed",
            24,
            best.number,
        )
        assert [t.number for t in client.list_trials(name)] == list(range(1, 25))
        assert name in [s.name for s in client.list_studies()]
        with pytest.raises(FailedPrecondition, match="is completed"):
            client.suggest(name)
        client.delete_study(name)
        with pytest.raises(NotFound):
            client.get_study(name)


def test_reports_are_idempotent_and_outside_evaluations_count(server: ServerProcess) -> None:
    name = unique("study")
    with Client(server.address) as client:
        client.create_study(name, PARAMETERS, direction="minimize", metric="latency_ms")
        [t] = client.suggest(name, request_id="once")
        assert client.suggest(name, request_id="once")[0].number == t.number  # a retry
        first = client.report(name, t.number, metrics={"latency_ms": 420.0})
        assert client.report(name, t.number, metrics={"latency_ms": 420.0}) == first
        with pytest.raises(AlreadyExists):
            client.report(name, t.number, metrics={"latency_ms": 100.0})
        outside = client.report(
            name,
            0,
            metrics={"latency_ms": 300.0},
            params={"temperature": 0.2, "max_tokens": 128, "prompt": "terse"},
        )
        assert outside.number == 2 and outside.params["max_tokens"] == 128
        assert client.best_trial(name).number == 2  # minimized
        assert client.stop_study(name).state == "stopped"
        assert client.stop_study(name).state == "stopped"  # again: no change
        with pytest.raises(FailedPrecondition, match="stopped"):
            client.suggest(name)


def _study(name: str, **kw) -> pb.Study:
    return pb.Study(
        name=name,
        parameters=[pb.Parameter(name="t", float_range=pb.FloatRange(low=0, high=1))],
        **kw,
    )


def test_bad_requests_get_the_right_code_naming_the_field(channel: grpc.Channel) -> None:
    stub = tuning_pb2_grpc.TuningStub(channel)
    name = unique("study")
    bad_studies = [
        (pb.Study(name=name), "study.parameters"),
        (pb.Study(name=name, parameters=[pb.Parameter(name="t")]), "study.parameters[0]"),
        (_study("a/b"), "study.name"),
        (
            pb.Study(
                name=name,
                parameters=[pb.Parameter(name="t", float_range=pb.FloatRange(low=1, high=0))],
            ),
            "study.parameters[0]",
        ),
        (_study(name, optimizer=pb.OptimizerConfig(acquisition=99)), "study.optimizer.acquisition"),
        (_study(name, objective=pb.Objective(direction=7)), "study.objective.direction"),
        (_study(name, constraints=[pb.Constraint(metric="c")]), "study.constraints[0]"),
        (_study(name, max_trials=-3), "study.max_trials"),
        (_study(name, binding=pb.BanditBinding(bandit="nope")), "study.binding"),
    ]
    for study, field in bad_studies:
        with pytest.raises(grpc.RpcError) as err:
            stub.CreateStudy(pb.CreateStudyRequest(study=study), timeout=10)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, (field, err.value.details())
        assert err.value.details().startswith(field), (field, err.value.details())
    with pytest.raises(grpc.RpcError) as err:
        stub.GetStudy(pb.GetStudyRequest(name=name), timeout=10)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND  # none of the above was created

    stub.CreateStudy(pb.CreateStudyRequest(study=_study(name)), timeout=10)
    with pytest.raises(grpc.RpcError) as err:
        stub.CreateStudy(pb.CreateStudyRequest(study=_study(name)), timeout=10)
    assert err.value.code() == grpc.StatusCode.ALREADY_EXISTS
    [trial] = stub.Suggest(pb.SuggestRequest(study=name), timeout=10).trials
    bad_reports = [
        (pb.ReportRequest(study=name, trial=trial.number), "INVALID_ARGUMENT", "value"),
        (pb.ReportRequest(study=name, trial=trial.number, value=math.nan), "INVALID_ARGUMENT",
         "value"),
        (pb.ReportRequest(study=name, trial=99, value=1), "NOT_FOUND", "trial: 99"),
        (pb.ReportRequest(study=name, trial=-1, value=1), "INVALID_ARGUMENT", "trial"),
        (pb.ReportRequest(study=name, trial=0, value=1), "INVALID_ARGUMENT", "params"),
        (pb.ReportRequest(study="missing", trial=1, value=1), "NOT_FOUND", "study"),
        (pb.ReportRequest(study=name, trial=trial.number, value=1, metrics={"x": math.inf}),
         "INVALID_ARGUMENT", "metrics['x']"),
    ]  # fmt: skip
    for request, code, field in bad_reports:
        with pytest.raises(grpc.RpcError) as err:
            stub.Report(request, timeout=10)
        assert err.value.code().name == code, (field, err.value.details())
        assert err.value.details().startswith(field), (field, err.value.details())
    for request, field in [
        (pb.SuggestRequest(study=name, count=65), "count"),
        (pb.SuggestRequest(study=name, count=-1), "count"),
    ]:
        with pytest.raises(grpc.RpcError) as err:
            stub.Suggest(request, timeout=10)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert err.value.details().startswith(field)
    with pytest.raises(grpc.RpcError) as err:
        stub.ListTrials(pb.ListTrialsRequest(study=name, state=42), timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.RpcError) as err:
        stub.BestTrial(pb.BestTrialRequest(study=name), timeout=10)
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    # Nothing the refusals touched changed: one trial, still running.
    trials = stub.ListTrials(pb.ListTrialsRequest(study=name), timeout=10).trials
    assert [(t.number, t.state) for t in trials] == [(trial.number, pb.TRIAL_RUNNING)]


def test_acknowledged_reports_survive_kill_9(
    server_factory: Callable[..., ServerProcess], tmp_path
) -> None:
    data_dir = tmp_path / "data"
    server = server_factory(data_dir=data_dir)
    name = unique("study")
    reported = {}
    with Client(server.address) as client:
        client.create_study(name, PARAMETERS, seed=2)
        for _ in range(4):
            for t in client.suggest(name, 3):
                if t.number % 4 == 0:
                    continue  # left running
                quality, _ = simulated_llm(t.params)
                reported[t.number] = client.report(name, t.number, quality)
    server.kill()
    again = server_factory(data_dir=data_dir)
    with Client(again.address) as client:
        trials = {t.number: t for t in client.list_trials(name)}
        assert sorted(trials) == list(range(1, 13))
        for number, t in reported.items():
            assert trials[number] == t
        assert {n for n, t in trials.items() if t.state == "running"} == {4, 8, 12}
        assert client.best_trial(name).value == max(t.value for t in reported.values())
        assert client.suggest(name)[0].number == 13  # the study goes on


def test_a_study_drives_a_bandit_while_it_routes(server: ServerProcess) -> None:
    bandit, name = unique("router"), unique("study")
    rng = np.random.default_rng(4)
    with Client(server.address) as client:
        client.create_bandit(bandit, [Arm("baseline", model="m", temperature=1.5)], seed=1)
        client.create_study(
            name,
            [FloatParameter("temperature", 0.0, 2.0)],
            binding=StudyBinding(
                bandit, Arm("", model="m", top_p=0.9), parallel_trials=2, rewards_per_trial=6
            ),
            initial_trials=3,
            seed=9,
            max_trials=8,
        )
        deadline = time.monotonic() + 90
        while client.get_study(name).state != "completed" and time.monotonic() < deadline:
            for _ in range(20):
                d = client.select_arm(bandit)
                q = float(np.clip(0.9 - 0.5 * (d.arm.temperature - 0.8) ** 2, 0, 1))
                client.record_reward(d.decision_id, quality=q + rng.normal(0, 0.02),
                                     cost=0.0001, latency_ms=200)  # fmt: skip
            time.sleep(0.2)  # the server steps bound studies every second
        study = client.get_study(name)
        assert study.state == "completed", study
        trials = client.list_trials(name)
        assert len(trials) == 8 and all(t.arm_id for t in trials)
        best = client.best_trial(name)
        arms = {a.arm_id: a for a in client.get_bandit(bandit).arms}
        stats = client.bandit_stats(bandit).arms
        assert arms[best.arm_id].temperature == best.params["temperature"]
        assert arms[best.arm_id].top_p == 0.9
        live = [t.number for t in trials if not stats[t.arm_id].removed]
        assert live == [best.number]  # the losers' arms were removed, the best one kept
        with pytest.raises(FailedPrecondition, match="drives bandit"):
            client.suggest(name)
        with pytest.raises(InvalidArgument):
            client.create_study(
                unique("s"),
                [FloatParameter("temperature", 0.0, 5.0)],  # an arm takes temperature <= 2
                binding=StudyBinding(bandit, Arm("", model="m")),
            )

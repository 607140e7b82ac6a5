"""The optimizer: learning quality on seeded runs (thresholds stated with each test), batches,
pending rows, constraints, failures, the initial design and determinism."""

from __future__ import annotations

import doctest
from collections.abc import Callable, Sequence

import numpy as np
import pytest

import benchmarks.problems as problems_module
import llmopt.tuning.optimizer as optimizer_module
from benchmarks.problems import BRANIN, HARTMANN6
from llmopt import errors
from llmopt.tuning.optimizer import (
    ACQUISITIONS,
    BATCH_STRATEGIES,
    INITIAL_DESIGNS,
    Constraint,
    Observation,
    Optimizer,
    OptimizerConfig,
)
from llmopt.tuning.space import CategoricalParam, FloatParam, IntParam, SearchSpace

Evaluate = Callable[[dict], tuple[float | None, dict[str, float]]]


def run(optimizer: Optimizer, evaluate: Evaluate, budget: int, q: int = 1) -> list[Observation]:
    """Ask and tell until ``budget`` observations, ``q`` at a time."""
    observations: list[Observation] = []
    while len(observations) < budget:
        rows = optimizer.suggest(
            observations, [], min(q, budget - len(observations)), len(observations)
        )
        for x in rows:
            value, metrics = evaluate(optimizer.space.decode(x))
            observations.append(Observation(x, value, metrics))
    return observations


def branin(values: dict) -> tuple[float, dict[str, float]]:
    return BRANIN.evaluate(values), {"x1": values["x1"]}


def best_value(observations: Sequence[Observation]) -> float:
    return min(o.value for o in observations if o.value is not None)


def random_search_best(budget: int, seed: int) -> float:
    rng = np.random.default_rng(seed)
    lo, hi = np.array(BRANIN.bounds).T
    return float(BRANIN(rng.uniform(lo, hi, (budget, 2))).min())


SEEDS = (0, 1, 2)


def test_branin_in_30_evaluations_beats_random_search() -> None:
    # The full benchmark asks a median <= 0.400 over 10 seeds (minimum 0.397887); three seeds
    # here, with a little room: median <= 0.45, and every seed below random search's best of the
    # same 30 evaluations on the same seed (random search's median is about 1.7).
    ours = [
        best_value(
            run(Optimizer(BRANIN.space(), OptimizerConfig(seed=s), minimize=True), branin, 30)
        )
        for s in SEEDS
    ]
    assert np.median(ours) <= 0.45, ours
    randoms = [random_search_best(30, s) for s in SEEDS]
    assert all(a < b for a, b in zip(ours, randoms, strict=True)), (ours, randoms)


def test_maximize_is_minimize_of_the_negation() -> None:
    space = BRANIN.space()
    up = run(
        Optimizer(space, OptimizerConfig(seed=3), minimize=False),
        lambda v: (-BRANIN.evaluate(v), {}),
        25,
    )
    assert max(o.value for o in up if o.value is not None) >= -0.45


def test_hartmann6_improves_well_past_its_design() -> None:
    # The full benchmark asks <= -3.20 after 100 evaluations; 40 here (about a second): at most
    # -2.8 (the design's 7 points reach about -1.3; random search's median best of 40 is -1.5).
    space = HARTMANN6.space()
    obs = run(
        Optimizer(space, OptimizerConfig(seed=0), minimize=True),
        lambda v: (HARTMANN6.evaluate(v), {}),
        40,
    )
    assert best_value(obs) <= -2.8


def test_constrained_branin_keeps_to_the_feasible_side() -> None:
    # Minimize Branin subject to x1 <= 2.5, reported as a metric: of its three minima only
    # (-pi, 12.275) is feasible. best() must be feasible and near 0.398; at least 80 % of the
    # last 15 of 30 suggestions feasible.
    constraint = Constraint("x1", max=2.5)
    for seed in SEEDS:
        opt = Optimizer(
            BRANIN.space(), OptimizerConfig(seed=seed), minimize=True, constraints=[constraint]
        )
        obs = run(opt, branin, 30)
        best = opt.best(obs)
        assert best is not None
        assert obs[best].metrics["x1"] <= 2.5 and obs[best].value <= 0.6
        late = [o.metrics["x1"] <= 2.5 for o in obs[15:]]
        assert np.mean(late) >= 0.8, (seed, late)


def test_feasibility_alone_before_any_feasible_observation() -> None:
    # Only x1 >= 9.5 is feasible, and the design happens to find none there first: the
    # optimizer then climbs the probability of feasibility.
    constraint = Constraint("x1", min=9.5)
    opt = Optimizer(
        BRANIN.space(),
        OptimizerConfig(seed=0, initial_trials=4),
        minimize=True,
        constraints=[constraint],
    )
    obs = run(opt, branin, 12)
    assert not any(o.metrics["x1"] >= 9.5 for o in obs[:4])
    assert sum(o.metrics["x1"] >= 9.5 for o in obs[4:]) >= 4
    assert opt.best(obs) is not None


def mixed_space() -> SearchSpace:
    return SearchSpace(
        [
            CategoricalParam("model", ("small", "medium", "large")),
            IntParam("k", 1, 20),
            FloatParam("t", 0.0, 1.0),
        ]
    )


def mixed(values: dict) -> tuple[float, dict[str, float]]:
    # A quadratic per category; "medium" holds the minimum 0 at k = 13, t = 0.3.
    offset = {"small": 1.0, "medium": 0.0, "large": 0.6}[values["model"]]
    centre = {"small": 5, "medium": 13, "large": 8}[values["model"]]
    return offset + ((values["k"] - centre) / 10) ** 2 + (values["t"] - 0.3) ** 2, {}


def test_a_categorical_and_int_space_finds_the_right_category() -> None:
    space = mixed_space()
    for seed in SEEDS:
        opt = Optimizer(space, OptimizerConfig(seed=seed), minimize=True)
        obs = run(opt, mixed, 30)
        best = space.decode(obs[opt.best(obs)].x)
        assert best["model"] == "medium" and abs(best["k"] - 13) <= 2, (seed, best)
        for o in obs:  # every row is snapped: one-hot exact, ints at their cell
            np.testing.assert_array_equal(space.snap(o.x[None, :])[0], o.x)


def test_wide_categoricals_keep_one_length_scale_per_parameter() -> None:
    # 3 categoricals of 64 choices (192 one-hot columns) and a float: the GP fits 4 length
    # scales, and the search still finds the best choice of the one categorical that matters.
    choices = tuple(f"c{i}" for i in range(64))
    space = SearchSpace(
        [CategoricalParam(name, choices) for name in ("a", "b", "c")] + [FloatParam("t", 0, 1)]
    )

    def f(v: dict) -> tuple[float, dict[str, float]]:
        return (0.0 if v["a"] in ("c7", "c8", "c9") else 1.0) + (v["t"] - 0.5) ** 2, {}

    opt = Optimizer(space, OptimizerConfig(seed=0, initial_trials=20), minimize=True)
    obs = run(opt, f, 40, q=4)
    assert opt._warm_ is not None and opt._warm_.length_scales.shape == (4,)
    assert best_value(obs) < 0.1


@pytest.mark.parametrize("batch", BATCH_STRATEGIES)
def test_batches_are_distinct_and_learn(batch: str) -> None:
    # q = 4 batches for 32 evaluations: median best <= 0.45 over the seeds (random search of
    # 32: a median of about 1.7), every batch of distinct rows, none of them observed before.
    results = []
    for seed in SEEDS:
        opt = Optimizer(BRANIN.space(), OptimizerConfig(seed=seed, batch=batch), minimize=True)
        obs: list[Observation] = []
        while len(obs) < 32:
            rows = opt.suggest(obs, [], 4, len(obs))
            assert len(rows) == 4
            keys = {r.tobytes() for r in rows} | {o.x.tobytes() for o in obs}
            assert len(keys) == len(obs) + 4
            obs += [Observation(x, BRANIN.evaluate(opt.space.decode(x))) for x in rows]
        results.append(best_value(obs))
    assert np.median(results) <= 0.45, results


@pytest.mark.parametrize("batch", BATCH_STRATEGIES)
def test_pending_rows_are_not_suggested_again(batch: str) -> None:
    space = SearchSpace([IntParam("n", 0, 9), CategoricalParam("c", ("a", "b"))])
    opt = Optimizer(space, OptimizerConfig(seed=0, batch=batch, initial_trials=4), minimize=True)

    def f(v: dict) -> float:
        return (v["n"] - 6) ** 2 + (0 if v["c"] == "b" else 3)

    obs = [Observation(x, f(space.decode(x))) for x in opt.suggest([], [], 4, 0)]
    pending: list[np.ndarray] = []
    for index in range(4, 16, 3):
        rows = opt.suggest(obs, pending, 3, index)
        taken = {o.x.tobytes() for o in obs} | {p.tobytes() for p in pending}
        assert not {r.tobytes() for r in rows} & taken
        assert len({r.tobytes() for r in rows}) == 3
        pending += rows  # never reported
    # The optimum (n = 6, "b") is among the first pending rows, not suggested twice.
    found = [space.decode(p) for p in pending]
    assert {"n": 6, "c": "b"} in found


def test_same_seed_and_inputs_give_the_same_rows() -> None:
    def rows_of(opt: Optimizer) -> list[np.ndarray]:
        obs = run(opt, branin, 12, q=3)
        return [o.x for o in obs] + opt.suggest(obs, [obs[-1].x], 2, len(obs))

    a = rows_of(Optimizer(BRANIN.space(), OptimizerConfig(seed=5), minimize=True))
    b = rows_of(Optimizer(BRANIN.space(), OptimizerConfig(seed=5), minimize=True))
    np.testing.assert_array_equal(np.array(a), np.array(b))
    c = rows_of(Optimizer(BRANIN.space(), OptimizerConfig(seed=6), minimize=True))
    assert not np.array_equal(np.array(a), np.array(c))


@pytest.mark.parametrize("design", INITIAL_DESIGNS)
def test_the_initial_design_continues_by_index(design: str) -> None:
    space = mixed_space()
    config = OptimizerConfig(seed=3, initial_design=design, initial_trials=10)
    whole = Optimizer(space, config, minimize=True).suggest([], [], 10, 0)
    restarted = Optimizer(space, config, minimize=True)
    first = restarted.suggest([], [], 5, 0)
    second = Optimizer(space, config, minimize=True).suggest([], [], 5, 5)  # a fresh process
    np.testing.assert_array_equal(np.array(whole), np.array(first + second))
    # The design spreads: every category appears among the first 10 points.
    assert {space.decode(x)["model"] for x in whole} == {"small", "medium", "large"}


def test_the_automatic_design_size() -> None:
    assert Optimizer(BRANIN.space(), OptimizerConfig(), minimize=True).n_initial == 5
    assert Optimizer(HARTMANN6.space(), OptimizerConfig(), minimize=True).n_initial == 7
    wide = SearchSpace([CategoricalParam("c", tuple(f"v{i}" for i in range(40)))])
    assert Optimizer(wide, OptimizerConfig(), minimize=True).n_initial == 20


def test_failed_trials_are_moved_away_from() -> None:
    # Trials with a > 0.6 fail (value None); the unconstrained minimum lies at a = 0.7, the
    # reachable one at (0.6, 0.5) with value 0.01. Failures counted as the worst value keep at
    # most 40 % of the 15 suggestions after the 10th in the failing region, and the best found
    # is below 0.1.
    space = SearchSpace([FloatParam("a", 0, 1), FloatParam("b", 0, 1)])

    def f(v: dict) -> tuple[float | None, dict[str, float]]:
        if v["a"] > 0.6:
            return None, {}
        return (v["a"] - 0.7) ** 2 + (v["b"] - 0.5) ** 2, {}

    for seed in SEEDS:
        opt = Optimizer(space, OptimizerConfig(seed=seed), minimize=True)
        obs = run(opt, f, 25)
        assert np.mean([o.value is None for o in obs[10:]]) <= 0.4
        assert best_value(obs) < 0.1


def test_all_failed_keeps_to_the_design() -> None:
    space = BRANIN.space()
    opt = Optimizer(space, OptimizerConfig(seed=0), minimize=True)
    obs = [Observation(x, None) for x in opt.suggest([], [], 6, 0)]
    rows = opt.suggest(obs, [], 2, 6)
    np.testing.assert_array_equal(np.array(rows), np.array([opt.design_row(6), opt.design_row(7)]))
    assert opt.best(obs) is None


@pytest.mark.parametrize("acquisition", ACQUISITIONS)
@pytest.mark.parametrize("noise", [True, False])
def test_every_acquisition_learns(acquisition: str, noise: bool) -> None:
    # 25 evaluations of Branin, seed 0: best <= 0.5 (minimum 0.398; random search's median of
    # 25 is about 1.8). With a constraint and q = 2 too, each one runs and finds a feasible best.
    config = OptimizerConfig(seed=0, acquisition=acquisition, noise=noise)
    obs = run(Optimizer(BRANIN.space(), config, minimize=True), branin, 25)
    assert best_value(obs) <= 0.5
    constrained = Optimizer(
        BRANIN.space(), config, minimize=True, constraints=[Constraint("x1", max=2.5)]
    )
    obs = run(constrained, branin, 12, q=2)
    assert constrained.best(obs) is not None


def test_best_respects_direction_failures_and_constraints() -> None:
    space = SearchSpace([FloatParam("x", 0, 1)])
    x = np.array([0.5])
    obs = [
        Observation(x, 3.0, {"cost": 1.0}),
        Observation(x, None, {"cost": 0.0}),
        Observation(x, 1.0, {"cost": 5.0}),  # infeasible
        Observation(x, 2.0, {}),  # lacks the metric: infeasible
        Observation(x, 2.5, {"cost": 2.0}),
    ]
    cheap = [Constraint("cost", max=2.0)]
    assert Optimizer(space, OptimizerConfig(), minimize=True).best(obs) == 2
    assert Optimizer(space, OptimizerConfig(), minimize=False).best(obs) == 0
    assert Optimizer(space, OptimizerConfig(), minimize=True, constraints=cheap).best(obs) == 4
    assert Optimizer(space, OptimizerConfig(), minimize=False, constraints=cheap).best(obs) == 0
    band = [Constraint("cost", min=1.5, max=2.0)]
    assert Optimizer(space, OptimizerConfig(), minimize=True, constraints=band).best(obs) == 4
    assert Optimizer(space, OptimizerConfig(), minimize=True).best(obs[1:2]) is None


@pytest.mark.parametrize(
    ("config", "field"),
    [
        (OptimizerConfig(acquisition="thompson"), "optimizer.acquisition"),
        (OptimizerConfig(batch="greedy"), "optimizer.batch"),
        (OptimizerConfig(initial_design="grid"), "optimizer.initial_design"),
        (OptimizerConfig(initial_trials=-1), "optimizer.initial_trials"),
        (OptimizerConfig(initial_trials=1001), "optimizer.initial_trials"),
        (OptimizerConfig(restarts=33), "optimizer.restarts"),
        (OptimizerConfig(ucb_beta=0.0), "optimizer.ucb_beta"),
        (OptimizerConfig(ucb_beta=float("inf")), "optimizer.ucb_beta"),
        (OptimizerConfig(seed=-1), "optimizer.seed"),
        (OptimizerConfig(noise=1), "optimizer.noise"),  # type: ignore[arg-type]
    ],
)
def test_invalid_configs_name_the_field(config: OptimizerConfig, field: str) -> None:
    with pytest.raises(errors.InvalidArgument, match=field):
        config.validate()


@pytest.mark.parametrize(
    ("constraint", "field"),
    [
        (Constraint("", max=1.0), "constraint.metric"),
        (Constraint("x" * 129, max=1.0), "constraint.metric"),
        (Constraint("cost"), "constraint.max"),
        (Constraint("cost", max=float("nan")), "constraint.max"),
        (Constraint("cost", min=float("-inf")), "constraint.min"),
        (Constraint("cost", max=1.0, min=2.0), "constraint.min"),
    ],
)
def test_invalid_constraints_name_the_field(constraint: Constraint, field: str) -> None:
    with pytest.raises(errors.InvalidArgument, match=field):
        constraint.validate()


def test_invalid_suggest_arguments() -> None:
    opt = Optimizer(BRANIN.space(), OptimizerConfig(), minimize=True)
    with pytest.raises(errors.InvalidArgument, match="q"):
        opt.suggest([], [], 0, 0)
    with pytest.raises(errors.InvalidArgument, match="q"):
        opt.suggest([], [], 65, 0)
    with pytest.raises(errors.InvalidArgument, match="index"):
        opt.suggest([], [], 1, -1)
    with pytest.raises(errors.InvalidArgument, match=r"pending\[0\]"):
        opt.suggest([], [np.zeros(3)], 1, 0)
    with pytest.raises(errors.InvalidArgument, match=r"observations\[0\]\.value"):
        opt.suggest([Observation(np.zeros(2), float("nan"))], [], 1, 0)


@pytest.mark.parametrize("module", [optimizer_module, problems_module])
def test_docstring_examples(module: object) -> None:
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)  # type: ignore[arg-type]
    assert result.attempted > 0 and result.failed == 0


def test_blas_runs_on_one_thread_while_any_suggest_runs_and_is_restored_after() -> None:
    from threadpoolctl import threadpool_info

    from llmopt.tuning.optimizer import one_blas_thread

    def threads() -> list[int]:
        return [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]

    before = threads()
    with one_blas_thread():
        with one_blas_thread():  # overlapping suggests (two studies at once)
            assert set(threads()) <= {1}
        assert set(threads()) <= {1}  # the outer one still runs
    assert threads() == before

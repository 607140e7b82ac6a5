"""Bayesian tuning (issue 27): ours beside Optuna, scikit-optimize and random search, in process.

- ``tuning.branin.<who>``: the median (over seeds) of the best value found in 30 evaluations of
  Branin (minimum 0.397887), one suggestion (q = 1) per evaluation, 10 seeds (quick: 3). Target
  for ours (``llmopt``): <= 0.400. The spread (quartiles, mean and sd) is in the note and
  ``extra``.
- ``tuning.hartmann6.<who>``: the same on Hartmann6 (minimum -3.32237) in 100 evaluations, 10
  seeds (quick: 2). Target for ours: <= -3.20.
- The peers, on the same budget and seeds: ``optuna_tpe`` (Optuna's TPESampler(seed=s), its
  defaults), ``optuna_gp`` (Optuna's GPSampler, only where torch imports: the PyPI build of torch
  pulls CUDA, so it is a skip row here), ``skopt_gp`` (scikit-optimize's gp_minimize with its
  defaults; the project is unmaintained: a skip row when it does not import; on Hartmann6, 45-75
  s a seed on 2 vCPUs, it runs the first 5 seeds, none in quick) and ``random`` (uniform, seeded
  numpy). Information.
- ``tuning.suggest.obs{100,1000}``: ``Optimizer.suggest(q=1)`` on Hartmann6 (d = 6) with 100 and
  1,000 completed random observations, called repeatedly, each call adding the observation of its
  suggestion as a live study does (the first, cold call is untimed: the later ones start from
  the previous call's hyperparameters). Targets: p99 <= 50 ms and <= 500 ms.
- ``.optuna_tpe`` beside them: Optuna's TPE ``ask()`` (all six parameters sampled, through
  ``fixed_distributions``) at the same history size; ``tuning.suggest.obs100.skopt_gp``:
  scikit-optimize's ``Optimizer`` step at 100 (``tell`` + ``ask``: it fits its GP and optimizes
  its acquisition in ``tell``, ``ask`` only returns the cached point). Information.
- ``tuning.suggest.batch8.obs100.{kriging_believer,local_penalization}``: ``suggest(q=8)`` with
  100 observations, each call adding its 8. Information.
- ``tuning.e2e.study50``: a 50-trial study of Hartmann6 end to end through gRPC against the real
  server (pinned to one core): CreateStudy, then 50 rounds of Suggest and Report with the Python
  client, then BestTrial; wall seconds. Target (the plan's): < 60 s. ``.suggest`` and ``.report``
  beside it: the RPCs' round trips over the same study (information).
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from benchmarks.harness import Context, Result, percentiles_ns
from benchmarks.runner import fmt_number

if TYPE_CHECKING:
    from benchmarks.problems import Problem

BRANIN_TARGET = 0.400
HARTMANN6_TARGET = -3.20
SUGGEST_TARGET_MS = {100: 50.0, 1000: 500.0}
STUDY_TARGET_S = 60.0
STUDY_TRIALS = 50
GP_SAMPLER_SKIP = "optuna GPSampler needs torch; the PyPI build pulls CUDA"
SKOPT_HARTMANN6_SEEDS = 5
"""gp_minimize takes 45-75 s for 100 evaluations of Hartmann6 on the 2-vCPU sandbox: a full run
gives it the first 5 of the 10 seeds (all 10 made the section 15 minutes long), quick none."""
SKOPT_HARTMANN6_SECONDS = "45-75 s"


# -- the problems (benchmarks/problems.py: natural units, x1 ... xd) ------------------------------


def _value(problem: Problem, x: Sequence[float] | np.ndarray) -> float:
    """The function at one point."""
    return float(problem(np.asarray(x, dtype=float))[0])


def _values(problem: Problem, x: np.ndarray) -> dict[str, float]:
    """One point as the parameter values of ``problem.space()``."""
    return {f"x{i + 1}": float(v) for i, v in enumerate(x)}


# -- one seeded run of each optimizer: the best value after `budget` evaluations ------------------


def run_llmopt(problem: Problem, budget: int, seed: int) -> float:
    from llmopt.tuning.optimizer import Observation, Optimizer, OptimizerConfig

    space = problem.space()
    opt = Optimizer(space, OptimizerConfig(seed=seed), minimize=True)
    observations: list[Observation] = []
    for index in range(budget):
        (x,) = opt.suggest(observations, [], 1, index)
        observations.append(Observation(x, problem.evaluate(space.decode(x))))
    return min(float(o.value) for o in observations if o.value is not None)


def _optuna() -> Any:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    optuna.logging.disable_default_handler()
    logging.getLogger("optuna").setLevel(logging.WARNING)
    return optuna


def _optuna_run(problem: Problem, budget: int, sampler: Any) -> float:
    optuna = _optuna()
    study = optuna.create_study(direction="minimize", sampler=sampler)

    box = list(zip(problem.space().names, problem.bounds, strict=True))

    def objective(trial: Any) -> float:
        return _value(problem, [trial.suggest_float(n, lo, hi) for n, (lo, hi) in box])

    study.optimize(objective, n_trials=budget)
    return float(study.best_value)


def run_optuna_tpe(problem: Problem, budget: int, seed: int) -> float:
    return _optuna_run(problem, budget, _optuna().samplers.TPESampler(seed=seed))


def run_optuna_gp(problem: Problem, budget: int, seed: int) -> float:
    return _optuna_run(problem, budget, _optuna().samplers.GPSampler(seed=seed))


def run_skopt(problem: Problem, budget: int, seed: int) -> float:
    from skopt import gp_minimize

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "evaluated at point ... before", sklearn convergence
        res = gp_minimize(
            lambda x: _value(problem, x),
            [tuple(b) for b in problem.bounds],
            n_calls=budget,
            random_state=seed,
        )
    return float(res.fun)


def run_random(problem: Problem, budget: int, seed: int) -> float:
    low, high = np.array(problem.bounds).T
    points = low + (high - low) * np.random.default_rng(seed).random((budget, problem.dim))
    return float(problem(points).min())


def _skopt_missing() -> str | None:
    """Why scikit-optimize cannot run here, or None when it imports."""
    try:
        import skopt  # noqa: F401
    except Exception as exc:  # unmaintained: breaks on new numpy / scikit-learn, not only missing
        return f"scikit-optimize does not import (unmaintained): {type(exc).__name__}: {exc}"
    return None


def _optuna_missing() -> str | None:
    try:
        import optuna  # noqa: F401
    except ImportError:
        return "optuna is not installed (a dev extra: pip install -e .[dev])"
    return None


def _torch_missing() -> str | None:
    try:
        import torch  # noqa: F401
    except Exception:
        return GP_SAMPLER_SKIP
    return None


def _version(module: str) -> str:
    try:
        from importlib.metadata import version

        return version(module)
    except Exception:
        return "?"


# -- quality rows ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Contender:
    label: str
    run: Callable[[Problem, int, int], float]
    missing: Callable[[], str | None]
    note: str


def _contenders() -> tuple[Contender, ...]:
    return (
        Contender(
            "llmopt", run_llmopt, lambda: None, "ours: GP Matern-5/2 ARD, log-EI, Sobol start"
        ),
        Contender(
            "optuna_tpe",
            run_optuna_tpe,
            _optuna_missing,
            f"Optuna {_version('optuna')} TPESampler(seed=s), defaults",
        ),
        Contender(
            "optuna_gp",
            run_optuna_gp,
            lambda: _optuna_missing() or _torch_missing(),
            f"Optuna {_version('optuna')} GPSampler(seed=s)",
        ),
        Contender(
            "skopt_gp",
            run_skopt,
            _skopt_missing,
            f"scikit-optimize {_version('scikit-optimize')} (unmaintained) gp_minimize, defaults",
        ),
        Contender("random", run_random, lambda: None, "uniform random search, seeded numpy"),
    )


def summary(bests: Sequence[float]) -> dict[str, float]:
    """Median, quartiles, mean and sd of the per-seed best values.

    >>> s = summary([1.0, 2.0, 3.0, 4.0])
    >>> s["median"], s["q25"], s["q75"], round(s["sd"], 3)
    (2.5, 1.75, 3.25, 1.291)
    """
    values = np.asarray(bests, dtype=float)
    q25, median, q75 = np.quantile(values, [0.25, 0.5, 0.75])
    return {
        "median": float(median),
        "q25": float(q25),
        "q75": float(q75),
        "mean": float(values.mean()),
        "sd": float(values.std(ddof=1)) if len(values) > 1 else 0.0,
        "min": float(values.min()),
        "max": float(values.max()),
    }


def _duration(seconds: float) -> str:
    """``0.0031`` -> ``3.1 ms``, ``45.2`` -> ``45.2 s``."""
    return f"{seconds * 1e3:.3g} ms" if seconds < 0.9995 else f"{seconds:.3g} s"


def quality_row(
    name: str,
    contender: Contender,
    problem: Problem,
    budget: int,
    seeds: Sequence[int],
    target: float | None,
) -> Result:
    metric = f"median best, {budget} evals"
    start = time.perf_counter()
    bests = [contender.run(problem, budget, seed) for seed in seeds]
    per_seed = (time.perf_counter() - start) / len(seeds)
    s = summary(bests)
    return Result(
        name=name,
        metric=metric,
        measured=s["median"],
        unit="",
        target=target,
        better="lower",
        extra={
            **s,
            "bests": bests,
            "seeds": list(seeds),
            "evaluations": budget,
            "seconds_per_seed": per_seed,
            "known_minimum": problem.minimum,
        },
        note=(
            f"{len(seeds)} seeds: IQR {s['q25']:.4g}..{s['q75']:.4g}, mean {s['mean']:.4g} "
            f"sd {s['sd']:.2g}; {_duration(per_seed)} a seed; {contender.note}"
        ),
    )


def quality_rows(
    ctx: Context,
    problem: Problem,
    budget: int,
    seeds: Sequence[int],
    target: float,
    skopt_seeds: int | None = None,
) -> Iterator[Result]:
    """Ours and every peer on ``problem``, ``budget`` evaluations, the same ``seeds``;
    scikit-optimize on the first ``skopt_seeds`` of them when given (0: a skip row)."""
    metric = f"median best, {budget} evals"
    for contender in _contenders():
        name = f"tuning.{problem.name}.{contender.label}"
        if not ctx.wants(name):
            continue
        reason = contender.missing()
        row_target = target if contender.label == "llmopt" else None
        row_seeds = seeds
        if contender.label == "skopt_gp" and skopt_seeds is not None:
            row_seeds = seeds[:skopt_seeds]
            if not row_seeds and reason is None:
                reason = f"quick (scikit-optimize takes {SKOPT_HARTMANN6_SECONDS} a seed here)"
        if reason is not None:
            yield Result.skip(name, reason, metric, row_target)
            continue
        row = quality_row(name, contender, problem, budget, row_seeds, row_target)
        if len(row_seeds) < len(seeds):
            row.note += f"; the first {len(row_seeds)} of the {len(seeds)} seeds (slow)"
        yield row


# -- suggest latency ------------------------------------------------------------------------------


def _random_history(problem: Problem, n: int, seed: int) -> tuple[np.ndarray, list[float]]:
    """``n`` uniform points of the box and their values."""
    low, high = np.array(problem.bounds).T
    X = low + (high - low) * np.random.default_rng(seed).random((n, problem.dim))
    return X, [float(v) for v in problem(X)]


def _latency_row(
    name: str, samples_ns: Sequence[float], target_ms: float | None, note: str, first_ns: float
) -> Result:
    pct = percentiles_ns(samples_ns)
    return Result(
        name=name,
        metric="p99 latency",
        measured=pct.p99 / 1e3,
        unit="ms",
        target=target_ms,
        better="lower",
        extra={**pct.as_extra(), "samples": pct.count, "first_call_us": first_ns / 1e3},
        note=f"p50 {fmt_number(pct.p50 / 1e3)} ms, {pct.count} calls; {note}",
    )


def _suggest_samples(
    problem: Problem, n: int, q: int, batch: str, calls: int
) -> tuple[list[float], float]:
    """Nanoseconds of ``calls`` timed ``suggest(q)`` calls after one untimed cold one, from ``n``
    random observations, each call's rows evaluated and added before the next."""
    from llmopt.tuning.optimizer import Observation, Optimizer, OptimizerConfig

    space = problem.space()
    X, y = _random_history(problem, n, seed=n)
    observations = [
        Observation(space.encode(_values(problem, x)), v) for x, v in zip(X, y, strict=True)
    ]
    opt = Optimizer(space, OptimizerConfig(seed=0, batch=batch), minimize=True)
    samples: list[float] = []
    first = 0.0
    for call in range(calls + 1):
        t0 = time.perf_counter_ns()
        rows = opt.suggest(observations, [], q, len(observations))
        elapsed = time.perf_counter_ns() - t0
        if call == 0:
            first = float(elapsed)
        else:
            samples.append(float(elapsed))
        for x in rows:
            observations.append(Observation(x, problem.evaluate(space.decode(x))))
    return samples, first


def _tpe_ask_samples(problem: Problem, n: int, calls: int) -> tuple[list[float], float]:
    optuna = _optuna()
    dists = {
        n: optuna.distributions.FloatDistribution(lo, hi)
        for n, (lo, hi) in zip(problem.space().names, problem.bounds, strict=True)
    }
    X, y = _random_history(problem, n, seed=n)
    study = optuna.create_study(direction="minimize", sampler=optuna.samplers.TPESampler(seed=0))
    study.add_trials(
        [
            optuna.trial.create_trial(params=_values(problem, x), distributions=dists, value=v)
            for x, v in zip(X, y, strict=True)
        ]
    )
    samples: list[float] = []
    first = 0.0
    for call in range(calls + 1):
        t0 = time.perf_counter_ns()
        trial = study.ask(fixed_distributions=dists)
        elapsed = time.perf_counter_ns() - t0
        if call == 0:
            first = float(elapsed)
        else:
            samples.append(float(elapsed))
        study.tell(trial, problem.evaluate(trial.params))
    return samples, first


def _skopt_step_samples(problem: Problem, n: int, calls: int) -> tuple[list[float], float]:
    from skopt import Optimizer as SkoptOptimizer

    X, y = _random_history(problem, n, seed=n)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        opt = SkoptOptimizer([tuple(b) for b in problem.bounds], random_state=0)
        t0 = time.perf_counter_ns()
        opt.tell(X.tolist(), list(y))
        x = opt.ask()
        first = float(time.perf_counter_ns() - t0)
        samples: list[float] = []
        for _ in range(calls):
            value = _value(problem, x)
            t0 = time.perf_counter_ns()
            opt.tell(x, value)
            x = opt.ask()
            samples.append(float(time.perf_counter_ns() - t0))
    return samples, first


def suggest_rows(ctx: Context, problem: Problem) -> Iterator[Result]:
    d = problem.dim
    for n in (100, 1000):
        name = f"tuning.suggest.obs{n}"
        if ctx.wants(name):
            calls = ctx.iterations(full=50, quick=10) if n == 100 else ctx.iterations(20, 4)
            samples, first = _suggest_samples(problem, n, 1, "kriging_believer", calls)
            yield _latency_row(
                name,
                samples,
                SUGGEST_TARGET_MS[n],
                f"Optimizer.suggest(q=1), {n}+ random Hartmann6 observations, d={d}, warm",
                first,
            )
        yield from _suggest_peer_rows(ctx, problem, n)
    for batch in ("kriging_believer", "local_penalization"):
        name = f"tuning.suggest.batch8.obs100.{batch}"
        if ctx.wants(name):
            samples, first = _suggest_samples(problem, 100, 8, batch, ctx.iterations(20, 4))
            yield _latency_row(
                name,
                samples,
                None,
                f"Optimizer.suggest(q=8), 100+ random Hartmann6 observations, d={d}, warm",
                first,
            )


def _suggest_peer_rows(ctx: Context, problem: Problem, n: int) -> Iterator[Result]:
    """Optuna's TPE ask() at ``n`` observations; scikit-optimize's step at 100."""
    name = f"tuning.suggest.obs{n}.optuna_tpe"
    if ctx.wants(name):
        reason = _optuna_missing()
        if reason is not None:
            yield Result.skip(name, reason, "p99 latency", unit="ms")
        else:
            samples, first = _tpe_ask_samples(problem, n, ctx.iterations(50, 10))
            note = f"Optuna {_version('optuna')} TPE ask(), same {n}+ observations"
            yield _latency_row(name, samples, None, note, first)
    name = f"tuning.suggest.obs{n}.skopt_gp"
    if n == 100 and ctx.wants(name):
        reason = _skopt_missing()
        if reason is not None:
            yield Result.skip(name, reason, "p99 latency", unit="ms")
        else:
            samples, first = _skopt_step_samples(problem, n, ctx.iterations(20, 3))
            note = (
                f"scikit-optimize {_version('scikit-optimize')} Optimizer tell + ask "
                f"(its GP fit is in tell), same {n}+ observations"
            )
            yield _latency_row(name, samples, None, note, first)


def benchmarks(ctx: Context) -> Iterator[Result]:
    # every row tests ctx.wants itself: ``--only tuning.branin.llmopt`` runs that row alone
    from benchmarks.problems import BRANIN as branin
    from benchmarks.problems import HARTMANN6 as hartmann6

    yield from quality_rows(ctx, branin, 30, range(ctx.iterations(10, 3)), BRANIN_TARGET)
    yield from quality_rows(
        ctx,
        hartmann6,
        100,
        range(ctx.iterations(10, 2)),
        HARTMANN6_TARGET,
        skopt_seeds=ctx.iterations(SKOPT_HARTMANN6_SEEDS, 0),
    )
    yield from suggest_rows(ctx, hartmann6)
    yield from study_rows(ctx, hartmann6)


def study_rows(ctx: Context, problem: Problem) -> Iterator[Result]:
    """A whole study through gRPC (see the module docstring)."""
    if not ctx.wants("tuning.e2e.study50"):
        return
    from llmopt.client import Client, FloatParameter

    suggest_ns: list[float] = []
    report_ns: list[float] = []
    clock = time.perf_counter_ns
    with ctx.server() as server, Client(server.address) as client:
        client.wait_ready(60)
        params = [FloatParameter(n, lo, hi) for n, (lo, hi) in zip(
            problem.space().names, problem.bounds, strict=True)]  # fmt: skip
        t0 = clock()
        client.create_study("hartmann6", params, direction="minimize", seed=1)
        for _ in range(STUDY_TRIALS):
            t1 = clock()
            [trial] = client.suggest("hartmann6")
            t2 = clock()
            client.report("hartmann6", trial.number, problem.evaluate(trial.params))
            report_ns.append(float(clock() - t2))
            suggest_ns.append(float(t2 - t1))
        best = client.best_trial("hartmann6")
        seconds = (clock() - t0) / 1e9
    where = f"server pinned to core {server.cpus}" if server.cpus else "server not pinned"
    yield Result(
        name="tuning.e2e.study50",
        metric="wall time",
        measured=seconds,
        unit="s",
        target=STUDY_TARGET_S,
        better="lower",
        extra={"best": best.value, "trials": STUDY_TRIALS},
        note=f"{STUDY_TRIALS} Suggest + Report of Hartmann6 (d=6) with the client; best "
        f"{best.value:.3f}; {where}",
    )
    for rpc, samples in (("suggest", suggest_ns), ("report", report_ns)):
        pct = percentiles_ns(samples)
        yield Result(
            name=f"tuning.e2e.study50.{rpc}",
            metric="p99 latency",
            measured=pct.p99 / 1e3,
            unit="ms",
            extra={**pct.as_extra(), "samples": pct.count},
            note=f"p50 {fmt_number(pct.p50 / 1e3)} ms over the study's {pct.count} calls",
        )

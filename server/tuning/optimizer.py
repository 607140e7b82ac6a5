"""Bayesian optimization over a ``SearchSpace``: the seeded initial design, then a Gaussian
process and an acquisition, one suggestion or a batch at a time.

``Optimizer.suggest`` is ask; the service keeps the trials and hands every call the completed
observations and the pending rows (tell is the next call's input). The steps of one call:

1. Design. While ``index + j`` is below the number of initial trials, row ``j`` is the design's
   point ``index + j`` (scrambled Sobol, or a Latin hypercube of exactly that many points, both
   seeded by ``config.seed``), so a restarted study continues the same design. One design
   coordinate per parameter: a categorical's picks a choice, an int's a cell.
2. Model. The objective's GP (``llmopt.tuning.gp``, Matérn-5/2 ARD, hyperparameters by marginal
   likelihood, warm-started from this optimizer's previous call) on every observation, in the
   minimization frame (the values negated when maximizing); a failed trial (``value`` None)
   counts as the worst value seen so far. One GP per constraint metric, on the observations
   that carry it.
3. Acquisition (``llmopt.tuning.acquisition``), times the probability of feasibility of every
   constraint (added in log space for ``log_ei``); before any feasible observation, the
   probability of feasibility alone. ``ucb`` enters the product as ``softplus`` of the
   standardized bound (positive, same maximizer unconstrained).
4. Maximization. ``N_CANDIDATES`` seeded random points of the space and perturbations of the best
   observations, snapped and scored at once; the best ``N_REFINE`` distinct ones refined together
   by one L-BFGS-B over the continuous columns (categories held at the candidate's one-hot),
   snapped and scored again; the best row that is none of the observed, pending or already
   chosen rows wins.
5. Batches. Kriging believer: the GP conditioned on each chosen (and pending) row at its
   posterior mean before the next; local penalization: the acquisition (in log form) penalized
   around each chosen and pending row, with the Lipschitz constant the largest gradient norm of
   the GP mean over the candidates.

Every random draw comes from a generator seeded by ``(config.seed, index)``: the same inputs and
the same call history give the same rows.
"""

from __future__ import annotations

import contextlib
import math
import threading
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy import optimize, special
from scipy.stats import qmc
from threadpoolctl import ThreadpoolController

from llmopt import errors
from llmopt.tuning import acquisition as acq
from llmopt.tuning import gp
from llmopt.tuning.space import SearchSpace

ACQUISITIONS = ("log_ei", "ei", "pi", "ucb")
BATCH_STRATEGIES = ("kriging_believer", "local_penalization")
INITIAL_DESIGNS = ("sobol", "lhs")

MAX_Q = 64
MAX_INITIAL_TRIALS = 1000
MAX_RESTARTS = 32
MAX_METRIC_CHARS = 128

N_CANDIDATES = 2000
"""Candidates scored per chosen row (a quarter of them perturbations of the best rows); fewer
beyond ``gp.MAX_FIT`` observations, down to ``MIN_CANDIDATES``, so that scoring stays linear."""
MIN_CANDIDATES = 500
N_LOCAL_CENTRES = 5
LOCAL_SD = 0.05
"""Standard deviation of a perturbation of a continuous column; a categorical is redrawn with
probability ``LOCAL_FLIP``."""
LOCAL_FLIP = 0.2
N_REFINE = 5
REFINE_MAXITER = 30
N_LIPSCHITZ = 200
WARM_RESTART_EVERY = 5
"""With a warm start, the hyperparameter fit adds one random restart on every fifth suggest (by
index) and none on the others, nor beyond ``WARM_RESTART_ROWS`` observations: the warm start is
close already, and a restart is most of a suggest's time (about half of 40 ms at 100 rows). A
cold fit (no warm start) beyond ``WARM_RESTART_ROWS`` rows makes one random restart only."""
WARM_RESTART_ROWS = 150


@dataclass(frozen=True)
class Constraint:
    """A metric the reports carry, feasible when ``min <= metric <= max`` (either may be None)."""

    metric: str
    max: float | None = None
    min: float | None = None

    def validate(self, field: str = "constraint") -> Constraint:
        if not isinstance(self.metric, str) or not 1 <= len(self.metric) <= MAX_METRIC_CHARS:
            raise errors.invalid(
                f"{field}.metric", self.metric, f"a name of 1 to {MAX_METRIC_CHARS} characters"
            )
        if self.max is None and self.min is None:
            raise errors.invalid(f"{field}.max", None, "a bound (max, min or both)")
        for name in ("max", "min"):
            bound = getattr(self, name)
            if bound is not None and (
                isinstance(bound, bool)
                or not isinstance(bound, int | float)
                or not math.isfinite(bound)
            ):
                raise errors.invalid(f"{field}.{name}", bound, "a finite number")
        if self.max is not None and self.min is not None and self.min > self.max:
            raise errors.invalid(f"{field}.min", self.min, f"at most max ({self.max})")
        return self

    def satisfied(self, metrics: Mapping[str, float]) -> bool:
        """Whether ``metrics`` meet the constraint (a missing or non-finite metric does not)."""
        value = metrics.get(self.metric)
        if value is None or not math.isfinite(value):
            return False
        return (self.max is None or value <= self.max) and (self.min is None or value >= self.min)


@dataclass(frozen=True)
class OptimizerConfig:
    """How a study suggests.

    ``initial_trials`` 0 means automatic: ``min(20, max(5, space.dim + 1))`` (the encoded width).
    ``ucb`` is ``-mean + sqrt(ucb_beta) * sd`` in the minimization frame. ``noise`` False fixes
    the noise variance at 1e-6 of the standardized variance.

    >>> OptimizerConfig(acquisition="ucb", ucb_beta=4.0).validate().acquisition
    'ucb'
    """

    acquisition: str = "log_ei"
    batch: str = "kriging_believer"
    initial_design: str = "sobol"
    initial_trials: int = 0
    ucb_beta: float = 2.0
    noise: bool = True
    restarts: int = 4
    seed: int = 0

    def validate(self, field: str = "optimizer") -> OptimizerConfig:
        for name, allowed in (
            ("acquisition", ACQUISITIONS),
            ("batch", BATCH_STRATEGIES),
            ("initial_design", INITIAL_DESIGNS),
        ):
            value = getattr(self, name)
            if value not in allowed:
                raise errors.invalid(f"{field}.{name}", value, f"one of {list(allowed)}")
        for name, high in (("initial_trials", MAX_INITIAL_TRIALS), ("restarts", MAX_RESTARTS)):
            value = getattr(self, name)
            if not _is_int(value) or not 0 <= value <= high:
                raise errors.invalid(f"{field}.{name}", value, f"an integer from 0 to {high}")
        beta = self.ucb_beta
        if (
            isinstance(beta, bool)
            or not isinstance(beta, int | float)
            or not math.isfinite(beta)
            or beta <= 0
        ):
            raise errors.invalid(f"{field}.ucb_beta", beta, "a finite number greater than 0")
        if not isinstance(self.noise, bool):
            raise errors.invalid(f"{field}.noise", self.noise, "true or false")
        if not _is_int(self.seed) or not 0 <= self.seed < 2**63:
            raise errors.invalid(f"{field}.seed", self.seed, "an integer from 0 to 2^63 - 1")
        return self


@dataclass(frozen=True)
class Observation:
    """A trial as the optimizer sees it: its encoded row, its objective value as reported (None:
    the trial failed) and the constraint metrics it reported."""

    x: np.ndarray
    value: float | None
    metrics: Mapping[str, float] = field(default_factory=dict)


def _is_int(value: object) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


Scorer = Callable[[np.ndarray, bool], tuple[np.ndarray, np.ndarray | None]]


class _Model:
    """The GPs of one suggest and the acquisition built on them (minimization frame)."""

    def __init__(
        self,
        objective: gp.GaussianProcess,
        constraint_gps: list[tuple[Constraint, gp.GaussianProcess]],
        best: float | None,
        config: OptimizerConfig,
    ) -> None:
        self.objective = objective
        self.constraint_gps = constraint_gps
        self.best = best  # None: no feasible observation yet
        self.config = config
        self.centres = np.zeros((0, objective.X.shape[1]))
        self.lipschitz = 0.0
        self.penalty_best = 0.0

    def score(self, X: np.ndarray, grad: bool) -> tuple[np.ndarray, np.ndarray | None]:
        """The (constrained, penalized) acquisition at the rows of ``X``, to maximize."""
        log_g = np.zeros(len(X))
        dlog_g = np.zeros(X.shape) if grad else None
        for constraint, model in self.constraint_gps:
            mean, sd, dmean, dsd = _moments(model, X, grad)
            value, d = acq.log_feasibility(mean, sd, constraint.min, constraint.max, dmean, dsd)
            log_g += value
            if dlog_g is not None and d is not None:
                dlog_g += d
        mean, sd, dmean, dsd = _moments(self.objective, X, grad)
        if len(self.centres):
            value, d = acq.log_penalizer(
                X,
                self.centres,
                self.centre_mean,
                self.centre_sd,
                self.lipschitz,
                self.penalty_best,
                grad,
            )
            log_g += value
            if dlog_g is not None and d is not None:
                dlog_g += d
        if self.best is None:
            return log_g, dlog_g
        name = self.config.acquisition
        if name == "log_ei":
            a, da = acq.log_ei(mean, sd, self.best, dmean, dsd)
            return a + log_g, (None if da is None or dlog_g is None else da + dlog_g)
        if name == "ei":
            a, da = acq.ei(mean, sd, self.best, dmean, dsd)
        elif name == "pi":
            a, da = acq.pi(mean, sd, self.best, dmean, dsd)
        else:
            scale = self.objective.y_std
            u, du = acq.ucb(
                (mean - self.objective.y_mean) / scale,
                sd / scale,
                self.config.ucb_beta,
                None if dmean is None else dmean / scale,
                None if dsd is None else dsd / scale,
            )
            a = acq.softplus(u)
            da = None if du is None else special.expit(u)[:, None] * du
        g = np.exp(log_g)
        if da is None or dlog_g is None:
            return a * g, None
        return a * g, g[:, None] * (da + a[:, None] * dlog_g)

    def set_centres(self, centres: np.ndarray) -> None:
        """Local penalization around ``centres`` (chosen or pending rows)."""
        self.centres = centres
        mean, var = self.objective.predict(centres)
        self.centre_mean = mean
        self.centre_sd = np.sqrt(var)


def _moments(
    model: gp.GaussianProcess, X: np.ndarray, grad: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]:
    if not grad:
        mean, var = model.predict(X)
        return mean, np.sqrt(var), None, None
    mean, var, dmean, dvar = model.predict_with_grad(X)
    sd = np.sqrt(var)
    return mean, sd, dmean, dvar / (2.0 * sd)[:, None]


_blas_lock = threading.Lock()
_blas_users = 0
_blas_limit: object | None = None  # the limiter while any suggest runs


@contextlib.contextmanager
def one_blas_thread() -> Iterator[None]:
    """BLAS limited to one thread while the block runs. The limit is the process's (BLAS has
    no per-thread setting): the first of overlapping blocks sets it and the last restores it,
    so BLAS work elsewhere in the process meanwhile (an Explain's least squares) runs on one
    thread too, which changes its speed only."""
    global _blas_users, _blas_limit
    with _blas_lock:
        if _blas_users == 0:
            _blas_limit = ThreadpoolController().limit(limits=1, user_api="blas")
        _blas_users += 1
    try:
        yield
    finally:
        with _blas_lock:
            _blas_users -= 1
            if _blas_users == 0 and _blas_limit is not None:
                _blas_limit.restore_original_limits()  # type: ignore[attr-defined]
                _blas_limit = None


class Optimizer:
    """Suggests the next rows of a study (see the module). Calls are serialized by the caller;
    the optimizer keeps the previous call's hyperparameters to warm-start the next fit."""

    def __init__(
        self,
        space: SearchSpace,
        config: OptimizerConfig,
        *,
        minimize: bool,
        constraints: Sequence[Constraint] = (),
    ) -> None:
        self.space = space
        self.config = config.validate()
        self.minimize = minimize
        self.constraints = tuple(c.validate(f"constraints[{i}]") for i, c in enumerate(constraints))
        self.n_initial = config.initial_trials or min(20, max(5, space.dim + 1))
        self._warm_: gp.GPParams | None = None
        self._warm_constraints_: dict[int, gp.GPParams] = {}
        self._lhs_: np.ndarray | None = None
        # One length scale per parameter (a categorical's columns share one); per column when
        # there is no categorical.
        self._groups = space.column_groups() if space.categorical_blocks() else None

    # -- the initial design ------------------------------------------------------------------

    def design_row(self, i: int) -> np.ndarray:
        """Point ``i`` of the seeded initial design, encoded and snapped (Sobol beyond an LHS)."""
        k = len(self.space.params)
        if self.config.initial_design == "lhs" and i < self.n_initial:
            if self._lhs_ is None:
                self._lhs_ = qmc.LatinHypercube(d=k, seed=self.config.seed).random(self.n_initial)
            u = self._lhs_[i : i + 1]
        else:
            sobol = qmc.Sobol(d=k, scramble=True, seed=self.config.seed)
            if i:
                sobol.fast_forward(i)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                u = sobol.random(1)
        return self.space.from_unit(u)[0]

    # -- ask ---------------------------------------------------------------------------------

    def suggest(
        self,
        observations: Sequence[Observation],
        pending: Sequence[np.ndarray],
        q: int,
        index: int,
    ) -> list[np.ndarray]:
        """``q`` encoded, snapped rows to evaluate next (see the module).

        BLAS runs on one thread meanwhile (``one_blas_thread``): the matrices are small (100 to
        1,000 rows) and a thread pool fighting for a shared 2-core machine doubled the time of a
        suggest (at 100 observations, d = 6: about 40 ms on one thread, 80 to 100 ms on two).
        """
        with one_blas_thread():
            return self._suggest(observations, pending, q, index)

    def _suggest(
        self,
        observations: Sequence[Observation],
        pending: Sequence[np.ndarray],
        q: int,
        index: int,
    ) -> list[np.ndarray]:
        if not _is_int(q) or not 1 <= q <= MAX_Q:
            raise errors.invalid("q", q, f"an integer from 1 to {MAX_Q}")
        if not _is_int(index) or index < 0:
            raise errors.invalid("index", index, "an integer of at least 0")
        X_obs, values = self._check_observations(observations)
        P = self._check_rows(pending, "pending")
        rows = [self.design_row(index + j) for j in range(max(0, min(q, self.n_initial - index)))]
        if len(rows) == q:
            return rows
        completed = [i for i, v in enumerate(values) if v is not None]
        if len(completed) < 2:
            # Nothing to model yet: the design goes on.
            rows += [self.design_row(index + j) for j in range(len(rows), q)]
            return rows
        rng = np.random.default_rng([self.config.seed, index])
        model = self._model(observations, X_obs, values, completed, rng, index)
        taken = [*X_obs, *P, *rows]
        believer = self.config.batch == "kriging_believer"
        if believer:
            fantasies = np.array([*P, *rows])
            if len(fantasies):
                self._believe(model, fantasies)
        else:
            model.lipschitz = self._lipschitz(model, rng)
            model.penalty_best = float(np.min(model.objective.z * model.objective.y_std)) + (
                model.objective.y_mean
            )
            centres = np.array([*P, *rows])
            if len(centres):
                model.set_centres(centres)
        anchors = self._anchors(X_obs, values, completed, observations)
        while len(rows) < q:
            x = self._maximize(model, rng, anchors, taken)
            rows.append(x)
            taken.append(x)
            if len(rows) == q:
                break
            if believer:
                self._believe(model, x[None, :])
            else:
                model.set_centres(np.vstack([model.centres, x[None, :]]))
        return rows

    def _check_rows(self, rows: Sequence[np.ndarray], field: str) -> list[np.ndarray]:
        out = []
        for i, row in enumerate(rows):
            x = np.asarray(row, dtype=float).reshape(-1)
            if x.shape != (self.space.dim,) or not np.all(np.isfinite(x)):
                raise errors.invalid(
                    f"{field}[{i}]", row, f"a finite encoded row of {self.space.dim} values"
                )
            out.append(x)
        return out

    def _check_observations(
        self, observations: Sequence[Observation]
    ) -> tuple[list[np.ndarray], list[float | None]]:
        X = self._check_rows([o.x for o in observations], "observations.x")
        values: list[float | None] = []
        for i, o in enumerate(observations):
            if o.value is None:
                values.append(None)
                continue
            if isinstance(o.value, bool) or not math.isfinite(o.value):
                raise errors.invalid(f"observations[{i}].value", o.value, "a finite number")
            values.append(float(o.value) if self.minimize else -float(o.value))
        return X, values

    def _model(
        self,
        observations: Sequence[Observation],
        X_obs: list[np.ndarray],
        values: list[float | None],
        completed: list[int],
        rng: np.random.Generator,
        index: int,
    ) -> _Model:
        done = [v for v in values if v is not None]
        worst = max(done)
        y = np.array([worst if v is None else v for v in values])
        X = np.array(X_obs)
        objective = gp.fit(
            X,
            y,
            noise=self.config.noise,
            rng=rng,
            warm=self._warm_,
            restarts=self._restarts(self._warm_ is not None, len(X), index),
            groups=self._groups,
        )
        self._warm_ = objective.params
        constraint_gps = []
        for k, constraint in enumerate(self.constraints):
            carry = [
                i
                for i, o in enumerate(observations)
                if isinstance(o.metrics.get(constraint.metric), int | float)
                and math.isfinite(o.metrics[constraint.metric])
            ]
            if not carry:
                continue
            c = np.array([float(observations[i].metrics[constraint.metric]) for i in carry])
            Xc = X[carry]
            if len(carry) < 3:
                defaults = gp.GPParams.default(len(self.space.params))
                model = gp.GaussianProcess(Xc, c, defaults, groups=self._groups)
            else:
                model = gp.fit(
                    Xc,
                    c,
                    noise=self.config.noise,
                    rng=rng,
                    warm=self._warm_constraints_.get(k),
                    restarts=self._restarts(k in self._warm_constraints_, len(carry), index),
                    groups=self._groups,
                )
                self._warm_constraints_[k] = model.params
            constraint_gps.append((constraint, model))
        feasible = [
            values[i]
            for i in completed
            if all(c.satisfied(observations[i].metrics) for c in self.constraints)
        ]
        best: float | None = min(v for v in feasible if v is not None) if feasible else None
        if best is None and not constraint_gps:
            best = min(done)  # no metric seen yet: nothing to be feasible by
        return _Model(objective, constraint_gps, best, self.config)

    def _restarts(self, warm: bool, rows: int, index: int) -> int:
        """Random restarts of a hyperparameter fit (see ``WARM_RESTART_EVERY``)."""
        if not warm:
            # A cold fit on many rows (the first suggest after a restart) keeps to one restart.
            return (
                self.config.restarts if rows <= WARM_RESTART_ROWS else min(1, self.config.restarts)
            )
        if rows > WARM_RESTART_ROWS or index % WARM_RESTART_EVERY:
            return 0
        return min(1, self.config.restarts)

    def _believe(self, model: _Model, X: np.ndarray) -> None:
        """Kriging believer: every GP conditioned on ``X`` at its own posterior mean."""
        model.objective = model.objective.condition_on(X, model.objective.predict(X)[0])
        model.constraint_gps = [
            (c, m.condition_on(X, m.predict(X)[0])) for c, m in model.constraint_gps
        ]

    def _lipschitz(self, model: _Model, rng: np.random.Generator) -> float:
        """The largest gradient norm of the objective's posterior mean over random rows and the
        observed ones (a lower estimate of the Lipschitz constant, as Gonzalez et al. use)."""
        U = rng.random((N_LIPSCHITZ, len(self.space.params)))
        X = np.vstack([self.space.from_unit(U), model.objective.X[:N_LIPSCHITZ]])
        _, _, dmean, _ = model.objective.predict_with_grad(X)
        return max(float(np.sqrt((dmean * dmean).sum(1)).max()), 1e-7)

    def _anchors(
        self,
        X_obs: list[np.ndarray],
        values: list[float | None],
        completed: list[int],
        observations: Sequence[Observation],
    ) -> np.ndarray:
        """The best completed rows (feasible first), around which candidates are perturbed."""

        def key(i: int) -> tuple[bool, float]:
            feasible = all(c.satisfied(observations[i].metrics) for c in self.constraints)
            v = values[i]
            return (not feasible, math.inf if v is None else v)

        order = sorted(completed, key=key)[:N_LOCAL_CENTRES]
        return np.array([X_obs[i] for i in order])

    def _candidates(self, rng: np.random.Generator, anchors: np.ndarray, n_obs: int) -> np.ndarray:
        total = N_CANDIDATES
        if n_obs > gp.MAX_FIT:
            total = max(MIN_CANDIDATES, int(N_CANDIDATES * gp.MAX_FIT / n_obs))
        n_local = total // 4
        n_random = total - n_local
        random_rows = self.space.from_unit(rng.random((n_random, len(self.space.params))))
        per = max(1, n_local // len(anchors))
        local = np.repeat(anchors, per, axis=0)
        mask = self.space.continuous_mask()
        local[:, mask] += rng.normal(0.0, LOCAL_SD, (len(local), int(mask.sum())))
        for off, k in self.space.categorical_blocks():
            flip = rng.random(len(local)) < LOCAL_FLIP
            picks = rng.integers(0, k, int(flip.sum()))
            block = local[flip, off : off + k]
            block[:] = 0.0
            block[np.arange(len(picks)), picks] = 1.0
            local[flip, off : off + k] = block
        return self.space.snap(np.vstack([random_rows, local]))

    def _maximize(
        self,
        model: _Model,
        rng: np.random.Generator,
        anchors: np.ndarray,
        taken: list[np.ndarray],
    ) -> np.ndarray:
        seen = {_key(x) for x in taken}
        cands = self._candidates(rng, anchors, model.objective.n)
        scores = _finite(model.score(cands, False)[0])
        order = np.argsort(-scores, kind="stable")
        starts: list[int] = []
        start_keys: set[bytes] = set()
        for i in order:
            k = _key(cands[i])
            if k in seen or k in start_keys:
                continue
            starts.append(int(i))
            start_keys.add(k)
            if len(starts) == N_REFINE:
                break
        if not starts:  # every candidate is taken (a small discrete space): any row will do
            return cands[int(order[0])]
        top = cands[starts]
        mask = self.space.continuous_mask()
        pool = [top]
        if mask.any():
            pool.append(self._refine(model, top, mask))
        pool_rows = np.vstack(pool)
        pool_scores = _finite(model.score(pool_rows, False)[0])
        for i in np.argsort(-pool_scores, kind="stable"):
            if _key(pool_rows[i]) not in seen:
                return pool_rows[int(i)]
        return top[0]

    def _refine(self, model: _Model, top: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """One L-BFGS-B over the continuous columns of every start at once (their objectives are
        independent, so the sum's gradient is theirs side by side), then snapped."""
        m, w = len(top), int(mask.sum())

        def objective(v: np.ndarray) -> tuple[float, np.ndarray]:
            X = top.copy()
            X[:, mask] = v.reshape(m, w)
            s, g = model.score(X, True)
            assert g is not None
            s = np.nan_to_num(s, nan=-1e300, posinf=1e300, neginf=-1e300)
            g = np.nan_to_num(g[:, mask], nan=0.0, posinf=0.0, neginf=0.0)
            return -float(s.sum()), -g.reshape(-1)

        result = optimize.minimize(
            objective,
            top[:, mask].reshape(-1),
            jac=True,
            method="L-BFGS-B",
            bounds=[(0.0, 1.0)] * (m * w),
            options={"maxiter": REFINE_MAXITER},
        )
        X = top.copy()
        X[:, mask] = np.clip(result.x.reshape(m, w), 0.0, 1.0)
        return self.space.snap(X)

    # -- the best trial ----------------------------------------------------------------------

    def best(self, observations: Sequence[Observation]) -> int | None:
        """Index of the best feasible completed observation (by value and direction); None when
        there is none. An observation lacking a constraint's metric is infeasible."""
        best_i: int | None = None
        best_v = math.inf
        for i, o in enumerate(observations):
            if o.value is None or not math.isfinite(o.value):
                continue
            if not all(c.satisfied(o.metrics) for c in self.constraints):
                continue
            v = o.value if self.minimize else -o.value
            if v < best_v:
                best_i, best_v = i, v
        return best_i


def _key(x: np.ndarray) -> bytes:
    return (np.round(np.asarray(x, dtype=float), 9) + 0.0).tobytes()  # -0.0 as 0.0


def _finite(s: np.ndarray) -> np.ndarray:
    return np.nan_to_num(np.asarray(s, dtype=float), nan=-np.inf, posinf=np.finfo(float).max)

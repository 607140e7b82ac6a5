"""The tuning service: every study of the server, ask and tell, and the studies that drive bandits.

``TuningService`` owns the store (``<data_dir>/tuning/tuning.db``) and one ``_Study`` per name,
each with its own lock, its trials in memory and its ``Optimizer`` (``llmopt.tuning.optimizer``).
Suggest asks the optimizer for new points given every finished trial and every running one (the
running ones count as pending), then makes them trials, durable before the answer; Report makes a
trial complete or failed, durable before the answer. A restart reloads every trial; the optimizer
continues from them (its initial design by trial count, its fit from the data).

A study bound to a bandit (``BanditBinding``) is driven by ``step``, which a thread runs every
``step_seconds``: each running trial is an arm of the bandit; once the arm has its rewards (or its
time is up) the arm's mean reward, or the named outcome aggregate, is the trial's value and the
arm's outcome aggregates (``arm_outcomes``: ``latency_ms_p95_1h``, ``cost_mean_1h``, ...) are its
metrics; finished arms other than the ``keep_best`` best are removed from the bandit, and new
trials are suggested and added as arms until ``parallel_trials`` run.

>>> import tempfile, pathlib
>>> from llmopt.tuning.space import FloatParam, SearchSpace
>>> svc = TuningService(pathlib.Path(tempfile.mkdtemp()))
>>> svc.warm_up()
>>> space = SearchSpace([FloatParam("temperature", 0.0, 2.0)])
>>> _ = svc.create_study(StudySpec("temp", space))
>>> [trial] = svc.suggest("temp")
>>> svc.report("temp", trial.number, value=0.8).state
'complete'
>>> svc.best_trial("temp").number == trial.number
True
>>> svc.close()
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import math
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from llmopt import errors, naming
from llmopt.bandits.arms import Arm, LLMConfig
from llmopt.bandits.types import ArmStats
from llmopt.ports import ArmOutcomeReader, TunedBandits
from llmopt.registry import paging
from llmopt.tuning.optimizer import Constraint, Observation, Optimizer
from llmopt.tuning.space import CategoricalParam, ParamValue, SearchSpace
from llmopt.tuning.store import TuningStore
from llmopt.tuning.types import (
    COMPLETE,
    CONFIG_FIELDS,
    FAILED,
    MAX_FAILURE,
    RUNNING,
    STUDY_COMPLETED,
    STUDY_RUNNING,
    STUDY_STOPPED,
    TRIAL_STATES,
    BanditBinding,
    StudyInfo,
    StudySpec,
    Trial,
    arm_id_of,
    check_metrics,
    value_kind,
)

log = logging.getLogger("llmopt.tuning")

ARM_OUTCOMES_SET = "arm_outcomes"  # the feature service's built-in set (entity "<bandit>/<arm>")
# Metrics of a bound trial that come from the bandit's own stats, not from the feature store.
BANDIT_METRICS = ("reward_mean", "rewards")
MAX_SUGGEST = 64
MAX_REQUEST_ID = 128
STUDIES_PAGE, TRIALS_PAGE = "studies", "trials"


class _Study:
    """One study in memory: its spec, state, trials (``trials[n - 1]`` is trial n), the encoded
    row of each trial, the best trial, and the optimizer. Everything under ``lock``."""

    def __init__(self, spec: StudySpec, state: str, create_time: float, trials: list[Trial]):
        self.spec = spec
        self.state = state
        self.create_time = create_time
        self.trials = trials
        self.lock = threading.Lock()
        self.deleted = False
        self.rows: dict[int, np.ndarray] = {t.number: spec.space.encode(t.params) for t in trials}
        self.optimizer = Optimizer(
            spec.space,
            spec.optimizer,
            minimize=spec.objective.minimize,
            constraints=spec.constraints,
        )
        self.best: Trial | None = None
        for t in trials:
            self.consider(t)

    def consider(self, trial: Trial) -> None:
        """Make ``trial`` the best when it is complete, feasible and better (ties: the first)."""
        if trial.state != COMPLETE or not trial.feasible or trial.value is None:
            return
        best = self.best
        if (
            best is None
            or best.value is None
            or (
                trial.value < best.value
                if self.spec.objective.minimize
                else trial.value > best.value
            )
        ):
            self.best = trial

    def count(self, state: str) -> int:
        return sum(1 for t in self.trials if t.state == state)

    def running(self) -> list[Trial]:
        return [t for t in self.trials if t.state == RUNNING]

    def info(self) -> StudyInfo:
        return StudyInfo(
            spec=self.spec,
            state=self.state,
            create_time=self.create_time,
            running=self.count(RUNNING),
            complete=self.count(COMPLETE),
            failed=self.count(FAILED),
            best=self.best,
        )


class TuningService:
    """Domain object behind ``llmopt.v1.Tuning``; safe to call from many threads."""

    def __init__(
        self,
        root: Path,
        *,
        bandits: TunedBandits | None = None,
        outcomes: ArmOutcomeReader | None = None,
        synchronous: str = "full",
        step_seconds: float = 1.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._root = Path(root)
        self._synchronous = synchronous
        self._bandits = bandits
        self._outcomes = outcomes
        self._step_seconds = step_seconds
        self._clock = clock
        self._store: TuningStore | None = None
        self._studies: dict[str, _Study] = {}
        self._names_lock = threading.Lock()  # create/delete of names only
        self._stop = threading.Event()
        self._driver: threading.Thread | None = None

    # -- lifecycle ------------------------------------------------------------------------------

    def warm_up(self) -> None:
        """Open the store and load every study; start the thread that drives bound studies."""
        if self._store is not None:
            return
        store = TuningStore(self._root, synchronous=self._synchronous)
        for spec, state, created, trials in store.load():
            self._studies[spec.name] = _Study(spec, state, created, trials)
        self._store = store
        if self._bandits is not None and self._step_seconds > 0:
            self._driver = threading.Thread(target=self._drive, name="tuning-driver", daemon=True)
            self._driver.start()

    def close(self) -> None:
        self._stop.set()
        if self._driver is not None:
            self._driver.join(timeout=10)
        if self._store is not None:
            self._store.close()

    def _drive(self) -> None:
        while not self._stop.wait(self._step_seconds):
            try:
                self.step()
            except Exception:  # the driver must outlive any one study's trouble
                log.exception("tuning step failed")

    @property
    def _db(self) -> TuningStore:
        if self._store is None:
            raise errors.Unavailable("tuning is loading; retry shortly")
        return self._store

    # -- studies --------------------------------------------------------------------------------

    def create_study(self, spec: StudySpec) -> StudyInfo:
        spec.validate()
        if spec.binding is not None:
            self._check_binding(spec)
        store = self._db
        with self._names_lock:
            if spec.name in self._studies:
                raise errors.AlreadyExists(f"study.name: {spec.name!r} is already a study")
            created = self._clock()
            store.create_study(spec, STUDY_RUNNING, created)
            study = _Study(spec, STUDY_RUNNING, created, [])
            self._studies[spec.name] = study
        if spec.binding is not None:
            with study.lock:
                self._step_bound(study)
        return self.get_study(spec.name)

    def get_study(self, name: str) -> StudyInfo:
        study = self._study(name, "name")
        with study.lock:
            return study.info()

    def list_studies(self, page_size: int = 0, page_token: str = "") -> tuple[list[StudyInfo], str]:
        """Studies in name order, ``page_size`` at a time (0: 100); the token resumes the list."""
        size = paging.page_size(page_size)
        after = paging.decode_token(page_token, STUDIES_PAGE)
        names = sorted(n for n in list(self._studies) if after is None or n > str(after))
        page = names[:size]
        infos = []
        for n in page:
            study = self._studies.get(n)
            if study is not None:
                with study.lock:
                    infos.append(study.info())
        token = paging.encode_token(STUDIES_PAGE, page[-1]) if len(names) > size else ""
        return infos, token

    def delete_study(self, name: str) -> None:
        store = self._db
        with self._names_lock:
            study = self._study(name, "name")
            with study.lock:
                study.deleted = True
                if study.spec.binding is not None:
                    for t in study.running():
                        self._remove_arm(study.spec.binding, t.arm_id)
                store.delete_study(name)
                del self._studies[name]

    def stop_study(self, name: str) -> StudyInfo:
        """No more suggestions. A bound study's running trials fail as stopped and their arms
        are removed."""
        study = self._study(name, "name")
        with study.lock:
            self._check_live(study)
            if study.state == STUDY_RUNNING:
                self._halt(study, "the study was stopped", remove_arms=True)
            return study.info()

    def _halt(self, study: _Study, failure: str, remove_arms: bool) -> int:
        """Stop ``study`` (under its lock); a bound one's running trials fail with ``failure``.
        Returns how many did."""
        binding = study.spec.binding
        now = self._clock()
        ended = []
        if binding is not None:
            for t in study.running():
                if remove_arms:
                    self._remove_arm(binding, t.arm_id)
                ended.append(_finish(t, FAILED, now, failure=failure))
        self._db.save_trials(study.spec.name, ended, STUDY_STOPPED)
        study.state = STUDY_STOPPED
        self._apply(study, ended)
        return len(ended)

    # -- ask and tell ---------------------------------------------------------------------------

    def suggest(self, study_name: str, count: int = 1, request_id: str = "") -> list[Trial]:
        """``count`` new trials (fewer when ``max_trials`` leaves fewer), durable on return. A
        retry with the same ``request_id`` returns the trials of the first call."""
        if isinstance(count, bool) or not isinstance(count, int) or not 0 <= count <= MAX_SUGGEST:
            raise errors.invalid("count", count, f"0 (one) to {MAX_SUGGEST}")
        if len(request_id) > MAX_REQUEST_ID or not request_id.isprintable():
            raise errors.invalid(
                "request_id", request_id[:32], f"at most {MAX_REQUEST_ID} printable characters"
            )
        study = self._study(study_name)
        with study.lock:
            self._check_live(study)
            if request_id:
                earlier = [t for t in study.trials if t.request_id == request_id]
                if earlier:
                    return earlier
            if study.spec.binding is not None:
                raise errors.FailedPrecondition(
                    f"study: {study_name!r} drives bandit {study.spec.binding.bandit!r}; "
                    "the server makes its trials as arms"
                )
            return self._suggest(study, count or 1, request_id)

    def _suggest(self, study: _Study, count: int, request_id: str = "") -> list[Trial]:
        """Ask the optimizer and make its points trials (under the study's lock)."""
        if study.state != STUDY_RUNNING:
            raise errors.FailedPrecondition(
                f"study: {study.spec.name!r} is {study.state}; it suggests no more trials"
            )
        limit = study.spec.max_trials
        if limit:
            count = min(count, limit - len(study.trials))
            if count <= 0:
                raise errors.FailedPrecondition(
                    f"study: {study.spec.name!r} has created all of its {limit} trials"
                )
        observations, pending = [], []
        for t in study.trials:
            row = study.rows[t.number]
            if t.state == RUNNING:
                pending.append(row)
            else:
                observations.append(Observation(row, t.value, t.metrics))
        rows = study.optimizer.suggest(observations, pending, q=count, index=len(study.trials))
        now = self._clock()
        bound = study.spec.binding is not None
        trials = []
        for i, row in enumerate(rows):
            number = len(study.trials) + 1 + i
            trials.append(
                Trial(
                    study=study.spec.name,
                    number=number,
                    state=RUNNING,
                    params=_canonical(study.spec.space, study.spec.space.decode(row)),
                    create_time=now,
                    arm_id=arm_id_of(study.spec.name, number) if bound else "",
                    request_id=request_id,
                )
            )
        self._db.save_trials(study.spec.name, trials)
        self._apply(study, trials)
        return trials

    def report(
        self,
        study_name: str,
        trial: int,
        value: float | None = None,
        metrics: Mapping[str, float] | None = None,
        failed: bool = False,
        failure: str = "",
        params: Mapping[str, Any] | None = None,
    ) -> Trial:
        """Finish ``trial`` with ``value`` (or the objective's metric) and ``metrics``, or as
        failed; durable on return. ``trial`` 0 with ``params``: an evaluation made outside the
        study, recorded as a new trial. The same report twice is harmless."""
        study = self._study(study_name)
        spec = study.spec
        if spec.binding is not None:
            raise errors.FailedPrecondition(
                f"study: {study_name!r} drives bandit {spec.binding.bandit!r}; its trials are "
                "valued by the bandit's rewards"
            )
        clean = check_metrics("metrics", metrics or {})
        if len(failure) > MAX_FAILURE:
            raise errors.invalid("failure", failure[:32] + "...", f"at most {MAX_FAILURE} chars")
        if failed:
            if value is not None:
                raise errors.invalid("value", value, "unset for a failed trial")
        else:
            value = self._objective(spec, value, clean)
            missing = [c.metric for c in spec.constraints if c.metric not in clean]
            if missing:
                raise errors.invalid(
                    "metrics", sorted(clean), f"must carry the constraint metrics {missing}"
                )
            if failure:
                raise errors.invalid("failure", failure, "only for a failed trial")
        with study.lock:
            self._check_live(study)
            if isinstance(trial, bool) or not isinstance(trial, int) or trial < 0:
                raise errors.invalid("trial", trial, "a trial number (0 with params: a new one)")
            now = self._clock()
            if trial == 0:
                return self._report_outside(study, params, value, clean, failed, failure, now)
            if params:
                raise errors.invalid("params", dict(params), "only with trial 0")
            if trial > len(study.trials):
                raise errors.NotFound(f"trial: {trial} is not a trial of study {study_name!r}")
            current = study.trials[trial - 1]
            state = FAILED if failed else COMPLETE
            if current.state != RUNNING:
                if (current.state, current.value, current.metrics, current.failure) == (
                    state,
                    value,
                    clean,
                    failure,
                ):
                    return current  # a retry of the report that finished it
                raise errors.AlreadyExists(
                    f"trial: {trial} of study {study_name!r} is already {current.state}"
                )
            done = _finish(current, state, now, value, clean, failure, spec.constraints)
            self._save_finished(study, [done])
            return done

    def _report_outside(
        self,
        study: _Study,
        params: Mapping[str, Any] | None,
        value: float | None,
        metrics: dict[str, float],
        failed: bool,
        failure: str,
        now: float,
    ) -> Trial:
        if not params:
            raise errors.invalid("params", {}, "the parameters of the evaluation, with trial 0")
        space = study.spec.space
        row = space.encode(params, field="params")
        limit = study.spec.max_trials
        if limit and len(study.trials) >= limit:
            raise errors.FailedPrecondition(
                f"study: {study.spec.name!r} has created all of its {limit} trials"
            )
        started = Trial(
            study=study.spec.name,
            number=len(study.trials) + 1,
            state=RUNNING,
            params=_canonical(space, params),
            create_time=now,
        )
        state = FAILED if failed else COMPLETE
        done = _finish(started, state, now, value, metrics, failure, study.spec.constraints)
        study.rows[done.number] = row
        self._save_finished(study, [done])
        return done

    @staticmethod
    def _objective(spec: StudySpec, value: float | None, metrics: dict[str, float]) -> float:
        name = spec.objective.metric
        if name:
            if value is not None:
                raise errors.invalid(
                    "value", value, f"unset: the objective is the metric {name!r}; report it there"
                )
            if name not in metrics:
                raise errors.invalid(
                    "metrics", sorted(metrics), f"must carry the objective's metric {name!r}"
                )
            return metrics[name]
        if value is None:
            raise errors.invalid("value", None, "the objective's value (or failed)")
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
        ):
            raise errors.invalid("value", value, "a finite number")
        return float(value)

    def _save_finished(self, study: _Study, done: list[Trial]) -> None:
        """Make finished trials durable, completing the study when they were its last."""
        if not done:
            return
        finished = {t.number for t in done}
        limit = study.spec.max_trials
        complete = (
            study.state == STUDY_RUNNING
            and limit > 0
            and len(study.trials) + sum(1 for t in done if t.number > len(study.trials)) >= limit
            and all(t.state != RUNNING or t.number in finished for t in study.trials)
        )
        self._db.save_trials(study.spec.name, done, STUDY_COMPLETED if complete else None)
        if complete:
            study.state = STUDY_COMPLETED
        self._apply(study, done)

    @staticmethod
    def _apply(study: _Study, trials: list[Trial]) -> None:
        for t in trials:
            if t.number == len(study.trials) + 1:
                study.trials.append(t)
            else:
                study.trials[t.number - 1] = t
            if t.number not in study.rows:
                study.rows[t.number] = study.spec.space.encode(t.params)
            study.consider(t)

    def list_trials(
        self, study_name: str, state: str = "", page_size: int = 0, page_token: str = ""
    ) -> tuple[list[Trial], str]:
        """Trials by number, optionally of one state, ``page_size`` at a time (0: 100)."""
        if state and state not in TRIAL_STATES:
            raise errors.invalid("state", state, f"'' (any) or one of {TRIAL_STATES}")
        size = paging.page_size(page_size)
        after = paging.decode_token(page_token, TRIALS_PAGE)
        if after is not None and not isinstance(after, int):
            raise errors.invalid("page.page_token", page_token, "a token from a previous page")
        study = self._study(study_name)
        with study.lock:
            wanted = (t for t in study.trials[after or 0 :] if not state or t.state == state)
            found = list(itertools.islice(wanted, size + 1))  # one more: is there a next page
        page = found[:size]
        token = paging.encode_token(TRIALS_PAGE, page[-1].number) if len(found) > size else ""
        return page, token

    def best_trial(self, study_name: str) -> Trial:
        study = self._study(study_name)
        with study.lock:
            if study.best is None:
                raise errors.FailedPrecondition(
                    f"study: {study_name!r} has no complete trial within its constraints yet"
                )
            return study.best

    # -- studies that drive bandits -------------------------------------------------------------

    def _check_binding(self, spec: StudySpec) -> None:
        binding = spec.binding
        assert binding is not None
        if self._bandits is None:
            raise errors.FailedPrecondition(
                "study.binding: this server has no bandits to bind a study to"
            )
        try:
            self._bandits.get_bandit(binding.bandit)
        except errors.NotFound:
            raise errors.NotFound(
                f"study.binding.bandit: {binding.bandit!r} is not a bandit"
            ) from None
        for i, p in enumerate(spec.space.params):
            if p.name in CONFIG_FIELDS and not isinstance(p, CategoricalParam):
                for bound in (p.low, p.high):
                    try:
                        _arm_config(binding.base_config, {p.name: bound}).validate()
                    except errors.InvalidArgument as exc:
                        raise errors.invalid(
                            f"study.parameters[{i}]", f"{p.name} = {bound}", f"an arm's {exc}"
                        ) from None
        names = [n for n in spec.metric_names if n not in BANDIT_METRICS]
        if names and self._outcomes is not None:
            try:
                self._outcomes.read(ARM_OUTCOMES_SET, ["-"], names)
            except errors.InvalidArgument:
                raise errors.invalid(
                    "study.constraints",
                    names,
                    f"a bound study's metrics are {list(BANDIT_METRICS)} or aggregates of the "
                    "arm_outcomes feature set (e.g. latency_ms_p95_1h, cost_mean_1h)",
                ) from None

    def step(self) -> int:
        """One pass over the bound studies: finish trials whose arms have their rewards, prune
        losing arms, start new trials. Returns the number of trials finished."""
        finished = 0
        for study in list(self._studies.values()):
            if study.spec.binding is None:
                continue
            with study.lock:
                if study.deleted or study.state == STUDY_STOPPED:
                    continue
                try:
                    finished += self._step_bound(study)
                except errors.LLMOptError as exc:
                    log.warning("study %r could not step: %s", study.spec.name, exc)
        return finished

    def _step_bound(self, study: _Study) -> int:
        binding = study.spec.binding
        assert binding is not None and self._bandits is not None
        now = self._clock()
        try:
            arms = {a.arm_id: a for a in self._bandits.stats(binding.bandit).arms}
        except errors.NotFound:  # the bandit was deleted: nothing left to drive
            log.warning("study %r stops: its bandit %r is gone", study.spec.name, binding.bandit)
            return self._halt(study, "the bandit was deleted", remove_arms=False)
        done: list[Trial] = []
        for t in study.running():
            arm = arms.get(t.arm_id)
            if arm is None:  # made but never added (the first step, or a crash in between)
                self._add_arm(study, t)
            elif arm.removed:
                done.append(_finish(t, FAILED, now, failure="its arm was removed from the bandit"))
            elif arm.rewards >= binding.rewards_per_trial or (
                now - t.create_time >= binding.max_trial_seconds
            ):
                done.append(self._valued(study, t, arm, now))
        self._save_finished(study, done)
        self._prune(study, arms)
        if study.state == STUDY_RUNNING:
            wanted = binding.parallel_trials - len(study.running())
            limit = study.spec.max_trials
            if wanted > 0 and (not limit or len(study.trials) < limit):
                for t in self._suggest(study, wanted):
                    self._add_arm(study, t)
        return len(done)

    def _valued(self, study: _Study, trial: Trial, arm: ArmStats, now: float) -> Trial:
        binding = study.spec.binding
        assert binding is not None
        if arm.rewards == 0:
            return _finish(
                trial, FAILED, now, failure=f"no reward within {binding.max_trial_seconds:g} s"
            )
        metrics = {"reward_mean": arm.mean, "rewards": float(arm.rewards)}
        metrics.update(self._arm_outcomes(binding, trial.arm_id, study.spec.metric_names))
        name = study.spec.objective.metric
        if name and name not in metrics:
            return _finish(
                trial, FAILED, now, metrics=metrics, failure=f"no {name} recorded for its arm"
            )
        value = metrics[name] if name else arm.mean
        return _finish(trial, COMPLETE, now, value, metrics, constraints=study.spec.constraints)

    def _arm_outcomes(
        self, binding: BanditBinding, arm_id: str, names: tuple[str, ...]
    ) -> dict[str, float]:
        wanted = [n for n in names if n not in BANDIT_METRICS]
        if not wanted or self._outcomes is None:
            return {}
        [entity] = self._outcomes.read(ARM_OUTCOMES_SET, [f"{binding.bandit}/{arm_id}"], wanted)
        out = {}
        for name, stored in entity.values.items():
            if isinstance(stored.value, int | float) and math.isfinite(stored.value):
                out[name] = float(stored.value)
        return out

    def _prune(self, study: _Study, arms: Mapping[str, ArmStats]) -> None:
        """Remove the arms of finished trials other than the ``keep_best`` best (feasible
        first, then by value); failed trials' arms always."""
        binding = study.spec.binding
        assert binding is not None
        live = [
            t
            for t in study.trials
            if t.state != RUNNING and t.arm_id in arms and not arms[t.arm_id].removed
        ]
        sign = 1.0 if study.spec.objective.minimize else -1.0

        def rank(t: Trial) -> tuple[int, float, int]:
            if t.state != COMPLETE or t.value is None:
                return (2, 0.0, t.number)
            return (0 if t.feasible else 1, sign * t.value, t.number)

        ranked = sorted(live, key=rank)
        kept = {t.number for t in ranked[: binding.keep_best] if t.state == COMPLETE}
        for t in ranked:
            if t.number not in kept:
                self._remove_arm(binding, t.arm_id)

    def _add_arm(self, study: _Study, trial: Trial) -> None:
        binding = study.spec.binding
        assert binding is not None and self._bandits is not None
        arm = Arm(
            trial.arm_id,
            _arm_config(binding.base_config, trial.params),
            {"study": study.spec.name, "trial": str(trial.number)},
        )
        self._bandits.add_arm(binding.bandit, arm)

    def _remove_arm(self, binding: BanditBinding, arm_id: str) -> None:
        assert self._bandits is not None
        try:
            self._bandits.remove_arm(binding.bandit, arm_id)
        except (errors.NotFound, errors.FailedPrecondition, errors.InvalidArgument) as exc:
            # Gone already, the bandit's last arm, or the bandit deleted: nothing to undo.
            log.info("arm %r of bandit %r left in place: %s", arm_id, binding.bandit, exc)

    # -- lookups --------------------------------------------------------------------------------

    def _study(self, name: str, field_name: str = "study") -> _Study:
        if self._store is None:
            raise errors.Unavailable("tuning is loading; retry shortly")
        study = self._studies.get(name)
        if study is None:
            naming.check(field_name, name)
            raise errors.NotFound(f"{field_name}: {name!r} is not a study")
        return study

    @staticmethod
    def _check_live(study: _Study) -> None:
        if study.deleted:
            raise errors.NotFound(f"study: {study.spec.name!r} was deleted")


def _finish(
    trial: Trial,
    state: str,
    now: float,
    value: float | None = None,
    metrics: Mapping[str, float] | None = None,
    failure: str = "",
    constraints: tuple[Constraint, ...] = (),
) -> Trial:
    metrics = dict(metrics or {})
    feasible = state == COMPLETE and all(c.satisfied(metrics) for c in constraints)
    return dataclasses.replace(
        trial,
        state=state,
        value=value if state == COMPLETE else None,
        metrics=metrics,
        feasible=feasible,
        finish_time=now,
        failure=failure,
    )


def _canonical(space: SearchSpace, params: Mapping[str, Any]) -> dict[str, ParamValue]:
    """Parameter values as the study keeps them: ints as int, floats as float, in space order."""
    return {p.name: value_kind(p)(params[p.name]) for p in space.params}


def _arm_config(base: LLMConfig, params: Mapping[str, Any]) -> LLMConfig:
    """``base`` with the trial's parameters: LLMConfig fields set, the rest in ``extra``."""
    fields = {k: CONFIG_FIELDS[k](v) for k, v in params.items() if k in CONFIG_FIELDS}
    extra = {k: v for k, v in params.items() if k not in CONFIG_FIELDS}
    return dataclasses.replace(base, **fields, extra={**base.extra, **extra})

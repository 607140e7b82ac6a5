"""What a study is and what its trials hold: validated, frozen values, and their JSON for the store.

A ``StudySpec`` is what CreateStudy sends (search space, objective, constraints, optimizer, an
optional bandit binding, a trial budget); a ``Trial`` is one evaluation, from suggested (running)
to complete or failed; ``StudyInfo`` is a study as GetStudy shows it.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from llmopt import errors, naming
from llmopt.bandits.arms import LLMConfig, check_id
from llmopt.tuning.optimizer import Constraint, OptimizerConfig
from llmopt.tuning.space import CategoricalParam, IntParam, Param, ParamValue, SearchSpace

MAXIMIZE, MINIMIZE = "maximize", "minimize"
DIRECTIONS = (MAXIMIZE, MINIMIZE)

RUNNING, COMPLETE, FAILED = "running", "complete", "failed"  # trial states
TRIAL_STATES = (RUNNING, COMPLETE, FAILED)
STUDY_RUNNING, STUDY_STOPPED, STUDY_COMPLETED = "running", "stopped", "completed"

MAX_CONSTRAINTS = 16
MAX_METRICS = 64  # per report
MAX_TRIALS = 1_000_000
MAX_DESCRIPTION = 1024
MAX_FAILURE = 512
METRIC_CHARS = 128

# The fields of an arm's LLMConfig a bound study's parameter may set; other names go to ``extra``.
CONFIG_FIELDS = {
    "temperature": float,
    "top_p": float,
    "max_tokens": int,
    "presence_penalty": float,
    "frequency_penalty": float,
    "system_prompt": str,
}


@dataclass(frozen=True)
class Objective:
    """``direction`` of ``metric``: "" is the reported value (a bound study: the arm's mean
    reward); a name is that metric of every report."""

    direction: str = MAXIMIZE
    metric: str = ""

    @property
    def minimize(self) -> bool:
        return self.direction == MINIMIZE

    def validate(self, field_name: str = "study.objective") -> Objective:
        if self.direction not in DIRECTIONS:
            raise errors.invalid(f"{field_name}.direction", self.direction, " or ".join(DIRECTIONS))
        if self.metric:
            check_metric(f"{field_name}.metric", self.metric)
        return self


@dataclass(frozen=True)
class BanditBinding:
    """A study that drives ``bandit``: each trial is an arm built from ``base_config`` and the
    trial's parameters, valued by its mean reward once it has ``rewards_per_trial`` rewards (or
    whatever it has after ``max_trial_seconds``); ``keep_best`` finished arms stay."""

    bandit: str
    base_config: LLMConfig
    parallel_trials: int = 3
    rewards_per_trial: int = 50
    max_trial_seconds: float = 3600.0
    keep_best: int = 1

    def validate(self, field_name: str = "study.binding") -> BanditBinding:
        naming.check(f"{field_name}.bandit", self.bandit)
        self.base_config.validate(f"{field_name}.base_config")
        _int_range(f"{field_name}.parallel_trials", self.parallel_trials, 1, 64)
        _int_range(f"{field_name}.rewards_per_trial", self.rewards_per_trial, 1, 1_000_000)
        seconds = self.max_trial_seconds
        if not (math.isfinite(seconds) and 0 < seconds <= 30 * 86400):
            raise errors.invalid(f"{field_name}.max_trial_seconds", seconds, "in (0, 30 days]")
        _int_range(f"{field_name}.keep_best", self.keep_best, 1, 64)
        return self


@dataclass(frozen=True)
class StudySpec:
    name: str
    space: SearchSpace
    objective: Objective = field(default_factory=Objective)
    constraints: tuple[Constraint, ...] = ()
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    binding: BanditBinding | None = None
    max_trials: int = 0  # 0: no limit
    description: str = ""

    def validate(self) -> StudySpec:
        naming.check("study.name", self.name)
        self.objective.validate()
        if len(self.constraints) > MAX_CONSTRAINTS:
            raise errors.invalid(
                "study.constraints", len(self.constraints), f"at most {MAX_CONSTRAINTS}"
            )
        seen: set[str] = set()
        for i, c in enumerate(self.constraints):
            c.validate(f"study.constraints[{i}]")
            if c.metric in seen:
                raise errors.invalid(
                    f"study.constraints[{i}].metric", c.metric, "one constraint per metric"
                )
            seen.add(c.metric)
        self.optimizer.validate("study.optimizer")
        _int_range("study.max_trials", self.max_trials, 0, MAX_TRIALS)
        if len(self.description) > MAX_DESCRIPTION:
            raise errors.invalid(
                "study.description", self.description[:32] + "...", f"<= {MAX_DESCRIPTION} chars"
            )
        if self.binding is not None:
            self.binding.validate()
            check_id("study.name", arm_id_of(self.name, MAX_TRIALS))  # arm ids must fit
            for i, p in enumerate(self.space.params):
                kind = CONFIG_FIELDS.get(p.name)
                if kind is not None and kind is not value_kind(p):
                    raise errors.invalid(
                        f"study.parameters[{i}].name",
                        p.name,
                        f"sets the arm's config field {p.name}, which takes a {kind.__name__}",
                    )
        return self

    @property
    def metric_names(self) -> tuple[str, ...]:
        """Every metric a complete trial must carry: the objective's (when it names one) and
        each constraint's."""
        names = [c.metric for c in self.constraints]
        if self.objective.metric and self.objective.metric not in names:
            names.insert(0, self.objective.metric)
        return tuple(names)

    def to_json(self) -> dict[str, Any]:
        binding = None
        if self.binding is not None:
            binding = dataclasses.asdict(self.binding)
        return {
            "name": self.name,
            "space": self.space.to_json(),
            "objective": dataclasses.asdict(self.objective),
            "constraints": [dataclasses.asdict(c) for c in self.constraints],
            "optimizer": dataclasses.asdict(self.optimizer),
            "binding": binding,
            "max_trials": self.max_trials,
            "description": self.description,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> StudySpec:
        b = data["binding"]
        binding = None
        if b is not None:
            binding = BanditBinding(**{**b, "base_config": LLMConfig(**b["base_config"])})
        return cls(
            name=data["name"],
            space=SearchSpace.from_json(data["space"]),
            objective=Objective(**data["objective"]),
            constraints=tuple(Constraint(**c) for c in data["constraints"]),
            optimizer=OptimizerConfig(**data["optimizer"]),
            binding=binding,
            max_trials=data["max_trials"],
            description=data["description"],
        )


@dataclass(frozen=True)
class Trial:
    study: str
    number: int
    state: str
    params: dict[str, ParamValue]
    create_time: float
    value: float | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    feasible: bool = False
    arm_id: str = ""
    finish_time: float | None = None
    failure: str = ""
    request_id: str = ""  # the Suggest request that made it ("" none)


@dataclass(frozen=True)
class StudyInfo:
    spec: StudySpec
    state: str
    create_time: float
    running: int
    complete: int
    failed: int
    best: Trial | None


def arm_id_of(study: str, number: int) -> str:
    """The id of the arm that runs trial ``number`` of a bound study."""
    return f"tune/{study}/{number}"


def value_kind(param: Param) -> type:
    """The Python type of a parameter's values (float, int or str)."""
    if isinstance(param, CategoricalParam):
        return str
    return int if isinstance(param, IntParam) else float


def check_metric(field_name: str, name: str) -> str:
    if not name or len(name) > METRIC_CHARS or not name.isprintable():
        raise errors.invalid(field_name, name, f"1 to {METRIC_CHARS} printable characters")
    return name


def check_metrics(field_name: str, metrics: Mapping[str, float]) -> dict[str, float]:
    if len(metrics) > MAX_METRICS:
        raise errors.invalid(field_name, f"{len(metrics)} metrics", f"at most {MAX_METRICS}")
    out: dict[str, float] = {}
    for name, value in metrics.items():
        check_metric(f"{field_name} key", name)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise errors.invalid(f"{field_name}[{name!r}]", value, "a number")
        if not math.isfinite(value):
            raise errors.invalid(f"{field_name}[{name!r}]", value, "a finite number")
        out[name] = float(value)
    return out


def _int_range(field_name: str, value: int, lo: int, hi: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise errors.invalid(field_name, value, f"an integer in [{lo}, {hi}]")

"""Conversion between llmopt.v1.Tuning messages and ``llmopt.tuning`` values (``to_x``/``from_x``).

Enums go through the lookup tables below (an unknown number is refused naming its field); the
defaults a zero field stands for (LOG_EI, KRIGING_BELIEVER, SOBOL, MAXIMIZE, 3 parallel trials,
...) are applied here, so the domain always sees explicit values.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from google.protobuf import struct_pb2

from llmopt import errors
from llmopt.api.convert_bandits import from_llm_config, to_llm_config
from llmopt.api.convert_registry import to_timestamp
from llmopt.bandits.arms import LLMConfig
from llmopt.gen.llmopt.v1 import tuning_pb2 as pb
from llmopt.tuning.optimizer import Constraint, OptimizerConfig
from llmopt.tuning.space import CategoricalParam, FloatParam, IntParam, Param, SearchSpace
from llmopt.tuning.types import (
    COMPLETE,
    FAILED,
    MAXIMIZE,
    MINIMIZE,
    RUNNING,
    STUDY_COMPLETED,
    STUDY_RUNNING,
    STUDY_STOPPED,
    BanditBinding,
    Objective,
    StudyInfo,
    StudySpec,
    Trial,
)

# Proto enum -> domain name; the UNSPECIFIED zero reads as the default. Each *_PROTO table is the
# way back, derived (the zero left out).
DIRECTION = {pb.DIRECTION_UNSPECIFIED: MAXIMIZE, pb.MAXIMIZE: MAXIMIZE, pb.MINIMIZE: MINIMIZE}
ACQUISITION = {
    pb.ACQUISITION_UNSPECIFIED: "log_ei",
    pb.LOG_EI: "log_ei",
    pb.EI: "ei",
    pb.PI: "pi",
    pb.UCB: "ucb",
}
BATCH = {
    pb.BATCH_STRATEGY_UNSPECIFIED: "kriging_believer",
    pb.KRIGING_BELIEVER: "kriging_believer",
    pb.LOCAL_PENALIZATION: "local_penalization",
}
DESIGN = {pb.INITIAL_DESIGN_UNSPECIFIED: "sobol", pb.SOBOL: "sobol", pb.LATIN_HYPERCUBE: "lhs"}


def _back(table: Mapping[Any, str]) -> dict[str, Any]:
    return {name: number for number, name in table.items() if number}


DIRECTION_PROTO = _back(DIRECTION)
ACQUISITION_PROTO = _back(ACQUISITION)
BATCH_PROTO = _back(BATCH)
DESIGN_PROTO = _back(DESIGN)
STUDY_STATE_PROTO = {
    STUDY_RUNNING: pb.STUDY_RUNNING,
    STUDY_STOPPED: pb.STUDY_STOPPED,
    STUDY_COMPLETED: pb.STUDY_COMPLETED,
}
TRIAL_STATE = {pb.TRIAL_STATE_UNSPECIFIED: "", pb.TRIAL_RUNNING: RUNNING,
               pb.TRIAL_COMPLETE: COMPLETE, pb.TRIAL_FAILED: FAILED}  # fmt: skip
TRIAL_STATE_PROTO = _back(TRIAL_STATE)

# What BanditBinding's zero fields stand for: the domain's defaults.
BINDING_DEFAULTS = BanditBinding("-", LLMConfig("-"))


def _lookup(table: Mapping[Any, Any], value: int, field: str) -> Any:
    found = table.get(value)
    if found is None:
        raise errors.invalid(field, value, f"one of {sorted(table)}")
    return found


# -- studies --------------------------------------------------------------------------------------


def from_parameter(msg: pb.Parameter, i: int) -> Param:
    kind = msg.WhichOneof("kind")
    if kind == "float_range":
        r = msg.float_range
        return FloatParam(msg.name, r.low, r.high, r.log)
    if kind == "int_range":
        n = msg.int_range
        return IntParam(msg.name, n.low, n.high, n.log)
    if kind == "categories":
        return CategoricalParam(msg.name, tuple(msg.categories.choices))
    raise errors.invalid(
        f"study.parameters[{i}]", msg.name, "set one of float_range, int_range or categories"
    )


def to_parameter(p: Param) -> pb.Parameter:
    if isinstance(p, FloatParam):
        return pb.Parameter(
            name=p.name, float_range=pb.FloatRange(low=p.low, high=p.high, log=p.log)
        )
    if isinstance(p, IntParam):
        return pb.Parameter(name=p.name, int_range=pb.IntRange(low=p.low, high=p.high, log=p.log))
    return pb.Parameter(name=p.name, categories=pb.Categories(choices=p.choices))


def from_optimizer(msg: pb.OptimizerConfig) -> OptimizerConfig:
    defaults = OptimizerConfig()
    return OptimizerConfig(
        acquisition=_lookup(ACQUISITION, msg.acquisition, "study.optimizer.acquisition"),
        batch=_lookup(BATCH, msg.batch, "study.optimizer.batch"),
        initial_design=_lookup(DESIGN, msg.initial_design, "study.optimizer.initial_design"),
        initial_trials=msg.initial_trials,
        ucb_beta=msg.ucb_beta or defaults.ucb_beta,
        noise=not msg.noiseless,
        restarts=msg.restarts if msg.HasField("restarts") else defaults.restarts,
        seed=msg.seed,
    )


def to_optimizer(c: OptimizerConfig) -> pb.OptimizerConfig:
    return pb.OptimizerConfig(
        acquisition=ACQUISITION_PROTO[c.acquisition],
        batch=BATCH_PROTO[c.batch],
        initial_design=DESIGN_PROTO[c.initial_design],
        initial_trials=c.initial_trials,
        ucb_beta=c.ucb_beta,
        noiseless=not c.noise,
        restarts=c.restarts,
        seed=c.seed,
    )


def from_binding(msg: pb.BanditBinding) -> BanditBinding:
    d = BINDING_DEFAULTS
    return BanditBinding(
        bandit=msg.bandit,
        base_config=from_llm_config(msg.base_config, "study.binding.base_config"),
        parallel_trials=msg.parallel_trials or d.parallel_trials,
        rewards_per_trial=msg.rewards_per_trial or d.rewards_per_trial,
        max_trial_seconds=msg.max_trial_seconds or d.max_trial_seconds,
        keep_best=msg.keep_best or d.keep_best,
    )


def from_study(msg: pb.Study) -> StudySpec:
    params = [from_parameter(p, i) for i, p in enumerate(msg.parameters)]
    if not params:
        raise errors.invalid("study.parameters", [], "at least one parameter")
    return StudySpec(
        name=msg.name,
        space=SearchSpace(params),
        objective=Objective(
            direction=_lookup(DIRECTION, msg.objective.direction, "study.objective.direction"),
            metric=msg.objective.metric,
        ),
        constraints=tuple(
            Constraint(
                c.metric,
                max=c.max if c.HasField("max") else None,
                min=c.min if c.HasField("min") else None,
            )
            for c in msg.constraints
        ),
        optimizer=from_optimizer(msg.optimizer),
        binding=from_binding(msg.binding) if msg.HasField("binding") else None,
        max_trials=msg.max_trials,
        description=msg.description,
    )


def to_study(info: StudyInfo) -> pb.Study:
    spec = info.spec
    msg = pb.Study(
        name=spec.name,
        parameters=[to_parameter(p) for p in spec.space.params],
        objective=pb.Objective(
            direction=DIRECTION_PROTO[spec.objective.direction], metric=spec.objective.metric
        ),
        constraints=[
            pb.Constraint(metric=c.metric, max=c.max, min=c.min) for c in spec.constraints
        ],
        optimizer=to_optimizer(spec.optimizer),
        max_trials=spec.max_trials,
        description=spec.description,
        state=STUDY_STATE_PROTO[info.state],
        create_time=to_timestamp(info.create_time),
        trials_running=info.running,
        trials_complete=info.complete,
        trials_failed=info.failed,
    )
    b = spec.binding
    if b is not None:
        msg.binding.CopyFrom(
            pb.BanditBinding(
                bandit=b.bandit,
                base_config=to_llm_config(b.base_config),
                parallel_trials=b.parallel_trials,
                rewards_per_trial=b.rewards_per_trial,
                max_trial_seconds=b.max_trial_seconds,
                keep_best=b.keep_best,
            )
        )
    if info.best is not None:
        msg.best_trial.CopyFrom(to_trial(info.best))
    return msg


# -- trials ---------------------------------------------------------------------------------------


def to_trial(t: Trial) -> pb.Trial:
    msg = pb.Trial(
        study=t.study,
        number=t.number,
        state=TRIAL_STATE_PROTO[t.state],
        value=t.value,
        metrics=t.metrics,
        feasible=t.feasible,
        arm_id=t.arm_id,
        create_time=to_timestamp(t.create_time),
        failure=t.failure,
    )
    msg.params.update(t.params)
    if t.finish_time is not None:
        msg.finish_time.CopyFrom(to_timestamp(t.finish_time))
    return msg


def from_params(msg: struct_pb2.Struct, field: str = "params") -> dict[str, float | str]:
    """A trial's parameters: numbers (finite) and strings only."""
    out: dict[str, float | str] = {}
    for name, value in msg.fields.items():
        kind = value.WhichOneof("kind")
        if kind == "number_value":
            if not math.isfinite(value.number_value):
                raise errors.invalid(f"{field}.{name}", value.number_value, "a finite number")
            out[name] = value.number_value
        elif kind == "string_value":
            out[name] = value.string_value
        else:
            raise errors.invalid(f"{field}.{name}", kind, "a number or a string")
    return out


def from_trial_state(value: int) -> str:
    return str(_lookup(TRIAL_STATE, value, "state"))

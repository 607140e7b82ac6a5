"""Plain values the Python client (``llmopt.client``) takes and returns, and their proto mapping.

Callers of ``llmopt.client.Client`` never touch protobuf: they pass and get these frozen
dataclasses, strings, dicts and numpy arrays. The ``to_x`` / ``from_x`` functions below are the
only place that knows both sides. The tensor wire format is defined here too (``NUMPY_BY_DTYPE``),
from the generated ``common_pb2`` enum and numpy alone: the client shares no code with the server.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import numpy as np
from google.protobuf import json_format
from google.protobuf.timestamp_pb2 import Timestamp

from llmopt.gen.llmopt.v1 import (
    audit_pb2,
    bandits_pb2,
    common_pb2,
    features_pb2,
    inference_pb2,
    registry_pb2,
    tuning_pb2,
)
from llmopt.tensors import DTYPE_BY_NUMPY, NUMPY_BY_DTYPE

T = TypeVar("T")

# -- tensors --------------------------------------------------------------------------------------

# The contract's tensor data types (``llmopt.tensors``, shared with the server's converters);
# STRING is length-prefixed UTF-8 (``to_tensor``).
# Registry signatures name dtypes by numpy name ("float32"); STRING is "string".
DTYPE_NAMES: dict[int, str] = {k: v.name for k, v in NUMPY_BY_DTYPE.items()}
DTYPE_NAMES[common_pb2.STRING] = "string"
DTYPE_BY_NAME: dict[str, int] = {v: k for k, v in DTYPE_NAMES.items()}
_LENGTH = struct.Struct("<I")


def to_tensor(array: Any, name: str = "") -> common_pb2.Tensor:
    """A Tensor message from an array-like: numeric, bool, or strings (STRING)."""
    a = np.asarray(array)
    if a.dtype.kind in "USO":
        parts = []
        for item in a.reshape(-1).tolist():
            data = item if isinstance(item, bytes) else str(item).encode()
            parts.append(_LENGTH.pack(len(data)) + data)
        return common_pb2.Tensor(
            name=name, dtype=common_pb2.STRING, shape=a.shape, raw_data=b"".join(parts)
        )
    dtype = DTYPE_BY_NUMPY.get(a.dtype.newbyteorder("="))
    if dtype is None:
        raise TypeError(f"array of dtype {a.dtype} has no tensor data type")
    contiguous = np.ascontiguousarray(a, dtype=NUMPY_BY_DTYPE[dtype])
    return common_pb2.Tensor(
        name=name,
        dtype=dtype,  # type: ignore[arg-type]
        shape=contiguous.shape,
        raw_data=contiguous.tobytes(),
    )


def from_tensor(msg: common_pb2.Tensor) -> np.ndarray:
    """A numpy array (a copy, writable) from a Tensor message; STRING gives an object array."""
    shape = tuple(msg.shape)
    if msg.dtype == common_pb2.STRING:
        items: list[str] = []
        raw, pos = msg.raw_data, 0
        while pos < len(raw):
            (n,) = _LENGTH.unpack_from(raw, pos)
            items.append(raw[pos + 4 : pos + 4 + n].decode(errors="replace"))
            pos += 4 + n
        return np.array(items, dtype=object).reshape(shape)
    dtype = NUMPY_BY_DTYPE[msg.dtype]
    return np.frombuffer(msg.raw_data, dtype=dtype).reshape(shape).astype(dtype.newbyteorder("="))


def _time(ts: Any) -> float:
    """Seconds since the epoch of a Timestamp (0.0 when unset)."""
    return ts.seconds + ts.nanos / 1e9


def to_timestamp(seconds: float) -> Timestamp:
    """The Timestamp of seconds since the epoch (the inverse of reading one).

    >>> to_timestamp(1700000000.25).ToJsonString()
    '2023-11-14T22:13:20.250Z'
    """
    whole = math.floor(seconds)
    return Timestamp(seconds=whole, nanos=min(round((seconds - whole) * 1e9), 999_999_999))


@dataclass(frozen=True)
class Page(Generic[T]):
    """One page of a List call: its items, and the token of the next page ("" after the last)."""

    items: tuple[T, ...]
    next_page_token: str


# -- bandits --------------------------------------------------------------------------------------

OUTPUT_LENGTHS = {
    "": common_pb2.OUTPUT_LENGTH_CATEGORY_UNSPECIFIED,
    "short": common_pb2.SHORT,
    "medium": common_pb2.MEDIUM,
    "long": common_pb2.LONG,
}


@dataclass(frozen=True)
class Arm:
    """One LLM configuration a bandit can route to, with free string metadata (prices, owner)."""

    arm_id: str
    model: str = ""
    temperature: float = 0.0
    top_p: float = 0.0
    max_tokens: int = 0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    system_prompt: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    metadata: dict[str, str] = field(default_factory=dict)


def to_arm(arm: Arm) -> common_pb2.Arm:
    msg = common_pb2.Arm(
        arm_id=arm.arm_id,
        config=common_pb2.LLMConfig(
            model=arm.model,
            temperature=arm.temperature,
            top_p=arm.top_p,
            max_tokens=arm.max_tokens,
            presence_penalty=arm.presence_penalty,
            frequency_penalty=arm.frequency_penalty,
            system_prompt=arm.system_prompt,
        ),
        metadata={k: str(v) for k, v in arm.metadata.items()},
    )
    if arm.extra:
        msg.config.extra.update(arm.extra)
    return msg


def from_arm(msg: common_pb2.Arm) -> Arm:
    c = msg.config
    return Arm(
        arm_id=msg.arm_id,
        model=c.model,
        temperature=c.temperature,
        top_p=c.top_p,
        max_tokens=c.max_tokens,
        presence_penalty=c.presence_penalty,
        frequency_penalty=c.frequency_penalty,
        system_prompt=c.system_prompt,
        extra=json_format.MessageToDict(c.extra) if c.HasField("extra") else {},
        metadata=dict(msg.metadata),
    )


@dataclass(frozen=True)
class Context:
    """What is known about a request before routing; ``output_length`` is short/medium/long."""

    task_type: str = ""
    input_length: int = 0
    output_length: str = ""
    priority: int = 5
    user_id: str = ""
    region: str = ""
    hour_of_day: int | None = None
    day_of_week: int | None = None
    language: str = ""
    metadata: dict[str, str] = field(default_factory=dict)
    features: dict[str, float] = field(default_factory=dict)


def to_context(ctx: Context) -> common_pb2.RequestContext:
    try:
        category = OUTPUT_LENGTHS[ctx.output_length.lower()]
    except KeyError:
        raise ValueError(
            f"context.output_length: {ctx.output_length!r} is not one of short, medium, long"
        ) from None
    msg = common_pb2.RequestContext(
        user_id=ctx.user_id,
        task_type=ctx.task_type,
        input_length=ctx.input_length,
        output_length_category=category,  # type: ignore[arg-type]
        priority=ctx.priority,
        region=ctx.region,
        language=ctx.language,
        metadata=ctx.metadata,
        features=ctx.features,
    )
    if ctx.hour_of_day is not None:
        msg.hour_of_day = ctx.hour_of_day
    if ctx.day_of_week is not None:
        msg.day_of_week = ctx.day_of_week
    return msg


@dataclass(frozen=True)
class Reward:
    """How outcomes become rewards: a preset name, or weights and maxima (0: the defaults)."""

    preset: str = ""
    quality_weight: float = 0.0
    cost_weight: float = 0.0
    latency_weight: float = 0.0
    max_cost: float = 0.0
    max_latency_ms: float = 0.0


@dataclass(frozen=True)
class Bandit:
    """A bandit as the server describes it."""

    name: str
    policy: str
    policy_params: dict[str, float]
    arms: tuple[Arm, ...]
    reward: Reward
    feature_set: str
    seed: int
    description: str
    context_dim: int
    reward_wait_seconds: float
    default_reward: float | None
    removed_arms: tuple[Arm, ...]
    create_time: float


def to_policy(name: str, params: Mapping[str, float] | None) -> bandits_pb2.Policy:
    msg = bandits_pb2.Policy()
    if name not in msg.DESCRIPTOR.fields_by_name:
        known = ", ".join(msg.DESCRIPTOR.fields_by_name)
        raise ValueError(f"policy: {name!r} is not one of {known}")
    sub = getattr(msg, name)
    sub.SetInParent()
    for key, value in (params or {}).items():
        setattr(sub, key.rstrip("_"), value)  # lambda_ -> lambda
    return msg


def from_bandit(msg: bandits_pb2.Bandit) -> Bandit:
    kind = msg.policy.WhichOneof("kind") or ""
    params: dict[str, float] = {}
    if kind:
        for fd, value in getattr(msg.policy, kind).ListFields():
            params[fd.name] = value
    r = msg.reward
    return Bandit(
        name=msg.name,
        policy=kind,
        policy_params=params,
        arms=tuple(from_arm(a) for a in msg.arms),
        reward=Reward(
            r.preset,
            r.quality_weight,
            r.cost_weight,
            r.latency_weight,
            r.max_cost,
            r.max_latency_ms,
        ),
        feature_set=msg.feature_set,
        seed=msg.seed,
        description=msg.description,
        context_dim=msg.context_dim,
        reward_wait_seconds=msg.reward_wait.ToTimedelta().total_seconds(),
        default_reward=msg.default_reward if msg.HasField("default_reward") else None,
        removed_arms=tuple(from_arm(a) for a in msg.removed_arms),
        create_time=_time(msg.create_time),
    )


@dataclass(frozen=True)
class Decision:
    """The answer to "which arm?": reward it later with its ``decision_id``."""

    decision_id: str
    bandit: str
    arm: Arm
    propensity: float
    scores: dict[str, float]
    time: float
    explanation: DecisionExplanation | None = None  # when select_arm asked (explain=True)


def from_decision(msg: bandits_pb2.Decision) -> Decision:
    return Decision(
        decision_id=msg.decision_id,
        bandit=msg.bandit,
        arm=from_arm(msg.arm),
        propensity=msg.propensity,
        scores={s.arm_id: s.score for s in msg.scores},
        time=_time(msg.time),
        explanation=from_decision_explanation(msg.explanation)
        if msg.HasField("explanation")
        else None,
    )


@dataclass(frozen=True)
class Feedback:
    """What the user did with the answer (DESIGN.md, "Reward"); rating 1..5, 0 = none."""

    rating: int = 0
    task_completed: bool = False
    retried: bool = False
    edited: bool = False
    dwell_seconds: float | None = None
    saved: bool = False


def to_outcome(
    quality: float | None, cost: float, latency_ms: float, tokens: int, feedback: Feedback | None
) -> bandits_pb2.Outcome:
    msg = bandits_pb2.Outcome(cost=cost, latency_ms=latency_ms, tokens=tokens)
    if quality is not None:
        msg.quality_score = quality
    if feedback is not None:
        fb = msg.feedback
        fb.rating = feedback.rating
        fb.task_completed = feedback.task_completed
        fb.retried = feedback.retried
        fb.edited = feedback.edited
        fb.saved = feedback.saved
        if feedback.dwell_seconds is not None:
            fb.dwell_seconds = feedback.dwell_seconds
    return msg


# -- explanations and the decision log ------------------------------------------------------------

ARM_STATUS_NAMES = {
    bandits_pb2.ARM_STATUS_UNSPECIFIED: "",
    bandits_pb2.ELIGIBLE: "eligible",
    bandits_pb2.EXCLUDED: "excluded",
    bandits_pb2.REMOVED: "removed",
}
DECISION_STATUS_NAMES = {
    bandits_pb2.DECISION_STATUS_UNSPECIFIED: "",
    bandits_pb2.OPEN: "open",
    bandits_pb2.REWARDED: "rewarded",
    bandits_pb2.EXPIRED: "expired",
}


@dataclass(frozen=True)
class FeatureContribution:
    """One context slot's share of a linear estimate: ``contribution = theta_i * value``."""

    name: str
    value: float
    contribution: float


@dataclass(frozen=True)
class ArmExplanation:
    """Why one arm scored what it did: for an eligible arm ``score = exploitation +
    exploration``; NaN parts for an arm that was not eligible. ``status`` is eligible, excluded
    or removed."""

    arm_id: str
    status: str
    score: float
    exploitation: float
    exploration: float
    mean: float
    posterior_mean: float
    posterior_sd: float
    probability: float
    pulls: float
    contributions: tuple[FeatureContribution, ...] = ()


@dataclass(frozen=True)
class DecisionExplanation:
    """Why a bandit chose its arm: every arm's score and parts, in the bandit's arm order."""

    policy: str
    exploration_kind: str
    chosen_arm_id: str
    propensity: float
    reason: str
    arms: tuple[ArmExplanation, ...]


def from_decision_explanation(msg: bandits_pb2.Explanation) -> DecisionExplanation:
    return DecisionExplanation(
        policy=msg.policy,
        exploration_kind=msg.exploration_kind,
        chosen_arm_id=msg.chosen_arm_id,
        propensity=msg.propensity,
        reason=msg.reason,
        arms=tuple(
            ArmExplanation(
                arm_id=a.arm_id,
                status=ARM_STATUS_NAMES.get(a.status, str(a.status)),
                score=a.score,
                exploitation=a.exploitation,
                exploration=a.exploration,
                mean=a.mean,
                posterior_mean=a.posterior_mean,
                posterior_sd=a.posterior_sd,
                probability=a.probability,
                pulls=a.pulls,
                contributions=tuple(
                    FeatureContribution(c.name, c.value, c.contribution) for c in a.contributions
                ),
            )
            for a in msg.arms
        ),
    )


def from_context(msg: common_pb2.RequestContext) -> Context:
    names = {v: k for k, v in OUTPUT_LENGTHS.items()}
    return Context(
        task_type=msg.task_type,
        input_length=msg.input_length,
        output_length=names.get(msg.output_length_category, ""),
        priority=msg.priority or 5,  # 0: unset, read as the default
        user_id=msg.user_id,
        region=msg.region,
        hour_of_day=msg.hour_of_day if msg.HasField("hour_of_day") else None,
        day_of_week=msg.day_of_week if msg.HasField("day_of_week") else None,
        language=msg.language,
        metadata=dict(msg.metadata),
        features=dict(msg.features),
    )


@dataclass(frozen=True)
class DecisionOutcome:
    """The outcome a decision was rewarded with (when the reward came as one)."""

    quality_score: float | None
    cost: float
    latency_ms: float
    tokens: int
    feedback: Feedback
    error: bool


@dataclass(frozen=True)
class LoggedDecision:
    """A decision as the server logged it (``Client.get_decision``, ``list_decisions``).

    ``status`` is open, rewarded or expired; ``reward``, ``reward_time`` once rewarded or
    expired (an expired decision's reward is the bandit's default reward, or None);
    ``outcome`` when the reward came as one; ``explanation`` the one kept at decision time, or
    recomputed on request (``explanation_recomputed``); ``degraded``: a fallback chose."""

    decision_id: str
    bandit: str
    arm: Arm
    propensity: float
    scores: dict[str, float]
    time: float
    context: Context | None
    context_vector: tuple[float, ...]
    slot_names: tuple[str, ...]
    status: str
    reward: float | None
    outcome: DecisionOutcome | None
    reward_time: float | None
    explanation: DecisionExplanation | None
    explanation_recomputed: bool
    degraded: bool
    expire_time: float


def from_logged_decision(msg: bandits_pb2.LoggedDecision) -> LoggedDecision:
    outcome = None
    if msg.HasField("outcome"):
        o, f = msg.outcome, msg.outcome.feedback
        outcome = DecisionOutcome(
            quality_score=o.quality_score if o.HasField("quality_score") else None,
            cost=o.cost,
            latency_ms=o.latency_ms,
            tokens=o.tokens,
            feedback=Feedback(
                rating=f.rating,
                task_completed=f.task_completed,
                retried=f.retried,
                edited=f.edited,
                dwell_seconds=f.dwell_seconds if f.HasField("dwell_seconds") else None,
                saved=f.saved,
            ),
            error=o.error,
        )
    return LoggedDecision(
        decision_id=msg.decision_id,
        bandit=msg.bandit,
        arm=from_arm(msg.arm),
        propensity=msg.propensity,
        scores={s.arm_id: s.score for s in msg.scores},
        time=_time(msg.time),
        context=from_context(msg.context) if msg.HasField("context") else None,
        context_vector=tuple(msg.context_vector),
        slot_names=tuple(msg.slot_names),
        status=DECISION_STATUS_NAMES.get(msg.status, str(msg.status)),
        reward=msg.reward if msg.HasField("reward") else None,
        outcome=outcome,
        reward_time=_time(msg.reward_time) if msg.HasField("reward_time") else None,
        explanation=from_decision_explanation(msg.explanation)
        if msg.HasField("explanation")
        else None,
        explanation_recomputed=msg.explanation_recomputed,
        degraded=msg.degraded,
        expire_time=_time(msg.expire_time),
    )


@dataclass(frozen=True)
class ArmEstimate:
    """One arm's learned parameters: the mean and its 95 % interval (context-free policies;
    NaN for linear ones), theta and its sd per context slot (linear policies), the probability
    of choosing it now (EXP3, softmax; NaN otherwise)."""

    arm_id: str
    removed: bool
    pulls: float
    mean: float
    sd: float
    ci_low: float
    ci_high: float
    theta: tuple[float, ...]
    theta_sd: tuple[float, ...]
    probability: float


@dataclass(frozen=True)
class ArmEstimates:
    """What a bandit's policy has learned: ``arms`` by arm id, theta over ``slot_names``."""

    bandit: str
    policy: str
    slot_names: tuple[str, ...]
    arms: dict[str, ArmEstimate]


def from_arm_estimates(msg: bandits_pb2.ArmEstimates) -> ArmEstimates:
    return ArmEstimates(
        bandit=msg.bandit,
        policy=msg.policy,
        slot_names=tuple(msg.slot_names),
        arms={
            a.arm_id: ArmEstimate(
                arm_id=a.arm_id,
                removed=a.removed,
                pulls=a.pulls,
                mean=a.mean,
                sd=a.sd,
                ci_low=a.ci_low,
                ci_high=a.ci_high,
                theta=tuple(a.theta),
                theta_sd=tuple(a.theta_sd),
                probability=a.probability,
            )
            for a in msg.arms
        },
    )


@dataclass(frozen=True)
class RewardReceipt:
    decision_id: str
    arm_id: str
    reward: float


@dataclass(frozen=True)
class ArmStats:
    arm_id: str
    pulls: int
    rewards: int
    reward_sum: float
    mean: float
    variance: float
    ci_low: float
    ci_high: float
    last_selected: float
    removed: bool


@dataclass(frozen=True)
class BanditStats:
    bandit: str
    arms: dict[str, ArmStats]
    decisions: int
    rewards: int
    open_decisions: int
    expired_decisions: int
    mean_reward: float


def from_bandit_stats(msg: bandits_pb2.BanditStats) -> BanditStats:
    arms = {
        a.arm_id: ArmStats(
            a.arm_id,
            a.pulls,
            a.rewards,
            a.reward_sum,
            a.mean,
            a.variance,
            a.ci_low,
            a.ci_high,
            _time(a.last_selected),
            a.removed,
        )
        for a in msg.arms
    }
    return BanditStats(
        msg.bandit,
        arms,
        msg.decisions,
        msg.rewards,
        msg.open_decisions,
        msg.expired_decisions,
        msg.mean_reward,
    )


# -- registry -------------------------------------------------------------------------------------

TASKS = {
    "": registry_pb2.MODEL_TASK_UNSPECIFIED,
    "regression": registry_pb2.REGRESSION,
    "classification": registry_pb2.CLASSIFICATION,
    "ranking": registry_pb2.RANKING,
    "policy": registry_pb2.POLICY,
    "other": registry_pb2.OTHER,
}
TASK_NAMES = {v: k for k, v in TASKS.items()}


@dataclass(frozen=True)
class Model:
    name: str
    description: str
    task: str
    tags: dict[str, str]
    aliases: dict[str, int]
    latest_version: int
    create_time: float
    update_time: float


def to_model(model: Model) -> registry_pb2.Model:
    return registry_pb2.Model(
        name=model.name,
        description=model.description,
        task=TASKS.get(model.task, registry_pb2.MODEL_TASK_UNSPECIFIED),  # type: ignore[arg-type]
        tags=model.tags,
        create_time=to_timestamp(model.create_time),
        update_time=to_timestamp(model.update_time),
        aliases=model.aliases,
        latest_version=model.latest_version,
    )


def from_model(msg: registry_pb2.Model) -> Model:
    return Model(
        msg.name,
        msg.description,
        TASK_NAMES.get(msg.task, ""),
        dict(msg.tags),
        dict(msg.aliases),
        msg.latest_version,
        _time(msg.create_time),
        _time(msg.update_time),
    )


@dataclass(frozen=True)
class TensorSpec:
    """An input or output of a model version: dtype name ("float32", "string"; "unknown" for
    none), -1 = a dynamic dimension, whose symbolic name (if any) is in ``dim_names``."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    dim_names: tuple[str, ...] = ()


@dataclass(frozen=True)
class ModelVersion:
    model: str
    version: int
    sha256: str
    size_bytes: int
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    semver: str
    parent_version: int | None
    metrics: dict[str, float]
    tags: dict[str, str]
    description: str
    aliases: tuple[str, ...]
    create_time: float
    # Rows of the background sample kept with the version (0: none), the baseline of explain.
    background_rows: int = 0


def to_tensor_spec(spec: TensorSpec) -> registry_pb2.TensorSpec:
    return registry_pb2.TensorSpec(
        name=spec.name,
        dtype=DTYPE_BY_NAME.get(spec.dtype, common_pb2.DATA_TYPE_UNSPECIFIED),  # type: ignore[arg-type]
        shape=spec.shape,
        dim_names=spec.dim_names,
    )


def from_tensor_spec(msg: registry_pb2.TensorSpec) -> TensorSpec:
    return TensorSpec(
        msg.name, DTYPE_NAMES.get(msg.dtype, "unknown"), tuple(msg.shape), tuple(msg.dim_names)
    )


def to_version(mv: ModelVersion) -> registry_pb2.ModelVersion:
    return registry_pb2.ModelVersion(
        model=mv.model,
        version=mv.version,
        sha256=mv.sha256,
        size_bytes=mv.size_bytes,
        inputs=[to_tensor_spec(s) for s in mv.inputs],
        outputs=[to_tensor_spec(s) for s in mv.outputs],
        semver=mv.semver,
        parent_version=mv.parent_version or 0,
        metrics=mv.metrics,
        tags=mv.tags,
        description=mv.description,
        create_time=to_timestamp(mv.create_time),
        aliases=mv.aliases,
        background_rows=mv.background_rows,
    )


def from_version(msg: registry_pb2.ModelVersion) -> ModelVersion:
    return ModelVersion(
        model=msg.model,
        version=msg.version,
        sha256=msg.sha256,
        size_bytes=msg.size_bytes,
        inputs=tuple(from_tensor_spec(s) for s in msg.inputs),
        outputs=tuple(from_tensor_spec(s) for s in msg.outputs),
        semver=msg.semver,
        parent_version=msg.parent_version or None,
        metrics=dict(msg.metrics),
        tags=dict(msg.tags),
        description=msg.description,
        aliases=tuple(msg.aliases),
        create_time=_time(msg.create_time),
        background_rows=msg.background_rows,
    )


@dataclass(frozen=True)
class AliasChange:
    """One alias move; versions are None where the alias was unset before or after; ``id``
    orders the moves of the whole registry."""

    model: str
    alias: str
    from_version: int | None
    to_version: int | None
    kind: str
    reason: str
    actor: str
    time: float
    id: int = 0


def to_alias_change(change: AliasChange) -> registry_pb2.AliasChange:
    return registry_pb2.AliasChange(
        id=change.id,
        model=change.model,
        alias=change.alias,
        from_version=change.from_version or 0,
        to_version=change.to_version or 0,
        time=to_timestamp(change.time),
        reason=change.reason,
        actor=change.actor,
        kind=change.kind,
    )


def from_alias_change(msg: registry_pb2.AliasChange) -> AliasChange:
    return AliasChange(
        msg.model,
        msg.alias,
        msg.from_version or None,
        msg.to_version or None,
        msg.kind,
        msg.reason,
        msg.actor,
        _time(msg.time),
        msg.id,
    )


@dataclass(frozen=True)
class Promotion:
    """What Promote did: the champion's move, and the removal of the challenger alias."""

    champion: AliasChange
    challenger_removed: AliasChange


# -- inference ------------------------------------------------------------------------------------

MODES = {
    "off": inference_pb2.OFF,
    "split": inference_pb2.SPLIT,
    "shadow": inference_pb2.SHADOW,
}
MODE_NAMES = {v: k for k, v in MODES.items()}
MODE_NAMES[inference_pb2.TRAFFIC_MODE_UNSPECIFIED] = "off"
VARIANT_NAMES = {
    inference_pb2.VARIANT_UNSPECIFIED: "",
    inference_pb2.CHAMPION: "champion",
    inference_pb2.CHALLENGER: "challenger",
    inference_pb2.PINNED: "pinned",
    inference_pb2.SHADOW_COPY: "shadow",
}


@dataclass(frozen=True)
class TrafficPolicy:
    """How routed requests are shared: mode off/split/shadow, challenger share in percent."""

    model: str
    mode: str
    challenger_percent: float


def from_traffic_policy(msg: inference_pb2.TrafficPolicy) -> TrafficPolicy:
    return TrafficPolicy(msg.model, MODE_NAMES.get(msg.mode, "off"), msg.challenger_percent)


@dataclass(frozen=True)
class Prediction:
    """Every output of one Predict call, and which version and variant answered."""

    model: str
    version: int
    variant: str
    outputs: dict[str, np.ndarray]
    request_id: str


def from_prediction(msg: inference_pb2.PredictResponse) -> Prediction:
    return Prediction(
        msg.model,
        msg.version,
        VARIANT_NAMES.get(msg.variant, ""),
        {t.name: from_tensor(t) for t in msg.outputs},
        msg.request_id,
    )


EXPLAIN_METHODS = {
    "auto": inference_pb2.EXPLAIN_METHOD_AUTO,
    "linear": inference_pb2.LINEAR,
    "tree_shap": inference_pb2.TREE_SHAP,
    "kernel_shap": inference_pb2.KERNEL_SHAP,
}


@dataclass(frozen=True, eq=False)
class Explanation:
    """Per-feature contributions to a model's predictions, one row per input row:
    ``base_values[i] + contributions[i].sum() == predictions[i]`` (exactly for linear, within
    1e-6 for trees, approximately for KernelSHAP). ``method`` is "linear", "tree_shap" or
    "kernel_shap"; ``samples`` and ``seed`` are KernelSHAP's coalitions per row and seed;
    ``background_rows`` the rows of the background sample the baseline came from."""

    model: str
    version: int
    method: str
    feature_names: tuple[str, ...]
    contributions: np.ndarray  # [rows, features] float64
    base_values: np.ndarray  # [rows] float64
    predictions: np.ndarray  # [rows] float64
    output_name: str
    output_index: int
    samples: int
    seed: int
    background_rows: int


def from_explanation(msg: inference_pb2.ExplainResponse) -> Explanation:
    width = len(msg.feature_names)
    contributions = np.array([list(r.contributions) for r in msg.rows], dtype=np.float64)
    return Explanation(
        model=msg.model,
        version=msg.version,
        method=msg.method,
        feature_names=tuple(msg.feature_names),
        contributions=contributions.reshape(len(msg.rows), width),
        base_values=np.array([r.base_value for r in msg.rows], dtype=np.float64),
        predictions=np.array([r.prediction for r in msg.rows], dtype=np.float64),
        output_name=msg.output_name,
        output_index=msg.output_index,
        samples=msg.samples,
        seed=msg.seed,
        background_rows=msg.background_rows,
    )


@dataclass(frozen=True)
class FeatureImportance:
    """A version's global importance: each feature's mean |contribution| over the ``rows`` it
    served most recently (at most 1,000; fewer for KernelSHAP), largest first."""

    model: str
    version: int
    rows: int
    features: dict[str, float]


def from_feature_importance(msg: inference_pb2.FeatureImportance) -> FeatureImportance:
    return FeatureImportance(
        msg.model,
        msg.version,
        msg.rows,
        {e.feature: e.mean_abs_contribution for e in msg.features},
    )


# -- features -------------------------------------------------------------------------------------

FEATURE_TYPES = {
    "float": features_pb2.FEATURE_TYPE_FLOAT,
    "int": features_pb2.FEATURE_TYPE_INT,
    "bool": features_pb2.FEATURE_TYPE_BOOL,
    "string": features_pb2.FEATURE_TYPE_STRING,
    "category": features_pb2.FEATURE_TYPE_CATEGORY,
}
FEATURE_TYPE_NAMES = {v: k for k, v in FEATURE_TYPES.items()}


@dataclass(frozen=True)
class Feature:
    """A feature of a set: ``transform`` names a Transform kind (identity, log1p, standardize,
    minmax, clip, one_hot, hash, cyclical) with its ``params`` (e.g. ``{"period": 24}``)."""

    name: str
    type: str = "float"
    transform: str = ""
    params: dict[str, Any] = field(default_factory=dict)
    default: float | int | bool | str | None = None
    source: str = ""


@dataclass(frozen=True)
class FeatureSet:
    name: str
    version: int
    entity_key: str
    features: tuple[Feature, ...]
    ttl_seconds: float | None
    description: str
    aggregates: tuple[str, ...]


def to_value(value: Any) -> features_pb2.FeatureValue:
    if isinstance(value, bool | np.bool_):
        return features_pb2.FeatureValue(flag=bool(value))
    if isinstance(value, str):
        return features_pb2.FeatureValue(text=value)
    return features_pb2.FeatureValue(number=float(value))


def from_value(msg: features_pb2.FeatureValue) -> float | bool | str | None:
    kind = msg.WhichOneof("kind")
    return None if kind is None else getattr(msg, kind)


def to_feature(f: Feature) -> features_pb2.Feature:
    try:
        type_ = FEATURE_TYPES[f.type]
    except KeyError:
        raise ValueError(f"feature {f.name!r}: type {f.type!r} is not one of "
                         f"{', '.join(FEATURE_TYPES)}") from None  # fmt: skip
    msg = features_pb2.Feature(name=f.name, type=type_, source=f.source)  # type: ignore[arg-type]
    if f.transform:
        transform = msg.transform
        if f.transform not in transform.DESCRIPTOR.fields_by_name:
            raise ValueError(f"feature {f.name!r}: transform {f.transform!r} is unknown")
        sub = getattr(transform, f.transform)
        sub.SetInParent()
        for key, value in f.params.items():
            if isinstance(value, list | tuple):
                getattr(sub, key).extend(value)
            else:
                setattr(sub, key, value)
    if f.default is not None:
        msg.default_value.CopyFrom(to_value(f.default))
    return msg


def from_feature(msg: features_pb2.Feature) -> Feature:
    kind = msg.transform.WhichOneof("kind") or ""
    params: dict[str, Any] = {}
    if kind:
        for fd, value in getattr(msg.transform, kind).ListFields():
            params[fd.name] = value if isinstance(value, str | int | float) else list(value)
    default = from_value(msg.default_value) if msg.HasField("default_value") else None
    return Feature(
        msg.name, FEATURE_TYPE_NAMES.get(msg.type, ""), kind, params, default, msg.source
    )


def from_feature_set(msg: features_pb2.FeatureSet) -> FeatureSet:
    return FeatureSet(
        name=msg.name,
        version=msg.version,
        entity_key=msg.entity_key,
        features=tuple(from_feature(f) for f in msg.features),
        ttl_seconds=msg.ttl.ToTimedelta().total_seconds() if msg.HasField("ttl") else None,
        description=msg.description,
        aggregates=tuple(msg.aggregates),
    )


@dataclass(frozen=True)
class FeatureVector:
    """A dense float32 row and the names of its slots."""

    feature_set: str
    version: int
    slot_names: tuple[str, ...]
    values: np.ndarray


def from_feature_vector(msg: features_pb2.FeatureVector) -> FeatureVector:
    values = (
        from_tensor(msg.vector)
        if msg.HasField("vector")
        else np.asarray(msg.values, dtype=np.float32)
    )
    return FeatureVector(msg.feature_set, msg.version, tuple(msg.slot_names), values)


# -- audit ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AuditEntry:
    """One admin RPC from the server's audit trail: who (``principal``, "" with auth off), which
    RPC (``method``, its full name), about what (``target``), how it ended (``code``, a status
    code's name) and when (``time``, seconds since the epoch)."""

    principal: str
    method: str
    target: str
    code: str
    time: float


def to_audit_entry(entry: AuditEntry) -> audit_pb2.AuditEntry:
    return audit_pb2.AuditEntry(
        principal=entry.principal,
        method=entry.method,
        target=entry.target,
        code=entry.code,
        time=to_timestamp(entry.time),
    )


def from_audit_entry(msg: audit_pb2.AuditEntry) -> AuditEntry:
    return AuditEntry(msg.principal, msg.method, msg.target, msg.code, _time(msg.time))


# -- tuning ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FloatParameter:
    """A real parameter in [low, high]; ``log``: searched on a log scale (low > 0)."""

    name: str
    low: float
    high: float
    log: bool = False


@dataclass(frozen=True)
class IntParameter:
    """An integer parameter in [low, high]; ``log``: searched on a log scale (low >= 1)."""

    name: str
    low: int
    high: int
    log: bool = False


@dataclass(frozen=True)
class Categorical:
    """One of ``choices`` (a prompt variant, a model)."""

    name: str
    choices: tuple[str, ...]


Parameter = FloatParameter | IntParameter | Categorical


@dataclass(frozen=True)
class Constraint:
    """Feasible when ``min <= metric <= max`` (give one or both)."""

    metric: str
    max: float | None = None
    min: float | None = None


@dataclass(frozen=True)
class StudyBinding:
    """A study that drives ``bandit``: every trial an arm built from ``base`` (its arm_id is not
    used) and the trial's parameters. Zero fields take the server's defaults (3 parallel trials,
    50 rewards per trial, 3600 s per trial, keep the best 1)."""

    bandit: str
    base: Arm
    parallel_trials: int = 0
    rewards_per_trial: int = 0
    max_trial_seconds: float = 0.0
    keep_best: int = 0


@dataclass(frozen=True)
class Trial:
    """One evaluation of a study: ``state`` is "running", "complete" or "failed"; ``value`` is
    set once complete; ``feasible``: complete and within every constraint."""

    study: str
    number: int
    state: str
    params: dict[str, Any]
    value: float | None
    metrics: dict[str, float]
    feasible: bool
    arm_id: str
    create_time: float
    finish_time: float | None
    failure: str


@dataclass(frozen=True)
class Study:
    """A study as the server shows it; ``state`` is "running", "stopped" or "completed"."""

    name: str
    parameters: tuple[Parameter, ...]
    direction: str
    metric: str
    constraints: tuple[Constraint, ...]
    binding: StudyBinding | None
    max_trials: int
    description: str
    state: str
    create_time: float
    trials_running: int
    trials_complete: int
    trials_failed: int
    best_trial: Trial | None


_TRIAL_STATES = {tuning_pb2.TRIAL_RUNNING: "running", tuning_pb2.TRIAL_COMPLETE: "complete",
                 tuning_pb2.TRIAL_FAILED: "failed"}  # fmt: skip
TRIAL_STATE_BY_NAME = {v: k for k, v in _TRIAL_STATES.items()}
_STUDY_STATES = {tuning_pb2.STUDY_RUNNING: "running", tuning_pb2.STUDY_STOPPED: "stopped",
                 tuning_pb2.STUDY_COMPLETED: "completed"}  # fmt: skip


def to_parameter(p: Parameter) -> tuning_pb2.Parameter:
    if isinstance(p, FloatParameter):
        r = tuning_pb2.FloatRange(low=p.low, high=p.high, log=p.log)
        return tuning_pb2.Parameter(name=p.name, float_range=r)
    if isinstance(p, IntParameter):
        n = tuning_pb2.IntRange(low=p.low, high=p.high, log=p.log)
        return tuning_pb2.Parameter(name=p.name, int_range=n)
    return tuning_pb2.Parameter(name=p.name, categories=tuning_pb2.Categories(choices=p.choices))


def from_parameter(msg: tuning_pb2.Parameter) -> Parameter:
    kind = msg.WhichOneof("kind")
    if kind == "float_range":
        return FloatParameter(msg.name, msg.float_range.low, msg.float_range.high,
                              msg.float_range.log)  # fmt: skip
    if kind == "int_range":
        return IntParameter(msg.name, msg.int_range.low, msg.int_range.high, msg.int_range.log)
    return Categorical(msg.name, tuple(msg.categories.choices))


def to_binding(b: StudyBinding) -> tuning_pb2.BanditBinding:
    return tuning_pb2.BanditBinding(
        bandit=b.bandit,
        base_config=to_arm(b.base).config,
        parallel_trials=b.parallel_trials,
        rewards_per_trial=b.rewards_per_trial,
        max_trial_seconds=b.max_trial_seconds,
        keep_best=b.keep_best,
    )


def from_params(msg: Any) -> dict[str, Any]:
    """A trial's parameters: integral numbers as int, other numbers as float, strings."""
    out: dict[str, Any] = {}
    for name, value in msg.fields.items():
        if value.WhichOneof("kind") == "string_value":
            out[name] = value.string_value
        else:
            x = value.number_value
            out[name] = int(x) if x.is_integer() else x
    return out


def from_trial(msg: tuning_pb2.Trial) -> Trial:
    return Trial(
        study=msg.study,
        number=msg.number,
        state=_TRIAL_STATES.get(msg.state, "unknown"),
        params=from_params(msg.params),
        value=msg.value if msg.HasField("value") else None,
        metrics=dict(msg.metrics),
        feasible=msg.feasible,
        arm_id=msg.arm_id,
        create_time=_time(msg.create_time),
        finish_time=_time(msg.finish_time) if msg.HasField("finish_time") else None,
        failure=msg.failure,
    )


def from_study(msg: tuning_pb2.Study) -> Study:
    binding = None
    if msg.HasField("binding"):
        b = msg.binding
        binding = StudyBinding(
            b.bandit,
            from_arm(common_pb2.Arm(config=b.base_config)),
            b.parallel_trials,
            b.rewards_per_trial,
            b.max_trial_seconds,
            b.keep_best,
        )
    return Study(
        name=msg.name,
        parameters=tuple(from_parameter(p) for p in msg.parameters),
        direction=tuning_pb2.Direction.Name(msg.objective.direction).lower(),
        metric=msg.objective.metric,
        constraints=tuple(
            Constraint(
                c.metric,
                max=c.max if c.HasField("max") else None,
                min=c.min if c.HasField("min") else None,
            )
            for c in msg.constraints
        ),
        binding=binding,
        max_trials=msg.max_trials,
        description=msg.description,
        state=_STUDY_STATES.get(msg.state, "unknown"),
        create_time=_time(msg.create_time),
        trials_running=msg.trials_running,
        trials_complete=msg.trials_complete,
        trials_failed=msg.trials_failed,
        best_trial=from_trial(msg.best_trial) if msg.HasField("best_trial") else None,
    )

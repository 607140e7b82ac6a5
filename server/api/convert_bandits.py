"""Conversion between llmopt.v1 bandit messages and the bandit domain: ``to_x`` / ``from_x``.

A ``from_x`` refuses what only the wire can get wrong (an output-only field set, a negative
duration) with InvalidArgument naming the field. The values themselves are validated once, where
they enter the domain: policy configs when built, specs, arms and outcomes by ``BanditService``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import fields
from typing import Any

from google.protobuf import json_format, struct_pb2
from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from llmopt import errors
from llmopt.api.convert import to_request_context
from llmopt.api.wire import decision_answer as native_decision_answer
from llmopt.api.wire import explanation_message as native_explanation
from llmopt.api.wire import reward_answer as native_reward_answer
from llmopt.bandits.arms import Arm, LLMConfig
from llmopt.bandits.explain import (
    ArmEstimate,
    ArmEstimates,
    ArmExplanation,
    ArmStatus,
    Explanation,
    FeatureContribution,
)
from llmopt.bandits.policies import CONFIG_BY_ONEOF, UCB1, PolicyConfig
from llmopt.bandits.rewards import Feedback, Outcome, RewardConfig
from llmopt.bandits.types import (
    DEFAULT_REWARD_WAIT,
    ArmStats,
    BanditInfo,
    BanditSpec,
    BanditStats,
    Decision,
    LoggedDecision,
    RewardReceipt,
)
from llmopt.gen.llmopt.v1 import bandits_pb2, common_pb2

# Config dataclass field -> proto field, where they differ (``lambda`` is a Python keyword).
_PROTO_FIELD = {"lambda_": "lambda"}


def _proto_name(name: str) -> str:
    return _PROTO_FIELD.get(name, name)


# -- policies -------------------------------------------------------------------------------------


def from_policy(msg: bandits_pb2.Policy, field: str = "bandit.policy") -> PolicyConfig:
    """The policy config of the oneof (unset: UCB1); unset parameters take their defaults."""
    kind = msg.WhichOneof("kind")
    if kind is None:
        return UCB1()
    config_type = CONFIG_BY_ONEOF[kind]
    params_msg = getattr(msg, kind)
    kwargs: dict[str, Any] = {}
    for f in fields(config_type):
        name = _proto_name(f.name)
        descriptor = params_msg.DESCRIPTOR.fields_by_name[name]
        if descriptor.has_presence and not params_msg.HasField(name):
            continue
        kwargs[f.name] = getattr(params_msg, name)
    return config_type(**kwargs)  # type: ignore[no-any-return]


def to_policy(config: PolicyConfig) -> bandits_pb2.Policy:
    msg = bandits_pb2.Policy()
    params = getattr(msg, config.ONEOF)
    params.SetInParent()
    for f in fields(config):
        value = getattr(config, f.name)
        if value is None:  # an optional parameter whose absence means something: left unset
            continue
        setattr(params, _proto_name(f.name), int(value) if isinstance(value, int) else value)
    return msg


# -- arms -----------------------------------------------------------------------------------------


def from_arm(msg: common_pb2.Arm, field: str = "arm") -> Arm:
    return Arm(
        arm_id=msg.arm_id,
        config=from_llm_config(msg.config, f"{field}.config"),
        metadata=dict(msg.metadata),
    )


def from_llm_config(c: common_pb2.LLMConfig, field: str) -> LLMConfig:
    extra = _from_extra(c.extra, f"{field}.extra") if c.HasField("extra") else {}
    return LLMConfig(
        model=c.model,
        temperature=c.temperature,
        top_p=c.top_p,
        max_tokens=c.max_tokens,
        presence_penalty=c.presence_penalty,
        frequency_penalty=c.frequency_penalty,
        system_prompt=c.system_prompt,
        extra=extra,
    )


def _from_extra(msg: struct_pb2.Struct, field: str) -> dict[str, Any]:
    """The Struct as a dict; a NaN or infinite number (JSON has none) is refused naming its path."""
    path = _non_finite(msg, field)
    if path is not None:
        raise errors.invalid(path[0], path[1], "numbers in config.extra must be finite")
    return json_format.MessageToDict(msg)  # type: ignore[no-any-return]


def _non_finite(
    msg: struct_pb2.Struct | struct_pb2.ListValue, where: str
) -> tuple[str, float] | None:
    """(path, value) of the first non-finite number in a Struct or ListValue, or None."""
    items = (
        ((f"{where}[{k!r}]", v) for k, v in msg.fields.items())
        if isinstance(msg, struct_pb2.Struct)
        else ((f"{where}[{i}]", v) for i, v in enumerate(msg.values))
    )
    for path, value in items:
        kind = value.WhichOneof("kind")
        if kind == "number_value" and not math.isfinite(value.number_value):
            return path, value.number_value
        if kind in ("struct_value", "list_value"):
            found = _non_finite(getattr(value, kind), path)
            if found is not None:
                return found
    return None


def to_arm(arm: Arm) -> common_pb2.Arm:
    return common_pb2.Arm(
        arm_id=arm.arm_id, config=to_llm_config(arm.config), metadata=arm.metadata
    )


def to_llm_config(c: LLMConfig) -> common_pb2.LLMConfig:
    msg = common_pb2.LLMConfig(
        model=c.model,
        temperature=c.temperature,
        top_p=c.top_p,
        max_tokens=c.max_tokens,
        presence_penalty=c.presence_penalty,
        frequency_penalty=c.frequency_penalty,
        system_prompt=c.system_prompt,
    )
    if c.extra:
        msg.extra.update(c.extra)
    return msg


# -- definitions ----------------------------------------------------------------------------------


def from_reward_config(msg: bandits_pb2.RewardConfig) -> RewardConfig:
    return RewardConfig.from_spec(
        preset=msg.preset,
        weights=(msg.quality_weight, msg.cost_weight, msg.latency_weight),
        max_cost=msg.max_cost,
        max_latency_ms=msg.max_latency_ms,
    )


def to_reward_config(config: RewardConfig) -> bandits_pb2.RewardConfig:
    return bandits_pb2.RewardConfig(
        preset=config.preset,
        quality_weight=config.quality_weight,
        cost_weight=config.cost_weight,
        latency_weight=config.latency_weight,
        max_cost=config.max_cost,
        max_latency_ms=config.max_latency_ms,
    )


def from_bandit(msg: bandits_pb2.Bandit) -> BanditSpec:
    """The BanditSpec of a CreateBandit request's bandit (``BanditService`` validates it)."""
    reward_wait = DEFAULT_REWARD_WAIT
    if msg.HasField("reward_wait"):
        d = msg.reward_wait
        if d.seconds < 0 or d.nanos < 0 or (d.seconds == 0 and d.nanos == 0):
            raise errors.invalid("bandit.reward_wait", f"{d.seconds}s {d.nanos}ns", "must be > 0")
        reward_wait = d.seconds + d.nanos / 1e9
    if msg.context_dim:
        raise errors.invalid("bandit.context_dim", msg.context_dim, "is output only; leave unset")
    if len(msg.removed_arms):
        raise errors.invalid("bandit.removed_arms", len(msg.removed_arms), "is output only")
    return BanditSpec(
        name=msg.name,
        policy=from_policy(msg.policy),
        arms=tuple(from_arm(a, f"bandit.arms[{i}]") for i, a in enumerate(msg.arms)),
        reward=from_reward_config(msg.reward),
        reward_wait=reward_wait,
        default_reward=msg.default_reward if msg.HasField("default_reward") else None,
        feature_set=msg.feature_set,
        seed=msg.seed,
        description=msg.description,
    )


def to_bandit(info: BanditInfo) -> bandits_pb2.Bandit:
    spec = info.spec
    msg = bandits_pb2.Bandit(
        name=spec.name,
        policy=to_policy(spec.policy),
        arms=[to_arm(a) for a, removed in info.arms if not removed],
        removed_arms=[to_arm(a) for a, removed in info.arms if removed],
        reward=to_reward_config(spec.reward),
        reward_wait=_duration(spec.reward_wait),
        feature_set=spec.feature_set,
        seed=spec.seed,
        create_time=to_timestamp(info.create_time),
        description=spec.description,
        context_dim=info.dim,
    )
    if spec.default_reward is not None:
        msg.default_reward = spec.default_reward
    return msg


def _duration(seconds: float) -> Duration:
    whole = math.floor(seconds)
    return Duration(seconds=whole, nanos=round((seconds - whole) * 1e9))


def to_timestamp(t: float) -> Timestamp:
    seconds, nanos = divmod(round(t * 1e9), 1_000_000_000)
    return Timestamp(seconds=seconds, nanos=nanos)


# -- decisions and rewards ------------------------------------------------------------------------


def decision_answer(d: Decision, arm_bytes: Callable[[Arm], bytes]) -> bytes:
    """The serialized Decision message (written natively, see ``llmopt.api.wire``); ``arm_bytes``
    gives an arm's serialized Arm message (arms never change: it may come from a cache). An
    explained decision carries its Explanation, written natively too (``explanation_bytes``)."""
    e = d.explanation
    return native_decision_answer(  # type: ignore[no-any-return]
        d.decision_id,
        d.bandit,
        arm_bytes(d.arm),
        d.propensity,
        d.arm_ids,
        d.arm_scores,
        d.time,
        None if e is None else explanation_bytes(e),
    )


# -- explanations and estimates -------------------------------------------------------------------


def explanation_bytes(e: Explanation) -> bytes:
    """The serialized Explanation message, written natively from the explanation's arrays
    (``llmopt.api.wire.explanation_message``): the bytes of ``to_explanation(e)``, which stays
    the reference, in a few microseconds instead of a few hundred (10 arms over 20 slots)."""
    c = e.columns()
    return native_explanation(  # type: ignore[no-any-return]
        e.policy,
        e.exploration_kind,
        e.chosen_arm_id,
        e.propensity,
        e.reason,
        c.arm_ids,
        c.status,
        c.numbers,
        c.slot_names,
        c.x,
        c.theta_x,
        c.per_arm,
    )


def to_explanation(e: Explanation) -> bandits_pb2.Explanation:
    """The Explanation message built field by field (the reference ``explanation_bytes`` is
    tested against)."""
    return bandits_pb2.Explanation(
        policy=e.policy,
        exploration_kind=e.exploration_kind,
        chosen_arm_id=e.chosen_arm_id,
        propensity=e.propensity,
        reason=e.reason,
        arms=[to_arm_explanation(a) for a in e.arms],
    )


def to_arm_explanation(a: ArmExplanation) -> bandits_pb2.ArmExplanation:
    return bandits_pb2.ArmExplanation(
        arm_id=a.arm_id,
        status=int(a.status),  # type: ignore[arg-type]
        score=a.score,
        exploitation=a.exploitation,
        exploration=a.exploration,
        mean=a.mean,
        posterior_mean=a.posterior_mean,
        posterior_sd=a.posterior_sd,
        probability=a.probability,
        pulls=a.pulls,
        contributions=[
            bandits_pb2.FeatureContribution(name=c.name, value=c.value, contribution=c.contribution)
            for c in a.contributions
        ],
    )


def from_explanation(msg: bandits_pb2.Explanation) -> Explanation:
    """The domain Explanation of a message (``to_explanation``'s inverse)."""
    return Explanation(
        policy=msg.policy,
        exploration_kind=msg.exploration_kind,
        chosen_arm_id=msg.chosen_arm_id,
        propensity=msg.propensity,
        reason=msg.reason,
        arms=tuple(
            ArmExplanation(
                arm_id=a.arm_id,
                status=ArmStatus(a.status),
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


def to_arm_estimates(e: ArmEstimates) -> bandits_pb2.ArmEstimates:
    return bandits_pb2.ArmEstimates(
        bandit=e.bandit,
        policy=e.policy,
        slot_names=list(e.slot_names),
        arms=[to_arm_estimate(a) for a in e.arms],
    )


def to_arm_estimate(a: ArmEstimate) -> bandits_pb2.ArmEstimate:
    return bandits_pb2.ArmEstimate(
        arm_id=a.arm_id,
        removed=a.removed,
        pulls=a.pulls,
        mean=a.mean,
        sd=a.sd,
        ci_low=a.ci_low,
        ci_high=a.ci_high,
        theta=list(a.theta),
        theta_sd=list(a.theta_sd),
        probability=a.probability,
    )


# -- the decision log -----------------------------------------------------------------------------


def to_outcome(o: Outcome) -> bandits_pb2.Outcome:
    f = o.feedback
    msg = bandits_pb2.Outcome(
        cost=o.cost,
        latency_ms=o.latency_ms,
        tokens=o.tokens,
        feedback=bandits_pb2.Feedback(
            rating=f.rating,
            task_completed=f.task_completed,
            retried=f.retried,
            edited=f.edited,
            saved=f.saved,
        ),
        error=o.error,
    )
    if o.quality_score is not None:
        msg.quality_score = o.quality_score
    if f.dwell_seconds is not None:
        msg.feedback.dwell_seconds = f.dwell_seconds
    return msg


def to_logged_decision(d: LoggedDecision) -> bandits_pb2.LoggedDecision:
    msg = bandits_pb2.LoggedDecision(
        decision_id=d.decision_id,
        bandit=d.bandit,
        arm=to_arm(d.arm),
        propensity=d.propensity,
        scores=[bandits_pb2.ArmScore(arm_id=a, score=s) for a, s in d.scores],
        time=to_timestamp(d.time),
        context_vector=d.context_vector.tolist(),
        slot_names=list(d.slot_names),
        status=int(d.status),  # type: ignore[arg-type]  # DecisionStatus values are the contract's
        explanation_recomputed=d.explanation_recomputed,
        degraded=d.degraded,
        expire_time=to_timestamp(d.expire_time),
    )
    if d.context is not None:
        msg.context.CopyFrom(to_request_context(d.context))
    if d.reward is not None:
        msg.reward = d.reward
    if d.outcome is not None:
        msg.outcome.CopyFrom(to_outcome(d.outcome))
    if d.reward_time is not None:
        msg.reward_time.CopyFrom(to_timestamp(d.reward_time))
    if d.explanation is not None:
        msg.explanation.MergeFromString(explanation_bytes(d.explanation))
    return msg


# The range of a valid Timestamp (google/protobuf/timestamp.proto): years 0001 through 9999.
_MIN_SECONDS, _MAX_SECONDS = -62_135_596_800, 253_402_300_799


def from_time(msg: Timestamp, field: str) -> float:
    """Seconds since the epoch of a request's Timestamp; InvalidArgument naming ``field`` when
    it is not a valid Timestamp (nanos out of [0, 1e9), seconds outside years 1 to 9999)."""
    if not 0 <= msg.nanos < 1_000_000_000:
        raise errors.invalid(f"{field}.nanos", msg.nanos, "must be in [0, 1e9)")
    if not _MIN_SECONDS <= msg.seconds <= _MAX_SECONDS:
        raise errors.invalid(
            f"{field}.seconds", msg.seconds, "must be within years 0001 to 9999 (a Timestamp)"
        )
    return msg.seconds + msg.nanos / 1e9


def from_list_decisions(
    msg: bandits_pb2.ListDecisionsRequest,
) -> tuple[str, float | None, float | None, int, str]:
    """(bandit, start_time, end_time, page_size, page_token) of a ListDecisions request."""
    start = from_time(msg.start_time, "start_time") if msg.HasField("start_time") else None
    end = from_time(msg.end_time, "end_time") if msg.HasField("end_time") else None
    return msg.bandit, start, end, msg.page.page_size, msg.page.page_token


def reward_answer(receipt: RewardReceipt) -> bytes:
    """The serialized RecordRewardResponse (written natively, see ``llmopt.api.wire``)."""
    return native_reward_answer(receipt.decision_id, receipt.arm_id, receipt.reward)


def from_outcome(msg: bandits_pb2.Outcome) -> Outcome:
    """The Outcome of a RecordReward request (``BanditService`` validates it)."""
    f = msg.feedback
    return Outcome(
        quality_score=msg.quality_score if msg.HasField("quality_score") else None,
        cost=msg.cost,
        latency_ms=msg.latency_ms,
        tokens=msg.tokens,
        feedback=Feedback(
            rating=f.rating,
            task_completed=f.task_completed,
            retried=f.retried,
            edited=f.edited,
            dwell_seconds=f.dwell_seconds if f.HasField("dwell_seconds") else None,
            saved=f.saved,
        ),
        error=msg.error,
    )


def to_arm_stats(s: ArmStats) -> bandits_pb2.ArmStats:
    msg = bandits_pb2.ArmStats(
        arm_id=s.arm_id,
        pulls=s.pulls,
        rewards=s.rewards,
        reward_sum=s.reward_sum,
        mean=s.mean,
        variance=s.variance,
        ci_low=s.ci_low,
        ci_high=s.ci_high,
        removed=s.removed,
    )
    if s.last_selected is not None:
        msg.last_selected.CopyFrom(to_timestamp(s.last_selected))
    return msg


def to_bandit_stats(s: BanditStats) -> bandits_pb2.BanditStats:
    return bandits_pb2.BanditStats(
        bandit=s.bandit,
        arms=[to_arm_stats(a) for a in s.arms],
        decisions=s.decisions,
        rewards=s.rewards,
        open_decisions=s.open_decisions,
        expired_decisions=s.expired_decisions,
        mean_reward=s.mean_reward,
    )

"""The reward calculator (DESIGN.md, "Reward"): one LLM call's outcome becomes a reward in [0, 1].

``reward = w_q * quality + w_c * clamp(1 - cost / max_cost) + w_l * clamp(1 - latency / max_lat)``,
multiplied by 0.8 when quality < 0.3 or the user retried. Quality is 0 for a failed call
(``error``: DESIGN.md is silent; a failure is the worst answer), else ``rating / 5`` when a 1..5
rating exists; else, when at least one implicit feedback signal is present
(``Feedback.has_signal``), the mean of the measured ``quality_score`` and the quality inferred
from that feedback (just the inferred quality when no score was measured); else the measured
``quality_score`` alone (no neutral 0.5 is blended in when no feedback was given), or the neutral
0.5 when nothing at all was measured.

Rewards are computed once, when an outcome arrives, and stored as numbers: a change to this
formula never changes a stored reward (replay reads the stored value).

>>> cfg = RewardConfig()
>>> round(compute_reward(Outcome(quality_score=1.0, cost=0.0, latency_ms=0.0,
...                              feedback=Feedback(rating=5)), cfg), 12)
1.0
>>> rated = Outcome(cost=0.5, latency_ms=2500.0, feedback=Feedback(rating=3))
>>> round(compute_reward(rated, cfg), 12)
0.56
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field
from typing import Any

from llmopt import errors

# Inferred-quality increments (the reference system's values).
FEEDBACK_START = 0.5
TASK_COMPLETED = 0.3
RETRIED = -0.4
EDITED = -0.1
DWELL_ENGAGED = 0.2  # dwell in [10, 120] s
DWELL_BOUNCED = -0.2  # dwell under 3 s
SAVED = 0.2
LOW_QUALITY = 0.3  # below this quality (or on a retry) the reward is multiplied by PENALTY
PENALTY = 0.8

DEFAULT_MAX_COST = 1.0
DEFAULT_MAX_LATENCY_MS = 5000.0

# name -> (quality, cost, latency) weights
PRESETS: dict[str, tuple[float, float, float]] = {
    "balanced": (0.6, 0.3, 0.1),
    "quality-focused": (0.8, 0.15, 0.05),
    "cost-focused": (0.4, 0.5, 0.1),
    "latency-focused": (0.4, 0.3, 0.3),
}
DEFAULT_PRESET = "balanced"


def _clamp01(value: float) -> float:
    return 0.0 if value < 0.0 else 1.0 if value > 1.0 else value


def _finite_non_negative(field_name: str, value: float) -> None:
    if not math.isfinite(value) or value < 0:
        raise errors.invalid(field_name, value, "must be a finite number >= 0")


@dataclass(frozen=True)
class RewardConfig:
    """Weights (normalised to sum 1) and the maxima the cost and latency terms are scaled by.

    Build one from a preset name or from custom weights with ``RewardConfig.from_spec``.

    >>> RewardConfig.from_spec(preset="cost-focused").weights
    (0.4, 0.5, 0.1)
    >>> RewardConfig.from_spec(weights=(2.0, 1.0, 1.0)).weights
    (0.5, 0.25, 0.25)
    """

    quality_weight: float = 0.6
    cost_weight: float = 0.3
    latency_weight: float = 0.1
    max_cost: float = DEFAULT_MAX_COST
    max_latency_ms: float = DEFAULT_MAX_LATENCY_MS
    preset: str = DEFAULT_PRESET  # "" for custom weights

    def __post_init__(self) -> None:
        for name in ("quality_weight", "cost_weight", "latency_weight"):
            _finite_non_negative(f"reward.{name}", getattr(self, name))
        if not math.isclose(sum(self.weights), 1.0, abs_tol=1e-9):
            raise errors.invalid("reward", self.weights, "weights must sum to 1 (use from_spec)")
        for name in ("max_cost", "max_latency_ms"):
            value = getattr(self, name)
            if not math.isfinite(value) or value <= 0:
                raise errors.invalid(f"reward.{name}", value, "must be a finite number > 0")
        if self.preset and self.preset not in PRESETS:
            raise errors.invalid("reward.preset", self.preset, f"must be one of {sorted(PRESETS)}")

    @property
    def weights(self) -> tuple[float, float, float]:
        return (self.quality_weight, self.cost_weight, self.latency_weight)

    @classmethod
    def from_spec(
        cls,
        *,
        preset: str = "",
        weights: tuple[float, float, float] = (0.0, 0.0, 0.0),
        max_cost: float = 0.0,
        max_latency_ms: float = 0.0,
    ) -> RewardConfig:
        """A preset (default "balanced") or custom weights normalised to sum 1; maxima 0 mean the
        defaults ($1.00, 5000 ms). Naming a preset and giving weights is refused."""
        names = ("quality_weight", "cost_weight", "latency_weight")
        for name, value in zip(names, weights, strict=True):
            _finite_non_negative(f"reward.{name}", value)
        for name, value in (("max_cost", max_cost), ("max_latency_ms", max_latency_ms)):
            _finite_non_negative(f"reward.{name}", value)
        custom = any(w > 0 for w in weights)
        if preset and custom:
            raise errors.invalid(
                "reward.preset", preset, "give either a preset or custom weights, not both"
            )
        if custom:
            total = sum(weights)
            q, c, lat = (w / total for w in weights)
            preset_name = ""
        else:
            preset_name = (preset or DEFAULT_PRESET).strip().lower()
            if preset_name not in PRESETS:
                raise errors.invalid("reward.preset", preset, f"must be one of {sorted(PRESETS)}")
            q, c, lat = PRESETS[preset_name]
        return cls(
            quality_weight=q,
            cost_weight=c,
            latency_weight=lat,
            max_cost=max_cost or DEFAULT_MAX_COST,
            max_latency_ms=max_latency_ms or DEFAULT_MAX_LATENCY_MS,
            preset=preset_name,
        )


@dataclass(frozen=True)
class Feedback:
    """What the user did with the answer. ``rating`` 0 means none; ``dwell_seconds`` None means
    not measured.

    An implicit signal is *present* (``has_signal``) when one of the flags ``task_completed``,
    ``retried``, ``edited``, ``saved`` is true or ``dwell_seconds`` was measured (is not None):
    a false flag is indistinguishable from one never sent (the contract's bools have no presence),
    so only a true flag or a measured dwell counts. ``rating`` is explicit, not implicit.

    >>> Feedback().has_signal, Feedback(rating=4).has_signal
    (False, False)
    >>> Feedback(edited=True).has_signal, Feedback(dwell_seconds=0.0).has_signal
    (True, True)
    """

    rating: int = 0
    task_completed: bool = False
    retried: bool = False
    edited: bool = False
    dwell_seconds: float | None = None
    saved: bool = False

    @property
    def has_signal(self) -> bool:
        """Whether at least one implicit feedback signal is present (see the class docstring)."""
        return (
            self.task_completed
            or self.retried
            or self.edited
            or self.saved
            or self.dwell_seconds is not None
        )

    def validate(self, field_name: str = "outcome.feedback") -> Feedback:
        if not 0 <= self.rating <= 5:
            raise errors.invalid(f"{field_name}.rating", self.rating, "must be 1..5, or 0 for none")
        if self.dwell_seconds is not None:
            _finite_non_negative(f"{field_name}.dwell_seconds", self.dwell_seconds)
        return self


@dataclass(frozen=True)
class Outcome:
    """Measured result of one routed request."""

    quality_score: float | None = None
    cost: float = 0.0
    latency_ms: float = 0.0
    tokens: int = 0
    feedback: Feedback = field(default_factory=Feedback)
    error: bool = False  # the call failed (provider error, timeout)

    def validate(self, field_name: str = "outcome") -> Outcome:
        """Raise InvalidArgument naming the first field out of range; return self otherwise."""
        if self.quality_score is not None and not (
            math.isfinite(self.quality_score) and 0.0 <= self.quality_score <= 1.0
        ):
            raise errors.invalid(
                f"{field_name}.quality_score", self.quality_score, "must be in [0, 1]"
            )
        _finite_non_negative(f"{field_name}.cost", self.cost)
        _finite_non_negative(f"{field_name}.latency_ms", self.latency_ms)
        if self.tokens < 0:
            raise errors.invalid(f"{field_name}.tokens", self.tokens, "must be >= 0")
        self.feedback.validate(f"{field_name}.feedback")
        return self


def outcome_detail(outcome: Outcome) -> dict[str, Any]:
    """An outcome's fields as the detail of its reward event (JSON in the decision log)."""
    f = outcome.feedback
    return {
        "quality_score": outcome.quality_score,
        "cost": outcome.cost,
        "latency_ms": outcome.latency_ms,
        "tokens": outcome.tokens,
        "rating": f.rating,
        "task_completed": f.task_completed,
        "retried": f.retried,
        "edited": f.edited,
        "dwell_seconds": f.dwell_seconds,
        "saved": f.saved,
        "error": outcome.error,
    }


def outcome_from_detail(detail: dict[str, Any]) -> Outcome:
    """The Outcome ``outcome_detail`` wrote (fields it lacks take their defaults)."""
    return Outcome(
        quality_score=detail.get("quality_score"),
        cost=detail.get("cost", 0.0),
        latency_ms=detail.get("latency_ms", 0.0),
        tokens=detail.get("tokens", 0),
        feedback=Feedback(
            rating=detail.get("rating", 0),
            task_completed=detail.get("task_completed", False),
            retried=detail.get("retried", False),
            edited=detail.get("edited", False),
            dwell_seconds=detail.get("dwell_seconds"),
            saved=detail.get("saved", False),
        ),
        error=detail.get("error", False),
    )


def feedback_quality(feedback: Feedback) -> float:
    """Quality inferred from implicit feedback, in [0, 1].

    >>> feedback_quality(Feedback())
    0.5
    >>> feedback_quality(Feedback(task_completed=True, dwell_seconds=30.0, saved=True))
    1.0
    >>> round(feedback_quality(Feedback(retried=True, edited=True, dwell_seconds=1.0)), 12)
    0.0
    """
    q = FEEDBACK_START
    if feedback.task_completed:
        q += TASK_COMPLETED
    if feedback.retried:
        q += RETRIED
    if feedback.edited:
        q += EDITED
    dwell = feedback.dwell_seconds
    if dwell is not None:
        if 10.0 <= dwell <= 120.0:
            q += DWELL_ENGAGED
        elif dwell < 3.0:
            q += DWELL_BOUNCED
    if feedback.saved:
        q += SAVED
    return _clamp01(q)


def outcome_quality(outcome: Outcome) -> float:
    """0 for a failed call; ``rating / 5`` when rated; else, with an implicit feedback signal
    present, the mean of ``quality_score`` and the feedback quality (the feedback quality alone
    without a score); else ``quality_score`` alone; else (nothing measured) the neutral 0.5.

    >>> outcome_quality(Outcome(quality_score=0.2, feedback=Feedback(rating=4)))
    0.8
    >>> scored = Outcome(quality_score=0.9, feedback=Feedback(task_completed=True))
    >>> round(outcome_quality(scored), 12)
    0.85
    >>> outcome_quality(Outcome(quality_score=0.9))  # no feedback signal: the score alone
    0.9
    >>> outcome_quality(Outcome(feedback=Feedback(task_completed=True)))
    0.8
    >>> outcome_quality(Outcome())
    0.5
    >>> outcome_quality(Outcome(error=True, feedback=Feedback(rating=5)))
    0.0
    """
    if outcome.error:
        return 0.0
    feedback = outcome.feedback
    if feedback.rating > 0:
        return feedback.rating / 5.0
    score = outcome.quality_score
    if not feedback.has_signal:
        return FEEDBACK_START if score is None else score
    inferred = feedback_quality(feedback)
    if score is None:
        return inferred
    return _clamp01((score + inferred) / 2.0)


def compute_reward(outcome: Outcome, config: RewardConfig) -> float:
    """The reward in [0, 1] of one outcome under ``config``, validating the outcome first (the
    entry for a caller holding an unchecked outcome; ``outcome_reward`` computes it).

    >>> low = Outcome(quality_score=0.0, cost=0.0, latency_ms=0.0,
    ...               feedback=Feedback(retried=True))
    >>> round(compute_reward(low, RewardConfig()), 12)  # (0.6*0.05 + 0.3 + 0.1) * 0.8
    0.344
    """
    return outcome_reward(outcome.validate(), config)


def outcome_reward(outcome: Outcome, config: RewardConfig) -> float:
    """The reward of an outcome already validated (``Outcome.validate``): always finite and in
    [0, 1], as every term is (each input is finite, ``max_cost`` and ``max_latency_ms`` are > 0,
    the weights are finite and sum to 1), so it needs no further check before it is journaled."""
    quality = outcome_quality(outcome)
    cost_term = _clamp01(1.0 - outcome.cost / config.max_cost)
    latency_term = _clamp01(1.0 - outcome.latency_ms / config.max_latency_ms)
    reward = (
        config.quality_weight * quality
        + config.cost_weight * cost_term
        + config.latency_weight * latency_term
    )
    if quality < LOW_QUALITY or outcome.feedback.retried:
        reward *= PENALTY
    return _clamp01(reward)


def check_raw_reward(value: float, field_name: str = "reward") -> float:
    """A caller's raw reward as a float, refused unless it is a real number in [0, 1]: all that a
    policy's ``update`` checks, so a reward that passes is never refused after it is journaled.

    >>> check_raw_reward(1)
    1.0
    >>> check_raw_reward("0.5")
    Traceback (most recent call last):
    ...
    llmopt.errors.InvalidArgument: reward: '0.5' is invalid: must be a finite number in [0, 1]
    """
    if not (isinstance(value, numbers.Real) and 0.0 <= value <= 1.0):  # NaN compares False
        raise errors.invalid(field_name, value, "must be a finite number in [0, 1]")
    return float(value)

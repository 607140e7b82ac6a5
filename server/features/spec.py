"""Feature sets: typed features, their transforms, defaults, TTL and declared aggregates.

A transform is a small frozen config (a NamedTuple) that knows its output width, its slot names,
its formula and, where the maths allows, its inverse. Everything here is validated once, where a
set enters the system (``FeatureSet.validate``); the compiled plan (``llmopt.features.plan``)
trusts what it is given.

>>> Standardize(mean=10.0, std=2.0).apply(14.0)
(2.0,)
>>> Standardize(mean=10.0, std=2.0).inverse((2.0,))
14.0
>>> Cyclical(period=24.0).slot_names("hour")
('hour_sin', 'hour_cos')
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass, field, replace
from enum import IntEnum
from typing import Any, NamedTuple

from llmopt import errors, naming

# One stored or requested raw value. bool is checked before int (bool is an int in Python).
RawValue = float | int | bool | str

OOV_SLOT = "<oov>"


class FeatureType(IntEnum):
    FLOAT = 1
    INT = 2
    BOOL = 3
    STRING = 4
    CATEGORY = 5

    @property
    def numeric(self) -> bool:
        return self in (FeatureType.FLOAT, FeatureType.INT, FeatureType.BOOL)


# -- transforms -----------------------------------------------------------------------------------


class Identity(NamedTuple):
    """``x``."""

    def width(self) -> int:
        return 1

    def slot_names(self, name: str) -> tuple[str, ...]:
        return (name,)

    def apply(self, x: float) -> tuple[float, ...]:
        return (x,)

    def inverse(self, y: tuple[float, ...]) -> float:
        return y[0]

    def unfitted(self) -> bool:
        return False


class Log1p(NamedTuple):
    """``log1p(max(x, 0))``: counts and durations. Inverse ``expm1(y)`` on x >= 0."""

    def width(self) -> int:
        return 1

    def slot_names(self, name: str) -> tuple[str, ...]:
        return (name,)

    def apply(self, x: float) -> tuple[float, ...]:
        return (math.log1p(max(x, 0.0)),)

    def inverse(self, y: tuple[float, ...]) -> float:
        return math.expm1(y[0])

    def unfitted(self) -> bool:
        return False


class Standardize(NamedTuple):
    """``(x - mean) / std``; std 0 means "fit me" (see ``llmopt.features.fitting``)."""

    mean: float = 0.0
    std: float = 0.0

    def width(self) -> int:
        return 1

    def slot_names(self, name: str) -> tuple[str, ...]:
        return (name,)

    def apply(self, x: float) -> tuple[float, ...]:
        return ((x - self.mean) / self.std,)

    def inverse(self, y: tuple[float, ...]) -> float:
        return y[0] * self.std + self.mean

    def unfitted(self) -> bool:
        return self.std == 0.0


class MinMax(NamedTuple):
    """``(x - lo) / (hi - lo)`` (not clipped); lo == hi means "fit me"."""

    lo: float = 0.0
    hi: float = 0.0

    def width(self) -> int:
        return 1

    def slot_names(self, name: str) -> tuple[str, ...]:
        return (name,)

    def apply(self, x: float) -> tuple[float, ...]:
        return ((x - self.lo) / (self.hi - self.lo),)

    def inverse(self, y: tuple[float, ...]) -> float:
        return self.lo + y[0] * (self.hi - self.lo)

    def unfitted(self) -> bool:
        return self.lo == self.hi


class Clip(NamedTuple):
    """``min(max(x, lo), hi)``; the inverse is the identity on [lo, hi]."""

    lo: float
    hi: float

    def width(self) -> int:
        return 1

    def slot_names(self, name: str) -> tuple[str, ...]:
        return (name,)

    def apply(self, x: float) -> tuple[float, ...]:
        return (min(max(x, self.lo), self.hi),)

    def inverse(self, y: tuple[float, ...]) -> float:
        return y[0]

    def unfitted(self) -> bool:
        return False


class Cyclical(NamedTuple):
    """``sin``, ``cos`` of ``2π·x/period``; inverse on [0, period)."""

    period: float

    def width(self) -> int:
        return 2

    def slot_names(self, name: str) -> tuple[str, ...]:
        return (f"{name}_sin", f"{name}_cos")

    def apply(self, x: float) -> tuple[float, ...]:
        angle = 2.0 * math.pi * x / self.period
        return (math.sin(angle), math.cos(angle))

    def inverse(self, y: tuple[float, ...]) -> float:
        angle = math.atan2(y[0], y[1])
        return (angle * self.period / (2.0 * math.pi)) % self.period

    def unfitted(self) -> bool:
        return False


class OneHot(NamedTuple):
    """One slot per vocabulary entry plus a last out-of-vocabulary slot; empty vocabulary: "fit me".

    A missing value with no default sets no slot at all (all zeros).
    """

    vocabulary: tuple[str, ...] = ()

    def width(self) -> int:
        return len(self.vocabulary) + 1

    def slot_names(self, name: str) -> tuple[str, ...]:
        return (*(f"{name}={v}" for v in self.vocabulary), f"{name}={OOV_SLOT}")

    def code(self, text: str) -> int:
        try:
            return self.vocabulary.index(text)
        except ValueError:
            return len(self.vocabulary)

    def apply_text(self, text: str | None) -> tuple[float, ...]:
        out = [0.0] * self.width()
        if text is not None:
            out[self.code(text)] = 1.0
        return tuple(out)

    def inverse_text(self, y: tuple[float, ...]) -> str | None:
        """The vocabulary entry whose slot is set; None for OOV or no slot set."""
        for i, v in enumerate(y[:-1]):
            if v == 1.0:
                return self.vocabulary[i]
        return None

    def unfitted(self) -> bool:
        return not self.vocabulary


class Hash(NamedTuple):
    """One-hot over ``buckets`` slots at ``crc32(utf-8 text) % buckets`` (stable across runs)."""

    buckets: int

    def width(self) -> int:
        return self.buckets

    def slot_names(self, name: str) -> tuple[str, ...]:
        return tuple(f"{name}#{i}" for i in range(self.buckets))

    def code(self, text: str) -> int:
        return zlib.crc32(text.encode()) % self.buckets

    def apply_text(self, text: str | None) -> tuple[float, ...]:
        out = [0.0] * self.buckets
        if text is not None:
            out[self.code(text)] = 1.0
        return tuple(out)

    def unfitted(self) -> bool:
        return False


Transform = Identity | Log1p | Standardize | MinMax | Clip | Cyclical | OneHot | Hash
NUMERIC_TRANSFORMS = (Identity, Log1p, Standardize, MinMax, Clip, Cyclical)
TEXT_TRANSFORMS = (OneHot, Hash)


def is_numeric(t: Transform) -> bool:
    """Whether a transform reads numbers (else it reads text)."""
    return isinstance(t, NUMERIC_TRANSFORMS)


MAX_HASH_BUCKETS = 4096
MAX_VOCABULARY = 4096


def validate_transform(t: Transform, field_name: str, *, allow_unfitted: bool) -> list[str]:
    """Problems with a transform's parameters, each naming the field (empty list: fine)."""
    bad: list[str] = []
    finite = all(math.isfinite(v) for v in t if isinstance(v, float))
    if not finite:
        bad.append(f"{field_name}: parameters {tuple(t)!r} must be finite")
    if not allow_unfitted and t.unfitted():
        bad.append(f"{field_name}: {type(t).__name__} has no parameters and fit was not requested")
    if isinstance(t, Standardize) and t.std < 0:
        bad.append(f"{field_name}.std: {t.std!r} is invalid: must be > 0")
    if isinstance(t, MinMax) and t.hi < t.lo:
        bad.append(f"{field_name}: lo {t.lo!r} > hi {t.hi!r}")
    if isinstance(t, Clip) and not t.lo <= t.hi:
        bad.append(f"{field_name}: lo {t.lo!r} > hi {t.hi!r}")
    if isinstance(t, Cyclical) and not t.period > 0:
        bad.append(f"{field_name}.period: {t.period!r} is invalid: must be > 0")
    if isinstance(t, Hash) and not 1 <= t.buckets <= MAX_HASH_BUCKETS:
        bad.append(
            f"{field_name}.buckets: {t.buckets!r} is invalid: must be in 1..{MAX_HASH_BUCKETS}"
        )
    if isinstance(t, OneHot):
        if len(t.vocabulary) > MAX_VOCABULARY:
            bad.append(
                f"{field_name}.vocabulary: {len(t.vocabulary)} entries, at most {MAX_VOCABULARY}"
            )
        if len(set(t.vocabulary)) != len(t.vocabulary):
            bad.append(f"{field_name}.vocabulary: entries must be unique")
    return bad


# -- features and sets ----------------------------------------------------------------------------

# Where a feature's raw value comes from: the store (under the set's entity) or the request.
CONTEXT_FIELDS = (
    "user_id", "task_type", "input_length", "output_length", "priority", "region",
    "hour_of_day", "day_of_week", "language",
)  # fmt: skip
CONTEXT_PREFIX = "context."


@dataclass(frozen=True)
class Feature:
    """A typed feature. ``source`` is "" (stored under the entity) or a request field:
    ``context.<field>`` (one of CONTEXT_FIELDS), ``context.features.<key>`` or
    ``context.metadata.<key>``."""

    name: str
    type: FeatureType = FeatureType.FLOAT
    transform: Transform = field(default_factory=Identity)
    default: RawValue | None = None
    source: str = ""


AGGREGATE_STATS = ("count", "sum", "mean", "min", "max", "p50", "p95", "p99")
AGGREGATE_WINDOWS = ("5m", "1h")


def aggregate_names(feature: str) -> tuple[str, ...]:
    """Readable names of the aggregates of one numeric stream, e.g. ``latency_ms_p95_5m``."""
    return tuple(f"{feature}_{s}_{w}" for w in AGGREGATE_WINDOWS for s in AGGREGATE_STATS)


@dataclass(frozen=True)
class FeatureSet:
    """A versioned feature set; changing anything but version and create_time is a new version."""

    name: str
    entity_key: str
    features: tuple[Feature, ...]
    ttl_seconds: float | None = None
    description: str = ""
    aggregates: tuple[str, ...] = ()
    version: int = 0
    create_time: float = 0.0
    by_name: dict[str, Feature] = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "by_name", {f.name: f for f in self.features})

    def same_definition(self, other: FeatureSet) -> bool:
        return replace(self, version=0, create_time=0.0) == replace(
            other, version=0, create_time=0.0
        )

    @property
    def stored_features(self) -> tuple[Feature, ...]:
        return tuple(f for f in self.features if not f.source)

    def readable_names(self) -> tuple[str, ...]:
        """Names GetFeatures accepts: stored features, then every aggregate output."""
        names = [f.name for f in self.stored_features]
        for agg in self.aggregates:
            names.extend(aggregate_names(agg))
        return tuple(names)

    def validate(self, *, allow_unfitted: bool = False) -> FeatureSet:
        """Raise one InvalidArgument listing every problem; return self when there is none."""
        bad: list[str] = []
        for name_field, name in (("name", self.name), ("entity_key", self.entity_key)):
            name_problem = naming.problem(f"feature_set.{name_field}", name)
            if name_problem:
                bad.append(name_problem)
        if not self.features:
            bad.append("feature_set.features: a set needs at least one feature")
        if self.ttl_seconds is not None and not (
            math.isfinite(self.ttl_seconds) and self.ttl_seconds > 0
        ):
            bad.append(f"feature_set.ttl: {self.ttl_seconds!r} must be > 0 (or unset)")
        seen: set[str] = set()
        for i, f in enumerate(self.features):
            where = f"feature_set.features[{i}]"
            name_problem = naming.problem(f"{where}.name", f.name)
            if name_problem:
                bad.append(name_problem)
            if f.name in seen:
                bad.append(f"{where}.name: {f.name!r} is declared twice")
            seen.add(f.name)
            if is_numeric(f.transform) != f.type.numeric:
                kind = "numeric" if f.type.numeric else "text"
                bad.append(
                    f"{where}.transform: {type(f.transform).__name__} does not apply to "
                    f"{f.type.name} ({kind}) features"
                )
            bad += validate_transform(
                f.transform, f"{where}.transform", allow_unfitted=allow_unfitted
            )
            if f.default is not None:
                problem = check_value(f, f.default)
                if problem:
                    bad.append(f"{where}.default_value: {problem}")
            if f.source and not _valid_source(f.source):
                bad.append(
                    f"{where}.source: {f.source!r} must be '', context.<field> "
                    f"({', '.join(CONTEXT_FIELDS)}), context.features.<key> or "
                    "context.metadata.<key>"
                )
        for i, agg in enumerate(self.aggregates):
            agg_feature = self.by_name.get(agg)
            if agg_feature is None or agg_feature.source or not agg_feature.type.numeric:
                bad.append(
                    f"feature_set.aggregates[{i}]: {agg!r} must name a stored numeric feature"
                )
        if len(set(self.aggregates)) != len(self.aggregates):
            bad.append("feature_set.aggregates: entries must be unique")
        if bad:
            raise errors.InvalidArgument("; ".join(bad))
        return self


def _valid_source(source: str) -> bool:
    if not source.startswith(CONTEXT_PREFIX):
        return False
    rest = source[len(CONTEXT_PREFIX) :]
    if rest in CONTEXT_FIELDS:
        return True
    return any(rest.startswith(s) and len(rest) > len(s) for s in ("features.", "metadata."))


def check_value(feature: Feature, value: Any) -> str:
    """Why ``value`` does not fit the feature's type ("" when it does)."""
    t = feature.type
    if t is FeatureType.BOOL:
        return "" if isinstance(value, bool) else f"{value!r} is not a bool (flag)"
    if t in (FeatureType.STRING, FeatureType.CATEGORY):
        return "" if isinstance(value, str) else f"{value!r} is not text"
    if isinstance(value, bool) or not isinstance(value, int | float):
        return f"{value!r} is not a number"
    if not math.isfinite(value):
        return f"{value!r} is not finite"
    if t is FeatureType.INT and not float(value).is_integer():
        return f"{value!r} is not an integer"
    return ""


def coerce(feature: Feature, value: RawValue) -> RawValue:
    """The stored form of a checked value: ints for INT, floats for FLOAT."""
    if feature.type is FeatureType.INT:
        return int(value)
    if feature.type is FeatureType.FLOAT:
        return float(value)
    return value

"""Conversion between llmopt.v1.Features messages and the feature domain: ``to_x`` / ``from_x``."""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable
from typing import Any

import numpy as np

from llmopt import errors
from llmopt.api import convert
from llmopt.api.convert import from_duration, from_tensor, timestamp_us, to_tensor
from llmopt.features.codec import KIND_BY_TRANSFORM
from llmopt.features.service import EntityFeatures, FeatureVector, StoredValue
from llmopt.features.spec import (
    Clip,
    Cyclical,
    Feature,
    FeatureSet,
    FeatureType,
    Hash,
    Identity,
    Log1p,
    MinMax,
    OneHot,
    RawValue,
    Standardize,
    Transform,
)
from llmopt.gen.llmopt.v1 import features_pb2

# proto oneof field -> domain transform from the sub-message
TRANSFORM_FROM: dict[str, Callable[[Any], Transform]] = {
    "identity": lambda m: Identity(),
    "log1p": lambda m: Log1p(),
    "standardize": lambda m: Standardize(mean=m.mean, std=m.std),
    "minmax": lambda m: MinMax(lo=m.lo, hi=m.hi),
    "clip": lambda m: Clip(lo=m.lo, hi=m.hi),
    "one_hot": lambda m: OneHot(vocabulary=tuple(m.vocabulary)),
    "hash": lambda m: Hash(buckets=m.buckets),
    "cyclical": lambda m: Cyclical(period=m.period),
}

TYPE_FROM: dict[int, FeatureType] = {
    features_pb2.FEATURE_TYPE_FLOAT: FeatureType.FLOAT,
    features_pb2.FEATURE_TYPE_INT: FeatureType.INT,
    features_pb2.FEATURE_TYPE_BOOL: FeatureType.BOOL,
    features_pb2.FEATURE_TYPE_STRING: FeatureType.STRING,
    features_pb2.FEATURE_TYPE_CATEGORY: FeatureType.CATEGORY,
}
TYPE_TO: dict[FeatureType, int] = {v: k for k, v in TYPE_FROM.items()}

# -- values ---------------------------------------------------------------------------------------


def from_value(msg: features_pb2.FeatureValue) -> RawValue | None:
    kind = msg.WhichOneof("kind")
    return None if kind is None else getattr(msg, kind)


def to_value(value: RawValue) -> features_pb2.FeatureValue:
    if isinstance(value, bool):
        return features_pb2.FeatureValue(flag=value)
    if isinstance(value, str):
        return features_pb2.FeatureValue(text=value)
    return features_pb2.FeatureValue(number=float(value))


# -- feature sets ---------------------------------------------------------------------------------


def from_transform(msg: features_pb2.Transform, type_: FeatureType) -> Transform:
    kind = msg.WhichOneof("kind")
    if kind is None:  # unset: identity for numbers; text features must choose
        return Identity() if type_.numeric else OneHot()
    return TRANSFORM_FROM[kind](getattr(msg, kind))


def to_transform(t: Transform) -> features_pb2.Transform:
    kind = KIND_BY_TRANSFORM[type(t)]  # the codec's kinds are the proto's oneof field names
    params = dict(t._asdict())
    msg = features_pb2.Transform()
    sub = getattr(msg, kind)
    sub.SetInParent()
    for name, value in params.items():
        if name == "vocabulary":
            sub.vocabulary.extend(value)
        else:
            setattr(sub, name, value)
    return msg


def from_feature_set(msg: features_pb2.FeatureSet) -> FeatureSet:
    """Domain set from the proto; unknown enum values are refused naming the field."""
    features = []
    bad = []
    for i, f in enumerate(msg.features):
        type_ = TYPE_FROM.get(f.type)
        if type_ is None:
            bad.append(f"feature_set.features[{i}].type: {f.type!r} must be set (FLOAT, INT, ...)")
            continue
        default = from_value(f.default_value) if f.HasField("default_value") else None
        features.append(
            Feature(f.name, type_, from_transform(f.transform, type_), default, f.source)
        )
    if bad:
        raise errors.InvalidArgument("; ".join(bad))
    ttl = from_duration(msg.ttl, "feature_set.ttl") if msg.HasField("ttl") else None
    return FeatureSet(
        name=msg.name,
        entity_key=msg.entity_key,
        features=tuple(features),
        ttl_seconds=ttl,
        description=msg.description,
        aggregates=tuple(msg.aggregates),
    )


def to_feature_set(fs: FeatureSet) -> features_pb2.FeatureSet:
    msg = features_pb2.FeatureSet(
        name=fs.name,
        version=fs.version,
        entity_key=fs.entity_key,
        description=fs.description,
        aggregates=fs.aggregates,
    )
    for f in fs.features:
        feature = msg.features.add(
            name=f.name, type=TYPE_TO[f.type], transform=to_transform(f.transform), source=f.source
        )  # type: ignore[arg-type]
        if f.default is not None:
            feature.default_value.CopyFrom(to_value(f.default))
    if fs.ttl_seconds is not None:
        msg.ttl.FromTimedelta(dt.timedelta(seconds=fs.ttl_seconds))
    msg.create_time.FromNanoseconds(int(fs.create_time * 1e9))
    return msg


# -- rows -----------------------------------------------------------------------------------------


def from_rows(rows: Any, field: str = "rows") -> list[tuple[str, dict, int | None]]:
    """(entity_id, values, event_us or None) per row, values merged from ``values`` and the typed
    maps; a value with no kind set, or a name given twice, is refused naming the field."""
    out: list[tuple[str, dict, int | None]] = []
    bad: list[str] = []
    for i, row in enumerate(rows):
        numbers = row.numbers
        # Not dict(numbers): on a upb map that goes through the Mapping mixins' Python-level
        # keys(), and costs 0.5-0.8 ms more per 1,000 rows of 10 numbers than this.
        values = {name: numbers[name] for name in numbers}
        if len(row.texts) or len(row.flags) or len(row.values):
            values = _merge_row_values(row, values, f"{field}[{i}]", bad)
        event_us = (
            timestamp_us(row.event_time, f"{field}[{i}].event_time")
            if row.HasField("event_time")
            else None
        )
        out.append((row.entity_id, values, event_us))
    if bad:
        raise errors.InvalidArgument("; ".join(bad))
    return out


def from_request_rows(request: Any) -> list[tuple[str, dict, int | None]]:
    """Every row of a WriteFeaturesRequest: the per-row messages, then the columnar batch."""
    rows = from_rows(request.rows)
    if request.HasField("columns"):
        rows += from_columns(request.columns)
    return rows


def from_columns(cols: Any, field: str = "columns") -> list[tuple[str, dict, int | None]]:
    """Rows from a NumericColumns batch: one numpy view of the matrix instead of a protobuf map
    per row (the per-row maps cost more than the durable write itself). NaN cells are missing."""
    n, names = len(cols.entity_ids), list(cols.names)
    if len(set(names)) != len(names):
        raise errors.invalid(f"{field}.names", names, "names must be unique")
    values = from_tensor(cols.values, f"{field}.values")
    if values.dtype.kind != "f":
        raise errors.invalid(
            f"{field}.values.dtype", str(values.dtype), "must be FLOAT64 or FLOAT32"
        )
    if values.shape != (n, len(names)):
        raise errors.invalid(
            f"{field}.values.shape", list(values.shape),
            f"must be [{n}, {len(names)}] (len(entity_ids) x len(names))",
        )  # fmt: skip
    times = list(cols.event_time_us)
    if times and len(times) != n:
        raise errors.invalid(
            f"{field}.event_time_us", f"{len(times)} entries", f"must be empty or have {n}"
        )
    matrix = values.astype(np.float64, copy=False).tolist()
    if np.isnan(values).any():
        dicts = [{k: v for k, v in zip(names, row, strict=True) if v == v} for row in matrix]
    else:
        dicts = [dict(zip(names, row, strict=True)) for row in matrix]
    event_us: list[int | None] = list(times) if times else [None] * n
    return list(zip(cols.entity_ids, dicts, event_us, strict=True))


def _merge_row_values(row: Any, values: dict, where: str, bad: list[str]) -> dict:
    for typed in (row.texts, row.flags):
        for name, v in typed.items():
            if name in values:
                bad.append(f"{where}: {name!r} is given twice")
            values[name] = v
    given = row.values
    for name in given:  # not .items(): a protobuf map's items() is a slow Python-level view
        v = given[name]
        kind = v.WhichOneof("kind")
        if kind is None:
            bad.append(f"{where}.values[{name!r}]: no value set (number, text or flag)")
        elif name in values:
            bad.append(f"{where}: {name!r} is given twice")
        else:
            values[name] = getattr(v, kind)
    return values


def from_timestamp(msg: Any, field: str = "as_of") -> dt.datetime:
    """A request's Timestamp as a datetime; out of range is refused naming ``field``, by the
    same check as a row's ``event_time`` (``convert.timestamp_us``)."""
    return convert.from_timestamp(msg, field)


def to_stored_value(v: StoredValue) -> features_pb2.StoredValue:
    if v.value is None:
        return features_pb2.StoredValue(missing=True)
    msg = features_pb2.StoredValue(value=to_value(v.value))
    if v.event_us is not None:
        msg.event_time.FromMicroseconds(v.event_us)
    if v.staleness_us is not None:
        msg.staleness.FromMicroseconds(v.staleness_us)
    return msg


def to_entity_features(e: EntityFeatures) -> features_pb2.EntityFeatures:
    msg = features_pb2.EntityFeatures(entity_id=e.entity_id)
    for name, v in e.values.items():
        msg.values[name].CopyFrom(to_stored_value(v))
    return msg


def to_feature_vector(v: FeatureVector) -> features_pb2.FeatureVector:
    values = np.asarray(v.values, dtype=np.float32)
    return features_pb2.FeatureVector(
        feature_set=v.feature_set,
        version=v.version,
        slot_names=v.slot_names,
        vector=to_tensor(values, name=v.feature_set),
        values=[x if math.isfinite(x) else 0.0 for x in values.tolist()],
    )

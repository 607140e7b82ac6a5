"""Proto <-> domain conversion of feature sets and rows, both ways."""

from __future__ import annotations

import pytest

from llmopt import errors
from llmopt.api import convert_features as cf
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
    Standardize,
)
from llmopt.gen.llmopt.v1 import common_pb2
from llmopt.gen.llmopt.v1 import features_pb2 as F

EVERY_TRANSFORM = FeatureSet(
    name="s",
    entity_key="user_id",
    features=(
        Feature("a", FeatureType.FLOAT, Identity(), default=1.5),
        Feature("b", FeatureType.INT, Log1p(), default=3),
        Feature("c", FeatureType.FLOAT, Standardize(1.0, 2.0)),
        Feature("d", FeatureType.FLOAT, MinMax(-1.0, 1.0)),
        Feature("e", FeatureType.FLOAT, Clip(0.0, 5.0)),
        Feature("f", FeatureType.CATEGORY, OneHot(("x", "y")), default="x"),
        Feature("g", FeatureType.STRING, Hash(16)),
        Feature("h", FeatureType.INT, Cyclical(24.0), source="context.hour_of_day"),
        Feature("i", FeatureType.BOOL, Identity(), default=True),
    ),
    ttl_seconds=90.5,
    description="every transform",
    aggregates=("a",),
)


def test_feature_set_round_trips():
    msg = cf.to_feature_set(EVERY_TRANSFORM)
    back = cf.from_feature_set(F.FeatureSet.FromString(msg.SerializeToString()))
    assert back.same_definition(EVERY_TRANSFORM)
    assert back.features[1].default == 3.0 and back.features[8].default is True
    assert msg.features[2].transform.standardize.std == 2.0
    assert list(msg.features[5].transform.one_hot.vocabulary) == ["x", "y"]


def test_unset_type_is_refused_naming_the_feature():
    msg = F.FeatureSet(name="s", entity_key="k", features=[F.Feature(name="a")])
    with pytest.raises(errors.InvalidArgument, match=r"features\[0\]\.type"):
        cf.from_feature_set(msg)


def test_rows_from_every_value_form():
    rows = [
        F.FeatureRow(entity_id="u", numbers={"a": 1.0}, texts={"f": "x"}, flags={"i": True}),
        F.FeatureRow(entity_id="v", values={"a": F.FeatureValue(number=2.0)}),
    ]
    rows[1].event_time.FromMicroseconds(1_500_000)
    assert cf.from_rows(rows) == [
        ("u", {"a": 1.0, "f": "x", "i": True}, None),
        ("v", {"a": 2.0}, 1_500_000),
    ]


def test_rows_with_duplicate_or_empty_values_are_refused():
    rows = [
        F.FeatureRow(entity_id="u", numbers={"a": 1.0}, values={"a": F.FeatureValue(number=2)}),
        F.FeatureRow(entity_id="v", values={"b": F.FeatureValue()}),
    ]
    with pytest.raises(errors.InvalidArgument) as info:
        cf.from_rows(rows)
    assert "rows[0]: 'a' is given twice" in str(info.value)
    assert "rows[1].values['b']" in str(info.value)


def test_values_round_trip():
    for value in (1.5, "text", True, False):
        assert cf.from_value(cf.to_value(value)) == value


@pytest.mark.parametrize("seconds", [2**62, 10**12, -(10**12)])
def test_as_of_outside_the_timestamp_range_is_refused(seconds: int) -> None:
    msg = F.GetFeaturesRequest(feature_set="s", entity_ids=["u"])
    msg.as_of.seconds = seconds
    with pytest.raises(errors.InvalidArgument, match=rf"^as_of: '{seconds}s 0ns'"):
        cf.from_timestamp(msg.as_of)


@pytest.mark.parametrize("seconds", [2**62, 10**12, -(10**12)])
def test_event_time_outside_the_timestamp_range_is_refused(seconds: int) -> None:
    msg = F.WriteFeaturesRequest(feature_set="s")
    row = msg.rows.add(entity_id="u")
    row.numbers["a"] = 1.0
    row.event_time.seconds = seconds
    with pytest.raises(errors.InvalidArgument, match=r"^rows\[0\]\.event_time: "):
        cf.from_request_rows(msg)


@pytest.mark.parametrize("seconds", [2**62, -(2**62), 315_576_000_001])
def test_ttl_that_no_duration_can_hold_is_refused(seconds: int) -> None:
    msg = cf.to_feature_set(EVERY_TRANSFORM)
    msg.ttl.seconds = seconds
    with pytest.raises(errors.InvalidArgument, match=r"^feature_set\.ttl: "):
        cf.from_feature_set(msg)


@pytest.mark.parametrize("shape", [[2**62, 0], [0, 2**62], [2**32, 2**32]], ids=str)
def test_columns_with_unrepresentable_shape_are_refused(shape: list[int]) -> None:
    msg = F.WriteFeaturesRequest(feature_set="s")
    msg.columns.names.append("a")
    msg.columns.values.dtype = common_pb2.FLOAT64
    msg.columns.values.shape.extend(shape)
    with pytest.raises(errors.InvalidArgument, match=r"^columns\.values\.shape: "):
        cf.from_request_rows(msg)

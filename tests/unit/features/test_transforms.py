"""Inverse transforms, fitting and set validation."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llmopt import errors
from llmopt.features.fitting import fit
from llmopt.features.spec import (
    Clip,
    Cyclical,
    Feature,
    FeatureSet,
    FeatureType,
    Identity,
    Log1p,
    MinMax,
    OneHot,
    Standardize,
)

finite = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False)
positive = st.floats(min_value=1e-3, max_value=1e3)


def close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)


@settings(max_examples=50, deadline=None)
@given(x=finite)
def test_identity_inverse(x):
    t = Identity()
    assert t.inverse(t.apply(x)) == x


@settings(max_examples=50, deadline=None)
@given(x=st.floats(min_value=0.0, max_value=1e6))
def test_log1p_inverse_on_its_domain(x):
    t = Log1p()
    assert close(t.inverse(t.apply(x)), x)


@settings(max_examples=50, deadline=None)
@given(x=finite, mean=finite, std=positive)
def test_standardize_inverse(x, mean, std):
    t = Standardize(mean, std)
    assert math.isclose(t.inverse(t.apply(x)), x, rel_tol=1e-9, abs_tol=1e-6)


@settings(max_examples=50, deadline=None)
@given(x=finite, lo=finite, width=positive)
def test_minmax_inverse(x, lo, width):
    t = MinMax(lo, lo + width)
    assert math.isclose(t.inverse(t.apply(x)), x, rel_tol=1e-9, abs_tol=1e-6)


@settings(max_examples=50, deadline=None)
@given(lo=finite, width=positive, frac=st.floats(min_value=0.0, max_value=1.0))
def test_clip_inverse_on_its_range(lo, width, frac):
    t = Clip(lo, lo + width)
    x = min(lo + frac * width, lo + width)
    assert t.inverse(t.apply(x)) == x


@settings(max_examples=50, deadline=None)
@given(period=st.floats(min_value=1.0, max_value=1e4), frac=st.floats(0.0, 0.999))
def test_cyclical_inverse_on_one_period(period, frac):
    t = Cyclical(period)
    x = frac * period
    assert math.isclose(t.inverse(t.apply(x)), x, rel_tol=1e-9, abs_tol=1e-7 * period)


@settings(max_examples=50, deadline=None)
@given(
    vocab=st.lists(st.text(min_size=1, max_size=5), min_size=1, max_size=8, unique=True),
    data=st.data(),
)
def test_one_hot_inverse_for_known_categories(vocab, data):
    t = OneHot(tuple(vocab))
    x = data.draw(st.sampled_from(vocab))
    assert t.inverse_text(t.apply_text(x)) == x
    assert t.inverse_text(t.apply_text("\x00never")) is None


def unfitted_set():
    return FeatureSet(
        "s",
        "id",
        (
            Feature("x", FeatureType.FLOAT, Standardize()),
            Feature("y", FeatureType.INT, MinMax()),
            Feature("c", FeatureType.CATEGORY, OneHot()),
            Feature("z", FeatureType.FLOAT, Identity()),
        ),
    )


ROWS = [
    {"x": 1.0, "y": 10, "c": "b"},
    {"x": 2.0, "y": 30, "c": "a"},
    {"x": 3.0, "c": "b"},
    {"x": 6.0, "y": 20, "c": "c"},
    {"y": 20, "c": "a"},
]


def test_fitting_computes_the_parameters():
    fitted = fit(unfitted_set(), ROWS).validate()
    x, y, c, z = (f.transform for f in fitted.features)
    assert x == Standardize(3.0, math.sqrt((4 + 1 + 0 + 9) / 4))
    assert y == MinMax(10.0, 30.0)
    assert c == OneHot(("a", "b", "c"))  # ties by count broken by value
    assert z == Identity()


def test_fitting_is_deterministic_whatever_the_row_order():
    a = fit(unfitted_set(), ROWS)
    b = fit(unfitted_set(), list(reversed(ROWS)))
    assert a == b


def test_fitting_constant_columns_gives_usable_parameters():
    fitted = fit(unfitted_set(), [{"x": 2.0, "y": 5, "c": "q"}] * 3).validate()
    assert fitted.features[0].transform == Standardize(2.0, 1.0)
    assert fitted.features[1].transform == MinMax(5.0, 6.0)


def test_fitting_without_data_is_a_failed_precondition():
    with pytest.raises(errors.FailedPrecondition, match="features\\[0\\]"):
        fit(unfitted_set(), [])


def test_unfitted_transforms_are_refused_unless_fitting():
    with pytest.raises(errors.InvalidArgument) as info:
        unfitted_set().validate()
    message = str(info.value)
    for i in (0, 1, 2):
        assert f"features[{i}].transform" in message
    unfitted_set().validate(allow_unfitted=True)


def test_validation_lists_every_problem():
    fs = FeatureSet(
        "bad name!",
        "",
        (
            Feature("a", FeatureType.STRING, Identity()),
            Feature("a", FeatureType.FLOAT, Clip(2.0, 1.0)),
            Feature("c", FeatureType.FLOAT, Cyclical(0.0), default="x"),
            Feature("d", FeatureType.FLOAT, source="request.x"),
        ),
        ttl_seconds=-1.0,
        aggregates=("nope",),
    )
    with pytest.raises(errors.InvalidArgument) as info:
        fs.validate()
    message = str(info.value)
    for needle in (
        "feature_set.name",
        "feature_set.entity_key",
        "feature_set.ttl",
        "features[0].transform",
        "features[1].name",
        "features[1].transform",
        "features[2].transform.period",
        "features[2].default_value",
        "features[3].source",
        "aggregates[0]",
    ):
        assert needle in message, needle

"""The compiled plan against hand-computed rows; the default vector against its definition."""

from __future__ import annotations

import math
import zlib

import numpy as np
import pytest

from llmopt.features.context import (
    DEFAULT_CONTEXT_SLOTS,
    OutputLength,
    RequestContext,
    default_context,
)
from llmopt.features.plan import compile_plan, default_context_plan
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

# Kernel tests: CI also runs them against the bounds-checked build (make test-kernels-debug).
pytestmark = pytest.mark.kernels

F32_MAX = float(np.finfo(np.float32).max)


def stored(**values):
    return {k: (v, 0, 0) for k, v in values.items()}


def run(features, values, context=None, cutoff=-(2**63)):
    fs = FeatureSet("s", "id", tuple(features)).validate()
    plan = compile_plan(fs)
    return plan.slot_names, plan.vectorize(values, context, cutoff).tolist()


def f32(x: float) -> float:
    return float(np.float32(x))


NUMERIC = [
    # (transform, input, expected output slots)
    (Identity(), 3.5, [3.5]),
    (Log1p(), 9.0, [f32(math.log1p(9.0))]),
    (Log1p(), -5.0, [0.0]),  # clamped at 0 before log1p
    (Standardize(10.0, 4.0), 2.0, [-2.0]),
    (MinMax(2.0, 6.0), 5.0, [0.75]),
    (MinMax(2.0, 6.0), 10.0, [2.0]),  # not clipped
    (Clip(-1.0, 1.0), 7.0, [1.0]),
    (Clip(-1.0, 1.0), -7.0, [-1.0]),
    (Clip(-1.0, 1.0), 0.25, [0.25]),
    (Cyclical(24.0), 6.0, [f32(math.sin(math.pi / 2)), f32(math.cos(math.pi / 2))]),
    (Cyclical(7.0), 0.0, [0.0, 1.0]),
]


@pytest.mark.parametrize(("transform", "x", "expected"), NUMERIC)
def test_numeric_transforms_match_hand_computed(transform, x, expected):
    _, row = run([Feature("x", FeatureType.FLOAT, transform)], stored(x=x))
    assert row == expected


@pytest.mark.parametrize(("transform", "x", "expected"), NUMERIC)
def test_numeric_transform_of_missing_nan_and_inf_reads_the_default(transform, x, expected):
    feature = Feature("x", FeatureType.FLOAT, transform, default=x)
    _, with_default = run([feature], {})
    assert with_default == expected
    for bad in (math.nan, math.inf, -math.inf):
        _, row = run([feature], stored(x=bad))
        assert row == expected


def test_missing_numeric_without_default_reads_zero():
    _, row = run([Feature("x", FeatureType.FLOAT, Standardize(1.0, 2.0))], {})
    assert row == [-0.5]  # (0 - 1) / 2


def test_extreme_values_are_clamped_to_float32_and_never_nan():
    features = [
        Feature("a", FeatureType.FLOAT, Identity()),
        Feature("b", FeatureType.FLOAT, Standardize(0.0, 1e-300)),
        Feature("c", FeatureType.FLOAT, Identity()),
        Feature("d", FeatureType.FLOAT, Log1p()),
    ]
    _, row = run(features, stored(a=1e300, b=-1.0, c=-1e39, d=1e308))
    assert row == [F32_MAX, -F32_MAX, -F32_MAX, f32(math.log1p(1e308))]
    assert all(math.isfinite(x) for x in row)


def test_one_hot_known_unknown_missing_and_default():
    vocab = OneHot(("free", "pro", "team"))
    plain = Feature("tier", FeatureType.CATEGORY, vocab)
    with_default = Feature("tier", FeatureType.CATEGORY, vocab, default="team")
    names, row = run([plain], stored(tier="pro"))
    assert names == ("tier=free", "tier=pro", "tier=team", "tier=<oov>")
    assert row == [0.0, 1.0, 0.0, 0.0]
    assert run([plain], stored(tier="enterprise"))[1] == [0.0, 0.0, 0.0, 1.0]
    assert run([plain], stored(tier=""))[1] == [0.0, 0.0, 0.0, 1.0]
    assert run([plain], {})[1] == [0.0, 0.0, 0.0, 0.0]
    assert run([with_default], {})[1] == [0.0, 0.0, 1.0, 0.0]


def test_hash_buckets_are_crc32_and_stable():
    feature = Feature("country", FeatureType.STRING, Hash(8))
    names, row = run([feature], stored(country="FR"))
    assert names == tuple(f"country#{i}" for i in range(8))
    expected = [0.0] * 8
    expected[zlib.crc32(b"FR") % 8] = 1.0
    assert row == expected
    assert run([feature], {})[1] == [0.0] * 8
    unicode_row = run([feature], stored(country="日本"))[1]
    assert unicode_row.index(1.0) == zlib.crc32("日本".encode()) % 8


def test_layout_of_a_mixed_set_and_context_sources():
    features = [
        Feature("age", FeatureType.INT, Standardize(30.0, 10.0)),
        Feature("tier", FeatureType.CATEGORY, OneHot(("a", "b"))),
        Feature("hour", FeatureType.INT, Cyclical(24.0), source="context.hour_of_day"),
        Feature("tokens", FeatureType.INT, Log1p(), source="context.input_length"),
        Feature("score", FeatureType.FLOAT, Clip(0.0, 1.0), source="context.features.score"),
        Feature("tag", FeatureType.STRING, OneHot(("x",)), source="context.metadata.tag"),
        Feature("size", FeatureType.FLOAT, Identity(), source="context.metadata.size"),
    ]
    ctx = RequestContext(
        hour_of_day=18,
        input_length=99,
        features={"score": 3.0},
        metadata={"tag": "y", "size": "2.5"},
    )
    names, row = run(features, stored(age=50, tier="b"), ctx)
    assert names == (
        "age",
        "tier=a",
        "tier=b",
        "tier=<oov>",
        "hour_sin",
        "hour_cos",
        "tokens",
        "score",
        "tag=x",
        "tag=<oov>",
        "size",
    )
    angle = 2.0 * math.pi * 18.0 / 24.0
    assert row == [
        2.0,
        0.0,
        1.0,
        0.0,
        f32(math.sin(angle)),
        f32(math.cos(angle)),
        f32(math.log1p(99.0)),
        1.0,
        0.0,
        1.0,
        2.5,
    ]
    # Without a context every context feature is missing: numeric 0 -> transform, text no slot.
    _, row = run(features, stored(age=50, tier="b"), None)
    assert row == [2.0, 0.0, 1.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0]


def test_expired_values_read_as_missing():
    features = [Feature("x", FeatureType.FLOAT, Identity(), default=-1.0)]
    values = {"x": (5.0, 100, 1)}
    assert run(features, values, cutoff=100)[1] == [5.0]
    assert run(features, values, cutoff=101)[1] == [-1.0]


# -- the default 10-dim context vector -----------------------------------------------------------

TASKS = {"classification": 0.0, "generation": 0.33, "extraction": 0.67, "summarization": 1.0}
OUTPUTS = {OutputLength.SHORT: 0.0, OutputLength.MEDIUM: 0.5, OutputLength.LONG: 1.0}


def reference(input_length, output, priority, hour, day, task):
    """DESIGN.md's definition, in plain Python."""
    return [
        min(math.log(input_length + 1) / 10, 1),
        OUTPUTS.get(output, 0.5),
        priority / 10,
        math.cos(2 * math.pi * hour / 24),
        math.sin(2 * math.pi * hour / 24),
        math.cos(2 * math.pi * day / 7),
        math.sin(2 * math.pi * day / 7),
        TASKS.get(task, 0.5),
        1.0,
        0.0,
    ]


CASES = [
    (0, OutputLength.SHORT, 1, 0, 0, "classification"),
    (100, OutputLength.MEDIUM, 5, 13, 3, "generation"),
    (5000, OutputLength.LONG, 10, 23, 6, "extraction"),
    (10**9, OutputLength.UNSPECIFIED, 7, 7, 5, "summarization"),
    (22025, OutputLength.LONG, 2, 12, 1, "poetry"),
]


@pytest.mark.parametrize("case", CASES)
def test_default_vector_is_bit_exact_with_its_definition(case):
    n, output, priority, hour, day, task = case
    ctx = RequestContext(
        task_type=task,
        input_length=n,
        output_length=output,
        priority=priority,
        hour_of_day=hour,
        day_of_week=day,
    )
    expected = reference(*case)
    assert default_context(ctx).tolist() == expected
    plan = default_context_plan()
    out = np.empty(10, dtype=np.float32)
    plan.run_facts(ctx.facts(), out)
    assert out.tolist() == np.asarray(expected, dtype=np.float32).tolist()
    assert len(DEFAULT_CONTEXT_SLOTS) == 10

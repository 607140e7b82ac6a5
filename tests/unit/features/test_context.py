import datetime as dt
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from llmopt import errors
from llmopt.features.context import (
    DEFAULT_CONTEXT_SLOTS,
    OutputLength,
    RequestContext,
    default_context,
    default_context_batch,
)

# Kernel tests: CI also runs them against the bounds-checked build (make test-kernels-debug).
pytestmark = pytest.mark.kernels

TASKS = {"classification": 0.0, "generation": 0.33, "extraction": 0.67, "summarization": 1.0}
OUTPUT = {
    OutputLength.SHORT: 0.0,
    OutputLength.MEDIUM: 0.5,
    OutputLength.LONG: 1.0,
    OutputLength.UNSPECIFIED: 0.5,
}


def reference(ctx: RequestContext) -> list[float]:
    """DESIGN.md's definition in plain Python."""
    return [
        min(math.log(ctx.input_length + 1) / 10, 1),
        OUTPUT[ctx.output_length],
        ctx.priority / 10,
        math.cos(2 * math.pi * ctx.hour_of_day / 24),
        math.sin(2 * math.pi * ctx.hour_of_day / 24),
        math.cos(2 * math.pi * ctx.day_of_week / 7),
        math.sin(2 * math.pi * ctx.day_of_week / 7),
        TASKS.get(ctx.task_type, 0.5),
        1.0,
        0.0,
    ]


contexts = st.builds(
    RequestContext,
    task_type=st.sampled_from([*TASKS, "chat", ""]),
    input_length=st.integers(0, 10**9),
    output_length=st.sampled_from(list(OutputLength)),
    priority=st.integers(1, 10),
    hour_of_day=st.integers(0, 23),
    day_of_week=st.integers(0, 6),
)


@given(contexts)
def test_kernel_matches_the_definition_bit_for_bit(ctx):
    assert default_context(ctx).tolist() == reference(ctx)


@given(st.lists(contexts, min_size=0, max_size=20))
def test_batch_equals_one_by_one(ctxs):
    batch = default_context_batch(ctxs)
    assert batch.shape == (len(ctxs), len(DEFAULT_CONTEXT_SLOTS))
    for row, ctx in zip(batch, ctxs, strict=True):
        assert row.tolist() == reference(ctx)


def test_long_inputs_saturate_at_one():
    v = default_context(RequestContext(input_length=10**12, hour_of_day=0, day_of_week=0))
    assert v[0] == 1.0


def test_unset_time_fields_read_the_clock():
    now = dt.datetime(2026, 11, 25, 17, 0, tzinfo=dt.UTC)  # a Wednesday
    v = default_context(RequestContext(), now=now)
    assert v[3] == pytest.approx(math.cos(2 * math.pi * 17 / 24))
    assert v[5] == pytest.approx(math.cos(2 * math.pi * 2 / 7))


def test_the_request_path_reads_the_clock_as_the_python_path_does():
    ctx = RequestContext(task_type="qa", input_length=42)
    for _ in range(3):  # an hour may turn between the two readings: then read again
        before = dt.datetime.now(dt.UTC)
        fast = default_context(ctx)
        if dt.datetime.now(dt.UTC).hour == before.hour:
            break
    assert fast.tolist() == default_context(ctx, now=before).tolist()
    assert fast.dtype == np.float64 and fast.flags.c_contiguous and fast.flags.writeable


@pytest.mark.parametrize(
    ("task_type", "code"),
    [("  Summarization ", 1.0), ("EXTRACTION", 0.67), ("chat", 0.5), ("", 0.5)],
)
def test_task_types_are_read_trimmed_and_case_blind_on_both_paths(task_type, code):
    ctx = RequestContext(task_type=task_type, hour_of_day=1, day_of_week=1)
    assert default_context(ctx)[7] == code
    assert default_context(ctx, now=dt.datetime.now(dt.UTC))[7] == code


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"input_length": -1}, "context.input_length"),
        ({"priority": 0}, "context.priority"),
        ({"priority": 11}, "context.priority"),
        ({"hour_of_day": 24}, "context.hour_of_day"),
        ({"day_of_week": 7}, "context.day_of_week"),
    ],
)
def test_out_of_range_fields_are_named(kwargs, field):
    with pytest.raises(errors.InvalidArgument, match=field):
        default_context(RequestContext(**kwargs))


def test_kernel_refuses_wrong_output_length():
    from llmopt.native.context import default_context_vector

    with pytest.raises(ValueError, match="length 10"):
        default_context_vector(1, 0.5, 5, 0, 0, 0.5, np.empty(9))

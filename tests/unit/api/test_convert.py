import numpy as np
import pytest
from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from llmopt import errors
from llmopt.api.convert import (
    from_duration,
    from_request_context,
    from_tensor,
    from_timestamp,
    timestamp_us,
    to_request_context,
    to_tensor,
)
from llmopt.features.context import OutputLength, RequestContext
from llmopt.gen.llmopt.v1 import common_pb2
from llmopt.tensors import NUMPY_BY_DTYPE

dtypes = st.sampled_from(sorted({d.str for d in NUMPY_BY_DTYPE.values()}))


@given(dtypes.flatmap(lambda d: hnp.arrays(np.dtype(d), hnp.array_shapes(min_dims=0, max_dims=3))))
def test_tensor_round_trip(array):
    back = from_tensor(to_tensor(array, "x"))
    assert back.dtype == array.dtype.newbyteorder("<") or back.dtype == array.dtype
    np.testing.assert_array_equal(back, array)


def test_tensor_bytes_must_match_shape():
    t = common_pb2.Tensor(name="x", dtype=common_pb2.FLOAT32, shape=[2, 3], raw_data=b"\0" * 20)
    with pytest.raises(errors.InvalidArgument, match=r"tensor\['x'\].raw_data.*24 bytes"):
        from_tensor(t)


def test_tensor_dtype_must_be_set():
    with pytest.raises(errors.InvalidArgument, match="dtype"):
        from_tensor(common_pb2.Tensor(name="x", shape=[1], raw_data=b"\0"))


def test_negative_dimension_refused():
    t = common_pb2.Tensor(name="x", dtype=common_pb2.UINT8, shape=[-1], raw_data=b"")
    with pytest.raises(errors.InvalidArgument, match="shape"):
        from_tensor(t)


def test_request_context_round_trip():
    ctx = RequestContext(
        user_id="u",
        task_type="generation",
        input_length=42,
        output_length=OutputLength.LONG,
        priority=7,
        region="eu",
        hour_of_day=0,
        day_of_week=6,
        language="fr",
        metadata={"a": "b"},
        features={"f": 1.5},
    )
    assert from_request_context(to_request_context(ctx)) == ctx


def test_priority_zero_reads_as_default_and_unset_time_stays_unset():
    ctx = from_request_context(common_pb2.RequestContext())
    assert ctx.priority == 5
    assert ctx.hour_of_day is None and ctx.day_of_week is None


def test_unknown_output_category_is_named():
    msg = common_pb2.RequestContext()
    msg.output_length_category = 9  # type: ignore[assignment]
    with pytest.raises(errors.InvalidArgument, match="output_length_category"):
        from_request_context(msg)


# Shapes numpy cannot hold, whose element count the wire alone would make look like zero or
# wrap around int64 (issue 19): each is refused naming the shape, never reaching ``reshape``.
UNREPRESENTABLE_SHAPES = [[2**62, 0], [0, 2**62], [2**32, 2**32], [2**31, 2**31, 0], [1] * 65]


@pytest.mark.parametrize("shape", UNREPRESENTABLE_SHAPES, ids=str)
def test_unrepresentable_shape_refused_naming_the_shape(shape):
    t = common_pb2.Tensor(name="x", dtype=common_pb2.FLOAT32, shape=shape, raw_data=b"")
    with pytest.raises(errors.InvalidArgument, match=r"tensor\['x'\]\.shape"):
        from_tensor(t)


def test_empty_tensor_with_small_dims_still_converts():
    t = common_pb2.Tensor(name="x", dtype=common_pb2.FLOAT32, shape=[0, 16], raw_data=b"")
    assert from_tensor(t).shape == (0, 16)


@pytest.mark.parametrize(
    ("seconds", "nanos"),
    [(2**62, 0), (10**12, 0), (-(10**12), 0), (0, -1), (0, 10**9)],
)
def test_timestamp_out_of_range_refused_naming_the_field(seconds, nanos):
    ts = Timestamp(seconds=seconds, nanos=nanos)
    with pytest.raises(errors.InvalidArgument, match=rf"^when: '{seconds}s {nanos}ns'"):
        timestamp_us(ts, "when")


def test_timestamp_at_the_ends_of_its_range():
    assert from_timestamp(Timestamp(seconds=253_402_300_799), "t").year == 9999
    assert from_timestamp(Timestamp(seconds=-62_135_596_800), "t").year == 1
    assert timestamp_us(Timestamp(seconds=1, nanos=2500), "t") == 1_000_002


@pytest.mark.parametrize(("seconds", "nanos"), [(2**62, 0), (-(2**62), 0), (1, -1), (-1, 1)])
def test_duration_out_of_range_refused_naming_the_field(seconds, nanos):
    with pytest.raises(errors.InvalidArgument, match=r"^ttl: "):
        from_duration(Duration(seconds=seconds, nanos=nanos), "ttl")


def test_duration_seconds():
    assert from_duration(Duration(seconds=-2, nanos=-500_000_000), "d") == -2.5
    assert from_duration(Duration(seconds=315_576_000_000), "d") == 315_576_000_000


def test_a_huge_value_is_cut_short_in_the_message():
    """A status's details must fit gRPC's metadata limit (16 KiB), or the caller gets
    RESOURCE_EXHAUSTED from its own channel instead of the error."""
    t = common_pb2.Tensor(name="n" * 70_000, dtype=common_pb2.FLOAT32, shape=[2], raw_data=b"")
    with pytest.raises(errors.InvalidArgument) as err:
        from_tensor(t)
    message = str(err.value)
    assert len(message) < 1000
    assert message.startswith("tensor['nnnn") and "characters)" in message
    assert "needs 8 bytes" in message

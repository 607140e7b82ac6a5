import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from llmopt import errors
from llmopt.api.convert import (
    from_request_context,
    from_tensor,
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

"""Conversion between protobuf messages and domain objects: ``to_x`` / ``from_x`` pairs.

Lookup tables, not ``if`` chains. A function that reads a request refuses what the domain type
cannot hold (an unknown enum value, a tensor whose bytes do not fit its shape) with
InvalidArgument naming the field, so servicers stay three lines long; the domain validates the
values themselves where they enter it.
"""

from __future__ import annotations

import datetime as dt
import math
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from llmopt import errors
from llmopt.features.context import OutputLength, RequestContext
from llmopt.gen.llmopt.v1 import common_pb2
from llmopt.tensors import DTYPE_BY_NUMPY, NUMPY_BY_DTYPE, shape_problem

# The range of google.protobuf.Timestamp (0001-01-01 .. 9999-12-31, UTC) and Duration (+-10,000
# years), as the well-known types define them: what ``datetime`` and ``timedelta`` can hold.
TIMESTAMP_SECONDS = (-62_135_596_800, 253_402_300_799)
DURATION_SECONDS = 315_576_000_000
_NANOS = 999_999_999
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)

_OUTPUT_LENGTHS = tuple(OutputLength)  # by enum value: a tuple index is cheaper than a call


def from_request_context(msg: common_pb2.RequestContext, field: str = "context") -> RequestContext:
    """Domain RequestContext from the proto; priority 0 means the default 5. Its ranges are
    checked once, where it is used (``default_context``, ``FeatureService.vector``)."""
    code = msg.output_length_category
    if not 0 <= code < len(_OUTPUT_LENGTHS):
        raise errors.invalid(f"{field}.output_length_category", code, "unknown enum value")
    has = msg.HasField
    return RequestContext(
        user_id=msg.user_id,
        task_type=msg.task_type,
        input_length=msg.input_length,
        output_length=_OUTPUT_LENGTHS[code],
        priority=msg.priority or 5,
        region=msg.region,
        hour_of_day=msg.hour_of_day if has("hour_of_day") else None,
        day_of_week=msg.day_of_week if has("day_of_week") else None,
        language=msg.language,
        metadata=dict(msg.metadata) if msg.metadata else {},
        features=dict(msg.features) if msg.features else {},
    )


def to_request_context(ctx: RequestContext) -> common_pb2.RequestContext:
    msg = common_pb2.RequestContext(
        user_id=ctx.user_id,
        task_type=ctx.task_type,
        input_length=ctx.input_length,
        output_length_category=int(ctx.output_length),  # type: ignore[arg-type]
        priority=ctx.priority,
        region=ctx.region,
        language=ctx.language,
        metadata=ctx.metadata,
        features=ctx.features,
    )
    if ctx.hour_of_day is not None:
        msg.hour_of_day = ctx.hour_of_day
    if ctx.day_of_week is not None:
        msg.day_of_week = ctx.day_of_week
    return msg


def from_tensor(msg: common_pb2.Tensor, field: str = "tensor") -> np.ndarray:
    """A numpy array viewing the tensor's bytes (no copy); shape and byte length are checked."""
    dtype = NUMPY_BY_DTYPE.get(msg.dtype)
    name = f"{field}[{msg.name!r}]" if msg.name else field
    if dtype is None:
        raise errors.invalid(
            f"{name}.dtype",
            common_pb2.DataType.Name(msg.dtype)
            if msg.dtype in common_pb2.DataType.values()
            else msg.dtype,
            "must be a numeric or BOOL data type",
        )
    shape = tensor_shape(msg.shape, dtype.itemsize, f"{name}.shape")
    count = math.prod(shape)
    expected = count * dtype.itemsize
    if len(msg.raw_data) != expected:
        raise errors.invalid(
            f"{name}.raw_data",
            f"{len(msg.raw_data)} bytes",
            f"shape {list(shape)} of {dtype.name} needs {expected} bytes",
        )
    return np.frombuffer(msg.raw_data, dtype=dtype).reshape(shape)


def to_tensor(array: np.ndarray, name: str = "") -> common_pb2.Tensor:
    """A Tensor message holding the array's little-endian row-major bytes."""
    dtype = DTYPE_BY_NUMPY.get(array.dtype.newbyteorder("="))
    if dtype is None:
        raise errors.invalid("tensor.dtype", str(array.dtype), "has no DataType equivalent")
    data = np.ascontiguousarray(array, dtype=NUMPY_BY_DTYPE[dtype])
    return common_pb2.Tensor(name=name, dtype=dtype, shape=data.shape, raw_data=data.tobytes())  # type: ignore[arg-type]


def tensor_shape(dims: Sequence[int], itemsize: int, field: str) -> tuple[int, ...]:
    """The shape of a request's tensor, refused naming ``field`` unless numpy can hold it (the
    one shape check of every tensor a request carries, ``llmopt.tensors.shape_problem``)."""
    shape = tuple(dims)
    problem = shape_problem(shape, itemsize)
    if problem is not None:
        raise errors.invalid(field, list(shape), problem)  # a long shape is cut short
    return shape


# -- well-known types -----------------------------------------------------------------------------


def timestamp_us(msg: Any, field: str) -> int:
    """Microseconds since the epoch of a Timestamp, refused naming ``field`` outside the range a
    Timestamp may hold (so that any ``datetime`` made of it exists)."""
    lo, hi = TIMESTAMP_SECONDS
    if not (lo <= msg.seconds <= hi and 0 <= msg.nanos <= _NANOS):
        raise errors.invalid(
            field,
            f"{msg.seconds}s {msg.nanos}ns",
            "a Timestamp between 0001-01-01 and 9999-12-31 (nanos in 0..999999999)",
        )
    return int(msg.seconds * 1_000_000 + msg.nanos // 1000)


def from_timestamp(msg: Any, field: str) -> dt.datetime:
    """The aware UTC datetime of a Timestamp (``timestamp_us``'s check)."""
    return _EPOCH + dt.timedelta(microseconds=timestamp_us(msg, field))


def from_duration(msg: Any, field: str) -> float:
    """Seconds of a Duration, refused naming ``field`` outside the range a Duration may hold
    (+-10,000 years, nanos of the seconds' sign), which is also what a ``timedelta`` holds."""
    seconds, nanos = msg.seconds, msg.nanos
    if not (
        -DURATION_SECONDS <= seconds <= DURATION_SECONDS
        and -_NANOS <= nanos <= _NANOS
        and (seconds == 0 or nanos == 0 or (seconds < 0) == (nanos < 0))
    ):
        raise errors.invalid(
            field,
            f"{seconds}s {nanos}ns",
            f"a Duration within +-{DURATION_SECONDS} s, nanos of the same sign as seconds",
        )
    return float(seconds + nanos / 1e9)


def deadline_of(context: Any) -> float | None:
    """The call's deadline as ``time.monotonic()`` seconds; None when it has none."""
    remaining = context.time_remaining() if context is not None else None
    return None if remaining is None else time.monotonic() + remaining

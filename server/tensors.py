"""Tensors as the contract carries them: ``common.proto``'s ``DataType`` and the numpy dtype of
its elements on the wire (row-major, little-endian).

One table for both sides of the wire: the server's converters (``llmopt.api.convert``) and the
client (``llmopt.client.types``) read it. It imports numpy and the generated ``common_pb2``
only, so the client stays free of server modules. STRING has no fixed itemsize (its elements are
length-prefixed UTF-8) and DATA_TYPE_UNSPECIFIED has no elements: neither is in the table.
"""

from __future__ import annotations

import numpy as np

from llmopt.gen.llmopt.v1 import common_pb2

NUMPY_BY_DTYPE: dict[int, np.dtype] = {
    common_pb2.FLOAT32: np.dtype("<f4"),
    common_pb2.FLOAT64: np.dtype("<f8"),
    common_pb2.FLOAT16: np.dtype("<f2"),
    common_pb2.INT8: np.dtype("i1"),
    common_pb2.INT16: np.dtype("<i2"),
    common_pb2.INT32: np.dtype("<i4"),
    common_pb2.INT64: np.dtype("<i8"),
    common_pb2.UINT8: np.dtype("u1"),
    common_pb2.UINT16: np.dtype("<u2"),
    common_pb2.UINT32: np.dtype("<u4"),
    common_pb2.UINT64: np.dtype("<u8"),
    common_pb2.BOOL: np.dtype("?"),
}
"""DataType -> the numpy dtype of its elements on the wire."""

DTYPE_BY_NUMPY: dict[np.dtype, int] = {v.newbyteorder("="): k for k, v in NUMPY_BY_DTYPE.items()}
"""numpy dtype in native byte order (what an array in memory has) -> DataType."""

INT64_MAX = 2**63 - 1
MAX_DIMS = 64
"""The most dimensions a tensor may have (numpy's own limit)."""


def shape_problem(shape: tuple[int, ...], itemsize: int) -> str | None:
    """Why ``shape`` cannot be an array of elements of ``itemsize`` bytes, or None if it can.

    Every dimension is >= 0 and within int64, and so is the byte size of the non-empty
    dimensions: numpy's own rule, which refuses ``[2**62, 0]`` as well as ``[2**32, 2**32]``
    (a product that wraps around int64 would otherwise look like zero elements).

    >>> shape_problem((2, 3), 4) is None
    True
    >>> shape_problem((0, 2**62), 4)
    'the tensor is too big: dimensions times the element size exceed int64'
    """
    if len(shape) > MAX_DIMS:
        return f"at most {MAX_DIMS} dimensions"
    size = itemsize
    for d in shape:
        if d < 0:
            return "dimensions must be >= 0"
        if d:
            size *= d
            if size > INT64_MAX:
                return "the tensor is too big: dimensions times the element size exceed int64"
    return None

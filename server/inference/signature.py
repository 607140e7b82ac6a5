"""A model version's input/output signature and the checks a request must pass before running.

The registry describes tensors as ``TensorSpec(name, dtype, shape, dim_names)`` with numpy dtype
names and -1 for dynamic dimensions; this module turns that (or an onnxruntime session's own
description) into ``IOSpec`` tuples with real ``numpy.dtype`` objects, validates request tensors
against them and builds the warm-up input.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np

from llmopt import errors

# onnxruntime's "tensor(<type>)" element names -> numpy dtype.
NUMPY_BY_ORT_TYPE: dict[str, np.dtype] = {
    "float": np.dtype(np.float32),
    "double": np.dtype(np.float64),
    "float16": np.dtype(np.float16),
    "int8": np.dtype(np.int8),
    "int16": np.dtype(np.int16),
    "int32": np.dtype(np.int32),
    "int64": np.dtype(np.int64),
    "uint8": np.dtype(np.uint8),
    "uint16": np.dtype(np.uint16),
    "uint32": np.dtype(np.uint32),
    "uint64": np.dtype(np.uint64),
    "bool": np.dtype(np.bool_),
    "string": np.dtype(object),
}


@dataclass(frozen=True)
class IOSpec:
    """One named tensor of a signature. ``shape`` uses -1 for a dynamic dimension."""

    name: str
    dtype: np.dtype
    shape: tuple[int, ...]

    @cached_property
    def fixed_dims(self) -> tuple[tuple[int, int], ...]:
        """(axis, size) of every dimension whose size is fixed."""
        return tuple((axis, size) for axis, size in enumerate(self.shape) if size >= 0)


@dataclass(frozen=True)
class Signature:
    inputs: tuple[IOSpec, ...]
    outputs: tuple[IOSpec, ...]

    def input_names(self) -> tuple[str, ...]:
        return tuple(spec.name for spec in self.inputs)

    def output_names(self) -> tuple[str, ...]:
        return tuple(spec.name for spec in self.outputs)


def _dtype(value: Any) -> np.dtype:
    text = str(value)
    if text in ("str", "string", "object", "bytes"):
        return np.dtype(object)
    return np.dtype(text)


def spec_from(tensor: Any) -> IOSpec:
    """IOSpec from anything with ``name``, ``dtype`` (numpy dtype or its name) and ``shape``."""
    shape = tuple(-1 if d is None or int(d) < 0 else int(d) for d in tensor.shape)
    return IOSpec(str(tensor.name), _dtype(tensor.dtype), shape)


NON_TENSOR_TYPES = frozenset({"sequence", "map", "optional"})


def signature_from(inputs: Iterable[Any], outputs: Iterable[Any]) -> Signature:
    """Signature from the registry's TensorSpec lists (or any objects shaped like them); values
    that are not tensors (sequences, maps, optionals) are left out: they are not served."""
    return Signature(
        tuple(spec_from(t) for t in inputs if str(t.dtype) not in NON_TENSOR_TYPES),
        tuple(spec_from(t) for t in outputs if str(t.dtype) not in NON_TENSOR_TYPES),
    )


def _ort_spec(arg: Any) -> IOSpec | None:
    kind: str = arg.type
    if not kind.startswith("tensor(") or kind[7:-1] not in NUMPY_BY_ORT_TYPE:
        return None  # sequences and maps (e.g. skl2onnx's ZipMap) are not served as tensors
    shape = tuple(d if isinstance(d, int) and d >= 0 else -1 for d in arg.shape)
    return IOSpec(arg.name, NUMPY_BY_ORT_TYPE[kind[7:-1]], shape)


def signature_of_session(session: Any) -> Signature:
    """The tensor inputs and outputs an onnxruntime session declares."""
    ins = tuple(s for s in (_ort_spec(a) for a in session.get_inputs()) if s is not None)
    outs = tuple(s for s in (_ort_spec(a) for a in session.get_outputs()) if s is not None)
    return Signature(ins, outs)


def describe(spec: IOSpec) -> str:
    dims = ", ".join("?" if d < 0 else str(d) for d in spec.shape)
    return f"{spec.dtype.name if spec.dtype.kind != 'O' else 'string'}[{dims}]"


def validate_inputs(
    specs: Sequence[IOSpec], inputs: Mapping[str, np.ndarray], field: str = "inputs"
) -> None:
    """Raise InvalidArgument naming the input and what was expected unless ``inputs`` fits."""
    if len(inputs) != len(specs) or any(spec.name not in inputs for spec in specs):
        expected = ", ".join(repr(s.name) for s in specs)
        names = {s.name for s in specs}
        for name in inputs:
            if name not in names:
                raise errors.invalid(field, name, f"unknown input; the model takes {expected}")
        for spec in specs:
            if spec.name not in inputs:
                raise errors.invalid(
                    field, sorted(inputs), f"input {spec.name!r} ({describe(spec)}) is missing"
                )
    for spec in specs:
        array = inputs[spec.name]
        if array.dtype != spec.dtype:
            raise errors.invalid(
                f"{field}[{spec.name!r}].dtype", array.dtype.name, f"expected {describe(spec)}"
            )
        if array.ndim != len(spec.shape):
            raise errors.invalid(
                f"{field}[{spec.name!r}].shape", list(array.shape), f"expected {describe(spec)}"
            )
        for axis, size in spec.fixed_dims:
            if array.shape[axis] != size:
                raise errors.invalid(
                    f"{field}[{spec.name!r}].shape",
                    list(array.shape),
                    f"dimension {axis} must be {size} ({describe(spec)})",
                )


def row_count(inputs: Mapping[str, np.ndarray]) -> int:
    """Rows in a request: the first dimension of its first input (1 for scalars)."""
    for array in inputs.values():
        return int(array.shape[0]) if array.ndim else 1
    return 0


def warm_up_inputs(specs: Sequence[IOSpec]) -> dict[str, np.ndarray]:
    """One row of zeros (empty strings) per input, dynamic dimensions set to 1."""
    feed: dict[str, np.ndarray] = {}
    for spec in specs:
        shape = tuple(1 if d < 0 else d for d in spec.shape)
        if spec.dtype.kind == "O":
            feed[spec.name] = np.full(shape, "", dtype=object)
        else:
            feed[spec.name] = np.zeros(shape, dtype=spec.dtype)
    return feed

"""Validation of uploaded ONNX artifacts and extraction of their input/output signature.

An artifact is accepted when its bytes parse as an ONNX ModelProto, pass ``onnx.checker``, and
open in an onnxruntime CPU session. Each step works from the file so the bytes are never held in
memory twice.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from llmopt import errors
from llmopt.registry.types import TensorSpec

if TYPE_CHECKING:
    import onnx

FIELD = "artifact"


def _reject(path: Path, reason: str) -> errors.InvalidArgument:
    size = path.stat().st_size
    return errors.invalid(FIELD, f"{size} bytes", reason)


def inspect(path: Path) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
    """Validate the ONNX file at ``path``; return its (inputs, outputs) signature.

    Raises InvalidArgument with the parser's, the checker's or onnxruntime's reason.
    """
    import onnx  # imported here so that the CLI, which only talks gRPC, starts fast
    import onnxruntime as ort

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:
        raise _reject(path, f"not an ONNX model: cannot parse it ({exc})") from None
    if not model.graph.node and not model.graph.output:
        raise _reject(path, "not an ONNX model: it has no graph")
    if any(_uses_external_data(t) for t in model.graph.initializer):
        raise _reject(path, "external tensor data is not supported: embed every initializer")
    initializers = {t.name for t in model.graph.initializer}
    inputs = tuple(_spec(v) for v in model.graph.input if v.name not in initializers)
    outputs = tuple(_spec(v) for v in model.graph.output)
    del model
    try:
        onnx.checker.check_model(str(path))
    except Exception as exc:
        raise _reject(path, f"onnx.checker rejected it: {exc}") from None
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    try:
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise _reject(path, f"onnxruntime cannot open it: {exc}") from None
    del session
    return inputs, outputs


def _uses_external_data(tensor: onnx.TensorProto) -> bool:
    import onnx

    return tensor.data_location == onnx.TensorProto.EXTERNAL


def _elem_dtype(elem_type: int) -> str:
    import numpy as np
    import onnx

    if elem_type == onnx.TensorProto.STRING:
        return "string"
    try:
        return np.dtype(onnx.helper.tensor_dtype_to_np_dtype(elem_type)).name
    except Exception:
        return onnx.TensorProto.DataType.Name(elem_type).lower()


def _spec(value: onnx.ValueInfoProto) -> TensorSpec:
    kind = value.type.WhichOneof("value")
    if kind not in ("tensor_type", "sparse_tensor_type"):
        # Sequences, maps and optionals (e.g. a ZipMap output): no tensor shape to report.
        return TensorSpec(value.name, (kind or "unknown").removesuffix("_type"), ())
    tensor = getattr(value.type, kind)
    shape: list[int] = []
    names: list[str] = []
    for dim in tensor.shape.dim:
        if dim.HasField("dim_value"):
            shape.append(int(dim.dim_value))
            names.append("")
        else:
            shape.append(-1)
            names.append(dim.dim_param)
    return TensorSpec(value.name, _elem_dtype(tensor.elem_type), tuple(shape), tuple(names))

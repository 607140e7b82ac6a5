"""Exact explanations of linear ONNX graphs: the graph read as an affine map, coefficient times
the distance from the background mean.

``LinearExplainer.from_onnx`` follows the graph from its one float input to the chosen output,
composing each op as an affine map ``x @ W + b`` in float64: the ai.onnx.ml LinearRegressor,
LinearClassifier (scores, post_transform NONE) and Scaler, and Identity, Cast, Flatten, Reshape
(rows kept), Neg, MatMul, Gemm, Add, Sub, Mul and Div with constant operands. Any other op on the
path, or a constant that is not a row vector, and the graph is not linear: ``None``. Before
answering, the map is checked against onnxruntime on the background, so a graph read wrongly
is never explained (it is ``None`` too).

The helpers below it (the graph's input, rows and background checks, the onnxruntime check) are
shared with ``llmopt.inference.explain.trees``.

>>> import numpy as np
>>> from onnx import TensorProto, helper, numpy_helper
>>> w = numpy_helper.from_array(np.array([[2.0], [-1.0]], np.float32), "W")
>>> graph = helper.make_graph(
...     [helper.make_node("MatMul", ["x", "W"], ["y"])], "g",
...     [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 2])],
...     [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 1])], [w])
>>> model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
>>> model.ir_version = 8
>>> explainer = LinearExplainer.from_onnx(model, np.zeros((4, 2)), "y", 0)
>>> contributions, base = explainer.explain(np.array([[1.0, 3.0]]))
>>> contributions.tolist(), base
([[2.0, -3.0]], 0.0)
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from llmopt import errors

log = logging.getLogger("llmopt.inference")

# Input element types an explainer accepts, and their numpy types.
FLOAT_TYPES: dict[int, type[np.floating]] = {
    TensorProto.FLOAT: np.float32,
    TensorProto.DOUBLE: np.float64,
}
# Background rows the onnxruntime check runs on.
CHECK_ROWS = 256
ML_DOMAIN = "ai.onnx.ml"


# ------------------------------------------------------------------------------------------
# Shared helpers
# ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GraphInput:
    name: str
    dtype: type[np.floating]
    width: int  # columns of the input (from the graph, or the background when it is open)


def attributes(node: onnx.NodeProto) -> dict[str, Any]:
    """A node's attributes as Python values (tensors as numpy arrays, strings decoded)."""
    out: dict[str, Any] = {}
    for attr in node.attribute:
        value = helper.get_attribute_value(attr)
        if isinstance(value, bytes):
            value = value.decode()
        elif isinstance(value, TensorProto):
            value = numpy_helper.to_array(value)
        out[attr.name] = value
    return out


def single_float_input(model: onnx.ModelProto, background: object) -> GraphInput | None:
    """The graph's one float input, or None when it has several or a non-float one. The
    background must be rows of that input (else FailedPrecondition)."""
    graph = model.graph
    constant = {init.name for init in graph.initializer}
    inputs = [i for i in graph.input if i.name not in constant]
    if len(inputs) != 1:
        return None
    tensor = inputs[0].type.tensor_type
    if tensor.elem_type not in FLOAT_TYPES:
        return None
    dims = tensor.shape.dim if tensor.HasField("shape") else []
    if len(dims) != 2:
        return None
    rows = background_rows(background)
    declared = dims[1].dim_value if dims[1].HasField("dim_value") else 0
    if declared > 0 and rows.shape[1] != declared:
        raise errors.FailedPrecondition(
            f"background: rows of {rows.shape[1]} features, the model's input "
            f"{inputs[0].name!r} takes {declared}"
        )
    return GraphInput(inputs[0].name, FLOAT_TYPES[tensor.elem_type], rows.shape[1])


def background_rows(background: object) -> np.ndarray:
    """The background as a float64 matrix with at least one row (else FailedPrecondition)."""
    try:
        rows = np.asarray(background, dtype=np.float64)
    except (TypeError, ValueError):
        raise errors.FailedPrecondition(
            f"background: {type(background).__name__} is not a matrix of numbers"
        ) from None
    if rows.ndim != 2 or rows.shape[0] < 1 or rows.shape[1] < 1:
        raise errors.FailedPrecondition(
            f"background: shape {list(rows.shape)} is not at least one row of features"
        )
    return rows


def explained_rows(X: object, width: int, dtype: type[np.floating]) -> np.ndarray:
    """``X`` as C-contiguous float64 rows of ``width`` features, rounded to the model's input
    type first (what onnxruntime sees). InvalidArgument names the input when it is not that."""
    try:
        rows = np.asarray(X)
    except (TypeError, ValueError):
        raise errors.invalid("inputs", type(X).__name__, "a matrix of numbers") from None
    if rows.dtype.kind not in "fiub":
        raise errors.invalid("inputs", str(rows.dtype), "a float matrix")
    if rows.ndim != 2 or rows.shape[1] != width:
        raise errors.invalid("inputs", list(rows.shape), f"a shape of [rows, {width}]")
    return np.ascontiguousarray(rows.astype(dtype).astype(np.float64))


def check_output(model: onnx.ModelProto, output_name: str, output_index: int) -> None:
    """InvalidArgument unless ``output_name`` is a graph output and the index is not negative."""
    names = [o.name for o in model.graph.output]
    if output_name not in names:
        raise errors.invalid("output_name", output_name, f"one of the model's outputs {names}")
    if output_index < 0:
        raise errors.invalid("output_index", output_index, "a column index (0 or more)")


def column_count_problem(output_index: int, columns: int) -> errors.InvalidArgument | None:
    if output_index >= columns:
        return errors.invalid(
            "output_index", output_index, f"a column of the output (it has {columns})"
        )
    return None


def matches_onnxruntime(
    model: onnx.ModelProto,
    graph_input: GraphInput,
    output_name: str,
    output_index: int,
    rows: np.ndarray,
    predict: Callable[[np.ndarray], np.ndarray],
) -> bool:
    """Whether ``predict`` (float64, on rows rounded to the input type) agrees with
    onnxruntime's ``output_name[:, output_index]`` on ``rows``, to float32 tolerance."""
    x = np.ascontiguousarray(rows[:CHECK_ROWS], dtype=graph_input.dtype)
    try:
        session = ort.InferenceSession(
            model.SerializeToString(), providers=["CPUExecutionProvider"]
        )
        (got,) = session.run([output_name], {graph_input.name: x})
    except Exception as exc:  # onnxruntime raises its own exception types
        log.warning("explain: onnxruntime could not run %r for the check: %s", output_name, exc)
        return False
    got = np.asarray(got)
    if got.dtype.kind != "f":
        return False
    got = got.reshape(len(x), -1) if got.size else got.reshape(len(x), 0)
    if got.shape[1] <= output_index:
        return False
    ours = predict(x.astype(np.float64))
    expected = got[:, output_index].astype(np.float64)
    scale = max(1.0, float(np.max(np.abs(expected), initial=0.0)))
    ok = bool(np.allclose(ours, expected, rtol=1e-4, atol=1e-5 * scale))
    if not ok:
        worst = float(np.max(np.abs(ours - expected)))
        log.warning("explain: %r read as differing from onnxruntime by %.3g", output_name, worst)
    return ok


# ------------------------------------------------------------------------------------------
# The affine trace
# ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Affine:
    """A value of the graph as ``x @ weights + bias``: weights [m, k], bias [k]; ``vector``
    when the value is one-dimensional ([n], k = 1)."""

    weights: np.ndarray
    bias: np.ndarray
    vector: bool = False

    @property
    def columns(self) -> int:
        return int(self.bias.shape[0])


class NotAffine(Exception):
    """An op on the path that is not an affine map of its traced operand."""


def _row_constant(c: np.ndarray, value: Affine) -> np.ndarray:
    """A constant operand broadcast against ``value``'s columns, as a float64 vector of the
    result's columns; NotAffine when it would broadcast over rows."""
    if c.dtype.kind not in "fiu":
        raise NotAffine("constant is not numeric")
    if value.vector:
        if c.ndim > 1 or c.size != 1:
            raise NotAffine("constant against a vector is not a scalar")
        return c.astype(np.float64).reshape(1)
    if c.ndim > 2 or (c.ndim == 2 and c.shape[0] != 1):
        raise NotAffine("constant is not a row vector")
    flat = c.astype(np.float64).reshape(-1)
    if flat.size in (1, value.columns):
        return np.broadcast_to(flat, (value.columns,))
    if value.columns == 1:
        return flat
    raise NotAffine("constant width does not match")


def _widen(value: Affine, columns: int) -> Affine:
    if value.columns == columns:
        return value
    m = value.weights.shape[0]
    return Affine(
        np.broadcast_to(value.weights, (m, columns)).copy(),
        np.broadcast_to(value.bias, (columns,)).copy(),
    )


def _elementwise(op: str, a: object, b: object) -> Affine:
    """Add, Sub, Mul, Div with at least one traced operand (Affine) and the other constant or
    traced (Add and Sub only)."""
    if isinstance(a, Affine) and isinstance(b, Affine):
        if op not in ("Add", "Sub") or a.vector != b.vector:
            raise NotAffine(f"{op} of two traced values")
        columns = max(a.columns, b.columns)
        if min(a.columns, b.columns) not in (1, columns):
            raise NotAffine("widths do not broadcast")
        a, b = _widen(a, columns), _widen(b, columns)
        sign = 1.0 if op == "Add" else -1.0
        return Affine(a.weights + sign * b.weights, a.bias + sign * b.bias, a.vector)
    traced_first = isinstance(a, Affine)
    value = a if traced_first else b
    assert isinstance(value, Affine)
    c = _row_constant(np.asarray(b if traced_first else a), value)
    value = _widen(value, c.shape[0])
    w, bias = value.weights, value.bias
    if op == "Add":
        return Affine(w, bias + c, value.vector)
    if op == "Sub":
        if traced_first:
            return Affine(w, bias - c, value.vector)
        return Affine(-w, c - bias, value.vector)
    if op == "Mul":
        return Affine(w * c, bias * c, value.vector)
    if op == "Div" and traced_first and np.all(c != 0):
        return Affine(w / c, bias / c, value.vector)
    raise NotAffine(f"{op} is not affine in its traced operand")


def _matmul(value: Affine, c: np.ndarray) -> Affine:
    if value.vector or c.dtype.kind not in "fiu":
        raise NotAffine("MatMul operand")
    c = c.astype(np.float64)
    if c.ndim == 2 and c.shape[0] == value.columns:
        return Affine(value.weights @ c, value.bias @ c)
    if c.ndim == 1 and c.shape[0] == value.columns:
        return Affine((value.weights @ c)[:, None], np.atleast_1d(value.bias @ c), vector=True)
    raise NotAffine("MatMul constant shape")


def _gemm(node: onnx.NodeProto, value: Affine, b: np.ndarray, c: np.ndarray | None) -> Affine:
    attrs = attributes(node)
    if attrs.get("transA", 0) or value.vector or b.ndim != 2:
        raise NotAffine("Gemm operands")
    if attrs.get("transB", 0):
        b = b.T
    alpha, beta = float(attrs.get("alpha", 1.0)), float(attrs.get("beta", 1.0))
    out = _matmul(value, b * alpha)
    if c is not None:
        out = _elementwise("Add", out, np.asarray(c, np.float64) * beta)
    return out


def _reshape(value: Affine, shape: np.ndarray) -> Affine:
    target = [int(s) for s in np.asarray(shape).reshape(-1)]
    k = value.columns
    if len(target) == 2 and target[0] in (-1, 0) and target[1] in (k, -1):
        return Affine(value.weights, value.bias)
    if len(target) == 2 and target[1] == k and k == 1 and target[0] not in (-1, 0):
        raise NotAffine("Reshape fixes the rows")
    if len(target) == 1 and target[0] in (-1, 0) and k == 1:
        return Affine(value.weights, value.bias, vector=True)
    raise NotAffine(f"Reshape to {target}")


def _linear_model(node: onnx.NodeProto, value: Affine, slot: int) -> Affine:
    """LinearRegressor (slot 0) and LinearClassifier scores (slot 1): x @ C.T + intercepts."""
    attrs = attributes(node)
    if attrs.get("post_transform", "NONE") != "NONE" or value.vector:
        raise NotAffine("post_transform")
    classifier = node.op_type == "LinearClassifier"
    if classifier and slot != 1:
        raise NotAffine("label")
    coef = np.asarray(attrs.get("coefficients", []), np.float64)
    k = value.columns
    if coef.size == 0 or coef.size % k:
        raise NotAffine("coefficients")
    coef = coef.reshape(-1, k)
    intercepts = np.asarray(attrs.get("intercepts", np.zeros(coef.shape[0])), np.float64)
    if intercepts.size != coef.shape[0]:
        raise NotAffine("intercepts")
    if not classifier and int(attrs.get("targets", 1)) != coef.shape[0]:
        raise NotAffine("targets")
    if classifier:
        labels = attrs.get("classlabels_ints") or attrs.get("classlabels_strings") or []
        if coef.shape[0] == 1 and len(labels) == 2:
            # One score s for two classes: onnxruntime writes [-s, s].
            coef = np.vstack([-coef, coef])
            intercepts = np.concatenate([-intercepts, intercepts])
    return Affine(value.weights @ coef.T, value.bias @ coef.T + intercepts)


def _scaler(node: onnx.NodeProto, value: Affine) -> Affine:
    attrs = attributes(node)
    offset = np.asarray(attrs.get("offset", [0.0]), np.float64)
    scale = np.asarray(attrs.get("scale", [1.0]), np.float64)
    return _elementwise("Mul", _elementwise("Sub", value, offset), scale)


_PASS_THROUGH = {"Identity"}
_ELEMENTWISE = {"Add", "Sub", "Mul", "Div"}


def _trace_node(node: onnx.NodeProto, operands: list[object], slot: int) -> Affine:
    """Output ``slot`` of ``node`` given its operands (Affine, numpy constant, or None for an
    unknown value); NotAffine when that is not an affine map of the input."""
    op = node.op_type
    traced = [v for v in operands if isinstance(v, Affine)]
    if any(v is None for v in operands):
        raise NotAffine("an operand is neither traced nor constant")
    domain = node.domain or ""
    if domain == ML_DOMAIN:
        if op in ("LinearRegressor", "LinearClassifier") and len(operands) == 1:
            return _linear_model(node, traced[0], slot)
        if op == "Scaler" and len(operands) == 1:
            return _scaler(node, traced[0])
        raise NotAffine(op)
    if domain != "" or slot != 0:
        raise NotAffine(op)
    first = operands[0]
    if op in _PASS_THROUGH and isinstance(first, Affine):
        return first
    if op == "Cast" and isinstance(first, Affine):
        if attributes(node).get("to") not in FLOAT_TYPES:
            raise NotAffine("Cast to a non-float type")
        return first
    if op == "Neg" and isinstance(first, Affine):
        return Affine(-first.weights, -first.bias, first.vector)
    if op == "Flatten" and isinstance(first, Affine) and not first.vector:
        if attributes(node).get("axis", 1) != 1:
            raise NotAffine("Flatten axis")
        return first
    if op == "Reshape" and isinstance(first, Affine) and len(operands) == 2:
        if isinstance(operands[1], Affine):
            raise NotAffine("Reshape by a traced shape")
        return _reshape(first, np.asarray(operands[1]))
    if op in _ELEMENTWISE and len(operands) == 2:
        return _elementwise(op, operands[0], operands[1])
    if op == "MatMul" and len(operands) == 2 and isinstance(first, Affine):
        if isinstance(operands[1], Affine):
            raise NotAffine("MatMul of two traced values")
        return _matmul(first, np.asarray(operands[1]))
    if op == "Gemm" and len(operands) in (2, 3) and isinstance(first, Affine):
        rest = operands[1:]
        if any(isinstance(v, Affine) for v in rest):
            raise NotAffine("Gemm of two traced values")
        c = np.asarray(rest[1]) if len(rest) == 2 else None
        return _gemm(node, first, np.asarray(rest[0]), c)
    raise NotAffine(op)


def trace_affine(
    model: onnx.ModelProto, graph_input: GraphInput, output_name: str
) -> Affine | None:
    """``output_name`` as an affine map of the graph's input, or None."""
    graph = model.graph
    constants: dict[str, np.ndarray] = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    values: dict[str, object] = {
        graph_input.name: Affine(
            np.eye(graph_input.width), np.zeros(graph_input.width, dtype=np.float64)
        )
    }
    values.update(constants)
    for node in graph.node:
        if node.op_type == "Constant" and not node.domain and len(node.output) == 1:
            value = attributes(node).get("value")
            if isinstance(value, np.ndarray):
                values[node.output[0]] = value
            continue
        names = [n for n in node.input if n]
        if not any(isinstance(values.get(n), Affine) for n in names):
            continue  # not on the input's path (or fed by an untraced value: stays unknown)
        operands = [values.get(n) for n in names]
        for slot, out in enumerate(node.output):
            try:
                values[out] = _trace_node(node, operands, slot)
            except NotAffine:
                values.pop(out, None)
    result = values.get(output_name)
    return result if isinstance(result, Affine) else None


# ------------------------------------------------------------------------------------------
# The explainer
# ------------------------------------------------------------------------------------------


class LinearExplainer:
    """Contributions ``coef * (x - mean(background))`` and base ``f(mean(background))`` of one
    output column of a linear graph; their sum is the prediction, exactly in float64."""

    method: str = "linear"

    def __init__(
        self,
        coef: np.ndarray,
        intercept: float,
        mean: np.ndarray,
        graph_input: GraphInput,
        background_rows: int,
    ) -> None:
        self.coef = coef
        self.intercept = intercept
        self.mean = mean
        self.base_value = float(mean @ coef + intercept)
        self.graph_input = graph_input
        self.background_rows = background_rows

    @classmethod
    def from_onnx(
        cls, model: onnx.ModelProto, background: np.ndarray, output_name: str, output_index: int
    ) -> LinearExplainer | None:
        """None when the path from the single float input to ``output_name`` is not affine."""
        check_output(model, output_name, output_index)
        graph_input = single_float_input(model, background)
        if graph_input is None:
            return None
        affine = trace_affine(model, graph_input, output_name)
        if affine is None:
            return None
        problem = column_count_problem(output_index, affine.columns)
        if problem is not None:
            raise problem
        rows = explained_rows(background_rows(background), graph_input.width, graph_input.dtype)
        if not np.all(np.isfinite(rows)):
            raise errors.FailedPrecondition(
                "background: has missing or infinite values; a linear baseline needs finite rows"
            )
        coef = np.ascontiguousarray(affine.weights[:, output_index], dtype=np.float64)
        intercept = float(affine.bias[output_index])

        def predict(x: np.ndarray) -> np.ndarray:
            return x @ coef + intercept

        if not matches_onnxruntime(model, graph_input, output_name, output_index, rows, predict):
            return None
        return cls(coef, intercept, rows.mean(axis=0), graph_input, len(rows))

    def explain(self, X: np.ndarray) -> tuple[np.ndarray, float]:
        """(contributions [n, m] float64, base_value) for rows ``X``."""
        rows = explained_rows(X, self.graph_input.width, self.graph_input.dtype)
        return self.coef * (rows - self.mean), self.base_value

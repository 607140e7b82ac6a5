"""Exact explanations of linear ONNX graphs: coefficient times (x - background mean), summing to
onnxruntime's prediction; graphs that are not affine are not explained this way."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from skl2onnx import to_onnx
from sklearn.linear_model import LinearRegression, LogisticRegression, Ridge
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from llmopt import errors
from llmopt.inference.explain.linear import LinearExplainer

FEATURES = 5


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    X = rng.normal(2.0, 3.0, size=(300, FEATURES)).astype(np.float32)
    y = X.astype(np.float64) @ np.array([1.5, -2.0, 0.0, 0.25, 4.0]) + 3.0
    background = rng.normal(1.0, 2.0, size=(80, FEATURES)).astype(np.float32)
    return X, y + 0.1 * rng.normal(size=len(X)), background


def _run(model: onnx.ModelProto, X: np.ndarray, output: str) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return np.asarray(session.run([output], {name: X})[0], dtype=np.float64).reshape(len(X), -1)


def _check(
    model: onnx.ModelProto,
    background: np.ndarray,
    X: np.ndarray,
    output: str,
    column: int,
    coef: np.ndarray,
) -> None:
    """Contributions are exactly coef * (x - mean(background)); base + their sum is
    onnxruntime's prediction to float32 tolerance."""
    explainer = LinearExplainer.from_onnx(model, background, output, column)
    assert explainer is not None and explainer.method == "linear"
    rows = X[:50]
    contributions, base = explainer.explain(rows)
    mean = background.astype(np.float64).mean(axis=0)
    np.testing.assert_allclose(
        contributions, coef * (rows.astype(np.float64) - mean), rtol=1e-12, atol=1e-12
    )
    predicted = _run(model, rows, output)[:, column]
    scale = max(1.0, float(np.max(np.abs(predicted))))
    assert np.max(np.abs(base + contributions.sum(axis=1) - predicted)) <= 1e-5 * scale
    # The base is the prediction at the background mean.
    at_mean = _run(model, mean[None, :].astype(np.float32), output)[0, column]
    assert base == pytest.approx(at_mean, rel=1e-5, abs=1e-5)


def test_linear_regression(data: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
    X, y, background = data
    est = LinearRegression().fit(X, y)
    _check(to_onnx(est, X[:1], target_opset=17), background, X, "variable", 0, est.coef_)


def test_ridge_after_a_standard_scaler(data: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
    X, y, background = data
    pipe = make_pipeline(StandardScaler(), Ridge(alpha=3.0)).fit(X, y)
    scaler, ridge = pipe.steps[0][1], pipe.steps[1][1]
    # The graph holds float32 copies: Scaler's scale (1 / scale_) and the regressor's coefficients.
    f32 = np.float32
    coef = ridge.coef_.astype(f32).astype(np.float64) * (1 / scaler.scale_).astype(f32)
    _check(to_onnx(pipe, X[:1], target_opset=17), background, X, "variable", 0, coef)


def test_double_input_graph(data: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
    """skl2onnx writes a float64 model as MatMul, Add and Reshape."""
    X, y, background = data
    est = LinearRegression().fit(X, y)
    model = to_onnx(est, X[:1].astype(np.float64), target_opset=17)
    assert {n.op_type for n in model.graph.node} == {"MatMul", "Add", "Reshape"}
    explainer = LinearExplainer.from_onnx(model, background, "variable", 0)
    assert explainer is not None
    rows = X[:20].astype(np.float64)
    contributions, base = explainer.explain(rows)
    np.testing.assert_allclose(
        contributions, est.coef_ * (rows - background.astype(np.float64).mean(0)), rtol=1e-12
    )
    np.testing.assert_allclose(base + contributions.sum(1), est.predict(rows), rtol=1e-10)


@pytest.mark.parametrize("classes", [2, 3])
def test_logistic_regression_raw_scores(
    data: tuple[np.ndarray, np.ndarray, np.ndarray], classes: int
) -> None:
    X, y, background = data
    labels = np.digitize(y, np.quantile(y, np.linspace(0, 1, classes + 1)[1:-1]))
    est = LogisticRegression(max_iter=1000).fit(X, labels)
    model = to_onnx(est, X[:1], target_opset=17, options={"zipmap": False, "raw_scores": True})
    # onnxruntime's scores for two classes are [-d, d], d the decision function.
    coefs = [-est.coef_[0], est.coef_[0]] if classes == 2 else list(est.coef_)
    for column, coef in enumerate(coefs):
        _check(model, background, X, "probabilities", column, coef)
    assert LinearExplainer.from_onnx(model, background, "label", 0) is None


def test_probabilities_of_logistic_regression_are_not_linear(
    data: tuple[np.ndarray, np.ndarray, np.ndarray],
) -> None:
    X, y, background = data
    est = LogisticRegression(max_iter=1000).fit(X, y > np.median(y))
    model = to_onnx(est, X[:1], target_opset=17, options={"zipmap": False})
    assert LinearExplainer.from_onnx(model, background, "probabilities", 1) is None


def _graph(
    nodes: list[onnx.NodeProto],
    initializers: list[onnx.TensorProto],
    width: int = FEATURES,
    outputs: int = 2,
) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes,
        "hand_built",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, width])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, outputs])],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def _const(name: str, value: np.ndarray) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(value, np.float32), name)


@pytest.fixture(scope="module")
def weights() -> np.ndarray:
    return np.random.default_rng(1).normal(size=(FEATURES, 2)).astype(np.float32)


def test_hand_built_matmul_add(
    data: tuple[np.ndarray, np.ndarray, np.ndarray], weights: np.ndarray
) -> None:
    X, _, background = data
    model = _graph(
        [
            helper.make_node("MatMul", ["x", "W"], ["xw"]),
            helper.make_node("Add", ["xw", "b"], ["y"]),
        ],
        [_const("W", weights), _const("b", np.array([0.5, -1.0]))],
    )
    for column in (0, 1):
        _check(model, background, X, "y", column, weights[:, column].astype(np.float64))


def test_hand_built_chain_of_affine_ops(
    data: tuple[np.ndarray, np.ndarray, np.ndarray], weights: np.ndarray
) -> None:
    """y = Gemm(((x - m) / s) * k, W^T) composed with Sub, Div, Mul, Neg, Flatten, Cast."""
    X, _, background = data
    m, s, k = np.arange(FEATURES) * 0.5, np.arange(1, FEATURES + 1) * 1.0, 2.0
    nodes = [
        helper.make_node("Sub", ["x", "m"], ["centred"]),
        helper.make_node("Div", ["centred", "s"], ["scaled"]),
        helper.make_node("Mul", ["k", "scaled"], ["times"]),
        helper.make_node("Flatten", ["times"], ["flat"], axis=1),
        helper.make_node("Cast", ["flat"], ["cast"], to=TensorProto.FLOAT),
        helper.make_node("Gemm", ["cast", "Wt", "c"], ["g"], transB=1, alpha=0.5, beta=2.0),
        helper.make_node("Neg", ["g"], ["neg"]),
        helper.make_node("Sub", ["one", "neg"], ["y"]),  # 1 - (-g) = 1 + g
    ]
    inits = [
        _const("m", m),
        _const("s", s),
        _const("k", np.array(k)),
        _const("Wt", weights.T),
        _const("c", np.array([[1.0, -3.0]])),
        _const("one", np.array([1.0])),
    ]
    model = _graph(nodes, inits)
    for column in (0, 1):
        coef = k * 0.5 * weights[:, column].astype(np.float64) / s
        _check(model, background, X, "y", column, coef)


def test_an_op_that_is_not_affine_on_the_path_gives_none(
    data: tuple[np.ndarray, np.ndarray, np.ndarray], weights: np.ndarray
) -> None:
    _, _, background = data
    inits = [_const("W", weights), _const("b", np.array([0.5, -1.0]))]
    relu = _graph(
        [
            helper.make_node("MatMul", ["x", "W"], ["xw"]),
            helper.make_node("Relu", ["xw"], ["r"]),
            helper.make_node("Add", ["r", "b"], ["y"]),
        ],
        inits,
    )
    assert LinearExplainer.from_onnx(relu, background, "y", 0) is None
    square = _graph(
        [
            helper.make_node("MatMul", ["x", "W"], ["xw"]),
            helper.make_node("Mul", ["xw", "xw"], ["y"]),
        ],
        inits,
    )
    assert LinearExplainer.from_onnx(square, background, "y", 0) is None
    # A constant that varies by row (shape [3, 2]) is not a row vector.
    rows = _graph(
        [
            helper.make_node("MatMul", ["x", "W"], ["xw"]),
            helper.make_node("Add", ["xw", "R"], ["y"]),
        ],
        [_const("W", weights), _const("R", np.ones((3, 2)))],
    )
    assert LinearExplainer.from_onnx(rows, background, "y", 0) is None


def test_bad_rows_background_and_output_raise(
    data: tuple[np.ndarray, np.ndarray, np.ndarray],
) -> None:
    X, y, background = data
    model = to_onnx(LinearRegression().fit(X, y), X[:1], target_opset=17)
    explainer = LinearExplainer.from_onnx(model, background, "variable", 0)
    assert explainer is not None
    with pytest.raises(errors.InvalidArgument, match="inputs"):
        explainer.explain(X[:, :2])
    with pytest.raises(errors.InvalidArgument, match="inputs"):
        explainer.explain(X[0])
    with pytest.raises(errors.InvalidArgument, match="output_index"):
        LinearExplainer.from_onnx(model, background, "variable", 1)
    with pytest.raises(errors.InvalidArgument, match="output_name"):
        LinearExplainer.from_onnx(model, background, "nope", 0)
    bad = background.copy()
    bad[0, 0] = np.nan
    with pytest.raises(errors.FailedPrecondition, match="background"):
        LinearExplainer.from_onnx(model, bad, "variable", 0)
    with pytest.raises(errors.FailedPrecondition, match="background"):
        LinearExplainer.from_onnx(model, background[:, :3], "variable", 0)


def test_docstring_examples_run() -> None:
    import doctest

    from llmopt.inference.explain import linear

    failures, tried = doctest.testmod(linear, optionflags=doctest.ELLIPSIS)
    assert tried > 0 and failures == 0

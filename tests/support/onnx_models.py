"""Small scikit-learn models exported to ONNX with skl2onnx, shared by inference tests."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from skl2onnx import to_onnx
from sklearn.ensemble import GradientBoostingClassifier
from sklearn.linear_model import LinearRegression, LogisticRegression

FEATURES = 16


@dataclass(frozen=True)
class TrainedModel:
    estimator: Any
    onnx: bytes
    X: np.ndarray  # float32 rows the tests predict on


def _data(seed: int, rows: int = 400) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(rows, FEATURES)).astype(np.float32)
    w = rng.normal(size=FEATURES)
    return X, X.astype(np.float64) @ w + 0.1 * rng.normal(size=rows)


def logistic_regression(seed: int = 0) -> TrainedModel:
    """16-feature binary classifier: outputs ``label`` (int64) and ``probabilities`` (float)."""
    X, y = _data(seed)
    est = LogisticRegression(max_iter=500).fit(X, (y > 0).astype(np.int64))
    onx = to_onnx(est, X[:1], options={"zipmap": False}, target_opset=17)
    return TrainedModel(est, onx.SerializeToString(), X)


def linear_regression(seed: int = 0) -> TrainedModel:
    """16-feature regression: output ``variable`` (float, shape [N, 1])."""
    X, y = _data(seed)
    est = LinearRegression().fit(X, y)
    return TrainedModel(est, to_onnx(est, X[:1], target_opset=17).SerializeToString(), X)


def gradient_boosting(seed: int = 0, trees: int = 100) -> TrainedModel:
    X, y = _data(seed)
    est = GradientBoostingClassifier(n_estimators=trees, max_depth=3, random_state=seed).fit(
        X, (y > 0).astype(np.int64)
    )
    onx = to_onnx(est, X[:1], options={"zipmap": False}, target_opset=17)
    return TrainedModel(est, onx.SerializeToString(), X)


def gather_model() -> bytes:
    """out = data[idx]: runs on the warm-up input, fails in onnxruntime for idx out of range."""
    graph = helper.make_graph(
        [helper.make_node("Gather", ["data", "idx"], ["out"])],
        "gather",
        [
            helper.make_tensor_value_info("data", TensorProto.FLOAT, [None]),
            helper.make_tensor_value_info("idx", TensorProto.INT64, [None]),
        ],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [None])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


def open_width_matmul(features: int = FEATURES) -> bytes:
    """Y = X @ ones: the graph needs ``features`` columns but declares X as [None, None], so the
    guessed warm-up shape fails and a wrong width fails inside onnxruntime."""
    weights = numpy_helper.from_array(np.ones((features, 1), np.float32), "W")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["X", "W"], ["Y"])],
        "open_width",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [None, None])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [None, 1])],
        [weights],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


def string_model() -> bytes:
    """A string input ``text`` [n] -> ``code`` int64 [n] (red 0, green 1, blue 2, else -1) and
    ``echo`` string [n] (the input unchanged)."""
    graph = helper.make_graph(
        [
            helper.make_node(
                "LabelEncoder",
                ["text"],
                ["code"],
                domain="ai.onnx.ml",
                keys_strings=["red", "green", "blue"],
                values_int64s=[0, 1, 2],
                default_int64=-1,
            ),
            helper.make_node("Identity", ["text"], ["echo"]),
        ],
        "strings",
        [helper.make_tensor_value_info("text", TensorProto.STRING, [None])],
        [
            helper.make_tensor_value_info("code", TensorProto.INT64, [None]),
            helper.make_tensor_value_info("echo", TensorProto.STRING, [None]),
        ],
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("ai.onnx.ml", 2)]
    )
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()

"""llmopt.registry.export: scikit-learn -> ONNX with plain tensor outputs, checked against
sklearn."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from llmopt import errors
from llmopt.registry import Registry
from llmopt.registry.export import DEFAULT_TARGET_OPSET, ExportMismatch, export_sklearn

RNG = np.random.default_rng(0)
X = RNG.standard_normal((120, 5))
Y_CLASS = (X[:, 0] + X[:, 1] > 0).astype(int) + (X[:, 2] > 1).astype(int)
Y_REG = X @ np.arange(1.0, 6.0) + 0.5


def test_regressor_exports_with_float32_input_and_stated_opset() -> None:
    result = export_sklearn(make_pipeline(StandardScaler(), Ridge()).fit(X, Y_REG))
    model = onnx.load_from_string(result.onnx_bytes)
    (inp,) = model.graph.input
    assert inp.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert [d.dim_value for d in inp.type.tensor_type.shape.dim][1:] == [5]
    assert {o.domain: o.version for o in model.opset_import}[""] == DEFAULT_TARGET_OPSET
    assert result.max_abs_error < 1e-3


@pytest.mark.parametrize(
    "estimator",
    [LogisticRegression(max_iter=500), RandomForestClassifier(n_estimators=5, random_state=0)],
    ids=["logistic", "forest"],
)
def test_classifier_outputs_are_plain_tensors(estimator: object) -> None:
    fitted = estimator.fit(X, Y_CLASS)  # type: ignore[attr-defined]
    result = export_sklearn(fitted, sample=X)
    session = ort.InferenceSession(result.onnx_bytes, providers=["CPUExecutionProvider"])
    assert [o.type for o in session.get_outputs()] == ["tensor(int64)", "tensor(float)"]
    labels, proba = session.run(None, {"input": X.astype(np.float32)})
    assert proba.shape == (len(X), 3)
    np.testing.assert_array_equal(labels, fitted.predict(X.astype(np.float32)))  # type: ignore[attr-defined]


def test_mismatch_beyond_tolerance_is_an_error() -> None:
    fitted = LogisticRegression(max_iter=500).fit(X, Y_CLASS)
    with pytest.raises(ExportMismatch, match="probabilities differ"):
        export_sklearn(fitted, sample=X * 1000, rtol=0.0, atol=0.0)


def test_bad_inputs_name_the_field() -> None:
    fitted = Ridge().fit(X, Y_REG)
    with pytest.raises(errors.InvalidArgument, match=r"^sample: "):
        export_sklearn(fitted, sample=np.zeros((3, 2)))
    with pytest.raises(errors.InvalidArgument, match=r"^n_features: "):
        export_sklearn(object())
    with pytest.raises(errors.InvalidArgument, match=r"^estimator: 'object'"):
        export_sklearn(object(), 3)


def test_exported_model_registers(tmp_path: Path) -> None:
    reg = Registry(tmp_path / "r")
    try:
        reg.create_model("clf")
        result = export_sklearn(LogisticRegression(max_iter=500).fit(X, Y_CLASS))
        v = reg.upload_version("clf", result.onnx_bytes)
        assert [(s.name, s.dtype, s.shape) for s in v.inputs] == [("input", "float32", (-1, 5))]
        assert [(s.name, s.dtype) for s in v.outputs] == [
            ("label", "int64"),
            ("probabilities", "float32"),
        ]
    finally:
        reg.close()

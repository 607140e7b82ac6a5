"""Export a fitted scikit-learn estimator to ONNX with skl2onnx, checked against scikit-learn.

The exported graph takes one float32 input ``input`` of shape ``[batch, n_features]``.
Classifiers are exported without ZipMap, so their outputs are plain tensors (``label`` and
``probabilities``) that any client can read. Before the bytes are returned, onnxruntime's
predictions on a sample are compared with scikit-learn's; a mismatch beyond the tolerance raises
ExportMismatch instead of producing a model that silently disagrees with the one trained.

>>> import numpy as np
>>> from sklearn.linear_model import LinearRegression
>>> X = np.arange(20, dtype=np.float32).reshape(10, 2); y = X @ [1.0, 2.0]
>>> result = export_sklearn(LinearRegression().fit(X, y))
>>> result.n_features, result.outputs, result.max_abs_error < 1e-3
(2, ('variable',), True)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import onnxruntime as ort

from llmopt import errors

# The opset every export targets unless told otherwise (supported by skl2onnx and onnxruntime).
DEFAULT_TARGET_OPSET = 17
INPUT_NAME = "input"


class ExportMismatch(errors.InvalidArgument):
    """onnxruntime's predictions differ from scikit-learn's beyond the tolerance."""


@dataclass(frozen=True)
class ExportResult:
    onnx_bytes: bytes
    n_features: int
    target_opset: int
    outputs: tuple[str, ...]
    # Largest absolute difference between onnxruntime and scikit-learn on the check sample.
    max_abs_error: float
    # Fraction of sample rows whose predicted label differs (classifiers; 0 for regressors).
    label_mismatch_rate: float
    sample_rows: int


def export_sklearn(
    estimator: Any,
    n_features: int | None = None,
    *,
    target_opset: int = DEFAULT_TARGET_OPSET,
    sample: np.ndarray | None = None,
    rtol: float = 1e-4,
    atol: float = 1e-4,
    max_label_mismatch: float = 0.0,
    seed: int = 0,
) -> ExportResult:
    """Convert ``estimator`` (fitted) to ONNX bytes and check them against scikit-learn.

    ``sample`` (rows of features) is what both runtimes predict on; without one, 256 rows are
    drawn from a standard normal distribution (seeded). Labels may differ only on rows whose top
    two class probabilities are within ``atol`` (ties that float32 rounding can flip), plus at
    most a ``max_label_mismatch`` fraction of the others.
    """
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import FloatTensorType

    n = n_features if n_features is not None else getattr(estimator, "n_features_in_", None)
    if not isinstance(n, int | np.integer) or n < 1:
        raise errors.invalid("n_features", n, "a positive integer (the estimator does not say)")
    n = int(n)
    is_classifier = hasattr(estimator, "predict_proba")
    try:
        onx = to_onnx(
            estimator,
            initial_types=[(INPUT_NAME, FloatTensorType([None, n]))],
            target_opset=target_opset,
            options={"zipmap": False} if is_classifier else None,
        )
    except Exception as exc:
        raise errors.invalid(
            "estimator", type(estimator).__name__, f"convertible by skl2onnx ({exc})"
        ) from None
    data = onx.SerializeToString()
    if sample is None:
        sample = np.random.default_rng(seed).standard_normal((256, n))
    x = np.ascontiguousarray(sample, dtype=np.float32)
    if x.ndim != 2 or x.shape[1] != n:
        raise errors.invalid("sample", list(x.shape), f"rows of {n} features")
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    names = tuple(o.name for o in session.get_outputs())
    got = session.run(None, {INPUT_NAME: x})
    max_err, mismatch = _compare(estimator, x, got, is_classifier, rtol, atol, max_label_mismatch)
    return ExportResult(data, n, target_opset, names, max_err, mismatch, len(x))


def _compare(
    estimator: Any,
    x: np.ndarray,
    got: list[Any],
    is_classifier: bool,
    rtol: float,
    atol: float,
    max_label_mismatch: float,
) -> tuple[float, float]:
    x64 = x.astype(np.float64)
    if not is_classifier:
        expected = np.asarray(estimator.predict(x64), dtype=np.float64).reshape(len(x), -1)
        actual = np.asarray(got[0], dtype=np.float64).reshape(len(x), -1)
        _check_close("predictions", expected, actual, rtol, atol)
        return float(np.max(np.abs(expected - actual), initial=0.0)), 0.0
    labels, proba = np.asarray(got[0]), np.asarray(got[1], dtype=np.float64)
    expected_proba = np.asarray(estimator.predict_proba(x64), dtype=np.float64)
    _check_close("probabilities", expected_proba, proba, rtol, atol)
    expected_labels = np.asarray(estimator.predict(x64))
    differ = labels.reshape(-1) != expected_labels.reshape(-1)
    top2 = np.sort(expected_proba, axis=1)[:, -2:] if expected_proba.shape[1] > 1 else None
    ties = (top2[:, 1] - top2[:, 0] <= atol) if top2 is not None else np.zeros(len(x), bool)
    rate = float(np.mean(differ & ~ties)) if len(x) else 0.0
    if rate > max_label_mismatch:
        raise ExportMismatch(
            f"estimator: onnxruntime labels differ from scikit-learn's on {rate:.1%} of the "
            f"sample (allowed {max_label_mismatch:.1%})"
        )
    return float(np.max(np.abs(expected_proba - proba), initial=0.0)), float(np.mean(differ))


def _check_close(
    what: str, expected: np.ndarray, actual: np.ndarray, rtol: float, atol: float
) -> None:
    if expected.shape != actual.shape:
        raise ExportMismatch(
            f"estimator: onnxruntime {what} have shape {list(actual.shape)}, scikit-learn's "
            f"{list(expected.shape)}"
        )
    if not np.allclose(actual, expected, rtol=rtol, atol=atol):
        worst = float(np.max(np.abs(actual - expected)))
        raise ExportMismatch(
            f"estimator: onnxruntime {what} differ from scikit-learn's by up to {worst:.3g} "
            f"(rtol {rtol}, atol {atol})"
        )

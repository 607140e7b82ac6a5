"""Explanations of predictions: per-input-feature contributions of a model version's output.

``service.Explainer`` answers Explain and GetFeatureImportance: it resolves the version like a
prediction, reads the version's ONNX graph and background sample from the registry, picks the
method and keeps the explainer it built with the version. The methods: ``linear`` (exact, for
affine graphs), ``trees`` (exact TreeSHAP, for TreeEnsemble graphs) and ``kernel`` (KernelSHAP
through batched runs, for any graph). No gRPC in here.
"""

from llmopt.inference.explain.kernel import (
    DEFAULT_SAMPLES,
    MAX_BACKGROUND,
    MAX_SAMPLES,
    KernelExplainer,
)
from llmopt.inference.explain.service import (
    Explainer,
    ExplainerConfig,
    Explanation,
    FeatureImportance,
    Method,
)

__all__ = [
    "DEFAULT_SAMPLES",
    "MAX_BACKGROUND",
    "MAX_SAMPLES",
    "Explainer",
    "ExplainerConfig",
    "Explanation",
    "FeatureImportance",
    "KernelExplainer",
    "Method",
]

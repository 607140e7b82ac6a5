"""Model serving: onnxruntime sessions for registry models, champion/challenger routing, shadow
traffic, hot swap, input validation and serving stats. No gRPC types in here.

``Predictor`` is the one predict path (tensors, or a request's features); ``InferenceEngine``
routes each request to a version (``engine``) whose session ``ModelLoader`` loads and unloads.
"""

from llmopt.inference.engine import (
    EngineConfig,
    IndexEntry,
    InferenceEngine,
    ModelDescription,
    Prediction,
)
from llmopt.inference.loader import ModelLoader
from llmopt.inference.policy_store import MIGRATIONS, TrafficPolicyStore
from llmopt.inference.predictor import Predictor
from llmopt.inference.routing import (
    ChampionChallengerRouter,
    TrafficMode,
    TrafficPolicy,
    Variant,
    bucket_of,
)
from llmopt.inference.session import (
    LoadedModel,
    ModelLoadError,
    ModelRunError,
    RunTiming,
    SessionConfig,
)
from llmopt.inference.signature import IOSpec, Signature, signature_from, validate_inputs
from llmopt.inference.stats import (
    BatchStatistics,
    Duration,
    LoadFailure,
    ModelStats,
    ShadowStats,
    VariantStats,
    VersionStatistics,
)
from llmopt.ports import ModelSource

__all__ = [
    "MIGRATIONS",
    "BatchStatistics",
    "ChampionChallengerRouter",
    "Duration",
    "EngineConfig",
    "IOSpec",
    "IndexEntry",
    "InferenceEngine",
    "LoadFailure",
    "LoadedModel",
    "ModelDescription",
    "ModelLoadError",
    "ModelLoader",
    "ModelRunError",
    "ModelSource",
    "ModelStats",
    "Prediction",
    "Predictor",
    "RunTiming",
    "SessionConfig",
    "ShadowStats",
    "Signature",
    "TrafficMode",
    "TrafficPolicy",
    "TrafficPolicyStore",
    "Variant",
    "VariantStats",
    "VersionStatistics",
    "bucket_of",
    "signature_from",
    "validate_inputs",
]

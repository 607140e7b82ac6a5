"""Model serving: onnxruntime sessions for registry models, champion/challenger routing, shadow
traffic, hot swap, input validation and serving stats. No gRPC types in here."""

from server.inference.engine import (
    EngineConfig,
    IndexEntry,
    InferenceEngine,
    ModelDescription,
    ModelSource,
    Prediction,
)
from server.inference.policy_store import MIGRATIONS, TrafficPolicyStore
from server.inference.routing import (
    ChampionChallengerRouter,
    TrafficMode,
    TrafficPolicy,
    Variant,
    bucket_of,
)
from server.inference.session import LoadedModel, ModelLoadError, ModelRunError, SessionConfig
from server.inference.signature import IOSpec, Signature, signature_from, validate_inputs
from server.inference.stats import LoadFailure, ModelStats, ShadowStats, VariantStats

__all__ = [
    "MIGRATIONS",
    "ChampionChallengerRouter",
    "EngineConfig",
    "IOSpec",
    "IndexEntry",
    "InferenceEngine",
    "LoadFailure",
    "LoadedModel",
    "ModelDescription",
    "ModelLoadError",
    "ModelRunError",
    "ModelSource",
    "ModelStats",
    "Prediction",
    "SessionConfig",
    "ShadowStats",
    "Signature",
    "TrafficMode",
    "TrafficPolicy",
    "TrafficPolicyStore",
    "Variant",
    "VariantStats",
    "bucket_of",
    "signature_from",
    "validate_inputs",
]

"""Which scope each RPC needs: one hand-written table, one line per RPC.

Every RPC of every service the server registers has an entry (``tests/unit/security`` fails when
one is missing, or when an entry names no registered RPC), so a service added later declares its
RPCs' scopes here. ``None`` means open: health needs no credential. Reflection is open too in the
table; ``--reflection auth`` asks for any valid principal on ``REFLECTION_METHODS`` (the
interceptor's rule), and ``--reflection off`` does not register it.

A scope grants exactly its RPCs: ``admin`` does not imply ``read``; give a principal every scope
it needs.
"""

from __future__ import annotations

SCOPES = ("read", "decide", "predict", "write-features", "admin")

REFLECTION_METHODS = frozenset(
    {
        "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
        "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
    }
)
"""Reflection's RPCs: open in the table; ``--reflection auth`` wants a valid principal."""

SCOPE_BY_METHOD: dict[str, str | None] = {
    # read: Get*, List*, stats, metadata, downloads, readiness.
    "/llmopt.v1.Registry/GetModel": "read",
    "/llmopt.v1.Registry/ListModels": "read",
    "/llmopt.v1.Registry/GetVersion": "read",
    "/llmopt.v1.Registry/ListVersions": "read",
    "/llmopt.v1.Registry/DownloadVersion": "read",
    "/llmopt.v1.Registry/GetAliasHistory": "read",
    "/llmopt.v1.Features/GetFeatureSet": "read",
    "/llmopt.v1.Features/ListFeatureSets": "read",
    "/llmopt.v1.Features/GetFeatures": "read",
    "/llmopt.v1.Bandits/GetBandit": "read",
    "/llmopt.v1.Bandits/ListBandits": "read",
    "/llmopt.v1.Bandits/GetStats": "read",
    "/llmopt.v1.Bandits/GetDecision": "read",
    "/llmopt.v1.Bandits/ListDecisions": "read",
    "/llmopt.v1.Bandits/GetArmEstimates": "read",
    "/llmopt.v1.Tuning/GetStudy": "read",
    "/llmopt.v1.Tuning/ListStudies": "read",
    "/llmopt.v1.Tuning/ListTrials": "read",
    "/llmopt.v1.Tuning/BestTrial": "read",
    "/llmopt.v1.Inference/GetTrafficPolicy": "read",
    "/llmopt.v1.Inference/GetModelStats": "read",
    "/llmopt.v1.Inference/GetFeatureImportance": "read",
    "/inference.GRPCInferenceService/ServerLive": "read",
    "/inference.GRPCInferenceService/ServerReady": "read",
    "/inference.GRPCInferenceService/ModelReady": "read",
    "/inference.GRPCInferenceService/ServerMetadata": "read",
    "/inference.GRPCInferenceService/ModelMetadata": "read",
    "/inference.GRPCInferenceService/RepositoryIndex": "read",
    "/inference.GRPCInferenceService/ModelConfig": "read",
    "/inference.GRPCInferenceService/ModelStatistics": "read",
    # decide: the bandit loop and the vectors it decides on; a study's ask and tell.
    "/llmopt.v1.Bandits/SelectArm": "decide",
    "/llmopt.v1.Bandits/RecordReward": "decide",
    "/llmopt.v1.Tuning/Suggest": "decide",
    "/llmopt.v1.Tuning/Report": "decide",
    "/llmopt.v1.Features/GetFeatureVector": "decide",
    # predict
    "/llmopt.v1.Inference/Predict": "predict",
    "/llmopt.v1.Inference/PredictStream": "predict",
    "/llmopt.v1.Inference/Explain": "predict",
    "/inference.GRPCInferenceService/ModelInfer": "predict",
    "/inference.GRPCInferenceService/ModelStreamInfer": "predict",
    # write-features
    "/llmopt.v1.Features/WriteFeatures": "write-features",
    "/llmopt.v1.Features/WriteFeaturesStream": "write-features",
    # admin: create, delete, upload, aliases, promotion, traffic policies, arms, the audit log.
    "/llmopt.v1.Registry/CreateModel": "admin",
    "/llmopt.v1.Registry/DeleteModel": "admin",
    "/llmopt.v1.Registry/UploadVersion": "admin",
    "/llmopt.v1.Registry/DeleteVersion": "admin",
    "/llmopt.v1.Registry/SetAlias": "admin",
    "/llmopt.v1.Registry/DeleteAlias": "admin",
    "/llmopt.v1.Registry/Promote": "admin",
    "/llmopt.v1.Registry/Rollback": "admin",
    "/llmopt.v1.Features/CreateFeatureSet": "admin",
    "/llmopt.v1.Bandits/CreateBandit": "admin",
    "/llmopt.v1.Bandits/DeleteBandit": "admin",
    "/llmopt.v1.Bandits/AddArm": "admin",
    "/llmopt.v1.Bandits/RemoveArm": "admin",
    "/llmopt.v1.Inference/SetTrafficPolicy": "admin",
    "/llmopt.v1.Audit/GetAuditLog": "admin",
    "/inference.GRPCInferenceService/RepositoryModelLoad": "admin",
    "/inference.GRPCInferenceService/RepositoryModelUnload": "admin",
    "/llmopt.v1.Tuning/CreateStudy": "admin",
    "/llmopt.v1.Tuning/DeleteStudy": "admin",
    "/llmopt.v1.Tuning/StopStudy": "admin",
    # open: health; reflection (see REFLECTION_METHODS).
    "/grpc.health.v1.Health/Check": None,
    "/grpc.health.v1.Health/Watch": None,
    "/grpc.health.v1.Health/List": None,
    "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo": None,
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo": None,
}


def scope_of(method: str) -> str | None:
    """The scope ``method`` (a full name, ``/package.Service/Method``) needs; None when open.

    Raises KeyError for a method the table does not know: the server refuses it rather than
    serve an RPC nobody gave a scope.
    """
    return SCOPE_BY_METHOD[method]

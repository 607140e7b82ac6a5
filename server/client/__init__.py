"""The Python client of llmopt-server: ``from llmopt.client import Client``.

A package of its own that needs only grpcio, protobuf, numpy, the generated stubs
(``llmopt.gen``) and grpcio-health-checking (its generated Health stubs, for
``Client.wait_ready``): importing it loads none of the server, no SQLite, no kernel and no domain
module. Callers pass and get plain Python values, numpy arrays and the frozen dataclasses of
``llmopt.client.types``; no protobuf type is needed. Failures are ``ClientError`` and its
subclasses (``NotFound``, ``InvalidArgument``, ``AlreadyExists``, ... in
``llmopt.client.errors``), so callers catch them without importing grpc. Deadlines and retries
are described in ``llmopt.client.client``. ``Client.register_sklearn_model`` alone needs the
server's extras (skl2onnx), imported when it is called.

>>> bandit = client.create_bandit(
...     "doc-router",
...     arms=[Arm("small", model="gpt-4o-mini", metadata={"price_per_1k": "0.0006"}),
...           Arm("large", model="gpt-4o", metadata={"price_per_1k": "0.01"})],
...     policy="thompson_beta", seed=7)
>>> [arm.arm_id for arm in bandit.arms]
['small', 'large']
>>> decision = client.select_arm("doc-router", Context(task_type="classification",
...                                                    input_length=120))
>>> decision.arm.arm_id in ("small", "large")
True
>>> receipt = client.record_reward(decision.decision_id, quality=0.9, cost=0.001,
...                                latency_ms=400)
>>> receipt.arm_id == decision.arm.arm_id and 0.0 <= receipt.reward <= 1.0
True
>>> try:
...     client.create_bandit("doc-router", arms=bandit.arms)
... except AlreadyExists as exc:
...     print(exc.code.name)
ALREADY_EXISTS
"""

from llmopt.client.client import DEFAULT_ADDRESS, Client, RetryPolicy
from llmopt.client.errors import (
    AlreadyExists,
    ClientError,
    DeadlineExceeded,
    FailedPrecondition,
    Internal,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
    Unimplemented,
)
from llmopt.client.types import (
    AliasChange,
    Arm,
    ArmEstimate,
    ArmEstimates,
    ArmExplanation,
    ArmStats,
    AuditEntry,
    Bandit,
    BanditStats,
    Categorical,
    Constraint,
    Context,
    Decision,
    DecisionExplanation,
    DecisionOutcome,
    Explanation,
    Feature,
    FeatureContribution,
    FeatureImportance,
    FeatureSet,
    FeatureVector,
    Feedback,
    FloatParameter,
    IntParameter,
    LoggedDecision,
    Model,
    ModelVersion,
    Page,
    Parameter,
    Prediction,
    Promotion,
    Reward,
    RewardReceipt,
    Study,
    StudyBinding,
    TensorSpec,
    TrafficPolicy,
    Trial,
)

__all__ = [
    "DEFAULT_ADDRESS",
    "AliasChange",
    "AlreadyExists",
    "Arm",
    "ArmEstimate",
    "ArmEstimates",
    "ArmExplanation",
    "ArmStats",
    "AuditEntry",
    "Bandit",
    "BanditStats",
    "Categorical",
    "Client",
    "ClientError",
    "Constraint",
    "Context",
    "DeadlineExceeded",
    "Decision",
    "DecisionExplanation",
    "DecisionOutcome",
    "Explanation",
    "FailedPrecondition",
    "Feature",
    "FeatureContribution",
    "FeatureImportance",
    "FeatureSet",
    "FeatureVector",
    "Feedback",
    "FloatParameter",
    "IntParameter",
    "Internal",
    "InvalidArgument",
    "LoggedDecision",
    "Model",
    "ModelVersion",
    "NotFound",
    "Page",
    "Parameter",
    "PermissionDenied",
    "Prediction",
    "Promotion",
    "ResourceExhausted",
    "RetryPolicy",
    "Reward",
    "RewardReceipt",
    "Study",
    "StudyBinding",
    "TensorSpec",
    "TrafficPolicy",
    "Trial",
    "Unauthenticated",
    "Unavailable",
    "Unimplemented",
]

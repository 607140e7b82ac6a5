"""What an admin request is about, as one string: the model, bandit, feature set or alias it names.

One table, by method: the path of the field that names the object, and of the version or alias
that narrows it, if any ("quality-predictor@champion", "quality-predictor@3"). A method missing
from the table (or a request not given: a client stream's messages are not at hand when the
interceptor records it) has the target "".
"""

from __future__ import annotations

from typing import Any

# method -> (the field naming the object, the field narrowing it or "")
TARGET_FIELDS: dict[str, tuple[str, str]] = {
    "/llmopt.v1.Registry/CreateModel": ("name", ""),
    "/llmopt.v1.Registry/DeleteModel": ("name", ""),
    "/llmopt.v1.Registry/UploadVersion": ("metadata.model", ""),
    "/llmopt.v1.Registry/DeleteVersion": ("model", "version"),
    "/llmopt.v1.Registry/SetAlias": ("model", "alias"),
    "/llmopt.v1.Registry/DeleteAlias": ("model", "alias"),
    "/llmopt.v1.Registry/Promote": ("model", ""),
    "/llmopt.v1.Registry/Rollback": ("model", ""),
    "/llmopt.v1.Features/CreateFeatureSet": ("feature_set.name", ""),
    "/llmopt.v1.Bandits/CreateBandit": ("bandit.name", ""),
    "/llmopt.v1.Bandits/DeleteBandit": ("name", ""),
    "/llmopt.v1.Bandits/AddArm": ("bandit", "arm.arm_id"),
    "/llmopt.v1.Bandits/RemoveArm": ("bandit", "arm_id"),
    "/llmopt.v1.Inference/SetTrafficPolicy": ("policy.model", ""),
    "/llmopt.v1.Audit/GetAuditLog": ("target", ""),
    "/inference.GRPCInferenceService/RepositoryModelLoad": ("model_name", ""),
    "/inference.GRPCInferenceService/RepositoryModelUnload": ("model_name", ""),
    "/llmopt.v1.Tuning/CreateStudy": ("study.name", ""),
    "/llmopt.v1.Tuning/DeleteStudy": ("name", ""),
    "/llmopt.v1.Tuning/StopStudy": ("name", ""),
}


def target_of(method: str, request: Any) -> str:
    """The target of ``request`` to ``method`` (a full name, ``/package.Service/Method``).

    >>> class R:
    ...     model = "quality-predictor"; alias = "champion"
    >>> target_of("/llmopt.v1.Registry/SetAlias", R())
    'quality-predictor@champion'
    >>> target_of("/llmopt.v1.Registry/SetAlias", None)
    ''
    """
    fields = TARGET_FIELDS.get(method)
    if fields is None or request is None:
        return ""
    name_field, detail_field = fields
    name = _field(request, name_field)
    detail = _field(request, detail_field) if detail_field else ""
    if not name:
        return ""
    return f"{name}@{detail}" if detail and detail != "0" else name


def _field(message: Any, path: str) -> str:
    """The value at ``path`` (dotted) of ``message`` as text, "" when a part of it is absent."""
    value = message
    for part in path.split("."):
        value = getattr(value, part, None)
        if value is None:
            return ""
    return value if isinstance(value, str) else str(value)

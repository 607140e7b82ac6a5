"""The model registry: versioned ONNX models with aliases, lineage, promotion and rollback.

Usable as a library, without the server (``llmopt.api.registry`` puts it behind gRPC).

Interface used by the inference engine::

    reg = Registry(root: Path, synchronous="normal")   # SQLite (WAL) + artifacts under root
    reg.warm_up(); reg.close()
    reg.get_version(model, version=None, alias=None) -> ModelVersion   # NotFound when absent;
        # exactly one of version / alias; alias "latest" means the newest version
    reg.read_artifact(model, version) -> bytes          # sha256-verified; ArtifactCorrupted if not
    reg.background(model, version=None, alias=None) -> np.ndarray | None
        # the version's background sample (float64 [rows, features], read-only; None: none),
        # given at upload (VersionMetadata.background): the baseline of explanations
    reg.aliases(model) -> dict[str, int]                # e.g. {"champion": 3, "challenger": 4}
    reg.list_models() -> list[Model]
    unsubscribe = reg.subscribe(callback)               # callback(AliasEvent) -> None

``ModelVersion`` is frozen: model, version, sha256, size_bytes, inputs, outputs (tuples of
``TensorSpec(name, dtype, shape, dim_names)``; dtype a numpy dtype name such as "float32" or
"int64", "string" for ONNX strings; shape with -1 for dynamic dimensions), semver,
parent_version (None: no parent), metrics, tags, description, created_at (Unix seconds), aliases,
background_rows (0: no background sample).

``AliasEvent(model, alias, from_version, to_version, time, reason, actor)``: versions are None
when the alias did not exist before / was removed. Callbacks run after the change has committed,
synchronously on the thread that made it (so when set_alias / promote / rollback returns, every
subscriber has been told), in commit order for each model. A callback's exception is logged and
never reaches the writer. Promote sends two events: champion moved, then challenger removed.
"""

from llmopt.registry.artifacts import ArtifactCorrupted
from llmopt.registry.model_registry import CHALLENGER, CHAMPION, LATEST, Registry
from llmopt.registry.types import (
    AliasChange,
    AliasEvent,
    Model,
    ModelTask,
    ModelVersion,
    Page,
    TensorSpec,
    VersionMetadata,
)

__all__ = [
    "CHALLENGER",
    "CHAMPION",
    "LATEST",
    "AliasChange",
    "AliasEvent",
    "ArtifactCorrupted",
    "Model",
    "ModelTask",
    "ModelVersion",
    "Page",
    "Registry",
    "TensorSpec",
    "VersionMetadata",
]

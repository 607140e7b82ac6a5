"""Conversion between llmopt.v1.Registry messages and registry domain objects (``to_x``/``from_x``).

Lookup tables rather than ``if`` chains. Proto "unset" conventions (0 for no version, "" for no
alias) become ``None`` here, so the domain never sees them.
"""

from __future__ import annotations

import math

from google.protobuf.timestamp_pb2 import Timestamp

from llmopt import errors
from llmopt.api.convert import from_tensor, to_tensor
from llmopt.gen.llmopt.v1 import common_pb2, registry_pb2
from llmopt.registry.types import (
    AliasChange,
    Model,
    ModelTask,
    ModelVersion,
    TensorSpec,
    VersionMetadata,
)

TASK_BY_PROTO: dict[int, ModelTask] = {
    registry_pb2.MODEL_TASK_UNSPECIFIED: ModelTask.UNSPECIFIED,
    registry_pb2.REGRESSION: ModelTask.REGRESSION,
    registry_pb2.CLASSIFICATION: ModelTask.CLASSIFICATION,
    registry_pb2.RANKING: ModelTask.RANKING,
    registry_pb2.POLICY: ModelTask.POLICY,
    registry_pb2.OTHER: ModelTask.OTHER,
}
PROTO_BY_TASK: dict[ModelTask, int] = {v: k for k, v in TASK_BY_PROTO.items()}

# TensorSpec.dtype (numpy dtype name, or "string") <-> DataType. Others map to UNSPECIFIED.
DATA_TYPE_BY_DTYPE: dict[str, int] = {
    "float32": common_pb2.FLOAT32,
    "float64": common_pb2.FLOAT64,
    "float16": common_pb2.FLOAT16,
    "int8": common_pb2.INT8,
    "int16": common_pb2.INT16,
    "int32": common_pb2.INT32,
    "int64": common_pb2.INT64,
    "uint8": common_pb2.UINT8,
    "uint16": common_pb2.UINT16,
    "uint32": common_pb2.UINT32,
    "uint64": common_pb2.UINT64,
    "bool": common_pb2.BOOL,
    "string": common_pb2.STRING,
}
DTYPE_BY_DATA_TYPE: dict[int, str] = {v: k for k, v in DATA_TYPE_BY_DTYPE.items()}


def to_timestamp(seconds: float) -> Timestamp:
    whole = math.floor(seconds)
    nanos = min(round((seconds - whole) * 1e9), 999_999_999)
    return Timestamp(seconds=whole, nanos=nanos)


def from_timestamp(ts: Timestamp) -> float:
    return ts.seconds + ts.nanos / 1e9


def from_task(value: int, field: str = "task") -> ModelTask:
    task = TASK_BY_PROTO.get(value)
    if task is None:
        raise errors.invalid(field, value, "a ModelTask value")
    return task


def to_task(task: ModelTask) -> int:
    return PROTO_BY_TASK[task]


def to_model(model: Model) -> registry_pb2.Model:
    return registry_pb2.Model(
        name=model.name,
        description=model.description,
        task=to_task(model.task),  # type: ignore[arg-type]
        tags=model.tags,
        create_time=to_timestamp(model.created_at),
        update_time=to_timestamp(model.updated_at),
        aliases=model.aliases,
        latest_version=model.latest_version,
    )


def from_model(msg: registry_pb2.Model) -> Model:
    return Model(
        name=msg.name,
        description=msg.description,
        task=from_task(msg.task),
        tags=dict(msg.tags),
        created_at=from_timestamp(msg.create_time),
        updated_at=from_timestamp(msg.update_time),
        aliases=dict(msg.aliases),
        latest_version=msg.latest_version,
    )


def to_tensor_spec(spec: TensorSpec) -> registry_pb2.TensorSpec:
    return registry_pb2.TensorSpec(
        name=spec.name,
        dtype=DATA_TYPE_BY_DTYPE.get(spec.dtype, common_pb2.DATA_TYPE_UNSPECIFIED),  # type: ignore[arg-type]
        shape=spec.shape,
        dim_names=spec.dim_names,
    )


def from_tensor_spec(msg: registry_pb2.TensorSpec) -> TensorSpec:
    return TensorSpec(
        msg.name, DTYPE_BY_DATA_TYPE.get(msg.dtype, ""), tuple(msg.shape), tuple(msg.dim_names)
    )


def to_version(mv: ModelVersion) -> registry_pb2.ModelVersion:
    return registry_pb2.ModelVersion(
        model=mv.model,
        version=mv.version,
        sha256=mv.sha256,
        size_bytes=mv.size_bytes,
        inputs=[to_tensor_spec(s) for s in mv.inputs],
        outputs=[to_tensor_spec(s) for s in mv.outputs],
        semver=mv.semver,
        parent_version=mv.parent_version or 0,
        metrics=mv.metrics,
        tags=mv.tags,
        description=mv.description,
        create_time=to_timestamp(mv.created_at),
        aliases=mv.aliases,
        background_rows=mv.background_rows,
    )


def from_version(msg: registry_pb2.ModelVersion) -> ModelVersion:
    return ModelVersion(
        model=msg.model,
        version=msg.version,
        sha256=msg.sha256,
        size_bytes=msg.size_bytes,
        inputs=tuple(from_tensor_spec(s) for s in msg.inputs),
        outputs=tuple(from_tensor_spec(s) for s in msg.outputs),
        semver=msg.semver,
        parent_version=msg.parent_version or None,
        metrics=dict(msg.metrics),
        tags=dict(msg.tags),
        description=msg.description,
        created_at=from_timestamp(msg.create_time),
        aliases=tuple(msg.aliases),
        background_rows=msg.background_rows,
    )


def from_upload_metadata(msg: registry_pb2.UploadVersionMetadata) -> VersionMetadata:
    if msg.parent_version < 0:
        raise errors.invalid("metadata.parent_version", msg.parent_version, "0 (none) or >= 1")
    return VersionMetadata(
        semver=msg.semver,
        parent_version=msg.parent_version or None,
        metrics=dict(msg.metrics),
        tags=dict(msg.tags),
        description=msg.description,
        sha256=msg.sha256,
        alias=msg.alias,
        size_bytes=msg.size_bytes,
        background=(
            from_tensor(msg.background, "metadata.background")
            if msg.HasField("background")
            else None
        ),
    )


def to_upload_metadata(model: str, meta: VersionMetadata) -> registry_pb2.UploadVersionMetadata:
    return registry_pb2.UploadVersionMetadata(
        model=model,
        semver=meta.semver,
        parent_version=meta.parent_version or 0,
        metrics=meta.metrics,
        tags=meta.tags,
        description=meta.description,
        sha256=meta.sha256,
        alias=meta.alias,
        size_bytes=meta.size_bytes,
        background=to_tensor(meta.background) if meta.background is not None else None,
    )


def from_version_ref(version: int, alias: str) -> tuple[int | None, str | None]:
    """Proto (version, alias) with 0 / "" meaning unset -> the domain's optional pair."""
    if version < 0:
        raise errors.invalid("version", version, "0 (use alias) or a version number >= 1")
    if bool(version) == bool(alias):
        raise errors.invalid(
            "version", version, f"give exactly one of version and alias (alias is {alias!r})"
        )
    return (version or None), (alias or None)


def to_alias_change(change: AliasChange) -> registry_pb2.AliasChange:
    return registry_pb2.AliasChange(
        id=change.id,
        model=change.model,
        alias=change.alias,
        from_version=change.from_version or 0,
        to_version=change.to_version or 0,
        time=to_timestamp(change.time),
        reason=change.reason,
        actor=change.actor,
        kind=change.kind,
    )


def from_alias_change(msg: registry_pb2.AliasChange) -> AliasChange:
    return AliasChange(
        id=msg.id,
        model=msg.model,
        alias=msg.alias,
        from_version=msg.from_version or None,
        to_version=msg.to_version or None,
        time=from_timestamp(msg.time),
        reason=msg.reason,
        actor=msg.actor,
        kind=msg.kind,
    )

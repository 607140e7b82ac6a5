"""The registry's domain objects: frozen values, no storage or transport types inside."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, TypeVar

if TYPE_CHECKING:
    import numpy as np

T = TypeVar("T")


class ModelTask(enum.Enum):
    """What a registered model predicts; stored by name."""

    UNSPECIFIED = "unspecified"
    REGRESSION = "regression"
    CLASSIFICATION = "classification"
    RANKING = "ranking"
    POLICY = "policy"
    OTHER = "other"


@dataclass(frozen=True)
class TensorSpec:
    """One input or output of an ONNX graph.

    ``dtype`` is a numpy dtype name ("float32", "int64", "bool", ...), "string" for ONNX string
    tensors, or the ONNX type name ("sequence", "map", "optional") for non-tensor values.
    ``shape`` has -1 for each dynamic dimension; ``dim_names`` holds the symbolic name of each
    dimension ("" when it has none) at the same index.
    """

    name: str
    dtype: str
    shape: tuple[int, ...]
    dim_names: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "dtype": self.dtype,
            "shape": list(self.shape),
            "dim_names": list(self.dim_names),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TensorSpec:
        return cls(d["name"], d["dtype"], tuple(d["shape"]), tuple(d.get("dim_names", ())))


@dataclass(frozen=True)
class Model:
    """A registered model: a name under which versions are uploaded."""

    name: str
    description: str = ""
    task: ModelTask = ModelTask.UNSPECIFIED
    tags: dict[str, str] = field(default_factory=dict)
    created_at: float = 0.0
    updated_at: float = 0.0
    aliases: dict[str, int] = field(default_factory=dict)
    # Highest version number ever assigned (0: none yet). Deleted numbers are never reused.
    latest_version: int = 0


@dataclass(frozen=True)
class ModelVersion:
    """One immutable ONNX artifact of a model, with its signature, lineage and metadata."""

    model: str
    version: int
    sha256: str
    size_bytes: int
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    semver: str = ""
    parent_version: int | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    description: str = ""
    created_at: float = 0.0
    aliases: tuple[str, ...] = ()
    # Rows of the background sample kept with the version (0: none): the baseline of
    # explanations, read with ``Registry.background``.
    background_rows: int = 0


@dataclass(frozen=True)
class VersionMetadata:
    """What an uploader says about a new version (everything but the bytes)."""

    semver: str = ""
    parent_version: int | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    description: str = ""
    # Optional: the uploader's sha256 of the artifact, checked on arrival.
    sha256: str = ""
    # Optional: an alias pointed at the new version in the same transaction.
    alias: str = ""
    # Optional: the artifact's total size, checked on arrival (0: not given).
    size_bytes: int = 0
    # Optional: a background sample of the model's inputs ([rows, features] floats, 1 to
    # MAX_BACKGROUND_ROWS rows), stored with the version as the baseline of explanations.
    background: np.ndarray | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class AliasChange:
    """One recorded alias move; ``None`` versions mean "unset"."""

    id: int
    model: str
    alias: str
    from_version: int | None
    to_version: int | None
    time: float
    reason: str
    actor: str
    kind: str = "set"  # set, delete, promote, rollback, upload, delete_model


@dataclass(frozen=True)
class AliasEvent:
    """Sent to subscribers after an alias change has committed."""

    model: str
    alias: str
    from_version: int | None
    to_version: int | None
    time: float
    reason: str
    actor: str

    @classmethod
    def of(cls, change: AliasChange) -> AliasEvent:
        return cls(
            change.model,
            change.alias,
            change.from_version,
            change.to_version,
            change.time,
            change.reason,
            change.actor,
        )


@dataclass(frozen=True)
class Page(Generic[T]):
    """One page of a listing; ``next_page_token`` is "" on the last page."""

    items: list[T]
    next_page_token: str = ""

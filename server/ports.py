"""What one part of the server needs of another, as small Protocols.

A consumer is typed against the Protocol that names what it calls, not against the class that
provides it: the composition root (``llmopt.composition``) hands each part its dependencies, and
a test can hand it a fake with only those methods.

- ``Component``: what the server warms and closes; every store and service it builds.
- ``ArtifactSource``: what ``inference.loader.ModelLoader`` needs of ``registry.Registry``.
- ``ModelSource``: what ``inference.InferenceEngine`` needs of ``registry.Registry``.
- ``FeatureVectors``: what ``inference.Predictor`` needs of ``features.FeatureService``.
- ``BanditFeatures``: what ``bandits.service.BanditService`` needs of ``features.FeatureService``.
- ``AuditSink``: what ``api.interceptor.ServingInterceptor`` needs of ``audit.AuditLog``.
- ``ServingVersions``: what ``inference.explain.Explainer`` needs of ``inference.InferenceEngine``.
- ``ServedRows``: what ``inference.InferenceEngine`` hands the rows it served to (the explainer's
  ``TrafficSample``, for global importance).
- ``ExplainSource``: what ``inference.explain.Explainer`` needs of ``registry.Registry``.
- ``TunedBandits``: what ``tuning.TuningService`` needs of ``bandits.BanditService`` to drive a
  bandit with a study.
- ``ModelRepositoryControl``: what the Open Inference Protocol's servicer calls of
  ``model_repository.ModelRepository`` (RepositoryModelLoad, RepositoryIndex).
- ``ArmOutcomeReader``: what ``tuning.TuningService`` reads of ``features.FeatureService``: the
  outcome aggregates of a bound study's arms.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    import numpy as np

    from llmopt.bandits.arms import Arm
    from llmopt.bandits.types import BanditInfo, BanditStats
    from llmopt.features.context import RequestContext
    from llmopt.features.service import EntityFeatures, FeatureVector
    from llmopt.inference.routing import Variant
    from llmopt.inference.session import LoadedModel
    from llmopt.registry.types import AliasEvent, Model, ModelVersion, Page


class Component(Protocol):
    """A part the server owns: warmed before SERVING, closed after draining (in reverse)."""

    def warm_up(self) -> None: ...

    def close(self) -> None: ...


class ArtifactSource(Protocol):
    """What loading a model version needs of the registry: its signature and its bytes."""

    def get_version(
        self, model: str, version: int | None = None, alias: str | None = None
    ) -> ModelVersion: ...

    def read_artifact(self, model: str, version: int) -> bytes: ...


class ModelSource(ArtifactSource, Protocol):
    """What the inference engine needs of the registry: versions and artifacts, the aliases that
    say which versions to route to, and a callback after each alias change commits."""

    def aliases(self, model: str) -> dict[str, int]: ...

    def list_models(self) -> Iterable[Model]: ...

    def list_versions(
        self, model: str, page_size: int = ..., page_token: str = ""
    ) -> Page[ModelVersion]: ...

    def subscribe(self, callback: Callable[[AliasEvent], None]) -> Callable[[], None]: ...


class FeatureVectors(Protocol):
    """What predicting from a request's facts needs of the feature service: a dense row."""

    def vector(
        self,
        feature_set: str,
        context: RequestContext | None,
        entity_ids: Sequence[str] | Mapping[str, str] = (),
    ) -> FeatureVector: ...


class BanditFeatures(FeatureVectors, Protocol):
    """What the bandit service needs of the feature service: vectors and their width, and the
    per-arm outcome aggregates it feeds."""

    def vector_width(self, feature_set: str) -> int: ...

    def slot_names(self, feature_set: str) -> tuple[str, ...]: ...

    def record_arm_outcome(
        self,
        arm_key: str,
        latency_ms: float,
        cost: float,
        quality: float | None,
        error: bool,
        at: dt.datetime | None = None,
    ) -> None: ...


class AuditSink(Protocol):
    """Where the server records each admin RPC: who (``principal``, "" when nobody
    authenticated), which RPC (``method``, its full name), on what (``target``), how it ended
    (``code``, a status code's name) and when (``time_s``, seconds since the epoch). Returns once
    the entry is durable."""

    def record(
        self, principal: str, method: str, target: str, code: str, time_s: float | None = None
    ) -> None: ...


class ServedRows(Protocol):
    """Where the inference engine hands the inputs of each prediction that ran."""

    def served(self, model: str, version: int, inputs: Mapping[str, np.ndarray]) -> None: ...


class ServingVersions(Protocol):
    """What explaining needs of the inference engine: the loaded version a request would run
    on (pinned, by alias, or routed by the traffic policy), held while the block runs, and the
    sink of the rows it serves."""

    def serving(
        self, model: str, *, version: int = 0, alias: str = "", routing_key: str = ""
    ) -> AbstractContextManager[tuple[LoadedModel, Variant]]: ...

    def sample_served_rows(self, sink: ServedRows | None) -> None: ...


class ExplainSource(ArtifactSource, Protocol):
    """What explaining needs of the registry: a version's tags and ONNX bytes, its background
    sample (None: it has none), and the aliases that name the champion."""

    def background(
        self, model: str, version: int | None = None, alias: str | None = None
    ) -> np.ndarray | None: ...

    def aliases(self, model: str) -> dict[str, int]: ...


class TunedBandits(Protocol):
    """What a study bound to a bandit calls: its arms (one per trial) and their reward stats."""

    def get_bandit(self, name: str) -> BanditInfo: ...

    def add_arm(self, name: str, arm: Arm) -> BanditInfo: ...

    def remove_arm(self, name: str, arm_id: str) -> BanditInfo: ...

    def stats(self, bandit: str) -> BanditStats: ...


class ArmOutcomeReader(Protocol):
    """Reads the built-in ``arm_outcomes`` aggregates (entity ``"<bandit>/<arm_id>"``)."""

    def read(
        self,
        feature_set: str,
        entity_ids: Sequence[str],
        feature_names: Sequence[str] = (),
        as_of: dt.datetime | None = None,
    ) -> list[EntityFeatures]: ...


class ModelRepositoryControl(Protocol):
    """A model repository directory: land one model again (False: the directory has none), and
    why each model that could not be read was not."""

    def load(self, model: str) -> bool: ...

    def problems(self) -> dict[str, str]: ...

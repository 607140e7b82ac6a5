"""The composition root: the one place that builds the stores and domain services of a server.

``compose(settings, data_dir)`` builds, in dependency order, each part against the Protocol of
what it needs (``llmopt.ports``), under the data dir:

1. ``AuditLog`` (``audit/``): needs nothing; built first so that it closes last, after every
   part whose admin RPCs it records (the interceptor, as an ``AuditSink``; ``llmopt.v1.Audit``
   reads it).
2. ``Registry`` (``registry/``): needs nothing.
3. ``FeatureService`` (``features/``): needs nothing.
4. ``BanditService`` (``bandits/``): the feature service, as ``BanditFeatures``.
5. the traffic policy database (``inference/inference.db``), then ``InferenceEngine``: the
   registry as ``ModelSource`` and a ``TrafficPolicyStore`` on that database.
6. ``Predictor``: the engine, and the feature service as ``FeatureVectors``.
7. ``Explainer``: the engine as ``ServingVersions``, the registry as ``ExplainSource``; it
   hands the engine its ``TrafficSample`` (``ServedRows``), the rows global importance is
   computed over.
8. ``TuningService`` (``tuning/``): the bandits as ``TunedBandits`` (a study can drive one) and
   the feature service as ``ArmOutcomeReader`` (the outcome aggregates of a study's arms). Its
   database runs ``synchronous=full`` whatever ``--sqlite-sync`` says: a Report the server
   answered survives a power cut, and there is one write per trial.
9. ``ModelRepository`` (``llmopt.model_repository``), only with ``--model-repository``: the
   registry, where it lands the directory's models, and the engine's ``is_ready`` to load and
   warm each one it landed at start-up (``--model-control-mode`` none and poll).

It returns an ``AppContext``: the typed, frozen ``Services`` that ``llmopt.api`` binds to
servicers, and the components the server warms in that order and closes in reverse. A part that
fails to build closes the ones built before it. The translation of ``Settings`` into domain
configuration (``engine_config``) lives here too, so no servicer module builds domain objects.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import TypeVar

from llmopt.audit import AuditLog
from llmopt.bandits.service import BanditService
from llmopt.config import Settings
from llmopt.features import FeatureService
from llmopt.inference import (
    MIGRATIONS,
    EngineConfig,
    InferenceEngine,
    Predictor,
    SessionConfig,
    TrafficPolicyStore,
)
from llmopt.inference.batching import BatchingConfig
from llmopt.inference.explain import Explainer
from llmopt.model_repository import Batching, ModelRepository
from llmopt.ports import Component
from llmopt.registry import Registry
from llmopt.storage import Database, DataDir
from llmopt.tuning import TuningService

log = logging.getLogger("llmopt.server")

C = TypeVar("C", bound=Component)


@dataclass(frozen=True)
class Services:
    """The domain services of one server process, as the servicers receive them."""

    registry: Registry
    features: FeatureService
    bandits: BanditService
    inference: InferenceEngine
    predictor: Predictor
    audit: AuditLog
    explainer: Explainer
    tuning: TuningService
    repository: ModelRepository | None = None


@dataclass(frozen=True)
class AppContext:
    """What ``compose`` built: the services, and the components in the order they were built.

    The server warms ``components`` in order before it reports SERVING and ``close`` closes them
    in reverse after draining.
    """

    settings: Settings
    data_dir: DataDir
    services: Services
    components: list[Component]

    def close(self) -> None:
        close_all(self.components)


@dataclass(frozen=True)
class DatabaseComponent:
    """A database the server closes in turn with the services that use it; nothing to warm."""

    db: Database

    def warm_up(self) -> None:
        pass

    def close(self) -> None:
        self.db.close()


def engine_config(settings: Settings) -> EngineConfig:
    """The inference engine's configuration from the server's settings."""
    return EngineConfig(
        session=SessionConfig(
            intra_op_threads=settings.onnx_intra_op_threads,
            inter_op_threads=settings.onnx_inter_op_threads,
            providers=tuple(settings.onnx_providers.split(",")),
        ),
        max_loaded_models=settings.max_loaded_models,
        idle_seconds=settings.model_idle_seconds,
        shadow_queue_size=settings.shadow_queue_size,
    )


def repository_preparer(
    inference: InferenceEngine, batching_of: Callable[[str], Batching | None]
) -> Callable[[str], object]:
    """What the repository calls for each model it lands: the model's ``config.pbtxt`` dynamic
    batching becomes its traffic policy's batching (other policy fields kept), then its versions
    are loaded and warmed (loaded again when its directory had gone and came back)."""

    def prepare(model: str) -> object:
        batching = batching_of(model)
        if batching is not None:
            policy = inference.get_policy(model)
            config = BatchingConfig(*batching)
            if policy.batching != config:
                inference.set_policy(replace(policy, batching=config))
        if not inference.is_ready(model) and inference.knows(model):
            inference.load(model)  # an unloaded model (its directory had gone) serves again
        return None

    return prepare


def compose(settings: Settings, data_dir: DataDir) -> AppContext:
    """Build every store and service under ``data_dir`` (see the module docstring)."""
    built: list[Component] = []

    def keep(component: C) -> C:
        built.append(component)
        return component

    sync = settings.sqlite_sync
    try:
        audit = keep(AuditLog(data_dir.folder("audit")))
        registry = keep(Registry(data_dir.path("registry"), synchronous=sync))
        features = keep(
            FeatureService(
                data_dir.path("features"),
                synchronous=sync,
                max_entities=settings.feature_cache_entities,
            )
        )
        bandits = keep(
            BanditService(data_dir.folder("bandits"), features=features, synchronous=sync)
        )
        folder = data_dir.folder("inference")
        policies = keep(
            DatabaseComponent(
                Database(folder / "inference.db", migrations=MIGRATIONS, synchronous=sync)
            )
        )
        inference = keep(
            InferenceEngine(registry, TrafficPolicyStore(policies.db), engine_config(settings))
        )
        predictor = Predictor(inference, features)
        explainer = Explainer(inference, registry)
        tuning = keep(TuningService(data_dir.folder("tuning"), bandits=bandits, outcomes=features))
        repository = None
        if settings.model_repository is not None:
            repository = keep(
                ModelRepository(
                    registry,
                    settings.model_repository,
                    settings.model_control_mode,
                    settings.repository_poll_seconds,
                )
            )
            repository.prepare = repository_preparer(inference, repository.batching)
            repository.removed = inference.unload
    except BaseException:
        close_all(built)
        raise
    services = Services(
        registry, features, bandits, inference, predictor, audit, explainer, tuning, repository
    )
    return AppContext(settings, data_dir, services, built)


def close_all(components: Sequence[Component]) -> None:
    """Close ``components`` in reverse order; a failure is logged and the others still close."""
    for component in reversed(components):
        try:
            component.close()
        except Exception:
            log.exception("closing %s failed", type(component).__name__)

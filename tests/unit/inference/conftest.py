from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from llmopt.inference import (
    MIGRATIONS,
    EngineConfig,
    InferenceEngine,
    SessionConfig,
    TrafficPolicyStore,
)
from llmopt.registry import Registry, VersionMetadata
from llmopt.storage import Database
from tests.support import onnx_models


@pytest.fixture(scope="session")
def lr() -> onnx_models.TrainedModel:
    return onnx_models.logistic_regression(0)


@pytest.fixture(scope="session")
def lr2() -> onnx_models.TrainedModel:
    return onnx_models.logistic_regression(1)


@pytest.fixture(scope="session")
def linreg() -> onnx_models.TrainedModel:
    return onnx_models.linear_regression(0)


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[Registry]:
    reg = Registry(tmp_path / "registry")
    yield reg
    reg.close()


def upload(reg: Registry, model: str, onnx: bytes, alias: str = "") -> int:
    """Register ``onnx`` as a new version of ``model`` (created if needed); its number."""
    if model not in {m.name for m in reg.list_models()}:
        reg.create_model(model)
    return reg.upload_version(model, onnx, VersionMetadata(alias=alias)).version


@pytest.fixture
def make_engine(tmp_path: Path, registry: Registry) -> Iterator[Callable[..., InferenceEngine]]:
    """Engines over the test's registry, each with its policy database; closed after the test."""
    made: list[tuple[InferenceEngine, Database]] = []

    def make(**config: object) -> InferenceEngine:
        db = Database(tmp_path / "inference" / "inference.db", migrations=MIGRATIONS)
        session = SessionConfig()
        engine = InferenceEngine(
            registry,
            TrafficPolicyStore(db),
            EngineConfig(session=session, seed=7, **config),  # type: ignore[arg-type]
        )
        made.append((engine, db))
        return engine

    (tmp_path / "inference").mkdir()
    yield make
    for engine, db in made:
        engine.close()
        db.close()

"""The composition root: what it builds, in which order, and what it closes when a part fails."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmopt import composition
from llmopt.audit import AuditLog
from llmopt.bandits.service import BanditService
from llmopt.composition import DatabaseComponent, compose, engine_config
from llmopt.config import Settings
from llmopt.features import FeatureService
from llmopt.inference import InferenceEngine, Predictor
from llmopt.ports import Component
from llmopt.registry import Registry
from llmopt.storage import DataDir
from llmopt.tuning import TuningService


def test_builds_every_service_in_dependency_order(tmp_path: Path) -> None:
    data_dir = DataDir(tmp_path / "data")
    ctx = compose(Settings(data_dir=tmp_path / "data"), data_dir)
    try:
        services = ctx.services
        assert isinstance(services.registry, Registry)
        assert isinstance(services.features, FeatureService)
        assert isinstance(services.bandits, BanditService)
        assert isinstance(services.inference, InferenceEngine)
        assert isinstance(services.predictor, Predictor)
        assert isinstance(services.audit, AuditLog)
        assert services.audit.path.parent == data_dir.path("audit")
        assert [type(c) for c in ctx.components] == [
            AuditLog,
            Registry,
            FeatureService,
            BanditService,
            DatabaseComponent,
            InferenceEngine,
            TuningService,
        ]
        assert isinstance(services.tuning, TuningService)
        with pytest.raises(AttributeError):
            ctx.services.registry = services.registry  # type: ignore[misc]
    finally:
        ctx.close()
        data_dir.close()


def test_a_part_that_fails_closes_the_ones_built_before_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    closed: list[type] = []
    real_close_all = composition.close_all

    def recording_close_all(components: list[Component]) -> None:
        closed.extend(type(c) for c in reversed(components))
        real_close_all(components)

    def broken_engine(*args: object) -> InferenceEngine:
        raise RuntimeError("no engine today")

    monkeypatch.setattr(composition, "close_all", recording_close_all)
    monkeypatch.setattr(composition, "InferenceEngine", broken_engine)
    data_dir = DataDir(tmp_path / "data")
    try:
        with pytest.raises(RuntimeError, match="no engine today"):
            compose(Settings(data_dir=tmp_path / "data"), data_dir)
    finally:
        data_dir.close()
    assert closed == [DatabaseComponent, BanditService, FeatureService, Registry, AuditLog]


def test_engine_config_comes_from_the_settings() -> None:
    config = engine_config(
        Settings(
            onnx_intra_op_threads=2,
            onnx_providers="cpu",
            max_loaded_models=5,
            model_idle_seconds=9.0,
            shadow_queue_size=7,
        )
    )
    assert config.session.intra_op_threads == 2
    assert config.session.providers == ("cpu",)
    assert (config.max_loaded_models, config.idle_seconds, config.shadow_queue_size) == (5, 9.0, 7)

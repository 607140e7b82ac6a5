"""Demo data for ``llmopt-server --demo``: something a newcomer can call with grpcurl at once.

``seed_demo(ctx)`` runs once, when the server starts on an empty data dir, before the server
reports SERVING, through the domain services the composition root built (``AppContext.services``,
no network round trip), in the domain's own types:

- bandit ``llm-router`` (LinUCB on the ``request-context`` feature set) over five LLM
  configurations (``DEMO_ARMS``: model, temperature, max_tokens; list prices per 1k input and
  output tokens in the arm's metadata), rewarded with ``DEMO_REWARD_WEIGHTS`` (quality 0.85,
  cost 0.12, latency 0.03) and ``DEMO_MAX_COST`` as the cost scale;
- model ``quality-predictor``: two gradient-boosted regressors trained on synthetic request
  features (``QUALITY_FEATURES``) that predict an answer's quality, exported through skl2onnx
  (``llmopt.registry.export``): version 1 is ``champion``, version 2 (more trees) ``challenger``,
  with a SPLIT traffic policy sending ``DEMO_CHALLENGER_PERCENT`` % of routed requests to the
  challenger;
- feature set ``request-context``: the request facts (task, lengths, priority, hour) as
  transformed features, keyed by ``user_id``, with one stored per-user feature.

A part that cannot be seeded is logged and skipped. The parts seeded are recorded in
``<data dir>/demo.db``; a later start seeds nothing twice, and a data dir that already holds
anything (a bandit, a model or a feature set) is left untouched.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from llmopt.bandits.arms import Arm, LLMConfig
from llmopt.features.spec import Cyclical, Feature, FeatureType, Log1p, MinMax, OneHot
from llmopt.storage import Database

if TYPE_CHECKING:
    from llmopt.composition import AppContext

log = logging.getLogger("llmopt.demo")

DEMO_BANDIT = "llm-router"
DEMO_MODEL = "quality-predictor"
DEMO_FEATURE_SET = "request-context"
DEMO_CHALLENGER_PERCENT = 20.0
# The router's reward: quality first (the goal is "the same quality for less"), then cost, then
# latency; a request costing DEMO_MAX_COST dollars (or taking DEMO_MAX_LATENCY_MS) scores 0 on
# that term. examples/llm_router.py shows where other weights land.
DEMO_REWARD_WEIGHTS = (0.85, 0.12, 0.03)
DEMO_MAX_COST = 0.02
DEMO_MAX_LATENCY_MS = 20_000.0
DEMO_SEED = 42
DEMO_BACKGROUND_ROWS = 500  # training rows kept with each demo model version
DEMO_LINUCB_ALPHA = 0.2


def _arm(
    arm_id: str, temperature: float, max_tokens: int, pin: float, pout: float, provider: str
) -> Arm:
    return Arm(
        arm_id=arm_id,
        config=LLMConfig(model=arm_id, temperature=temperature, top_p=1.0, max_tokens=max_tokens),
        metadata={
            "provider": provider,
            "price_per_1k_input_tokens": f"{pin:.5f}",
            "price_per_1k_output_tokens": f"{pout:.5f}",
            "price_per_1k_tokens": f"{(pin + pout) / 2:.5f}",  # blended at 1:1
        },
    )


# List prices (USD per 1k tokens, input / output) as published by the providers in 2024.
DEMO_ARMS: tuple[Arm, ...] = (
    _arm("gpt-4o-mini", 0.3, 1024, 0.00015, 0.0006, "openai"),
    _arm("claude-3-haiku", 0.3, 1024, 0.00025, 0.00125, "anthropic"),
    _arm("llama-3.1-70b", 0.4, 1024, 0.00088, 0.00088, "together"),
    _arm("gpt-4o", 0.2, 2048, 0.0025, 0.010, "openai"),
    _arm("claude-3.5-sonnet", 0.2, 2048, 0.003, 0.015, "anthropic"),
)

# The request-context feature set: request facts turned into a routing vector, plus one stored
# per-user feature. (The default 10-dim context vector codes the task as one number; this set
# one-hot encodes it, which a linear policy can use per task.)
DEMO_FEATURE_SET_KEY = "user_id"
DEMO_FEATURE_SET_DESCRIPTION = "Request facts and per-user history for routing (demo)"
DEMO_FEATURES: tuple[Feature, ...] = (
    Feature("input_tokens", FeatureType.INT, Log1p(), source="context.input_length"),
    Feature("task", FeatureType.CATEGORY,
            OneHot(("classification", "extraction", "summarization", "generation")),
            source="context.task_type"),
    Feature("output_length", FeatureType.CATEGORY, OneHot(("SHORT", "MEDIUM", "LONG")),
            source="context.output_length"),
    Feature("priority", FeatureType.INT, MinMax(1.0, 10.0), source="context.priority"),
    Feature("hour", FeatureType.INT, Cyclical(24.0), source="context.hour_of_day"),
    Feature("avg_quality_7d", FeatureType.FLOAT, default=0.8),
)  # fmt: skip

# Inputs of the quality predictor, in column order.
QUALITY_FEATURES = (
    "input_tokens_log",  # ln(1 + input tokens) / 10
    "output_length",  # 0 short, 0.5 medium, 1 long
    "task_difficulty",  # 0.1 classification .. 0.55 generation
    "model_capability",  # the arm's capability, 0..1
)

_MIGRATIONS = ["CREATE TABLE seeded (part TEXT PRIMARY KEY, at REAL NOT NULL)"]


@dataclass(frozen=True)
class _Part:
    name: str
    seed: Callable[[AppContext], None]


def seed_demo(ctx: AppContext) -> list[str]:
    """Seed the demo into an empty data dir (see the module docstring); returns the parts seeded.

    ``ctx`` is what the composition root built (``App.context``); call after every component is
    warm and before the server reports SERVING.
    """
    db = Database(
        ctx.data_dir.path("demo.db"), migrations=_MIGRATIONS, synchronous=ctx.settings.sqlite_sync
    )
    try:
        done = set(db.read(lambda c: [r[0] for r in c.execute("SELECT part FROM seeded")]))
        if not done and _holds_data(ctx):
            log.info("demo: the data dir already holds data; nothing seeded")
            return []
        seeded = []
        for part in _PARTS:
            if part.name in done:
                continue
            try:
                part.seed(ctx)
            except Exception as exc:  # a part that cannot be seeded must not stop the server
                log.warning("demo: %s not seeded: %s", part.name, exc)
                continue
            db.write(_mark(part.name, time.time()))
            seeded.append(part.name)
            log.info("demo: seeded %s", part.name)
        return seeded
    finally:
        db.close()


def _mark(part: str, at: float) -> Callable[[sqlite3.Connection], None]:
    def insert(c: sqlite3.Connection) -> None:
        c.execute("INSERT INTO seeded VALUES (?, ?)", (part, at))

    return insert


def _holds_data(ctx: AppContext) -> bool:
    """Whether anything a user made is already stored (built-in feature sets aside)."""
    from llmopt.features import ARM_OUTCOMES_SET, CONTEXT_SET

    services = ctx.services
    if services.bandits.list_bandits(1, "")[0] or services.registry.list_models():
        return True
    sets, _ = services.features.list_sets(100, "")
    return any(s.name not in (ARM_OUTCOMES_SET, CONTEXT_SET) for s in sets)


# -- the parts ------------------------------------------------------------------------------------


def _seed_bandit(ctx: AppContext) -> None:
    from llmopt.bandits.policies import LinUCB
    from llmopt.bandits.rewards import RewardConfig
    from llmopt.bandits.types import BanditSpec

    features = ctx.services.features
    # LinUCB on the request-context feature set when it exists (seeded just before), else on
    # the default 10-dim context vector: examples/llm_router.py compares the two.
    has_set = DEMO_FEATURE_SET in {s.name for s in features.list_sets(1000, "")[0]}
    spec = BanditSpec(
        name=DEMO_BANDIT,
        policy=LinUCB(alpha=DEMO_LINUCB_ALPHA),
        arms=DEMO_ARMS,
        reward=RewardConfig.from_spec(
            weights=DEMO_REWARD_WEIGHTS,
            max_cost=DEMO_MAX_COST,
            max_latency_ms=DEMO_MAX_LATENCY_MS,
        ),
        feature_set=DEMO_FEATURE_SET if has_set else "",
        seed=DEMO_SEED,
        description="Routes each LLM request to one of five model configurations (demo).",
    )
    ctx.services.bandits.create_bandit(spec.validate())


def quality_training_data(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Synthetic (features, quality) rows: quality drops once the task's difficulty exceeds the
    model's capability, with noise. Columns: ``QUALITY_FEATURES``."""
    rng = np.random.default_rng(seed)
    input_log = np.minimum(np.log1p(rng.lognormal(6.0, 1.0, n)) / 10, 1.0)
    output = rng.choice([0.0, 0.5, 1.0], n)
    task = rng.choice([0.10, 0.25, 0.40, 0.55], n)
    capability = rng.uniform(0.3, 0.9, n)
    difficulty = task + 0.1 * output + 0.1 * input_log
    quality = 0.93 + 0.03 * capability - 1.5 * np.maximum(0.0, difficulty - capability)
    quality = np.clip(quality + rng.normal(0, 0.04, n), 0.0, 1.0)
    x = np.column_stack([input_log, output, task, capability]).astype(np.float32)
    return x, quality.astype(np.float32)


def _seed_model(ctx: AppContext) -> None:
    from sklearn.ensemble import GradientBoostingRegressor

    from llmopt.inference import TrafficMode, TrafficPolicy
    from llmopt.registry import ModelTask, VersionMetadata
    from llmopt.registry.export import export_sklearn

    registry = ctx.services.registry
    x, y = quality_training_data(4000, DEMO_SEED)
    x_test, y_test = quality_training_data(1000, DEMO_SEED + 1)
    registry.create_model(
        DEMO_MODEL,
        "Predicts the quality (0..1) of an LLM answer from request features and the model's "
        "capability; inputs: " + ", ".join(QUALITY_FEATURES),
        ModelTask.REGRESSION,
        {"demo": "true", "features": ",".join(QUALITY_FEATURES)},
    )
    for alias, trees in (("champion", 30), ("challenger", 120)):
        est = GradientBoostingRegressor(n_estimators=trees, max_depth=3, random_state=DEMO_SEED)
        est.fit(x, y)
        mae = float(np.mean(np.abs(est.predict(x_test) - y_test)))
        exported = export_sklearn(est, sample=x_test[:256])
        registry.upload_version(
            DEMO_MODEL,
            iter([exported.onnx_bytes]),
            VersionMetadata(
                semver=f"1.{0 if alias == 'champion' else 1}.0",
                parent_version=1 if alias == "challenger" else None,
                metrics={"mae": round(mae, 4), "n_estimators": float(trees)},
                tags={
                    "framework": "sklearn",
                    "estimator": "GradientBoostingRegressor",
                    "feature_names": ",".join(QUALITY_FEATURES),
                },
                description=f"gradient boosting, {trees} trees",
                alias=alias,
                background=x[:DEMO_BACKGROUND_ROWS],  # Explain's baseline: training rows
            ),
        )
    ctx.services.inference.set_policy(
        TrafficPolicy(DEMO_MODEL, TrafficMode.SPLIT, DEMO_CHALLENGER_PERCENT)
    )


def _seed_features(ctx: AppContext) -> None:
    from llmopt.features.spec import FeatureSet

    features = ctx.services.features
    features.create_set(
        FeatureSet(
            name=DEMO_FEATURE_SET,
            entity_key=DEMO_FEATURE_SET_KEY,
            features=DEMO_FEATURES,
            description=DEMO_FEATURE_SET_DESCRIPTION,
        )
    )
    features.write(
        DEMO_FEATURE_SET,
        [
            ("demo-user", {"avg_quality_7d": 0.91}, None),
            ("new-user", {"avg_quality_7d": 0.5}, None),
        ],
    )


_PARTS = (
    _Part("features", _seed_features),
    _Part("bandit", _seed_bandit),
    _Part("model", _seed_model),
)

"""Inference: ``InferenceEngine.predict`` in-process, and Predict end to end over gRPC.

Rows (issue 4): in-process single-row and 1,000-row predict on a 16-feature logistic regression
(single-row p99 <= 60 us) and a 100-tree gradient boosting model; end to end, Predict of 1,000
rows (>= 1,000,000 rows/s) and single-row Predict throughput beside the pinned echo server
(information; ModelInfer against MLServer is in bench_peers).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from typing import Any

import numpy as np

from benchmarks.e2e import load_rows
from benchmarks.harness import (
    Context,
    Result,
    hot_and_cold,
    latency_result,
    time_calls,
)
from benchmarks.load import Rpc, run_load

FEATURES = 16
BIG_BATCH = 1000
LR_P99_TARGET_US = 60.0
BATCH_CONCURRENCY = 8
ROWS_PER_S_TARGET = 1_000_000.0


def data(rows: int = 2000) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(rows, FEATURES)).astype(np.float32)
    y = (X @ rng.normal(size=FEATURES) > 0).astype(np.int64)
    return X, y


def _models(quick: bool) -> dict[str, bytes]:
    """ONNX bytes of the two benchmark models (skl2onnx, probabilities as a tensor)."""
    from skl2onnx import to_onnx
    from sklearn.ensemble import GradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression

    X, y = data()
    options = {"zipmap": False}
    lr = LogisticRegression(max_iter=500).fit(X, y)
    gbm = GradientBoostingClassifier(n_estimators=100, max_depth=3, random_state=0).fit(
        X[: 500 if quick else 2000], y[: 500 if quick else 2000]
    )
    return {
        "lr16": to_onnx(lr, X[:1], options=options, target_opset=17).SerializeToString(),
        "gbm100": to_onnx(gbm, X[:1], options=options, target_opset=17).SerializeToString(),
    }


def _in_process(ctx: Context, models: dict[str, bytes]) -> Iterator[Result]:
    from llmopt.inference import (
        MIGRATIONS,
        EngineConfig,
        InferenceEngine,
        TrafficPolicyStore,
    )
    from llmopt.inference.explain.traffic import TrafficSample
    from llmopt.registry import Registry, VersionMetadata
    from llmopt.storage import Database

    X, _ = data()
    root = ctx.scratch("inference")
    with ExitStack() as stack:
        registry = Registry(root / "registry")
        stack.callback(registry.close)
        db = Database(root / "inference.db", migrations=MIGRATIONS)
        stack.callback(db.close)
        engine = InferenceEngine(registry, TrafficPolicyStore(db), EngineConfig())
        stack.callback(engine.close)
        # As in the server: every prediction feeds the sample global importance is computed
        # over (the Explainer attaches it there).
        engine.sample_served_rows(TrafficSample())
        for name, onnx in models.items():
            registry.create_model(name)
            registry.upload_version(name, onnx, VersionMetadata(alias="champion"))
        for name in models:
            for rows, target in (
                (1, LR_P99_TARGET_US if name == "lr16" else None),
                (BIG_BATCH, None),
            ):
                row_name = f"inference.predict.{name}.{rows}row"
                if not ctx.wants(row_name):
                    continue
                feed = {"X": np.ascontiguousarray(X[:rows])}
                iterations = ctx.iterations(full=20_000 if rows == 1 else 2_000, quick=1_000)

                def call(n: str = name, f: dict[str, np.ndarray] = feed) -> object:
                    return engine.predict(n, f)

                pct = time_calls(call, warmup=200, iterations=iterations)
                result = latency_result(
                    row_name,
                    pct,
                    target_us=target,
                    note=f"in-process InferenceEngine.predict, {rows} x 16 float32",
                )
                result.extra["rows_per_s"] = round(rows / (pct.mean / 1e6), 1)
                yield result
        yield from _servicer_rows(ctx, engine, X)


def _servicer_rows(ctx: Context, engine: Any, X: np.ndarray) -> Iterator[Result]:
    """The Predict servicer from request bytes to answer bytes (1 row, lr16), in a hot loop and
    with other Python work between calls, as ``bandits.servicer.select`` does for SelectArm."""
    from llmopt.api.inference import InferenceServicer
    from llmopt.gen.llmopt.v1 import inference_pb2
    from llmopt.inference import Predictor

    if not ctx.wants("inference.servicer.predict"):
        return
    servicer = InferenceServicer(engine, Predictor(engine))
    request = _predict_rpc("lr16", 1).requests[0]
    parse = inference_pb2.PredictRequest.FromString

    def call() -> None:
        servicer.Predict(parse(request), None)

    for run in hot_and_cold(ctx):
        yield run.result(
            "inference.servicer.predict",
            call,
            "Predict servicer, request bytes to answer bytes, lr16 1 x 16 float32",
        )


def _predict_rpc(model: str, rows: int) -> Rpc:
    from llmopt.api.convert import to_tensor
    from llmopt.gen.llmopt.v1 import inference_pb2

    X, _ = data()
    request = inference_pb2.PredictRequest(model=model, inputs=[to_tensor(X[:rows], "X")])
    return Rpc.of(
        "/llmopt.v1.Inference/Predict", request, response_type=inference_pb2.PredictResponse
    )


def register(address: str, models: dict[str, bytes]) -> None:
    """Upload each model through the Registry service and make it the champion."""
    import grpc

    from llmopt.gen.llmopt.v1 import registry_pb2, registry_pb2_grpc

    with grpc.insecure_channel(address) as channel:
        stub = registry_pb2_grpc.RegistryStub(channel)
        for name, onnx in models.items():
            stub.CreateModel(registry_pb2.CreateModelRequest(name=name))
            meta = registry_pb2.UploadVersionMetadata(model=name, alias="champion")
            parts = [
                registry_pb2.UploadVersionRequest(metadata=meta),
                registry_pb2.UploadVersionRequest(chunk=onnx),
            ]
            stub.UploadVersion(iter(parts))


def _end_to_end(ctx: Context, models: dict[str, bytes]) -> Iterator[Result]:
    wants_batch = ctx.wants("e2e.Predict.1000rows")
    wants_single = ctx.wants("e2e.Predict.1row")
    if not (wants_batch or wants_single):
        return
    with ctx.server() as server:
        register(server.address, {"lr16": models["lr16"]})
        if wants_batch:
            report = run_load(
                server,
                _predict_rpc("lr16", BIG_BATCH),
                concurrency=BATCH_CONCURRENCY,
                duration=ctx.seconds(5.0, 1.0),
                warmup=ctx.seconds(1.0, 0.3),
            )
            yield Result(
                "e2e.Predict.1000rows",
                f"rows/s c{BATCH_CONCURRENCY}",
                round(report.throughput * BIG_BATCH, 1),
                "rows/s",
                target=ROWS_PER_S_TARGET,
                better="higher",
                extra={**report.summary(), "rows_per_request": BIG_BATCH},
                note=f"{report.throughput:,.0f} req/s of 1,000 x 16 float32 rows (logistic "
                f"regression), p99 {report.latency.p99 / 1e3:.2f} ms, "
                f"{report.cpu_us_per_req:,.0f} us CPU/req",
                error=None if report.ok else f"no call succeeded: {report.errors}",
            )
        if wants_single:
            yield from load_rows(
                ctx,
                server,
                _predict_rpc("lr16", 1),
                concurrencies=(8,) if ctx.quick else (1, 8, 32),
                name="Predict.1row",
            )


def benchmarks(ctx: Context) -> Iterator[Result]:
    wanted = ("inference.predict", "inference.servicer", "e2e.Predict.1000rows", "e2e.Predict.1row")
    if not any(ctx.wants(n) for n in wanted):
        return
    models = _models(ctx.quick)
    yield from _in_process(ctx, models)
    yield from _end_to_end(ctx, models)

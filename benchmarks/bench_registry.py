"""Model registry: upload of a 1 MB model, ListVersions over 1,000 versions, and promotion to the
first request served by the new champion (in-process and over gRPC against the real server).

Targets (issue 3): promotion visible to inference in <= 1 s; ListVersions page of 100 in <= 20 ms.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.harness import Context, Result, latency_result, percentiles_ns, time_calls

LIST_TARGET_US = 20_000.0
PROMOTE_TARGET_US = 1_000_000.0
VERSIONS = 1000
UPLOAD_CHUNK = 256 << 10


def _linear(n_in: int, n_out: int, seed: int) -> bytes:
    """Y = X @ W + B, X float32 [batch, n_in]; about 4 * n_in * n_out bytes."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    w = numpy_helper.from_array(rng.standard_normal((n_in, n_out)).astype(np.float32), "W")
    b = numpy_helper.from_array(rng.standard_normal(n_out).astype(np.float32), "B")
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["X", "W"], ["XW"]),
            helper.make_node("Add", ["XW", "B"], ["Y"]),
        ],
        "linear",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["batch", n_in])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["batch", n_out])],
        [w, b],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return bytes(model.SerializeToString())


def _one_mb() -> bytes:
    return _linear(1024, 256, seed=1)  # 1 MiB of weights


def benchmarks(ctx: Context) -> Iterator[Result]:
    yield from _in_process(ctx)
    yield from _end_to_end(ctx)


# -- in process ---------------------------------------------------------------------------------


def _in_process(ctx: Context) -> Iterator[Result]:
    from llmopt.registry import Registry

    root = ctx.scratch("registry")
    registry = Registry(root / "registry")
    try:
        if ctx.wants("registry.upload_1mb"):
            yield _upload_in_process(ctx, registry)
        if ctx.wants("registry.list_versions.page100"):
            yield _list_in_process(ctx, registry)
        if ctx.wants("registry.promote"):
            yield from _promote_in_process(ctx, registry, root)
    finally:
        registry.close()


def _upload_in_process(ctx: Context, registry: Any) -> Result:
    data = _one_mb()
    registry.create_model("upload1mb")
    pct = time_calls(
        lambda: registry.upload_version("upload1mb", data),
        warmup=2,
        iterations=ctx.iterations(full=50, quick=10),
    )
    return latency_result(
        "registry.upload_1mb",
        pct,
        target_us=None,
        metric="p50",
        note=f"Registry.upload_version of {len(data) >> 10} KiB: hash, fsync, onnx.checker, "
        "onnxruntime session, commit",
    )


def _fill(upload: Callable[[int], object]) -> None:
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(upload, range(VERSIONS)))


def _list_in_process(ctx: Context, registry: Any) -> Result:
    from llmopt.registry import VersionMetadata

    data = _linear(4, 2, seed=0)
    registry.create_model("many")
    _fill(
        lambda i: registry.upload_version(
            "many", data, VersionMetadata(tags={"bucket": str(i % 10)}, metrics={"rmse": i / 1000})
        )
    )
    token = registry.list_versions("many", page_size=100).next_page_token
    pct = time_calls(
        lambda: registry.list_versions("many", page_size=100, page_token=token),
        warmup=20,
        iterations=ctx.iterations(full=2_000, quick=200),
    )
    return latency_result(
        "registry.list_versions.page100",
        pct,
        target_us=LIST_TARGET_US,
        note=f"Registry.list_versions, second page of 100 over {VERSIONS} versions",
    )


def _promote_in_process(ctx: Context, registry: Any, root: Path) -> Iterator[Result]:
    from llmopt.inference import MIGRATIONS, EngineConfig, InferenceEngine, TrafficPolicyStore
    from llmopt.registry import AliasEvent
    from llmopt.storage import Database

    model = "promo"
    registry.create_model(model)
    for seed in (1, 2):
        registry.upload_version(model, _linear(4, 2, seed))
    registry.set_alias(model, "champion", 1)
    notified: list[int] = []

    def on_event(event: AliasEvent) -> None:
        if event.alias == "champion":
            notified.append(time.perf_counter_ns())

    unsubscribe = registry.subscribe(on_event)
    feed = {"X": np.zeros((1, 4), np.float32)}
    with ExitStack() as stack:
        db = Database(root / "inference.db", migrations=MIGRATIONS)
        stack.callback(db.close)
        engine = InferenceEngine(registry, TrafficPolicyStore(db), EngineConfig())
        stack.callback(engine.close)
        engine.predict(model, feed)
        to_notify: list[float] = []
        to_served: list[float] = []
        champion = 1
        for _ in range(ctx.iterations(full=100, quick=20)):
            target = 3 - champion
            registry.set_alias(model, "challenger", target)
            start = time.perf_counter_ns()
            registry.promote(model, reason="bench")
            while engine.predict(model, feed).version != target:
                pass
            to_served.append(time.perf_counter_ns() - start)
            to_notify.append(notified[-1] - start)
            champion = target
    unsubscribe()
    yield latency_result(
        "registry.promote.notified",
        percentiles_ns(to_notify),
        target_us=PROMOTE_TARGET_US,
        note="Registry.promote call to the alias subscriber being told",
    )
    yield latency_result(
        "registry.promote.first_request",
        percentiles_ns(to_served),
        target_us=PROMOTE_TARGET_US,
        note="Registry.promote call to the first InferenceEngine.predict served by the new "
        "champion (in process)",
    )


# -- end to end ---------------------------------------------------------------------------------


def _end_to_end(ctx: Context) -> Iterator[Result]:
    names = (
        "e2e.registry.upload_1mb",
        "e2e.registry.list_versions.page100",
        "e2e.registry.promote.first_request",
    )
    if not any(ctx.wants(n) for n in names):
        return
    import grpc

    from llmopt.gen.llmopt.v1 import registry_pb2_grpc

    with ctx.server() as server, grpc.insecure_channel(server.address) as channel:
        stub = registry_pb2_grpc.RegistryStub(channel)
        if ctx.wants(names[0]):
            yield _upload_e2e(ctx, stub)
        if ctx.wants(names[1]):
            yield _list_e2e(ctx, stub)
        if ctx.wants(names[2]):
            yield _promote_e2e(ctx, stub, channel)


def _upload(stub: Any, model: str, data: bytes, **meta: Any) -> Any:
    from llmopt.gen.llmopt.v1 import registry_pb2

    def requests() -> Iterator[Any]:
        yield registry_pb2.UploadVersionRequest(
            metadata=registry_pb2.UploadVersionMetadata(model=model, **meta)
        )
        for i in range(0, len(data), UPLOAD_CHUNK):
            yield registry_pb2.UploadVersionRequest(chunk=data[i : i + UPLOAD_CHUNK])

    return stub.UploadVersion(requests(), timeout=60)


def _upload_e2e(ctx: Context, stub: Any) -> Result:
    from llmopt.gen.llmopt.v1 import registry_pb2

    data = _one_mb()
    stub.CreateModel(registry_pb2.CreateModelRequest(name="upload1mb"))
    pct = time_calls(
        lambda: _upload(stub, "upload1mb", data),
        warmup=2,
        iterations=ctx.iterations(full=50, quick=10),
    )
    return latency_result(
        "e2e.registry.upload_1mb",
        pct,
        target_us=None,
        metric="p50",
        note=f"UploadVersion over gRPC, {len(data) >> 10} KiB in {UPLOAD_CHUNK >> 10} KiB chunks",
    )


def _list_e2e(ctx: Context, stub: Any) -> Result:
    from llmopt.gen.llmopt.v1 import common_pb2, registry_pb2

    data = _linear(4, 2, seed=0)
    stub.CreateModel(registry_pb2.CreateModelRequest(name="many"))
    _fill(
        lambda i: _upload(
            stub, "many", data, tags={"bucket": str(i % 10)}, metrics={"rmse": i / 1000}
        )
    )
    first = stub.ListVersions(
        registry_pb2.ListVersionsRequest(model="many", page=common_pb2.PageRequest(page_size=100))
    )
    request = registry_pb2.ListVersionsRequest(
        model="many", page=common_pb2.PageRequest(page_size=100, page_token=first.next_page_token)
    )
    pct = time_calls(
        lambda: stub.ListVersions(request, timeout=10),
        warmup=20,
        iterations=ctx.iterations(full=1_000, quick=100),
    )
    return latency_result(
        "e2e.registry.list_versions.page100",
        pct,
        target_us=LIST_TARGET_US,
        note=f"ListVersions over gRPC, second page of 100 over {VERSIONS} versions",
    )


def _promote_e2e(ctx: Context, stub: Any, channel: Any) -> Result:
    from llmopt.api.convert import to_tensor
    from llmopt.gen.llmopt.v1 import inference_pb2, inference_pb2_grpc, registry_pb2

    model = "promo"
    stub.CreateModel(registry_pb2.CreateModelRequest(name=model))
    _upload(stub, model, _linear(4, 2, 1), alias="champion")
    _upload(stub, model, _linear(4, 2, 2))
    infer = inference_pb2_grpc.InferenceStub(channel)
    request = inference_pb2.PredictRequest(
        model=model, inputs=[to_tensor(np.zeros((1, 4), np.float32), "X")]
    )
    infer.Predict(request, timeout=30)
    samples: list[float] = []
    champion = 1
    for _ in range(ctx.iterations(full=50, quick=10)):
        target = 3 - champion
        stub.SetAlias(registry_pb2.SetAliasRequest(model=model, alias="challenger", version=target))
        start = time.perf_counter_ns()
        stub.Promote(registry_pb2.PromoteRequest(model=model, reason="bench"))
        while infer.Predict(request, timeout=30).version != target:
            pass
        samples.append(time.perf_counter_ns() - start)
        champion = target
    return latency_result(
        "e2e.registry.promote.first_request",
        percentiles_ns(samples),
        target_us=PROMOTE_TARGET_US,
        note="Promote RPC sent to the first Predict RPC answered by the new champion",
    )

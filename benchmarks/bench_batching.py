"""Dynamic batching in process: 64 client threads, one row each call, batched and unbatched.

Rows (issue 29): on a 100-tree gradient boosting model and the 16-feature logistic regression
(skl2onnx exports, as ``bench_inference``), closed-loop throughput with 64 client threads calling
``DynamicBatcher.submit`` and, for the unbatched row, the ``LoadedModel``'s ``run`` directly from
the same threads; the speed-up (target >= 3 x for the gradient boosting model); and the batched
p99 against max_queue_delay + one full batch's compute time, measured in the same run.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np

from benchmarks.harness import Context, Result, latency_result, percentiles_ns, time_calls

CLIENTS = 64
FEATURES = 16
MAX_BATCH = 64
DELAY_US = 500
GBM_SPEEDUP_TARGET = 3.0


class _Loop(NamedTuple):
    """What the client threads measured inside the window."""

    calls_per_s: float
    latencies_ns: list[int]  # each call as its client saw it
    inner_ns: list[int]  # what each call returned (the batcher: queue + compute), if an int


def _client_loop(
    call: Callable[[dict[str, np.ndarray]], object],
    feeds: list[dict[str, np.ndarray]],
    warmup: float,
    duration: float,
) -> _Loop:
    """``CLIENTS`` threads calling ``call`` back to back; calls/s and the latencies of the calls
    that started and ended inside the measured window."""
    start_barrier = threading.Barrier(CLIENTS + 1)
    samples: list[list[int]] = [[] for _ in range(CLIENTS)]
    inner: list[list[int]] = [[] for _ in range(CLIENTS)]
    window: list[float] = [0.0, 0.0]
    stop = threading.Event()

    def client(i: int) -> None:
        feed = feeds[i % len(feeds)]
        mine, mine_inner = samples[i], inner[i]
        clock = time.perf_counter
        start_barrier.wait()
        while not stop.is_set():
            t0 = clock()
            got = call(feed)
            t1 = clock()
            if window[0] <= t0 and t1 <= window[1]:
                mine.append(int((t1 - t0) * 1e9))
                if isinstance(got, int):
                    mine_inner.append(got)

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(CLIENTS)]
    for t in threads:
        t.start()
    now = time.perf_counter()
    window[0], window[1] = now + warmup, now + warmup + duration
    start_barrier.wait()
    time.sleep(warmup + duration)
    stop.set()
    for t in threads:
        t.join()
    latencies = [s for mine in samples for s in mine]
    return _Loop(len(latencies) / duration, latencies, [s for mine in inner for s in mine])


def _models(quick: bool) -> dict[str, bytes]:
    from benchmarks.bench_inference import _models as inference_models

    return inference_models(quick)


def _rows_for(ctx: Context, name: str, onnx: bytes) -> Iterator[Result]:
    from benchmarks.bench_inference import data
    from llmopt.inference.batching import BatchingConfig, DynamicBatcher
    from llmopt.inference.session import LoadedModel, SessionConfig

    prefix = f"batching.{name}.c{CLIENTS}"
    # As the engine's loader builds it: the server's session options, warmed up.
    loaded = LoadedModel(name, 1, onnx, SessionConfig())
    X, _ = data()
    feeds = [{"X": np.ascontiguousarray(X[i : i + 1])} for i in range(CLIENTS)]
    full = {"X": np.ascontiguousarray(X[:MAX_BATCH])}
    warmup, duration = ctx.seconds(1.0, 0.3), ctx.seconds(4.0, 1.0)

    # One full batch's compute, alone: the run the batcher makes when a batch fills.
    batch_compute = time_calls(
        lambda: loaded.run(full), warmup=20, iterations=ctx.iterations(2_000, 200)
    )
    single = time_calls(
        lambda: loaded.run(feeds[0]), warmup=20, iterations=ctx.iterations(2_000, 200)
    )

    unbatched_loop = _client_loop(loaded.run, feeds, warmup, duration)
    config = BatchingConfig(MAX_BATCH, DELAY_US)
    batcher = DynamicBatcher(loaded.run, config, name, signature=loaded.signature)
    sizes: list[int] = []

    def submit(feed: dict[str, np.ndarray]) -> int:
        result = batcher.submit(feed)
        sizes.append(result.batch_rows)
        return result.queue_ns + result.compute_ns

    try:
        batched_loop = _client_loop(submit, feeds, warmup, duration)
    finally:
        batcher.close()
    mean_batch = float(np.mean(sizes)) if sizes else float("nan")
    common: dict[str, Any] = {
        "clients": CLIENTS,
        "max_batch_size": MAX_BATCH,
        "max_queue_delay_us": DELAY_US,
        "single_row_run_p50_us": round(single.p50, 1),
        "full_batch_run_p50_us": round(batch_compute.p50, 1),
    }
    unbatched = percentiles_ns(unbatched_loop.latencies_ns)
    batched = percentiles_ns(batched_loop.latencies_ns)
    in_batcher = percentiles_ns(batched_loop.inner_ns)
    rps, base_rps = batched_loop.calls_per_s, unbatched_loop.calls_per_s
    yield Result(
        f"{prefix}.unbatched",
        "throughput",
        round(base_rps, 1),
        "req/s",
        extra={**common, **unbatched.as_extra()},
        note=f"{CLIENTS} threads calling LoadedModel.run, 1 x 16 float32 each (one row: "
        f"{single.p50:,.1f} us alone), client p99 {unbatched.p99:,.0f} us",
    )
    yield Result(
        f"{prefix}.batched",
        "throughput",
        round(rps, 1),
        "req/s",
        extra={**common, **batched.as_extra(), "mean_batch_rows": round(mean_batch, 1)},
        note=f"the same threads calling DynamicBatcher.submit (max {MAX_BATCH} rows, delay "
        f"{DELAY_US} us), mean batch {mean_batch:.1f} rows",
    )
    yield Result(
        f"{prefix}.speedup",
        "batched / unbatched",
        round(rps / base_rps, 2) if base_rps else float("nan"),
        "x",
        target=GBM_SPEEDUP_TARGET if name == "gbm100" else None,
        better="higher",
        note="throughput, same threads, same run",
    )
    p99_row = latency_result(
        f"{prefix}.batched_p99",
        in_batcher,
        target_us=round(DELAY_US + batch_compute.p50, 1),
        note=f"in the batcher (queue + compute) per request; target: max_queue_delay {DELAY_US} "
        f"us + one {MAX_BATCH}-row batch's compute ({batch_compute.p50:,.0f} us, p50 alone, "
        f"this run)",
    )
    p99_row.extra.update(common)
    yield p99_row
    client_row = latency_result(
        f"{prefix}.batched_client_p99",
        batched,
        note=f"as the client thread sees it: also its wait for the GIL among {CLIENTS} threads "
        f"once its batch has answered (unbatched client p99: {unbatched.p99:,.0f} us)",
    )
    client_row.extra.update(common)
    yield client_row


MODELS = ("gbm100", "lr16")
ROWS = ("unbatched", "batched", "speedup", "batched_p99", "batched_client_p99")


def _row_names(model: str) -> list[str]:
    return [f"batching.{model}.c{CLIENTS}.{row}" for row in ROWS]


CEILING_ROW = f"batching.no_model.c{CLIENTS}.batched"


def _ceiling(ctx: Context) -> Result:
    """The batcher's own ceiling here: the same threads and batcher over a ``run`` that hands
    the rows straight back, so only the queueing and the threads' hand-offs are left."""
    from llmopt.inference.batching import BatchingConfig, DynamicBatcher

    def echo(
        inputs: Mapping[str, np.ndarray], output_names: Sequence[str] | None
    ) -> dict[str, np.ndarray]:
        return {"Y": inputs["X"]}

    feeds = [{"X": np.zeros((1, FEATURES), np.float32)} for _ in range(CLIENTS)]
    batcher = DynamicBatcher(echo, BatchingConfig(MAX_BATCH, DELAY_US), "no_model")

    def submit(feed: dict[str, np.ndarray]) -> int:
        result = batcher.submit(feed)
        return result.queue_ns + result.compute_ns

    try:
        loop = _client_loop(submit, feeds, ctx.seconds(1.0, 0.3), ctx.seconds(4.0, 1.0))
    finally:
        batcher.close()
    return Result(
        CEILING_ROW,
        "throughput",
        round(loop.calls_per_s, 1),
        "req/s",
        extra=percentiles_ns(loop.latencies_ns).as_extra(),
        note=f"{CLIENTS} threads through DynamicBatcher.submit over a run that returns its "
        "input: the queue and the thread hand-offs alone, the most any model can get here",
    )


E2E_ROW = "batching.e2e.gbm100.c64"
E2E_WORKERS = 64  # unary workers of the server: each in-flight request holds one


def e2e_rows(ctx: Context) -> Iterator[Result]:
    """ModelInfer of the gradient boosting model over gRPC, 64 requests in flight from the
    load generator's processes, against the real server pinned to one core with 64 unary
    workers (so that 64 requests can be in the engine at once): batching off, then on, twice
    each, interleaved; the median of each side."""
    if not ctx.wants(E2E_ROW):
        return
    import statistics

    from benchmarks.bench_inference import data
    from benchmarks.load import Rpc
    from llmopt.gen.inference import grpc_service_pb2 as oip
    from llmopt.gen.llmopt.v1 import inference_pb2, inference_pb2_grpc
    from tests.support.inference_client import register

    onnx = _models(ctx.quick)["gbm100"]
    X, _ = data()
    requests = []
    for i in range(CLIENTS):
        msg = oip.ModelInferRequest(model_name="gbm100")
        msg.inputs.add(name="X", datatype="FP32", shape=[1, X.shape[1]])
        msg.raw_input_contents.append(np.ascontiguousarray(X[i : i + 1]).tobytes())
        requests.append(msg)
    rpc = Rpc.of("/inference.GRPCInferenceService/ModelInfer", *requests)
    batching = inference_pb2.DynamicBatching(max_batch_size=MAX_BATCH, max_queue_delay_us=DELAY_US)
    sides: dict[str, list[Any]] = {"unbatched": [], "batched": []}
    with ctx.server(args=["--workers", str(E2E_WORKERS)]) as server:
        import grpc

        with grpc.insecure_channel(server.address) as channel:
            register(channel, "gbm100", onnx, alias="champion")
            stub = inference_pb2_grpc.InferenceStub(channel)
            for _ in range(2):
                for side in sides:
                    policy = inference_pb2.TrafficPolicy(model="gbm100")
                    if side == "batched":
                        policy.batching.CopyFrom(batching)
                    stub.SetTrafficPolicy(inference_pb2.SetTrafficPolicyRequest(policy=policy))
                    sides[side].append(ctx.load(server, rpc, concurrency=CLIENTS))
    rps = {k: statistics.median(r.throughput for r in v) for k, v in sides.items()}
    p99 = {k: statistics.median(r.latency.p99 for r in v) for k, v in sides.items()}
    errors = sum(r.error_count for v in sides.values() for r in v)
    where = (
        f"server pinned to core {server.cpus}, {E2E_WORKERS} workers"
        if server.cpus
        else ("server not pinned")
    )
    for side in sides:
        yield Result(
            name=f"{E2E_ROW}.{side}",
            metric="throughput",
            measured=rps[side],
            unit="req/s",
            better="higher",
            extra={"p99_us": p99[side], "errors": errors},
            note=f"ModelInfer, 1 row a call, {CLIENTS} in flight; p99 {p99[side] / 1e3:.2f} ms; "
            f"{where}",
        )
    yield Result(
        name=f"{E2E_ROW}.speedup",
        metric="batched / unbatched",
        measured=rps["batched"] / rps["unbatched"],
        unit="x",
        target=GBM_SPEEDUP_TARGET,
        better="higher",
        note=f"max_batch_size {MAX_BATCH}, max_queue_delay {DELAY_US} us; {errors} errors",
    )


def benchmarks(ctx: Context) -> Iterator[Result]:
    yield from e2e_rows(ctx)
    wanted = [m for m in MODELS if any(ctx.wants(n) for n in _row_names(m))]
    if wanted:
        models = _models(ctx.quick)
        for name in wanted:
            yield from _rows_for(ctx, name, models[name])
    if ctx.wants(CEILING_ROW):
        yield _ceiling(ctx)

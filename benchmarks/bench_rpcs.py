"""End to end: the RPCs other issues set targets for, over gRPC.

- SelectArm (LinUCB, 4 arms, request context): throughput beside the pinned echo (information);
  ``e2e.ExplainedSelectArm``: the same with ``explain`` (the explanation kept with the decision
  and written on the answer).
- WriteFeatures: >= 10,000 rows/s in requests of 10 rows, >= 100,000 rows/s in requests of 1,000
  rows (issue 6); GetFeatures p99 <= 2 ms at concurrency 1 (issue 6).

Predict end to end is in bench_inference.py, RecordReward in bench_bandits_service.py.
Setup goes through the public RPCs (benchmarks/soak.py ``setup``). An RPC that answers
UNIMPLEMENTED gives a ``skip`` row with its target, so the row is there before the RPC is.
"""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import numpy as np

from benchmarks.e2e import load_rows
from benchmarks.harness import Context, Result
from benchmarks.load import LoadReport, LoadTarget, Rpc, run_load
from benchmarks.soak import BANDIT, _context, setup

FEATURE_SET = "bench-users"
ROW_FEATURES = 10


def _closed(ctx: Context, server: LoadTarget, rpc: Rpc, concurrency: int) -> LoadReport:
    return run_load(
        server,
        rpc,
        concurrency=concurrency,
        duration=ctx.seconds(5.0, 1.0),
        warmup=ctx.seconds(1.0, 0.3),
    )


def _load_error(report: LoadReport) -> str | None:
    if report.ok == 0:
        return f"no call succeeded: {report.errors}"
    if report.error_count:
        return f"{report.error_count} calls failed: {report.errors}"
    return None


def _unimplemented(exc: grpc.RpcError) -> bool:
    return exc.code() == grpc.StatusCode.UNIMPLEMENTED  # type: ignore[attr-defined,no-any-return]


def benchmarks(ctx: Context) -> Iterator[Result]:
    import random

    from llmopt.gen.llmopt.v1 import bandits_pb2

    concurrencies = (8,) if ctx.quick else (1, 32)
    with ctx.server() as server:
        plan = setup(server.address, wanted=("SelectArm",))
        rng = random.Random(0)

        if ctx.wants("e2e.SelectArm"):
            if "SelectArm" in plan.ops:
                select = Rpc.of(
                    "/llmopt.v1.Bandits/SelectArm",
                    *(
                        bandits_pb2.SelectArmRequest(bandit=BANDIT, context=_context(rng))
                        for _ in range(32)
                    ),
                    response_type=bandits_pb2.Decision,
                )
                yield from load_rows(ctx, server, select, concurrencies=concurrencies)
            else:
                yield Result.skip("e2e.SelectArm", plan.skipped["SelectArm"], "throughput")
        if ctx.wants("e2e.ExplainedSelectArm") and "SelectArm" in plan.ops:
            explained = Rpc.of(
                "/llmopt.v1.Bandits/SelectArm",
                *(
                    bandits_pb2.SelectArmRequest(bandit=BANDIT, context=_context(rng), explain=True)
                    for _ in range(32)
                ),
                response_type=bandits_pb2.Decision,
            )
            yield from load_rows(
                ctx, server, explained, concurrencies=concurrencies, name="ExplainedSelectArm"
            )

        yield from feature_rows(ctx, server)


def feature_rows(ctx: Context, server: LoadTarget) -> Iterator[Result]:
    from llmopt.gen.llmopt.v1 import features_pb2, features_pb2_grpc

    wanted = [n for n in ("e2e.WriteFeatures", "e2e.GetFeatures") if ctx.wants(n)]
    if not wanted:
        return
    feature_set = features_pb2.FeatureSet(
        name=FEATURE_SET,
        entity_key="user_id",
        features=[
            features_pb2.Feature(name=f"f{i}", type=features_pb2.FEATURE_TYPE_FLOAT)
            for i in range(ROW_FEATURES)
        ],
    )
    rng = np.random.default_rng(3)

    def write_request(rows: int, batch: int) -> features_pb2.WriteFeaturesRequest:
        return features_pb2.WriteFeaturesRequest(
            feature_set=FEATURE_SET,
            rows=[
                features_pb2.FeatureRow(
                    entity_id=f"user-{(batch * rows + k) % 5000}",
                    values={
                        f"f{i}": features_pb2.FeatureValue(number=float(v))
                        for i, v in enumerate(rng.random(ROW_FEATURES))
                    },
                )
                for k in range(rows)
            ],
        )

    try:
        with grpc.insecure_channel(server.address) as channel:
            stub = features_pb2_grpc.FeaturesStub(channel)
            stub.CreateFeatureSet(
                features_pb2.CreateFeatureSetRequest(feature_set=feature_set), timeout=30
            )
            stub.WriteFeatures(write_request(1000, 0), timeout=30)  # entities for GetFeatures
    except grpc.RpcError as exc:
        reason = f"{exc.code().name}: {exc.details()}"  # type: ignore[attr-defined]
        for name, metric, target, unit, better in (
            ("e2e.WriteFeatures10rows", "rows/s", 10_000, "rows/s", "higher"),
            ("e2e.WriteFeatures1000rows", "rows/s", 100_000, "rows/s", "higher"),
            ("e2e.GetFeatures.c1", "p99 latency", 2000, "us", "lower"),
        ):
            if _unimplemented(exc):
                yield Result.skip(name, reason, metric, target, unit, better)  # type: ignore[arg-type]
            else:
                yield Result.failed(name, "feature set setup failed: " + reason, metric)
        return

    if ctx.wants("e2e.WriteFeatures"):
        for rows, target, c in ((10, 10_000, 16), (1000, 100_000, 4)):
            requests = [write_request(rows, b) for b in range(16 if rows == 10 else 4)]
            rpc = Rpc.of("/llmopt.v1.Features/WriteFeatures", *requests)
            report = _closed(ctx, server, rpc, c)
            yield Result(
                f"e2e.WriteFeatures{rows}rows.c{c}",
                "durable rows/s",
                round(report.throughput * rows, 0),
                "rows/s",
                target=target,
                better="higher",
                extra=report.summary(),
                note=f"{report.throughput:,.0f} req/s of {rows} rows, p99 "
                f"{report.latency.p99 / 1e3:.1f} ms, {report.cpu_us_per_req:,.0f} us CPU/req",
                error=_load_error(report),
            )
    if ctx.wants("e2e.GetFeatures"):
        requests = [
            features_pb2.GetFeaturesRequest(feature_set=FEATURE_SET, entity_ids=[f"user-{k}"])
            for k in range(64)
        ]
        report = _closed(ctx, server, Rpc.of("/llmopt.v1.Features/GetFeatures", *requests), 1)
        yield Result(
            "e2e.GetFeatures.c1",
            "p99 latency",
            round(report.latency.p99, 1),
            "us",
            target=2000,
            extra=report.summary(),
            note=f"1 entity x {ROW_FEATURES} features; {report.throughput:,.0f} req/s, "
            f"p50 {report.latency.p50:,.0f} us",
            error=_load_error(report),
        )

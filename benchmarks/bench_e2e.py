"""End to end: the real server under load, beside the echo baseline, and across cores.

Rows: GetFeatureVector and Health/Check at concurrencies 1, 8, 32, 64 (throughput, p50, p99,
server CPU per call, ratio to echo; the server and echo pinned to core 0, the clients on the
others), open-loop latency at a fixed rate, the server's RSS idle (plan: < 500 MB) and under
load, and throughput with the server pinned to one core against unpinned (scaling).
``e2e.handler_budget.*``: the echo server with N us of Python per call against the bare one:
what a servicer's own work costs end to end.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator

from benchmarks.e2e import CONCURRENCIES, echo_baseline, load_rows, open_loop_rows
from benchmarks.harness import Context, Result
from benchmarks.load import Rpc, run_load

MIB = 1024 * 1024
OPEN_LOOP_RATE = 500.0  # req/s: about a quarter of one server process's capacity on 2 cores
SCALING_CONCURRENCY = 32


def feature_vector_rpc() -> Rpc:
    from llmopt.gen.llmopt.v1 import common_pb2, features_pb2

    requests = [
        features_pb2.GetFeatureVectorRequest(
            context=common_pb2.RequestContext(
                user_id=f"user-{i}",
                task_type=task,
                input_length=100 * (i + 1),
                output_length_category=common_pb2.MEDIUM,
                priority=1 + i % 10,
                hour_of_day=i % 24,
                day_of_week=i % 7,
            )
        )
        for i, task in enumerate(["summarization", "generation", "classification", "qa"] * 4)
    ]
    return Rpc.of(
        "/llmopt.v1.Features/GetFeatureVector", *requests, response_type=features_pb2.FeatureVector
    )


def health_rpc() -> Rpc:
    from grpc_health.v1 import health_pb2

    return Rpc.of("/grpc.health.v1.Health/Check", health_pb2.HealthCheckRequest())


def benchmarks(ctx: Context) -> Iterator[Result]:
    concurrencies = (1, 32) if ctx.quick else CONCURRENCIES
    gfv = feature_vector_rpc()
    with ctx.server() as server:
        if ctx.wants("server.rss_idle"):
            yield Result(
                "server.rss_idle",
                "RSS after start, idle",
                round(server.rss_bytes() / MIB, 1),
                "MiB",
                target=500.0,
                note="plan: < 500 MB idle",
            )
        peak = 0
        if ctx.wants("e2e.GetFeatureVector"):
            for row in load_rows(ctx, server, gfv, concurrencies=concurrencies):
                peak = max(peak, int(row.extra.get("rss_load_mib", 0) * MIB))
                yield row
        if ctx.wants("e2e.Health.Check"):
            yield from load_rows(
                ctx, server, health_rpc(), concurrencies=concurrencies[-1:], name="Health.Check"
            )
        if ctx.wants("e2e.GetFeatureVector.open"):
            yield from open_loop_rows(ctx, server, gfv, rate=OPEN_LOOP_RATE)
        if peak and ctx.wants("server.rss_load"):
            yield Result(
                "server.rss_load",
                "peak RSS under load",
                round(peak / MIB, 1),
                "MiB",
                note="GetFeatureVector closed loop, all concurrencies",
            )
    if ctx.wants("scaling"):
        yield from scaling_rows(ctx, gfv)
    if ctx.wants("e2e.handler_budget"):
        yield from handler_budget_rows(ctx)


HANDLER_BUDGET_US = (10, 20, 40)


def handler_budget_rows(ctx: Context) -> Iterator[Result]:
    """Echo with N us of Python per call against bare echo at c32, rounds interleaved so both
    see the same machine; the median round's ratio per N."""
    from contextlib import ExitStack

    c, rounds = SCALING_CONCURRENCY, (1 if ctx.quick else 3)
    busy = (0, *HANDLER_BUDGET_US)
    runs: dict[int, list] = {b: [] for b in busy}
    with ExitStack() as stack:
        servers = {b: stack.enter_context(ctx.echo_server(busy_us=b)) for b in busy}
        for _ in range(rounds):
            for b in busy:
                runs[b].append(
                    run_load(
                        servers[b],
                        Rpc.echo(48),
                        concurrency=c,
                        duration=ctx.seconds(3.0, 1.0),
                        warmup=ctx.seconds(0.5, 0.3),
                    )
                )
    for b in HANDLER_BUDGET_US:
        pairs = sorted(
            (r.throughput / base.throughput, r, base)
            for r, base in zip(runs[b], runs[0], strict=True)
        )
        ratio, report, base = pairs[len(pairs) // 2]
        yield Result(
            f"e2e.handler_budget.busy{b}us.c{c}",
            "throughput / echo",
            round(ratio, 3),
            "x",
            extra={**report.summary(), "echo_throughput_rps": round(base.throughput, 1)},
            note=f"echo whose handler runs {b} us of Python per call: {report.throughput:,.0f} "
            f"req/s, {report.cpu_us_per_req:,.0f} us server CPU/req; bare echo "
            f"{base.throughput:,.0f} req/s, {base.cpu_us_per_req:,.0f} us",
        )


def scaling_rows(ctx: Context, rpc: Rpc) -> Iterator[Result]:
    """The same load with the server on 1 core (clients on the other) and unpinned."""
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2 or shutil.which("taskset") is None:
        reason = f"needs taskset and 2 cores to pin server and clients apart (cores {cores})"
        yield Result.skip(f"scaling.{rpc.name}", reason, f"throughput c{SCALING_CONCURRENCY}")
        return
    server_cpu, client_cpus = str(cores[0]), set(cores[1:])
    figures = {}
    for label, cpus, clients in (("1core", server_cpu, client_cpus), ("all", None, set(cores))):
        base = echo_baseline(
            ctx,
            rpc.payload_bytes,
            concurrency=SCALING_CONCURRENCY,
            cpus=cpus,
            client_cpus=clients,
        )
        with ctx.server(cpus=cpus) as server:
            report = run_load(
                server,
                rpc,
                concurrency=SCALING_CONCURRENCY,
                duration=ctx.seconds(5.0, 1.0),
                warmup=ctx.seconds(1.0, 0.3),
                client_cpus=clients,
            )
        figures[label] = report.throughput
        where = (
            f"server on core {server_cpu}, clients on {sorted(client_cpus)}"
            if cpus
            else (f"server and clients share {len(cores)} cores")
        )
        yield Result(
            f"scaling.{rpc.name}.{label}",
            f"throughput c{SCALING_CONCURRENCY}",
            round(report.throughput, 1),
            "req/s",
            extra={
                **report.summary(),
                "echo_throughput_rps": round(base.throughput, 1),
                "ratio_to_echo": round(report.throughput / base.throughput, 3),
                "pinned": cpus or "",
            },
            note=f"{where}; {report.cpu_us_per_req:,.0f} us CPU/req; "
            f"echo {base.throughput:,.0f} req/s",
        )
    if figures.get("1core"):
        yield Result(
            f"scaling.{rpc.name}.speedup",
            "throughput all cores / 1 core",
            round(figures["all"] / figures["1core"], 2),
            "x",
            note=f"{len(cores)} cores shared with the load generator",
        )

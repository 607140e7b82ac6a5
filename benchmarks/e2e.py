"""End-to-end rows: an RPC under load against the real server, as a ratio to the echo baseline.

The echo baseline (benchmarks/echo_server.py) is the bare grpcio server with the same pool and
options; ratio = what the Python gRPC framework leaves to this project. Baselines are measured
once per (payload size, concurrency, mode, pinning) per run and cached on the Context.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from benchmarks.harness import Context, Result
from benchmarks.load import LoadReport, LoadTarget, Rpc, run_load

CONCURRENCIES = (1, 8, 32, 64)


def echo_baseline(
    ctx: Context,
    payload_bytes: int,
    *,
    concurrency: int,
    rate: float | None = None,
    cpus: str | None = None,
    client_cpus: set[int] | None = None,
) -> LoadReport:
    """The echo server under the same load as the RPC being compared (cached per run)."""
    key = (payload_bytes, concurrency, rate, cpus, ctx.quick)
    cached = ctx.cache.get(("echo", key))
    if isinstance(cached, LoadReport):
        return cached
    with ctx.echo_server(cpus=cpus) as echo:
        report = run_load(
            echo,
            Rpc.echo(payload_bytes),
            concurrency=concurrency,
            duration=ctx.seconds(5.0, 1.0),
            warmup=ctx.seconds(1.0, 0.3),
            rate=rate,
            client_cpus=client_cpus,
        )
    ctx.cache[("echo", key)] = report
    return report


def _describe(report: LoadReport) -> str:
    text = (
        f"{report.throughput:,.0f} req/s, p50 {report.latency.p50 / 1e3:.2f} ms, "
        f"p99 {report.latency.p99 / 1e3:.2f} ms, {report.cpu_us_per_req:,.0f} us CPU/req"
    )
    lag = report.extra.get("send_lag_p99_us")
    if lag is not None:
        text += f", client send lag p99 {lag / 1e3:.2f} ms (included)"
    if report.error_count:
        text += f", {report.error_count} errors {report.errors}"
    return text


def load_rows(
    ctx: Context,
    server: LoadTarget,
    rpc: Rpc,
    *,
    concurrencies: Sequence[int] = CONCURRENCIES,
    target_ratio: float | None = None,
    name: str | None = None,
) -> Iterator[Result]:
    """For each concurrency: the echo baseline's row, then ``rpc``'s row judged on its
    throughput as a ratio to echo (``target_ratio``, e.g. 0.8). An RPC that answers errors
    yields an ERROR row: a benchmark of failures is no benchmark."""
    label = name or rpc.name
    for c in concurrencies:
        base = echo_baseline(ctx, rpc.payload_bytes, concurrency=c)
        yield Result(
            f"e2e.echo[{rpc.payload_bytes}B].c{c}",
            "throughput (baseline)",
            round(base.throughput, 1),
            "req/s",
            extra=base.summary(),
            note=_describe(base),
        )
        report = run_load(
            server,
            rpc,
            concurrency=c,
            duration=ctx.seconds(5.0, 1.0),
            warmup=ctx.seconds(1.0, 0.3),
        )
        ratio = report.throughput / base.throughput if base.throughput else float("nan")
        extra = {
            **report.summary(),
            "ratio_to_echo": round(ratio, 3),
            "p99_ratio_to_echo": round(report.latency.p99 / base.latency.p99, 3),
            "cpu_ratio_to_echo": round(report.cpu_us_per_req / base.cpu_us_per_req, 3),
            "echo_throughput_rps": round(base.throughput, 1),
        }
        yield Result(
            f"e2e.{label}.c{c}",
            "throughput / echo",
            round(ratio, 3),
            "x",
            target=target_ratio,
            better="higher",
            extra=extra,
            note=_describe(report),
            error=_errors(report),
        )


def open_loop_rows(
    ctx: Context, server: LoadTarget, rpc: Rpc, *, rate: float, name: str | None = None
) -> Iterator[Result]:
    """Latency at a fixed offered rate (open loop), for echo and ``rpc``; ratio of p99."""
    label = name or rpc.name
    base = echo_baseline(ctx, rpc.payload_bytes, concurrency=1, rate=rate)
    yield Result(
        f"e2e.echo[{rpc.payload_bytes}B].open{rate:g}",
        f"p99 latency @ {rate:g} req/s open loop",
        round(base.latency.p99, 1),
        "us",
        extra=base.summary(),
        note=_describe(base),
    )
    report = run_load(
        server,
        rpc,
        concurrency=1,
        rate=rate,
        duration=ctx.seconds(5.0, 1.0),
        warmup=ctx.seconds(1.0, 0.3),
    )
    yield Result(
        f"e2e.{label}.open{rate:g}",
        f"p99 latency @ {rate:g} req/s open loop",
        round(report.latency.p99, 1),
        "us",
        extra={
            **report.summary(),
            "p99_ratio_to_echo": round(report.latency.p99 / base.latency.p99, 3),
        },
        note=_describe(report) + f"; x{report.latency.p99 / base.latency.p99:.2f} echo p99",
        error=_errors(report),
    )


def _errors(report: LoadReport) -> str | None:
    if report.ok == 0:
        return f"no call succeeded: {report.errors}"
    if report.error_count > 0.01 * (report.ok + report.error_count):
        return f"{report.error_count} of {report.ok + report.error_count} calls failed: " + str(
            report.errors
        )
    return None

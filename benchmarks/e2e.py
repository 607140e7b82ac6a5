"""End-to-end rows: an RPC under load against the real server, as a ratio to the echo baseline.

The echo baseline (benchmarks/echo_server.py) is the bare grpcio server with the same pool and
options; ratio = what the Python gRPC framework leaves to this project. A throughput ratio is
taken against echo measured right before and right after the RPC's own run (their mean), since
this machine's speed drifts by tens of percent within a run; latency-only baselines (open loop,
scaling) are measured once per (payload size, concurrency, mode, pinning) and cached.
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
    """For each concurrency: echo, ``rpc``, echo again (one echo server for all), then the
    baseline's row (the two echo runs' mean) and ``rpc``'s row judged on its throughput as a
    ratio to it (``target_ratio``, e.g. 0.8). An RPC that answers errors yields an ERROR row:
    a benchmark of failures is no benchmark."""
    label = name or rpc.name
    duration, warmup = ctx.seconds(5.0, 1.0), ctx.seconds(1.0, 0.3)
    bare = Rpc.echo(rpc.payload_bytes)

    def run(target: LoadTarget, what: Rpc, c: int) -> LoadReport:
        return run_load(target, what, concurrency=c, duration=duration, warmup=warmup)

    with ctx.echo_server() as echo:
        for c in concurrencies:
            before, report, after = run(echo, bare, c), run(server, rpc, c), run(echo, bare, c)
            yield from _ratio_rows(label, c, report, before, after, target_ratio)


def bracketed_baseline(name: str, before: LoadReport, after: LoadReport) -> tuple[Result, float]:
    """The baseline row for echo runs made right before and right after an RPC's run, and
    their mean throughput (what the RPC's ratio is taken against)."""
    echo_rps = (before.throughput + after.throughput) / 2
    row = Result(
        name,
        "throughput (baseline)",
        round(echo_rps, 1),
        "req/s",
        extra={**before.summary(), "throughput_after_rps": round(after.throughput, 1)},
        note=f"mean of {before.throughput:,.0f} (before) and {after.throughput:,.0f} req/s "
        f"(after); before: {_describe(before)}",
    )
    return row, echo_rps


def _ratio_rows(
    label: str,
    c: int,
    report: LoadReport,
    before: LoadReport,
    after: LoadReport,
    target_ratio: float | None,
) -> Iterator[Result]:
    """The bracketing echo runs' row and the RPC's ratio row (against their mean)."""
    baseline, echo_rps = bracketed_baseline(f"e2e.{label}.c{c}.echo_baseline", before, after)
    yield baseline
    echo_p99 = (before.latency.p99 + after.latency.p99) / 2
    echo_cpu = (before.cpu_us_per_req + after.cpu_us_per_req) / 2
    ratio = report.throughput / echo_rps if echo_rps else float("nan")
    yield Result(
        f"e2e.{label}.c{c}",
        "throughput / echo",
        round(ratio, 3),
        "x",
        target=target_ratio,
        better="higher",
        extra={
            **report.summary(),
            "ratio_to_echo": round(ratio, 3),
            "p99_ratio_to_echo": round(report.latency.p99 / echo_p99, 3),
            "cpu_ratio_to_echo": round(report.cpu_us_per_req / echo_cpu, 3),
            "echo_throughput_rps": round(echo_rps, 1),
        },
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

"""End-to-end rows: an RPC under load against the real server, as a ratio to the echo baseline.

The echo baseline (benchmarks/echo_server.py) is the bare grpcio server with the same pool and
options; ratio = what the Python gRPC framework leaves to this project. A throughput ratio is
taken against echo measured right before and right after the RPC's own run (their mean), since
this machine's speed drifts by tens of percent within a run, in interleaved rounds whose median
is the verdict (``Interleaved``). Latency-only baselines (open loop, scaling) are measured once
per (payload size, concurrency, mode, pinning) and cached.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

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


ROUNDS = 3  # interleaved (echo, RPC) rounds per ratio row in a full run; quick runs take 1


@dataclass(frozen=True)
class Interleaved:
    """Echo and an RPC run alternately: echo, RPC, echo, ..., RPC, echo. Round ``i``'s ratio is
    the RPC's throughput over the mean of the echo runs right before and right after it; the
    verdict is the median round. One reading on this shared machine swings by +-0.15 between
    runs minutes apart; the median of bracketed rounds moves far less, and every round's ratio
    is kept in the row."""

    echo: tuple[LoadReport, ...]  # one more than ``rpc``
    rpc: tuple[LoadReport, ...]

    @property
    def ratios(self) -> list[float]:
        return [
            r.throughput / mean if (mean := (a.throughput + b.throughput) / 2) else math.nan
            for r, a, b in zip(self.rpc, self.echo, self.echo[1:], strict=False)
        ]

    @property
    def median_round(self) -> int:
        """The index of the round whose ratio is the median (the lower one of an even count)."""
        ratios = self.ratios
        order = sorted(range(len(ratios)), key=ratios.__getitem__)
        return order[(len(order) - 1) // 2]


def rounds(ctx: Context) -> int:
    """Interleaved rounds per ratio row: ``ROUNDS`` in a full run, 1 in a quick one."""
    return 1 if ctx.quick else ROUNDS


def interleaved(
    ctx: Context,
    echo: LoadTarget,
    server: LoadTarget,
    rpcs: Sequence[Rpc],
    concurrency: int,
    *,
    clients: int | None = None,
) -> Interleaved:
    """A round per ``rpcs`` item (an RPC whose requests may be sent once, as RecordReward's,
    needs one per round): it on ``server``, between echo runs of its payload."""
    duration, warmup = ctx.seconds(3.0, 1.0), ctx.seconds(0.5, 0.3)
    bare = Rpc.echo(rpcs[0].payload_bytes)

    def run(target: LoadTarget, what: Rpc) -> LoadReport:
        return run_load(
            target, what, concurrency=concurrency, duration=duration, warmup=warmup, clients=clients
        )

    echoes, reports = [run(echo, bare)], []
    for rpc in rpcs:
        reports.append(run(server, rpc))
        echoes.append(run(echo, bare))
    return Interleaved(tuple(echoes), tuple(reports))


def load_rows(
    ctx: Context,
    server: LoadTarget,
    rpc: Rpc,
    *,
    concurrencies: Sequence[int] = CONCURRENCIES,
    target_ratio: float | None = None,
    name: str | None = None,
) -> Iterator[Result]:
    """For each concurrency, ``interleaved`` rounds of echo and ``rpc`` (one echo server for
    all): the median round's baseline row and ``rpc``'s row judged on its throughput as a ratio
    to it (``target_ratio``, e.g. 0.8). An RPC that answers errors yields an ERROR row: a
    benchmark of failures is no benchmark."""
    label = name or rpc.name
    with ctx.echo_server() as echo:
        for c in concurrencies:
            runs = interleaved(ctx, echo, server, [rpc] * rounds(ctx), c)
            yield from ratio_rows(label, c, runs, target_ratio)


def _bracketed_baseline(name: str, before: LoadReport, after: LoadReport) -> tuple[Result, float]:
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


def ratio_rows(
    label: str, c: int, runs: Interleaved, target_ratio: float | None, note: str = ""
) -> Iterator[Result]:
    """The median round's bracketing echo row and the RPC's ratio row (against their mean),
    with every round's ratio in ``extra`` and the note."""
    i = runs.median_round
    before, report, after = runs.echo[i], runs.rpc[i], runs.echo[i + 1]
    baseline, echo_rps = _bracketed_baseline(f"e2e.{label}.c{c}.echo_baseline", before, after)
    yield baseline
    echo_p99 = (before.latency.p99 + after.latency.p99) / 2
    echo_cpu = (before.cpu_us_per_req + after.cpu_us_per_req) / 2
    ratios = runs.ratios
    ratio = ratios[i]
    spread = ""
    if len(ratios) > 1:
        spread = f"; median of {len(ratios)} rounds: " + ", ".join(f"{r:.3f}" for r in ratios)
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
            "round_ratios": [round(r, 3) for r in ratios],
            "p99_ratio_to_echo": round(report.latency.p99 / echo_p99, 3),
            "cpu_ratio_to_echo": round(report.cpu_us_per_req / echo_cpu, 3),
            "echo_throughput_rps": round(echo_rps, 1),
        },
        note=_describe(report) + spread + (f"; {note}" if note else ""),
        error=next(filter(None, map(_errors, runs.rpc)), None),
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

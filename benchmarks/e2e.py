"""End-to-end rows: an RPC under load against the real server, beside the bare grpcio echo.

Both servers run pinned to one core (``Context.pinning``: core 0, ``taskset -c``) and the load
generator's clients on the other cores, so the server is bound by its own core and not by the
clients it shares it with (unpinned, the ratio to echo swung by up to 0.19 between identical
runs). Each row is the RPC's throughput with its p50, p99 and server CPU per call; the ratio to
echo, measured right before and right after the RPC's own run (their mean), is information, not
a verdict: the peers (``bench_peers``) are what the figures are judged against. On a one-core
machine the rows are ``skipped: one core``. Latency-only baselines (open loop, scaling) are
measured once per (payload size, concurrency, mode, pinning) and cached.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from benchmarks.harness import PINNED, Context, Result
from benchmarks.load import LoadReport, LoadTarget, Rpc, run_load

CONCURRENCIES = (1, 8, 32, 64)


def echo_baseline(
    ctx: Context,
    payload_bytes: int,
    *,
    concurrency: int,
    rate: float | None = None,
    cpus: str | None = PINNED,
    client_cpus: set[int] | None = None,
) -> LoadReport:
    """The echo server under the same load as the RPC being compared (cached per run)."""
    key = (payload_bytes, concurrency, rate, ctx.server_cpus(cpus), ctx.quick)
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


def describe(report: LoadReport) -> str:
    """One run's figures for a row's note: throughput, p50, p99, server CPU per call."""
    text = (
        f"{report.throughput:,.0f} req/s, p50 {report.latency.p50 / 1e3:.2f} ms, "
        f"p99 {report.latency.p99 / 1e3:.2f} ms, {report.cpu_us_per_req:,.0f} us server CPU/call"
    )
    lag = report.extra.get("send_lag_p99_us")
    if lag is not None:
        text += f", client send lag p99 {lag / 1e3:.2f} ms (included)"
    if report.error_count:
        text += f", {report.error_count} errors {report.errors}"
    return text


ROUNDS = 1  # (echo, RPC, echo) rounds per row; pinned runs need no median of several


@dataclass(frozen=True)
class Interleaved:
    """Echo and an RPC run alternately: echo, RPC, echo, ..., RPC, echo. Round ``i``'s ratio is
    the RPC's throughput over the mean of the echo runs right before and right after it; the
    row reports the median round, and every round's ratio is kept in it."""

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
    """Interleaved rounds per row: ``ROUNDS`` in a full run, 1 in a quick one."""
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
    name: str | None = None,
) -> Iterator[Result]:
    """For each concurrency, ``interleaved`` rounds of echo and ``rpc`` (one pinned echo server
    for all): the echo row and ``rpc``'s throughput row (``throughput_rows``). Skipped, with the
    reason, where the server cannot have a core of its own. An RPC that answers errors yields
    an ERROR row: a benchmark of failures is no benchmark."""
    label = name or rpc.name
    if isinstance(ctx.pinning, str):
        for c in concurrencies:
            yield Result.skip(f"e2e.{label}.c{c}", ctx.pinning, f"throughput c{c}", unit="req/s")
        return
    with ctx.echo_server() as echo:
        for c in concurrencies:
            runs = interleaved(ctx, echo, server, [rpc] * rounds(ctx), c)
            yield from throughput_rows(label, c, runs, where=where(server))


def where(server: LoadTarget) -> str:
    """Where the server ran, for a row's note ("server on core 0")."""
    cpus = getattr(server, "cpus", None)
    return f"server on core {cpus}" if cpus else "server unpinned"


def _echo_row(name: str, before: LoadReport, after: LoadReport) -> tuple[Result, float]:
    """The echo row for echo runs made right before and right after an RPC's run, and their
    mean throughput (what the RPC's ratio is taken against)."""
    echo_rps = (before.throughput + after.throughput) / 2
    row = Result(
        name,
        "throughput (echo)",
        round(echo_rps, 1),
        "req/s",
        extra={**before.summary(), "throughput_after_rps": round(after.throughput, 1)},
        note=f"mean of {before.throughput:,.0f} (before) and {after.throughput:,.0f} req/s "
        f"(after); before: {describe(before)}",
    )
    return row, echo_rps


def throughput_rows(
    label: str, c: int, runs: Interleaved, note: str = "", where: str = ""
) -> Iterator[Result]:
    """The median round's echo row (``e2e.<label>.c<c>.echo``) and the RPC's row: its
    throughput (req/s, no target), p50, p99 and server CPU per call, with its ratio to that
    echo as information; every round's ratio is in ``extra``."""
    i = runs.median_round
    before, report, after = runs.echo[i], runs.rpc[i], runs.echo[i + 1]
    echo_row, echo_rps = _echo_row(f"e2e.{label}.c{c}.echo", before, after)
    yield echo_row
    echo_p99 = (before.latency.p99 + after.latency.p99) / 2
    echo_cpu = (before.cpu_us_per_req + after.cpu_us_per_req) / 2
    ratios = runs.ratios
    ratio = ratios[i]
    text = f"{describe(report)}; {ratio:.2f} x echo"
    if len(ratios) > 1:
        text += f" (median of {len(ratios)} rounds: " + ", ".join(f"{r:.3f}" for r in ratios) + ")"
    yield Result(
        f"e2e.{label}.c{c}",
        f"throughput c{c}",
        round(report.throughput, 1),
        "req/s",
        extra={
            **report.summary(),
            "ratio_to_echo": round(ratio, 3),
            "round_ratios": [round(r, 3) for r in ratios],
            "p99_ratio_to_echo": round(report.latency.p99 / echo_p99, 3),
            "cpu_ratio_to_echo": round(report.cpu_us_per_req / echo_cpu, 3),
            "echo_throughput_rps": round(echo_rps, 1),
        },
        note="; ".join(filter(None, (text, where, note))),
        error=next(filter(None, map(errors_of, runs.rpc)), None),
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
        note=describe(base),
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
        note=describe(report) + f"; x{report.latency.p99 / base.latency.p99:.2f} echo p99",
        error=errors_of(report),
    )


def errors_of(report: LoadReport) -> str | None:
    if report.ok == 0:
        return f"no call succeeded: {report.errors}"
    if report.error_count > 0.01 * (report.ok + report.error_count):
        return f"{report.error_count} of {report.ok + report.error_count} calls failed: " + str(
            report.errors
        )
    return None

"""A short mixed-workload soak (benchmarks/soak.py) as rows: errors, RSS growth, throughput.

The long run is ``python -m benchmarks.soak --duration 300``; here 30 s (3 s quick) checks the
mix still runs and gives a first leak signal.
"""

from __future__ import annotations

from collections.abc import Iterator

from benchmarks.harness import Context, Result
from benchmarks.soak import MIX, run_soak


def benchmarks(ctx: Context) -> Iterator[Result]:
    if not ctx.wants("soak"):
        return
    duration = ctx.seconds(30.0, 3.0)
    # Unpinned: the soak looks for errors and leaks, and its clients do not keep off core 0.
    with ctx.server(cpus=None) as server:
        report = run_soak(server, duration, warmup=ctx.seconds(5.0, 1.0))
    covered = [op for op in MIX if op not in report.skipped]
    note = "mix: " + ", ".join(f"{op} {MIX[op]:.0%}" for op in covered)
    if report.skipped:
        note += "; left out: " + ", ".join(f"{op} ({why})" for op, why in report.skipped.items())
    if report.first_errors:
        note = "first errors: " + "; ".join(f"{op} {e}" for op, e in report.first_errors.items())
    summary = report.to_json()
    yield Result(
        "soak.errors",
        f"errors in {duration:g} s mixed load",
        float(report.total_errors),
        "calls",
        target=0.0,
        extra={
            "calls": report.calls,
            "errors": report.errors,
            "first_errors": report.first_errors,
            "skipped": report.skipped,
        },
        note=note,
        error=None if report.total_calls else "no RPC of the mix answered",
    )
    yield Result(
        "soak.rss_growth",
        "RSS growth after warm-up",
        round(report.rss_growth_mib, 2),
        "MiB",
        target=32.0,
        extra={"rss_mib": report.rss_mib, "slope_mib_per_min": summary["rss_slope_mib_per_min"]},
        note=f"trend {report.rss_slope_mib_per_min:+.2f} MiB/min; long run: python -m "
        "benchmarks.soak --duration 300",
    )
    yield Result(
        "soak.throughput",
        "mixed req/s, 16 in flight",
        summary["throughput_rps"],
        "req/s",
        extra={op: vars(p) for op, p in report.latency.items()},
        note=f"{summary['cpu_us_per_call']:,.0f} us server CPU/call",
    )

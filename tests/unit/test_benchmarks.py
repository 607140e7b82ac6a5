"""The benchmark harness itself: percentile maths, table/JSON/compare output, the runner's
error handling, the echo baseline and a very short load against the real server."""

from __future__ import annotations

import json
import math
import os
import random
import textwrap
import time
from pathlib import Path

import grpc
import numpy as np
import pytest

from benchmarks import runner
from benchmarks.e2e import Interleaved, ratio_rows
from benchmarks.echo_server import METHOD, create_echo_server
from benchmarks.harness import (
    ERROR,
    FAIL,
    INFO,
    PASS,
    SKIP,
    Context,
    Result,
    latency_result,
    percentiles_ns,
    quantile,
    time_calls,
)
from benchmarks.load import LoadReport, Rpc, run_load
from benchmarks.procs import cpu_seconds, rss_bytes
from benchmarks.soak import SoakReport, run_soak, setup
from tests.support.server import ServerProcess

# -- percentiles ----------------------------------------------------------------------------------


@pytest.mark.parametrize("q", [0.0, 0.25, 0.5, 0.9, 0.99, 0.999, 1.0])
def test_quantile_matches_numpy_linear(q: float) -> None:
    values = sorted(random.Random(3).random() * 1000 for _ in range(1001))
    assert quantile(values, q) == pytest.approx(np.percentile(values, q * 100))


def test_quantile_edges() -> None:
    assert math.isnan(quantile([], 0.5))
    assert quantile([7.0], 0.99) == 7.0
    with pytest.raises(ValueError):
        quantile([1.0], 1.5)


def test_percentiles_in_microseconds_from_unsorted_ns() -> None:
    samples = [float(i * 1000) for i in range(1, 1001)]  # 1..1000 us, shuffled
    random.Random(0).shuffle(samples)
    pct = percentiles_ns(samples)
    assert pct.count == 1000
    assert pct.p50 == pytest.approx(500.5)
    assert pct.p99 == pytest.approx(990.01)
    assert pct.max == 1000.0
    assert pct.mean == pytest.approx(500.5)
    assert pct.p50 <= pct.p95 <= pct.p99 <= pct.p999 <= pct.max


def test_percentiles_of_nothing_is_nan() -> None:
    pct = percentiles_ns([])
    assert pct.count == 0 and math.isnan(pct.p99)


def test_time_calls_warms_up_then_times_each_call() -> None:
    calls = []
    pct = time_calls(lambda: calls.append(1), warmup=7, iterations=50)
    assert len(calls) == 57
    assert pct.count == 50
    assert 0 < pct.p50 <= pct.max


def test_time_calls_runs_between_untimed_before_each_timed_call() -> None:
    order: list[str] = []
    pct = time_calls(
        lambda: order.append("call"),
        warmup=2,
        iterations=3,
        between=lambda: (order.append("between"), time.sleep(0.02)),
    )
    assert order == ["call", "call"] + ["between", "call"] * 3
    assert pct.max < 20_000  # (us) the 20 ms sleeps ran outside the timed calls


# -- results and output ---------------------------------------------------------------------------


def test_verdicts() -> None:
    assert Result("a", "p99", 4.0, "us", target=5.0).verdict == PASS
    assert Result("a", "p99", 6.0, "us", target=5.0).verdict == FAIL
    assert Result("a", "rate", 6.0, "/s", target=5.0, better="higher").verdict == PASS
    assert Result("a", "rate", 4.0, "/s", target=5.0, better="higher").verdict == FAIL
    assert Result("a", "rate", 4.0, "/s").verdict == INFO
    assert Result("a", "rate", math.nan, "/s", target=1.0).verdict == ERROR
    assert Result.failed("a", "boom").verdict == ERROR
    assert Result.skip("a", "UNIMPLEMENTED", "rate", 5.0, "/s", "higher").verdict == SKIP


def test_latency_result_judges_the_chosen_percentile() -> None:
    pct = percentiles_ns([1000.0] * 98 + [9000.0, 9000.0])
    row = latency_result("x", pct, target_us=5.0, metric="p50")
    assert row.measured == pytest.approx(1.0) and row.verdict == PASS
    assert latency_result("x", pct, target_us=5.0).verdict == FAIL  # p99 = 9 us
    assert row.extra["p99_us"] == pytest.approx(9.0)


def _results() -> list[Result]:
    return [
        Result("ctx.kernel", "p99 latency", 0.5, "us", target=5.0),
        Result("e2e.x.c8", "throughput / echo", 0.7, "x", target=0.8, better="higher"),
        Result("storage.t1", "writes/s", 9000.0, "ops/s", extra={"p99_us": 200.0}),
        Result.failed("bench_bad (crashed)", "RuntimeError: boom\nsecond line"),
        Result.skip("e2e.Later", "UNIMPLEMENTED: not built", "x", 0.85, "x", "higher"),
    ]


def test_table_has_one_row_per_result_with_verdicts() -> None:
    text = runner.format_table(_results())
    lines = text.splitlines()
    assert lines[0].split()[:5] == ["name", "metric", "measured", "target", "verdict"]
    assert len(lines) == 2 + 5
    assert "<= 5 us" in lines[2] and "PASS" in lines[2]
    assert ">= 0.8 x" in lines[3] and "FAIL" in lines[3]
    assert "9,000 ops/s" in lines[4] and "info" in lines[4]
    assert "ERROR" in lines[5] and "RuntimeError: boom" in lines[5]
    assert "second line" not in text
    assert ">= 0.85 x" in lines[6] and "skip" in lines[6] and "UNIMPLEMENTED" in lines[6]


def test_json_round_trip(tmp_path: Path) -> None:
    payload = runner.to_json(_results(), quick=True, started=0.0, finished=1.5)
    path = tmp_path / "r.json"
    path.write_text(json.dumps(payload))
    assert payload["machine"]["cores"] >= 1
    assert [r["verdict"] for r in payload["results"]] == [PASS, FAIL, INFO, ERROR, SKIP]
    back = runner.load_json(path)
    assert [(r.name, r.measured, r.target, r.better, r.extra) for r in back] == [
        (r.name, r.measured, r.target, r.better, r.extra) for r in _results()
    ]


def test_compare_reads_direction_and_noise() -> None:
    old = [
        Result("lat", "p99", 100.0, "us"),
        Result("rate", "x", 1000.0, "/s", better="higher"),
        Result("flat", "x", 50.0, "us"),
        Result("gone", "x", 1.0, "us"),
        Result("info_rate", "throughput", 100.0, "req/s"),  # no target, default better
    ]
    new = [
        Result("lat", "p99", 150.0, "us"),  # latency up: worse
        Result("rate", "x", 1200.0, "/s", better="higher"),  # throughput up: better
        Result("flat", "x", 51.0, "us"),  # +2 %: noise
        Result("fresh", "x", 1.0, "us"),
        Result("info_rate", "throughput", 150.0, "req/s"),  # a rate without target: up is better
    ]
    lines = {line.split()[0]: line for line in runner.format_compare(old, new).splitlines()}
    assert "+50.0%" in lines["lat"] and lines["lat"].endswith("WORSE")
    assert "+20.0%" in lines["rate"] and lines["rate"].endswith("better")
    assert lines["flat"].endswith("~")
    assert lines["info_rate"].endswith("better")
    assert "new" in lines["fresh"]
    assert "gone" in lines["not"]


# -- runner ---------------------------------------------------------------------------------------


@pytest.fixture
def fake_benches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    (tmp_path / "fake_bench_ok.py").write_text(
        textwrap.dedent(
            """
            from benchmarks.harness import Result

            def benchmarks(ctx):
                yield Result("fake.fast", "p99 latency", 1.0, "us", target=2.0)
                if ctx.wants("fake.slow"):
                    yield Result("fake.slow", "p99 latency", 3.0, "us", target=2.0)
                yield Result.skip("fake.later", "UNIMPLEMENTED")
            """
        )
    )
    (tmp_path / "fake_bench_crash.py").write_text(
        textwrap.dedent(
            """
            from benchmarks.harness import Result

            def benchmarks(ctx):
                yield Result("fake.before", "x", 1.0, "us")
                raise RuntimeError("kaput")
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    return ["fake_bench_ok", "fake_bench_crash"]


def test_a_crashing_bench_is_an_error_row_and_fails_the_run(
    fake_benches: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out.json"
    assert runner.main(["--quick", "--json", str(out)], modules=fake_benches) == 1
    rows = {r["name"]: r["verdict"] for r in json.loads(out.read_text())["results"]}
    assert rows == {
        "fake.fast": PASS,
        "fake.slow": FAIL,
        "fake.later": SKIP,
        "fake.before": INFO,
        "fake_bench_crash (crashed)": ERROR,
    }
    assert "RuntimeError: kaput" in capsys.readouterr().out


def test_missed_targets_fail_only_with_strict(fake_benches: list[str], tmp_path: Path) -> None:
    ok = fake_benches[:1]
    assert runner.main(["--quick"], modules=ok) == 0
    assert runner.main(["--quick", "--strict"], modules=ok) == 1


def test_only_filters_rows_and_compare_prints_change(
    fake_benches: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    old = tmp_path / "old.json"
    old.write_text(json.dumps({"results": [Result("fake.fast", "p99", 2.0, "us").to_json()]}))
    code = runner.main(["--quick", "--only", "fake.fast", "--compare", str(old)], fake_benches)
    out = capsys.readouterr().out
    assert code == 1  # the crashing module still ran (it ignores --only) and crashed
    assert "fake.fast" in out and "fake.slow" not in out and "fake.before" not in out
    assert "-50.0%" in out and "better" in out


def test_discovery_finds_the_bench_modules() -> None:
    found = runner.discover()
    assert "benchmarks.bench_e2e" in found and "benchmarks.bench_context" in found
    assert all(name.startswith("benchmarks.bench_") for name in found)


def _report(throughput: float, errors: int = 0) -> LoadReport:
    """A one-second closed-loop report of ``throughput`` calls."""
    pct = percentiles_ns([1_000_000] * 10)
    return LoadReport(
        "x",
        "closed",
        32,
        None,
        1.0,
        int(throughput),
        {"UNAVAILABLE": errors} if errors else {},
        pct,
        0.1,
        0,
        0,
        1,
    )


def test_interleaved_rounds_judge_the_median_round_against_its_own_echo_runs() -> None:
    runs = Interleaved(
        echo=tuple(map(_report, (100, 200, 100, 100))), rpc=tuple(map(_report, (75, 80, 90)))
    )
    assert runs.ratios == pytest.approx([0.5, 80 / 150, 0.9])
    assert runs.median_round == 1
    baseline, row = ratio_rows("X", 32, runs, 0.85)
    assert baseline.name == "e2e.X.c32.echo_baseline" and baseline.measured == 150.0
    assert row.name == "e2e.X.c32" and row.measured == round(80 / 150, 3)
    assert row.extra["round_ratios"] == [0.5, 0.533, 0.9]
    assert row.verdict == FAIL and row.error is None
    assert "median of 3 rounds: 0.500, 0.533, 0.900" in row.note


def test_interleaved_errors_in_any_round_make_an_error_row() -> None:
    runs = Interleaved(
        echo=tuple(map(_report, (100, 100, 100))), rpc=(_report(90), _report(10, errors=90))
    )
    _, row = ratio_rows("X", 8, runs, 0.85)
    assert row.verdict == ERROR and "UNAVAILABLE" in (row.error or "")


def test_context_wants_substring_or_glob(tmp_path: Path) -> None:
    ctx = Context(quick=True, tmp_dir=tmp_path, only="e2e.*.c8")
    assert ctx.wants("e2e.GetFeatureVector.c8")
    assert not ctx.wants("e2e.GetFeatureVector.c32")
    assert Context(quick=True, tmp_dir=tmp_path, only="KERNEL").wants("context.kernel")
    assert Context(quick=False, tmp_dir=tmp_path).wants("anything")


# -- end to end -----------------------------------------------------------------------------------


@pytest.mark.parametrize("busy_us", [0.0, 2000.0])
def test_echo_server_round_trip(busy_us: float) -> None:
    server, port = create_echo_server("127.0.0.1:0", busy_us=busy_us)
    server.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            echo = channel.unary_unary(METHOD)
            payload = bytes(range(256)) * 4
            start = time.perf_counter()
            assert echo(payload, timeout=10) == payload
            # The busy handler really works that long before answering.
            assert not busy_us or time.perf_counter() - start >= busy_us / 1e6
    finally:
        server.stop(0).wait()


class _Attached:
    """The shared test server, seen through the generator's LoadTarget protocol."""

    def __init__(self, proc: ServerProcess) -> None:
        assert proc.proc is not None
        self.address = proc.address
        self.pid = proc.proc.pid

    def cpu_seconds(self) -> float:
        return cpu_seconds(self.pid)

    def rss_bytes(self) -> int:
        return rss_bytes(self.pid)


def _feature_vector_rpc() -> Rpc:
    from benchmarks.bench_e2e import feature_vector_rpc

    return feature_vector_rpc()


@pytest.mark.integration
def test_closed_loop_load_against_the_real_server(server: ServerProcess) -> None:
    report = run_load(
        _Attached(server), _feature_vector_rpc(), concurrency=4, duration=0.5, warmup=0.2
    )
    assert report.mode == "closed" and report.clients == 2
    assert report.errors == {}
    assert report.ok > 0 and report.latency.count == report.ok
    assert report.throughput == pytest.approx(report.ok / report.window_s)
    assert report.server_cpu_s > 0 and report.cpu_us_per_req > 0
    # RSS can shrink under load (freed arenas), so only check both were read.
    assert report.rss_peak_bytes > 0 and report.rss_idle_bytes > 0
    summary = report.summary()
    assert summary["p50_us"] <= summary["p99_us"]


@pytest.mark.integration
def test_open_loop_sends_at_the_stated_rate(server: ServerProcess) -> None:
    report = run_load(
        _Attached(server),
        _feature_vector_rpc(),
        concurrency=1,
        rate=200.0,
        duration=0.5,
        warmup=0.1,
    )
    assert report.mode == "open" and report.errors == {}
    summary = report.summary()
    assert summary["scheduled"] == pytest.approx(100, abs=2)  # 200 req/s for 0.5 s
    assert 0 < report.ok <= summary["scheduled"]
    assert "send_lag_p99_us" in summary


@pytest.mark.integration
def test_errors_are_counted_by_code(server: ServerProcess) -> None:
    rpc = Rpc("/llmopt.v1.Features/NoSuchMethod", (b"",))
    report = run_load(_Attached(server), rpc, concurrency=1, duration=0.2, warmup=0.0)
    assert report.ok == 0
    assert set(report.errors) == {"UNIMPLEMENTED"} and report.errors["UNIMPLEMENTED"] > 0


def test_rss_and_cpu_readings_of_this_process() -> None:
    assert rss_bytes(os.getpid()) > 1024 * 1024
    assert cpu_seconds(os.getpid()) > 0


# -- soak ----------------------------------------------------------------------------------------


def test_soak_report_growth_and_trend() -> None:
    flat = [(float(t), 100.0) for t in range(50)]
    leaking = [(float(t), 100.0 + t) for t in range(50)]  # 1 MiB/s
    kwargs = {
        "duration_s": 50.0,
        "calls": {"SelectArm": 10},
        "errors": {},
        "latency": {},
        "skipped": {"Predict": "UNIMPLEMENTED"},
        "cpu_s": 1.0,
    }
    assert SoakReport(rss_mib=flat, **kwargs).rss_growth_mib == 0.0
    report = SoakReport(rss_mib=leaking, **kwargs)
    assert report.rss_growth_mib == pytest.approx(40.0)  # median of last 10 - first 10
    assert report.rss_slope_mib_per_min == pytest.approx(60.0)
    text = report.format()
    assert "Predict           skipped: UNIMPLEMENTED" in text and "+40.0 MiB" in text


@pytest.mark.integration
def test_soak_runs_what_answers_and_names_what_it_leaves_out(server: ServerProcess) -> None:
    plan = setup(server.address, wanted=("GetFeatureVector",))
    assert set(plan.ops) == {"GetFeatureVector"}
    assert set(plan.skipped) == {"SelectArm", "RecordReward", "Predict"}
    report = run_soak(_Attached(server), 0.5, warmup=0.1, concurrency=2, plan=plan)
    assert report.total_errors == 0
    assert report.calls["GetFeatureVector"] > 0 and set(report.calls) == {"GetFeatureVector"}
    assert len(report.rss_mib) >= 2

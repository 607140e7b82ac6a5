"""The benchmark harness itself: percentile maths, table/JSON/compare output, the runner's
error handling, the echo baseline and a very short load against the real server."""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import grpc
import numpy as np
import pytest

from benchmarks import runner
from benchmarks.e2e import Interleaved, load_rows, throughput_rows
from benchmarks.echo_server import METHOD, create_echo_server
from benchmarks.harness import (
    ERROR,
    FAIL,
    INFO,
    PASS,
    PINNED,
    SKIP,
    Context,
    Result,
    latency_result,
    percentiles_ns,
    quantile,
    time_calls,
)
from benchmarks.load import LoadReport, Rpc, run_load
from benchmarks.procs import (
    Pinning,
    client_cores,
    cpu_seconds,
    parse_cpu_list,
    rss_bytes,
    split_cores,
    tree_cpu_seconds,
)
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


def test_throughput_rows_report_the_median_round_with_its_ratio_as_information() -> None:
    runs = Interleaved(
        echo=tuple(map(_report, (100, 200, 100, 100))), rpc=tuple(map(_report, (75, 80, 90)))
    )
    assert runs.ratios == pytest.approx([0.5, 80 / 150, 0.9])
    assert runs.median_round == 1
    echo, row = throughput_rows("X", 32, runs, where="server on core 0")
    assert echo.name == "e2e.X.c32.echo" and echo.measured == 150.0 and echo.verdict == INFO
    assert row.name == "e2e.X.c32" and row.unit == "req/s" and row.measured == 80.0
    assert row.target is None and row.verdict == INFO  # the ratio is information, not a verdict
    assert row.extra["ratio_to_echo"] == 0.533
    assert row.extra["round_ratios"] == [0.5, 0.533, 0.9]
    assert row.extra["p50_us"] == 1000.0 and row.extra["p99_us"] == 1000.0
    assert row.extra["cpu_us_per_req"] == 1250.0  # 0.1 s of server CPU over 80 calls
    for text in ("80 req/s", "p50 1.00 ms", "p99 1.00 ms", "1,250 us server CPU/call"):
        assert text in row.note
    assert "0.53 x echo" in row.note and "server on core 0" in row.note
    assert "median of 3 rounds: 0.500, 0.533, 0.900" in row.note


def test_interleaved_errors_in_any_round_make_an_error_row() -> None:
    runs = Interleaved(
        echo=tuple(map(_report, (100, 100, 100))), rpc=(_report(90), _report(10, errors=90))
    )
    _, row = throughput_rows("X", 8, runs)
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

    @classmethod
    def unused(cls) -> _Attached:
        """A target nothing may call: rows that must not load anything get this."""
        target = cls.__new__(cls)
        target.address, target.pid = "unused:0", -1
        return target

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


# -- core pinning ---------------------------------------------------------------------------------


def test_cpu_lists_in_taskset_form() -> None:
    assert parse_cpu_list("0") == {0}
    assert parse_cpu_list("1-3,6") == {1, 2, 3, 6}
    with pytest.raises(ValueError, match="not a cpu list"):
        parse_cpu_list("0-x")


@pytest.mark.skipif(shutil.which("taskset") is None, reason="taskset is not installed")
def test_split_cores_puts_the_server_on_the_first_core_and_the_clients_on_the_rest() -> None:
    assert split_cores([2, 0, 5]) == Pinning("0", frozenset({2, 5}))
    assert split_cores([4]) == "one core"


def test_clients_keep_off_the_cores_of_a_pinned_server() -> None:
    cores = set(os.sched_getaffinity(0))
    assert client_cores(None) is None
    assert client_cores(",".join(map(str, sorted(cores)))) is None  # the server holds them all
    first = min(cores)
    assert client_cores(str(first)) == ((cores - {first}) or None)


def test_context_pins_servers_to_the_run_core_unless_told_otherwise(tmp_path: Path) -> None:
    ctx = Context(quick=True, tmp_dir=tmp_path)
    ctx.cache["pinning"] = Pinning("3", frozenset({4, 5}))
    assert ctx.server_cpus() == "3" and ctx.server_cpus(PINNED) == "3"
    assert ctx.server_cpus(None) is None and ctx.server_cpus("1") == "1"
    ctx.cache["pinning"] = "one core"
    assert ctx.server_cpus() is None


def test_end_to_end_rows_are_skipped_on_one_core(tmp_path: Path) -> None:
    ctx = Context(quick=True, tmp_dir=tmp_path)
    ctx.cache["pinning"] = "one core"
    rows = list(load_rows(ctx, _Attached.unused(), Rpc.echo(8), concurrencies=(1, 32)))
    assert [(r.name, r.verdict) for r in rows] == [("e2e.echo.c1", SKIP), ("e2e.echo.c32", SKIP)]
    assert runner.format_table(rows).count("skipped: one core") == 2
    assert not list(tmp_path.iterdir())  # no echo server was started


def test_tree_cpu_seconds_counts_the_children() -> None:
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import time\nt = time.process_time() + 0.3\n"
            "while time.process_time() < t: pass\ntime.sleep(30)",
        ]
    )
    try:
        deadline = time.monotonic() + 20
        while cpu_seconds(child.pid) < 0.25 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert tree_cpu_seconds(os.getpid()) >= cpu_seconds(os.getpid()) + 0.25
    finally:
        child.kill()
        child.wait()


# -- policy lists from the policy table ------------------------------------------------------------


def test_every_registered_policy_is_benchmarked() -> None:
    from benchmarks import bench_bandits, bench_peers, callgrind
    from llmopt.bandits import policies as P

    configs = bench_bandits.policy_configs()
    defaults = configs[: len(P.POLICY_TABLE)]
    assert [type(c) for _, c in defaults] == list(P.POLICY_TABLE)
    assert [label for label, _ in defaults] == list(P.CONFIG_BY_ONEOF)
    assert configs == bench_bandits.CONFIGS
    # Forms beside the defaults have labels of their own (row names must not collide).
    assert [label for label, _ in configs[len(defaults) :]] == list(bench_bandits.FORMS)
    assert len({label for label, _ in configs}) == len(configs)
    known = dict(configs)["thompson_gaussian.known_noise"]
    assert isinstance(known, P.ThompsonGaussian) and not known.learns_variance
    # The peer pairs and the callgrind cases name policies of the table.
    assert {p.oneof for p in bench_peers.PAIRS} <= set(P.CONFIG_BY_ONEOF)
    assert set(callgrind.POLICIES) <= set(P.CONFIG_BY_ONEOF)
    for pair in bench_peers.PAIRS:
        kernel, _ = P.KERNELS[P.CONFIG_BY_ONEOF[pair.oneof]]
        assert pair.contextual == P.make_policy(P.CONFIG_BY_ONEOF[pair.oneof](), 2, 3, 0).contextual
        assert kernel is not None


# -- peers ----------------------------------------------------------------------------------------


def test_speedup_rows_judge_the_peer_over_ours() -> None:
    from benchmarks.bench_peers import speedup_row

    row = speedup_row("peers.x.select", "select", 2.0, 5.0, 1.5, "K=10")
    assert row.measured == 2.5 and row.unit == "x" and row.verdict == PASS
    assert row.extra == {"ours_us": 2.0, "peer_us": 5.0}
    assert "ours 2.00 us, peer 5.00 us" in row.note
    assert speedup_row("peers.x.update", "update", 2.0, 100.0, 100.0, "").verdict == FAIL
    line = runner.format_table([row]).splitlines()[-1]
    assert "2.5 x" in line and ">= 1.5 x" in line and "PASS" in line


def test_mlserver_verdict_counts_the_better_worker_setting() -> None:
    from benchmarks.bench_peers import MLSERVER_TARGET, mlserver_verdict

    row = mlserver_verdict(_report(5000), {0: _report(1000), 1: _report(1250)})
    assert row.measured == 4.0 and row.target == MLSERVER_TARGET and row.verdict == PASS
    assert row.extra["mlserver_parallel_workers"] == 1 and row.extra["mlserver_rps"] == 1250
    row = mlserver_verdict(_report(3000), {0: _report(1000), 1: "did not start: boom"})
    assert row.measured == 3.0 and row.verdict == FAIL
    # A setting whose calls fail is not counted, however fast it answered them.
    row = mlserver_verdict(_report(3000), {0: _report(1000), 1: _report(5000, errors=900)})
    assert row.measured == 3.0 and row.extra["mlserver_parallel_workers"] == 0
    failing = mlserver_verdict(_report(3000), {0: _report(10, errors=90), 1: "quick"})
    assert failing.verdict == SKIP and "90 of 100 calls failed" in (failing.skipped or "")
    skipped = mlserver_verdict(_report(3000), {0: "quick", 1: "quick"})
    assert skipped.verdict == SKIP and skipped.skipped == "quick"
    assert "skipped: quick" in runner.format_table([skipped])
    both = mlserver_verdict(_report(3000), {0: "install failed: no network", 1: "x"})
    assert both.verdict == SKIP and "parallel_workers=0: install failed: no network" in (
        both.skipped or ""
    )


_TRITON_REQUEST = """
import sys
from tritonclient.grpc import service_pb2 as pb
rows = [[float(v) for v in line.split()] for line in sys.stdin.read().splitlines()]
for row in rows:
    tensor = pb.ModelInferRequest.InferInputTensor(
        name="X", datatype="FP32", shape=[1, len(row)],
        contents=pb.InferTensorContents(fp32_contents=row),
    )
    print(pb.ModelInferRequest(model_name="lr16", inputs=[tensor]).SerializeToString().hex())
"""


def test_model_infer_requests_are_the_bytes_tritonclient_sends() -> None:
    from benchmarks.bench_inference import data
    from benchmarks.bench_peers import TRITON_RESPONSE, model_infer_rpc
    from llmopt.gen.inference import grpc_service_pb2

    X, _ = data()
    rpc = model_infer_rpc(X, "lr16")
    assert rpc.method == "/inference.GRPCInferenceService/ModelInfer"
    assert (
        rpc.response_type == TRITON_RESPONSE == "tritonclient.grpc.service_pb2:ModelInferResponse"
    )
    assert len(rpc.requests) == 16
    ours = grpc_service_pb2.ModelInferRequest.FromString(rpc.requests[3])
    assert ours.model_name == "lr16" and list(ours.inputs[0].shape) == [1, 16]
    np.testing.assert_array_equal(np.array(ours.inputs[0].contents.fp32_contents, "f4"), X[3])
    # tritonclient's messages cannot share this process with llmopt.gen.inference.
    rows = "\n".join(" ".join(repr(float(v)) for v in row) for row in X[:16])
    done = subprocess.run(
        [sys.executable, "-c", _TRITON_REQUEST], input=rows, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert [bytes.fromhex(h) for h in done.stdout.split()] == list(rpc.requests)


def test_mabwiser_pairs_time_both_sides_per_call() -> None:
    pytest.importorskip("mabwiser")
    from benchmarks.bench_peers import PAIRS, UPDATE_TARGET, pair_rows

    for pair in PAIRS:
        select, update = pair_rows(pair, ours_n=20, theirs_n=2)
        assert select.name == f"peers.mabwiser.{pair.oneof}.select"
        assert update.name == f"peers.mabwiser.{pair.oneof}.update"
        assert select.target == (20.0 if pair.contextual else 1.5)
        assert update.target == UPDATE_TARGET
        for row in (select, update):
            assert row.extra["ours_us"] > 0 and row.extra["peer_us"] > 0
            assert row.verdict in (PASS, FAIL)


@pytest.mark.integration
def test_quick_model_infer_rows_run_ours_and_skip_mlserver(tmp_path: Path) -> None:
    from benchmarks.bench_peers import mlserver_rows

    ctx = Context(quick=True, tmp_dir=tmp_path)
    if isinstance(ctx.pinning, str):
        pytest.skip(ctx.pinning)
    rows = {r.name: r for r in mlserver_rows(ctx)}
    assert set(rows) == {
        "peers.ModelInfer.c32.echo",
        "peers.ModelInfer.c32.llmopt",
        "peers.ModelInfer.c32.vs_mlserver",
    }
    ours = rows["peers.ModelInfer.c32.llmopt"]
    assert ours.verdict == INFO and ours.measured and ours.measured > 0
    assert ours.extra["errors"] == 0 and "server on core" in ours.note
    assert rows["peers.ModelInfer.c32.vs_mlserver"].skipped == "quick"


# -- callgrind ------------------------------------------------------------------------------------

CALLGRIND_DUMP = """\
# callgrind format
version: 1
creator: callgrind-3.19.0
pid: 6400
cmd:  /work/main/.venv/bin/python -m benchmarks.callgrind --driver
part: {part}

desc: I1 cache:
desc: Trigger: --dump-before=os_getpgrp

positions: line
events: Ir
summary: {total}


totals: {total}
"""


def test_callgrind_totals_parts_and_per_call_counts(tmp_path: Path) -> None:
    from benchmarks import callgrind as cg

    assert cg.total_instructions(CALLGRIND_DUMP.format(part=2, total=302946)) == 302946
    with pytest.raises(ValueError, match="no summary"):
        cg.total_instructions("events: Ir\n")
    # Part 1: start-up to the first mark, then per case its loop (even parts) and what lies
    # between it and the next case's loop; the unnumbered file is the program's end. Part 10
    # sorts after part 9. The empty loop (the first case) costs 1,000.
    loop_totals = {2: 1_000, 4: 5_000, 6: 31_000, 8: 1_500, 10: 2_000}
    totals = {part: loop_totals.get(part, 777) for part in range(1, 11)}
    for part, total in totals.items():
        (tmp_path / f"callgrind.out.{part}").write_text(
            CALLGRIND_DUMP.format(part=part, total=total)
        )
    (tmp_path / "callgrind.out").write_text(CALLGRIND_DUMP.format(part=0, total=5))
    parts = cg.dump_parts(tmp_path, "callgrind.out")
    assert [p.name for p in parts] == [f"callgrind.out.{i}" for i in range(1, 11)]
    loops = cg.loop_dumps(parts)
    assert loops == [1_000, 5_000, 31_000, 1_500, 2_000]
    counts = cg.per_call(loops, ["loop", "a", "b", "c", "d"], iterations=10)
    assert counts == {"loop": 100.0, "a": 400.0, "b": 3_000.0, "c": 50.0, "d": 100.0}
    with pytest.raises(ValueError, match="5 loop dumps for 2 cases"):
        cg.per_call(loops, ["loop", "a"], iterations=10)
    text = cg.format_counts(counts)
    assert "loop (loop overhead, subtracted)" in text and "3,000" in text


def test_callgrind_cases_cover_the_hot_paths() -> None:
    from benchmarks import callgrind as cg

    names = list(cg.cases(Path("model.onnx"), Path(".")))
    assert names[0] == cg.BASELINE
    assert {f"bandits.{p}.{op}" for p in cg.POLICIES for op in ("select", "update")} <= set(names)
    assert {"context.default_context", "inference.servicer.predict"} <= set(names)
    assert "inference.servicer.predict" not in cg.cases(None, Path("."))


def test_callgrind_driver_marks_each_loop(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from benchmarks import callgrind as cg

    events: list[str] = []
    monkeypatch.setattr(os, "getpgrp", lambda: events.append("mark") or 0)
    monkeypatch.setattr(
        cg, "cases", lambda model, scratch: {"loop": lambda: lambda: events.append("call")}
    )
    cg.drive(["loop"], iterations=3, model=None, scratch=tmp_path)
    assert events == ["call"] * cg.WARMUP + ["mark", "call", "call", "call", "mark"]


def test_security_rows_judge_the_p50_overhead_of_tls_and_a_token() -> None:
    from benchmarks.bench_security import overhead_rows
    from benchmarks.harness import Percentiles

    plain = Percentiles(count=10, mean=100.0, p50=100.0, p95=150.0, p99=200.0, p999=250.0,
                        max=300.0)  # fmt: skip
    fast = Percentiles(count=10, mean=105.0, p50=105.0, p95=160.0, p99=260.0, p999=270.0,
                       max=310.0)  # fmt: skip
    slow = Percentiles(count=10, mean=120.0, p50=120.0, p95=160.0, p99=220.0, p999=270.0,
                       max=310.0)  # fmt: skip
    rows = {r.name: r for r in overhead_rows(plain, fast)}
    overhead = rows["security.SelectArm.tls_overhead"]
    assert overhead.measured == pytest.approx(5.0) and overhead.verdict == "PASS"
    assert overhead.extra["p99_overhead_pct"] == pytest.approx(30.0)
    assert rows["security.SelectArm.plaintext"].measured == 100.0
    assert rows["security.SelectArm.tls_token"].extra["p99_us"] == 260.0
    slow_row = overhead_rows(plain, slow)[-1]
    assert slow_row.measured == pytest.approx(20.0) and slow_row.verdict == "FAIL"

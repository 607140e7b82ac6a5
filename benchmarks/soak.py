"""Mixed-workload soak: SelectArm, RecordReward, Predict and GetFeatureVector for a long time.

``python -m benchmarks.soak --duration 300`` starts the real server, sets up a bandit and a
model through the public RPCs, then holds the mix below from separate grpc.aio client
processes, and reports calls, errors and latency per RPC and the server's RSS over the run: any
error, or RSS growing after warm-up beyond ``--max-growth-mib``, fails the run (exit 1).

RPCs that are not built yet (UNIMPLEMENTED, or whose setup fails) are left out of the mix and
named in the output, so the soak runs today and covers more as services land.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing as mp
import random
import sys
import tempfile
import time
from array import array
from collections import Counter, deque
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.harness import Percentiles, percentiles_ns
from benchmarks.load import LoadTarget
from benchmarks.procs import ServerProc

MIB = 1024 * 1024
# Realistic proportions: every routed LLM call selects an arm, most get a reward back, a share
# also asks a model, and some callers only want the context vector.
MIX: dict[str, float] = {
    "SelectArm": 0.35,
    "RecordReward": 0.35,
    "Predict": 0.20,
    "GetFeatureVector": 0.10,
}
METHODS = {
    "SelectArm": "/llmopt.v1.Bandits/SelectArm",
    "RecordReward": "/llmopt.v1.Bandits/RecordReward",
    "Predict": "/llmopt.v1.Inference/Predict",
    "GetFeatureVector": "/llmopt.v1.Features/GetFeatureVector",
}
BANDIT = "soak-router"
MODEL = "soak-model"
N_FEATURES = 10
TASKS = ("summarization", "generation", "classification", "extraction", "qa")


@dataclass
class SoakPlan:
    """What the clients may call, decided by the setup."""

    address: str
    ops: dict[str, float]  # op -> weight, only the ops that answered during setup
    predict_request: bytes = b""
    skipped: dict[str, str] = field(default_factory=dict)  # op -> why


@dataclass
class SoakReport:
    duration_s: float
    calls: dict[str, int]
    errors: dict[str, dict[str, int]]
    latency: dict[str, Percentiles]
    skipped: dict[str, str]
    rss_mib: list[tuple[float, float]]  # (seconds since start, MiB)
    cpu_s: float
    first_errors: dict[str, str] = field(default_factory=dict)  # op -> first error seen

    @property
    def total_calls(self) -> int:
        return sum(self.calls.values())

    @property
    def total_errors(self) -> int:
        return sum(sum(codes.values()) for codes in self.errors.values())

    @property
    def rss_growth_mib(self) -> float:
        """Median RSS of the last fifth of the run minus that of the first fifth."""
        values = [mib for _, mib in self.rss_mib]
        if len(values) < 5:
            return values[-1] - values[0] if len(values) >= 2 else 0.0
        fifth = max(1, len(values) // 5)
        return float(np.median(values[-fifth:]) - np.median(values[:fifth]))

    @property
    def rss_slope_mib_per_min(self) -> float:
        if len(self.rss_mib) < 3:
            return 0.0
        t, m = zip(*self.rss_mib, strict=True)
        return float(np.polyfit(t, m, 1)[0] * 60.0)

    def to_json(self) -> dict[str, Any]:
        return {
            "duration_s": round(self.duration_s, 1),
            "calls": self.calls,
            "errors": self.errors,
            "latency_us": {op: vars(p) for op, p in self.latency.items()},
            "skipped": self.skipped,
            "first_errors": self.first_errors,
            "rss_mib": self.rss_mib,
            "rss_growth_mib": round(self.rss_growth_mib, 2),
            "rss_slope_mib_per_min": round(self.rss_slope_mib_per_min, 3),
            "throughput_rps": round(self.total_calls / self.duration_s, 1),
            "cpu_us_per_call": round(self.cpu_s / max(1, self.total_calls) * 1e6, 1),
        }

    def format(self) -> str:
        lines = [
            f"soak: {self.duration_s:.0f} s, {self.total_calls:,} calls "
            f"({self.total_calls / self.duration_s:,.0f} req/s), {self.total_errors} errors, "
            f"server CPU {self.cpu_s / max(1, self.total_calls) * 1e6:,.0f} us/call",
        ]
        for op in MIX:
            if op in self.skipped:
                lines.append(f"  {op:<17} skipped: {self.skipped[op]}")
                continue
            p = self.latency.get(op)
            errs = self.errors.get(op, {})
            p50, p99 = (p.p50 / 1e3, p.p99 / 1e3) if p else (0.0, 0.0)
            lines.append(
                f"  {op:<17} {self.calls.get(op, 0):>9,} calls  p50 {p50:7.2f} ms"
                f"  p99 {p99:7.2f} ms  errors {sum(errs.values())}" + (f" {errs}" if errs else "")
            )
        first = self.rss_mib[0][1] if self.rss_mib else 0.0
        last = self.rss_mib[-1][1] if self.rss_mib else 0.0
        lines.append(
            f"  RSS {first:.1f} -> {last:.1f} MiB after warm-up; growth {self.rss_growth_mib:+.1f} "
            f"MiB (median last fifth - first fifth), trend {self.rss_slope_mib_per_min:+.2f} "
            "MiB/min"
        )
        return "\n".join(lines)


# -- setup ----------------------------------------------------------------------------------------


def _context(rng: random.Random) -> Any:
    from llmopt.gen.llmopt.v1 import common_pb2

    return common_pb2.RequestContext(
        user_id=f"user-{rng.randrange(1000)}",
        task_type=rng.choice(TASKS),
        input_length=rng.randrange(10, 20_000),
        output_length_category=rng.choice([common_pb2.SHORT, common_pb2.MEDIUM, common_pb2.LONG]),
        priority=rng.randrange(1, 11),
        hour_of_day=rng.randrange(24),
        day_of_week=rng.randrange(7),
    )


def _onnx_model(seed: int = 0) -> bytes:
    """A small regression model over the 10-dim context vector, as ONNX bytes."""
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType
    from sklearn.linear_model import Ridge

    rng = np.random.default_rng(seed)
    x = rng.random((256, N_FEATURES)).astype(np.float32)
    y = x @ rng.random(N_FEATURES) + 0.1 * rng.standard_normal(256)
    onx = convert_sklearn(
        Ridge().fit(x, y), initial_types=[("input", FloatTensorType([None, N_FEATURES]))]
    )
    return bytes(onx.SerializeToString())


def _code(exc: BaseException) -> str:
    import grpc

    if isinstance(exc, grpc.RpcError):
        return f"{exc.code().name}: {exc.details()}"  # type: ignore[attr-defined]
    return f"{type(exc).__name__}: {exc}"


def _create(call: Callable[[], object]) -> None:
    """A Create* call during setup: ALREADY_EXISTS (a reused data dir) is fine."""
    import grpc

    try:
        call()
    except grpc.RpcError as exc:
        if exc.code() != grpc.StatusCode.ALREADY_EXISTS:  # type: ignore[attr-defined]
            raise


def setup(
    address: str, weights: dict[str, float] = MIX, wanted: Collection[str] = tuple(MIX)
) -> SoakPlan:
    """Create the bandit and the model through the RPCs; probe every op once. Ops that do not
    answer OK are left out of the plan with the reason; ops not ``wanted`` are not set up."""
    import grpc

    plan = SoakPlan(address=address, ops={})
    rng = random.Random(0)
    with grpc.insecure_channel(address) as channel:
        if "GetFeatureVector" in wanted:
            try:
                _probe_feature_vector(channel, rng)
                plan.ops["GetFeatureVector"] = weights["GetFeatureVector"]
            except grpc.RpcError as exc:
                plan.skipped["GetFeatureVector"] = _code(exc)
        if "SelectArm" in wanted or "RecordReward" in wanted:
            try:
                decision_id = _setup_bandit(channel, rng)
            except grpc.RpcError as exc:
                plan.skipped["SelectArm"] = _code(exc)
                plan.skipped["RecordReward"] = "needs SelectArm"
            else:
                plan.ops["SelectArm"] = weights["SelectArm"]
                if "RecordReward" in wanted:
                    try:
                        _probe_reward(channel, decision_id)
                        plan.ops["RecordReward"] = weights["RecordReward"]
                    except grpc.RpcError as exc:
                        plan.skipped["RecordReward"] = _code(exc)
        if "Predict" in wanted:
            try:
                plan.predict_request = _setup_model(channel)
                plan.ops["Predict"] = weights["Predict"]
            except grpc.RpcError as exc:
                plan.skipped["Predict"] = _code(exc)
    for op in MIX:
        if op not in wanted:
            plan.ops.pop(op, None)
            plan.skipped[op] = "not wanted"
    return plan


def _probe_feature_vector(channel: Any, rng: random.Random) -> None:
    from llmopt.gen.llmopt.v1 import features_pb2, features_pb2_grpc

    features_pb2_grpc.FeaturesStub(channel).GetFeatureVector(
        features_pb2.GetFeatureVectorRequest(context=_context(rng)), timeout=10
    )


def _setup_bandit(channel: Any, rng: random.Random) -> str:
    """Create the LinUCB bandit (4 arms); one SelectArm; returns its decision id."""
    from llmopt.gen.llmopt.v1 import bandits_pb2, bandits_pb2_grpc, common_pb2

    bandits = bandits_pb2_grpc.BanditsStub(channel)
    arms = [
        common_pb2.Arm(arm_id=f"arm-{i}", config=common_pb2.LLMConfig(model=model))
        for i, model in enumerate(["small", "medium", "large", "xlarge"])
    ]
    bandit = bandits_pb2.Bandit(
        name=BANDIT,
        policy=bandits_pb2.Policy(lin_ucb=bandits_pb2.LinUCB(alpha=1.0)),
        arms=arms,
        seed=7,
    )
    _create(
        lambda: bandits.CreateBandit(bandits_pb2.CreateBanditRequest(bandit=bandit), timeout=10)
    )
    decision = bandits.SelectArm(
        bandits_pb2.SelectArmRequest(bandit=BANDIT, context=_context(rng), decision_id="setup"),
        timeout=10,
    )
    return str(decision.decision_id)


def _probe_reward(channel: Any, decision_id: str) -> None:
    from llmopt.gen.llmopt.v1 import bandits_pb2, bandits_pb2_grpc

    bandits_pb2_grpc.BanditsStub(channel).RecordReward(
        bandits_pb2.RecordRewardRequest(decision_id=decision_id, reward=0.5), timeout=10
    )


def _setup_model(channel: Any) -> bytes:
    """Register the model (alias champion) and find a Predict form that answers; returns the
    serialized single-row PredictRequest."""
    import grpc

    from llmopt.gen.llmopt.v1 import (
        common_pb2,
        inference_pb2,
        inference_pb2_grpc,
        registry_pb2,
        registry_pb2_grpc,
    )

    registry = registry_pb2_grpc.RegistryStub(channel)
    _create(
        lambda: registry.CreateModel(
            registry_pb2.CreateModelRequest(name=MODEL, task=registry_pb2.REGRESSION), timeout=10
        )
    )
    artifact = _onnx_model()
    chunk = 64 * 1024
    parts = [
        registry_pb2.UploadVersionRequest(
            metadata=registry_pb2.UploadVersionMetadata(model=MODEL, alias="champion")
        ),
        *(
            registry_pb2.UploadVersionRequest(chunk=artifact[i : i + chunk])
            for i in range(0, len(artifact), chunk)
        ),
    ]
    version = registry.UploadVersion(iter(parts), timeout=60)
    tensor = common_pb2.Tensor(
        name=version.inputs[0].name if version.inputs else "input",
        dtype=common_pb2.FLOAT32,
        shape=[1, N_FEATURES],
        raw_data=np.random.default_rng(1).random(N_FEATURES, dtype=np.float32).tobytes(),
    )
    inference = inference_pb2_grpc.InferenceStub(channel)
    candidates = [  # routed by the traffic policy, then by alias, then by version
        inference_pb2.PredictRequest(model=MODEL, inputs=[tensor]),
        inference_pb2.PredictRequest(model=MODEL, alias="champion", inputs=[tensor]),
        inference_pb2.PredictRequest(model=MODEL, version=version.version, inputs=[tensor]),
    ]
    for n, request in enumerate(candidates):
        try:
            inference.Predict(request, timeout=30)
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.UNIMPLEMENTED or n == len(candidates) - 1:
                raise
            continue
        return bytes(request.SerializeToString())
    raise AssertionError("unreachable")


# -- the run --------------------------------------------------------------------------------------


def run_soak(
    server: LoadTarget,
    duration: float,
    *,
    warmup: float | None = None,
    concurrency: int = 16,
    clients: int = 2,
    plan: SoakPlan | None = None,
) -> SoakReport:
    """Hold the mix against ``server`` for ``duration`` seconds after ``warmup``."""
    plan = plan or setup(server.address)
    if not plan.ops:
        return SoakReport(0.0, {}, {}, {}, plan.skipped, [], 0.0)
    warmup = min(10.0, 0.1 * duration) if warmup is None else warmup
    ctx = mp.get_context("spawn")
    pipes: list[Connection] = []
    procs = []
    for k in range(clients):
        parent, child = ctx.Pipe()
        per = concurrency // clients + (1 if k < concurrency % clients else 0)
        proc = ctx.Process(target=_client_main, args=(child, plan, max(1, per), k), daemon=True)
        proc.start()
        child.close()
        pipes.append(parent)
        procs.append(proc)
    rss: list[tuple[float, float]] = []
    try:
        for pipe in pipes:
            _recv(pipe, "ready", 60)
        start = time.monotonic_ns() + 50_000_000
        measure_from = start + int(warmup * 1e9)
        measure_to = measure_from + int(duration * 1e9)
        for pipe in pipes:
            pipe.send((start, measure_from, measure_to))
        while time.monotonic_ns() < measure_from:
            time.sleep(0.05)
        cpu0 = server.cpu_seconds()
        step = max(0.1, min(1.0, duration / 50))
        while (now := time.monotonic_ns()) < measure_to:
            rss.append((round((now - measure_from) / 1e9, 2), round(server.rss_bytes() / MIB, 2)))
            time.sleep(min(step, max(0.0, (measure_to - now) / 1e9)))
        rss.append((round(duration, 2), round(server.rss_bytes() / MIB, 2)))
        cpu1 = server.cpu_seconds()
        calls: Counter[str] = Counter()
        errors: dict[str, Counter[str]] = {}
        samples: dict[str, array[int]] = {}
        first_errors: dict[str, str] = {}
        for pipe in pipes:
            reply = _recv(pipe, "done", duration + 120)
            for op, data in reply["latencies"].items():
                samples.setdefault(op, array("q")).frombytes(data)
            for op, codes in reply["errors"].items():
                errors.setdefault(op, Counter()).update(codes)
            for op, text in reply["first_errors"].items():
                first_errors.setdefault(op, text)
    finally:
        for proc in procs:
            proc.join(10)
            if proc.is_alive():
                proc.kill()
                proc.join()
        for pipe in pipes:
            pipe.close()
    for op, values in samples.items():
        calls[op] = len(values)
    return SoakReport(
        duration_s=duration,
        calls=dict(calls),
        errors={op: dict(c) for op, c in errors.items()},
        latency={op: percentiles_ns(v) for op, v in samples.items()},
        skipped=plan.skipped,
        rss_mib=rss,
        cpu_s=cpu1 - cpu0,
        first_errors=first_errors,
    )


def _recv(pipe: Connection, kind: str, timeout: float) -> Any:
    if not pipe.poll(timeout):
        raise TimeoutError(f"soak client sent no {kind!r} within {timeout:.0f}s")
    message = pipe.recv()
    if message.get("kind") == "failed":
        raise RuntimeError(f"soak client failed: {message['error']}")
    if message.get("kind") != kind:
        raise RuntimeError(f"soak client sent {message!r}, expected {kind!r}")
    return message


def _client_main(pipe: Connection, plan: SoakPlan, concurrency: int, seed: int) -> None:
    try:
        asyncio.run(_client(pipe, plan, concurrency, seed))
    except BaseException as exc:
        with contextlib.suppress(OSError):
            pipe.send({"kind": "failed", "error": f"{type(exc).__name__}: {exc}"})
        raise
    finally:
        pipe.close()


async def _client(pipe: Connection, plan: SoakPlan, concurrency: int, seed: int) -> None:
    import grpc

    from llmopt.gen.llmopt.v1 import bandits_pb2, features_pb2

    rng = random.Random(seed)
    ops = list(plan.ops)
    weights = [plan.ops[op] for op in ops]
    pending: deque[str] = deque(maxlen=10_000)  # decisions waiting for their reward
    counter = 0

    def select_request() -> bytes:
        nonlocal counter
        counter += 1
        return bandits_pb2.SelectArmRequest(
            bandit=BANDIT, context=_context(rng), decision_id=f"soak-{seed}-{counter}"
        ).SerializeToString()

    def reward_request() -> bytes:
        return bandits_pb2.RecordRewardRequest(
            decision_id=pending.popleft(), reward=rng.random()
        ).SerializeToString()

    vectors = [
        features_pb2.GetFeatureVectorRequest(context=_context(rng)).SerializeToString()
        for _ in range(64)
    ]
    build: dict[str, Callable[[], bytes]] = {
        "SelectArm": select_request,
        "RecordReward": reward_request,
        "Predict": lambda: plan.predict_request,
        "GetFeatureVector": lambda: rng.choice(vectors),
    }
    latencies: dict[str, array[int]] = {op: array("q") for op in ops}
    errors: dict[str, Counter[str]] = {op: Counter() for op in ops}
    first_errors: dict[str, str] = {}
    async with grpc.aio.insecure_channel(plan.address) as channel:
        await asyncio.wait_for(channel.channel_ready(), 30)
        stubs = {op: channel.unary_unary(METHODS[op]) for op in ops}
        pipe.send({"kind": "ready"})
        start, measure_from, measure_to = pipe.recv()
        clock = time.monotonic_ns
        while clock() < start:
            await asyncio.sleep((start - clock()) / 1e9)

        async def caller() -> None:
            while (t0 := clock()) < measure_to:
                op = rng.choices(ops, weights)[0]
                if op == "RecordReward" and not pending:
                    op = "SelectArm"
                request = build[op]()
                decision_id = f"soak-{seed}-{counter}" if op == "SelectArm" else ""
                t0 = clock()
                try:
                    await stubs[op](request, timeout=30)
                    code = ""
                except grpc.aio.AioRpcError as exc:
                    code = exc.code().name
                    first_errors.setdefault(op, f"{code}: {exc.details()}")
                done = clock()
                if decision_id and not code:  # rewardable only once the decision exists
                    pending.append(decision_id)
                if t0 >= measure_from and done <= measure_to:
                    if code:
                        errors[op][code] += 1
                    else:
                        latencies[op].append(done - t0)

        await asyncio.gather(*(caller() for _ in range(concurrency)))
    pipe.send(
        {
            "kind": "done",
            "latencies": {op: v.tobytes() for op, v in latencies.items()},
            "errors": {op: dict(c) for op, c in errors.items() if c},
            "first_errors": first_errors,
        }
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.soak", description=__doc__)
    parser.add_argument("--duration", type=float, default=300.0, help="seconds (after warm-up)")
    parser.add_argument("--concurrency", type=int, default=16, help="calls in flight")
    parser.add_argument(
        "--max-growth-mib",
        type=float,
        default=32.0,
        help="fail when RSS grows more than this after warm-up",
    )
    parser.add_argument("--json", type=Path, help="write the report as JSON")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="llmopt-soak-") as tmp:
        server = ServerProc.real(Path(tmp) / "server").start()
        try:
            report = run_soak(server, args.duration, concurrency=args.concurrency)
        finally:
            server.stop()
    print(report.format())
    if args.json:
        args.json.write_text(json.dumps(report.to_json(), indent=2) + "\n")
    status = 0
    if not report.total_calls:
        print("no RPC of the mix answered: nothing was soaked", file=sys.stderr)
        status = 1
    if report.total_errors:
        print(f"FAIL: {report.total_errors} errors", file=sys.stderr)
        status = 1
    if report.rss_growth_mib > args.max_growth_mib:
        print(
            f"FAIL: RSS grew {report.rss_growth_mib:.1f} MiB (> {args.max_growth_mib})",
            file=sys.stderr,
        )
        status = 1
    return status


if __name__ == "__main__":
    sys.exit(main())

"""Peers side by side, in the same run: MLServer over the Open Inference Protocol, MABWiser in
process. Each comparison row is a speed-up with its target and verdict.

- ``peers.ModelInfer.c32.*``: ModelInfer of one row of 16 float32 to the same logistic
  regression, ours (the ONNX export, uploaded to our server) and MLServer 1.7 with
  mlserver-sklearn (the joblib file; ``parallel_workers`` 0 and 1, the better one counts), both
  pinned to the run's server core, driven by the same load generator with the same request
  bytes (replies parsed with tritonclient's ``service_pb2`` messages), c = 32. Target: ours
  >= 4 x MLServer. The bare echo runs beside them, pinned the same way.
- ``peers.mabwiser.<policy>.select`` / ``.update``: one decision at a time, K = 10, d = 10,
  after the same 2,000 rounds of training: our ``select`` against MABWiser's ``predict`` of one
  context, our ``update`` against its ``partial_fit`` of one decision. The figure is MABWiser's
  p50 over ours. Targets: select >= 1.5 x (context-free), >= 20 x (linear); update >= 100 x.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from benchmarks.bench_bandits import ARMS, DIM
from benchmarks.e2e import describe, errors_of, where
from benchmarks.harness import Context, Result, time_calls
from benchmarks.load import LoadReport, LoadTarget, Rpc, run_load

MODEL_INFER = "/inference.GRPCInferenceService/ModelInfer"
CONCURRENCY = 32
MLSERVER_TARGET = 4.0
WORKERS = (0, 1)
TRAINING_ROUNDS = 2_000


# -- MABWiser ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PolicyPair:
    """One of our policies (by its ``Policy`` oneof name in the policy table) and MABWiser's
    counterpart, with the select target its kind gets."""

    oneof: str
    mabwiser: str  # LearningPolicy attribute
    mabwiser_args: tuple[tuple[str, float], ...]
    contextual: bool

    @property
    def select_target(self) -> float:
        return LINEAR_SELECT_TARGET if self.contextual else FREE_SELECT_TARGET


FREE_SELECT_TARGET = 1.5
LINEAR_SELECT_TARGET = 20.0
UPDATE_TARGET = 100.0

PAIRS = (
    PolicyPair("ucb1", "UCB1", (("alpha", 1.0),), False),
    PolicyPair("thompson_beta", "ThompsonSampling", (), False),
    PolicyPair("epsilon_greedy", "EpsilonGreedy", (("epsilon", 0.1),), False),
    PolicyPair("lin_ucb", "LinUCB", (("alpha", 1.0), ("l2_lambda", 1.0)), True),
    PolicyPair("linear_thompson", "LinTS", (("alpha", 1.0), ("l2_lambda", 1.0)), True),
)
"""The pairs the comparison covers (MABWiser has no counterpart of the others)."""


def speedup_row(
    name: str, metric: str, ours_us: float, theirs_us: float, target: float, note: str
) -> Result:
    """A peer row: ``theirs_us / ours_us`` (how many times faster we are), judged against
    ``target``; both per-call figures in ``extra`` and the note."""
    ratio = theirs_us / ours_us if ours_us > 0 else float("nan")
    return Result(
        name,
        metric,
        round(ratio, 2),
        "x",
        target=target,
        better="higher",
        extra={"ours_us": round(ours_us, 3), "peer_us": round(theirs_us, 3)},
        note=f"ours {ours_us:,.2f} us, peer {theirs_us:,.2f} us per call; {note}",
    )


def _training(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    decisions = rng.integers(0, ARMS, TRAINING_ROUNDS)
    probs = np.linspace(0.1, 0.6, ARMS)
    rewards = (rng.random(TRAINING_ROUNDS) < probs[decisions]).astype(np.int64)
    contexts = rng.uniform(-1.0, 1.0, size=(TRAINING_ROUNDS, DIM))
    return decisions, rewards, contexts


def _cycle(values: list[Any]) -> Callable[[], Any]:
    """A function that returns ``values`` one after the other, round and round."""
    step = itertools.cycle(values).__next__
    return lambda: step()


def pair_rows(pair: PolicyPair, ours_n: int, theirs_n: int) -> Iterator[Result]:
    """Both sides trained on the same 2,000 rounds, then their select and update timed alone,
    one decision or reward per call."""
    from mabwiser.mab import MAB, LearningPolicy

    from llmopt.bandits import policies as P

    decisions, rewards, contexts = _training(np.random.default_rng(0))
    c = pair.contextual
    ours = P.make_policy(P.CONFIG_BY_ONEOF[pair.oneof](), ARMS, DIM, seed=1)
    for arm, reward, x in zip(decisions, rewards, contexts, strict=True):
        ours.update(int(arm), float(reward), x if c else None)
    policy = getattr(LearningPolicy, pair.mabwiser)(**dict(pair.mabwiser_args))
    theirs = MAB(list(range(ARMS)), policy, seed=1)
    theirs.fit(decisions, rewards, contexts if c else None)
    allowed = np.ones(ARMS, dtype=np.uint8)
    next_x = _cycle([x if c else None for x in contexts[:64]])
    next_row = _cycle([contexts[i : i + 1] if c else None for i in range(64)])
    next_arm = _cycle([int(a) for a in decisions[:64]])
    next_reward = _cycle([float(r) for r in rewards[:64]])
    calls = {
        "select": (
            lambda: ours.select(next_x(), allowed),
            lambda: theirs.predict(next_row()),
            "select vs predict, p50",
            pair.select_target,
            "one decision per call",
        ),
        "update": (
            lambda: ours.update(next_arm(), next_reward(), next_x()),
            lambda: theirs.partial_fit([next_arm()], [next_reward()], next_row()),
            "update vs partial_fit, p50",
            UPDATE_TARGET,
            "one reward per call",
        ),
    }
    label = f"MABWiser {pair.mabwiser}, K={ARMS}" + (f", d={DIM}" if c else "")
    for op, (mine, peer, metric, target, per_call) in calls.items():
        ours_us = time_calls(mine, warmup=200, iterations=ours_n).p50
        theirs_us = time_calls(peer, warmup=5, iterations=theirs_n).p50
        yield speedup_row(
            f"peers.mabwiser.{pair.oneof}.{op}",
            metric,
            ours_us,
            theirs_us,
            target,
            f"{label}, {per_call}",
        )


def mabwiser_rows(ctx: Context) -> Iterator[Result]:
    """Every pair's select and update rows, or one skip row when MABWiser is missing."""
    try:
        import mabwiser  # noqa: F401
    except ImportError:
        yield Result.skip("peers.mabwiser", "mabwiser is not installed (pip install -e .[dev])")
        return
    ours_n = ctx.iterations(full=20_000, quick=1_000)
    theirs_n = ctx.iterations(full=500, quick=20)
    for pair in PAIRS:
        name = f"peers.mabwiser.{pair.oneof}"
        if ctx.wants(f"{name}.select") or ctx.wants(f"{name}.update"):
            yield from pair_rows(pair, ours_n, theirs_n)


# -- MLServer -------------------------------------------------------------------------------------


TRITON_RESPONSE = "tritonclient.grpc.service_pb2:ModelInferResponse"
"""How the load generator's clients parse ModelInfer replies: tritonclient's message. (Not
imported here: tritonclient's ``service_pb2`` and ``llmopt.gen.inference`` define the same
``inference.*`` protobuf names and cannot share a process.)"""


def model_infer_rpc(X: np.ndarray, model: str) -> Rpc:
    """ModelInfer of one row of ``X`` per request (16 rows cycled), FP32 ``contents``; the Open
    Inference Protocol's bytes, equal to tritonclient's serialization of the same request."""
    from llmopt.gen.inference import grpc_service_pb2 as oip

    requests = [
        oip.ModelInferRequest(
            model_name=model,
            inputs=[
                oip.ModelInferRequest.InferInputTensor(
                    name="X",
                    datatype="FP32",
                    shape=[1, X.shape[1]],
                    contents=oip.InferTensorContents(fp32_contents=row.tolist()),
                )
            ],
        ).SerializeToString()
        for row in X[:16]
    ]
    return Rpc(MODEL_INFER, tuple(requests), TRITON_RESPONSE)


def _run(ctx: Context, target: LoadTarget, rpc: Rpc) -> LoadReport:
    return run_load(
        target,
        rpc,
        concurrency=CONCURRENCY,
        duration=ctx.seconds(5.0, 1.0),
        warmup=ctx.seconds(1.0, 0.3),
    )


def throughput_row(name: str, report: LoadReport, note: str) -> Result:
    """An information row of one side: throughput, with p50, p99 and CPU per call."""
    return Result(
        name,
        f"throughput c{report.concurrency}",
        round(report.throughput, 1),
        "req/s",
        extra=report.summary(),
        note=f"{describe(report)}; {note}",
        error=errors_of(report),
    )


def mlserver_verdict(ours: LoadReport, peers: dict[int, LoadReport | str]) -> Result:
    """``peers.ModelInfer.c32.vs_mlserver``: our throughput over MLServer's best
    ``parallel_workers`` setting; skipped with the reasons when none ran."""
    name = f"peers.ModelInfer.c{CONCURRENCY}.vs_mlserver"
    metric = "ours / MLServer throughput"
    failed = {
        w: errors_of(r) or "" for w, r in peers.items() if isinstance(r, LoadReport)
    }  # a peer answering errors is not a peer measured
    measured = {w: r for w, r in peers.items() if isinstance(r, LoadReport) and not failed[w]}
    if not measured:
        texts = {failed.get(w) or str(r) for w, r in peers.items()}
        reasons = (
            texts.pop()
            if len(texts) == 1
            else "; ".join(f"parallel_workers={w}: {failed.get(w) or r}" for w, r in peers.items())
        )
        return Result.skip(
            name, reasons or "MLServer not run", metric, MLSERVER_TARGET, "x", "higher"
        )
    best = max(measured, key=lambda w: measured[w].throughput)
    peer = measured[best]
    ratio = ours.throughput / peer.throughput if peer.throughput else float("nan")
    return Result(
        name,
        metric,
        round(ratio, 2),
        "x",
        target=MLSERVER_TARGET,
        better="higher",
        extra={
            "ours_rps": round(ours.throughput, 1),
            "mlserver_rps": round(peer.throughput, 1),
            "mlserver_parallel_workers": best,
        },
        note=f"ours {ours.throughput:,.0f} req/s, MLServer {peer.throughput:,.0f} req/s "
        f"(parallel_workers={best}, the better)",
        error=errors_of(ours),
    )


def mlserver_rows(ctx: Context) -> Iterator[Result]:
    """Echo, our ModelInfer and MLServer's, pinned alike, and the verdict."""
    from benchmarks import mlserver_peer as ml
    from benchmarks.bench_inference import data, register

    prefix = f"peers.ModelInfer.c{CONCURRENCY}"
    if isinstance(ctx.pinning, str):
        yield Result.skip(prefix, ctx.pinning, "ours / MLServer throughput", MLSERVER_TARGET)
        return
    from skl2onnx import to_onnx
    from sklearn.linear_model import LogisticRegression

    X, y = data()
    lr = LogisticRegression(max_iter=500).fit(X, y)
    onnx = to_onnx(lr, X[:1], options={"zipmap": False}, target_opset=17).SerializeToString()
    rpc = model_infer_rpc(X, ml.MODEL)
    with ctx.echo_server() as echo:
        echo_report = _run(ctx, echo, Rpc.echo(rpc.payload_bytes))
    yield throughput_row(f"{prefix}.echo", echo_report, f"bare grpcio echo, {where(echo)}")
    with ctx.server() as server:
        register(server.address, {ml.MODEL: onnx})
        ours = _run(ctx, server, rpc)
    yield throughput_row(
        f"{prefix}.llmopt",
        ours,
        f"ours, ONNX logistic regression 1 x 16 float32, {where(server)}; "
        f"{ours.throughput / echo_report.throughput:.2f} x echo",
    )
    peers: dict[int, LoadReport | str] = {}
    if ctx.quick:
        peers = dict.fromkeys(WORKERS, "quick")  # a full run makes MLServer's venv
    else:
        try:
            version = ml.ensure_venv()
        except ml.PeerUnavailable as exc:
            peers = dict.fromkeys(WORKERS, str(exc))
        else:
            for workers in WORKERS:
                folder = ctx.scratch(f"mlserver-w{workers}")
                try:
                    port = ml.write_model(folder, X, y, parallel_workers=workers)
                    proc = ml.MLServerProc(folder, port, ctx.server_cpus())
                    proc.start()
                except ml.PeerUnavailable as exc:
                    peers[workers] = str(exc)
                    yield Result.skip(f"{prefix}.mlserver.workers{workers}", str(exc))
                    continue
                try:
                    report = _run(ctx, proc, rpc)
                finally:
                    proc.stop()
                peers[workers] = report
                yield throughput_row(
                    f"{prefix}.mlserver.workers{workers}",
                    report,
                    f"MLServer {version} + mlserver-sklearn, parallel_workers={workers}, "
                    f"joblib logistic regression, {where(proc)}",
                )
    yield mlserver_verdict(ours, peers)


def benchmarks(ctx: Context) -> Iterator[Result]:
    if ctx.wants("peers.mabwiser"):
        yield from mabwiser_rows(ctx)
    if ctx.wants("peers.ModelInfer"):
        yield from mlserver_rows(ctx)

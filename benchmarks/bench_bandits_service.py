"""The bandit service layer: decisions and durable rewards, in process, end to end, and restart.

- ``bandits.service.select_logged`` / ``reward_durable``: one ``BanditService.select_arm``
  (context vectorised, policy select, decision logged durably) and one ``record_reward`` (durable
  event, then the policy update), UCB1 and LinUCB with K = 10, one caller.
- ``bandits.servicer.select.hot`` / ``.cold``: one ``BanditsServicer.SelectArm`` from request
  bytes to answer bytes (LinUCB, K = 10, request context), in a hot loop and with
  ``evict_caches`` run between calls. The cold figure is the one that tracks end-to-end cost
  (a handler starts cold in the server); the hot one is what profilers show.
- ``e2e.RecordReward.c<N>``: RecordReward over gRPC beside the echo baseline, both pinned to one
  core (``benchmarks.e2e.interleaved``), both driven by the same single client process (each
  reward needs its own open decision, and two client processes would send the same cycled
  requests twice); throughput, p50, p99, server CPU per call, ratio to echo (information). The
  decisions are logged beforehand through ``BanditService`` on the data dir the server then
  opens. SelectArm end to end is measured in bench_rpcs.py (``e2e.SelectArm``).
- ``bandits.restart.*``: start-up (recovery) time of a bandit with 1,000,000 logged rewards
  (quick: 20,000): with no snapshot (full replay), with a snapshot covering the log, and with a
  snapshot followed by the most rewards a snapshot can lag behind (``snapshot_every`` - 1).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from benchmarks.e2e import interleaved, rounds, throughput_rows, where
from benchmarks.harness import (
    Context,
    Result,
    hot_and_cold,
    latency_result,
    time_calls,
)
from benchmarks.load import LoadReport, Rpc, run_load

K = 10
REWARD_CONCURRENCY = 32
BANDIT = "bench-rewards"


def _arms() -> tuple:
    from llmopt.bandits.arms import Arm, LLMConfig

    return tuple(
        Arm(f"arm{i}", LLMConfig(model=f"model-{i}", temperature=i / 10)) for i in range(K)
    )


def _contexts(n: int) -> list:
    from llmopt.features.context import OutputLength, RequestContext

    tasks = ["generation", "summarization", "extraction", "classification", "qa"]
    return [
        RequestContext(
            task_type=tasks[i % len(tasks)],
            input_length=50 * (i + 1),
            output_length=OutputLength(1 + i % 3),
            priority=1 + i % 10,
            hour_of_day=i % 24,
            day_of_week=i % 7,
        )
        for i in range(n)
    ]


def _time_loop(svc: object, label: str, n: int) -> tuple:
    """(select percentiles, reward percentiles) for ``n`` decisions on bandit ``label``."""
    from llmopt.bandits.service import BanditService

    assert isinstance(svc, BanditService)
    contexts = _contexts(64)
    ids: list[str] = []

    def select() -> None:
        ids.append(svc.select_arm(label, contexts[len(ids) % 64]).decision_id)

    selected = time_calls(select, warmup=100, iterations=n)
    rewards = iter(ids)

    def reward() -> None:
        svc.record_reward(next(rewards), reward=0.5)

    rewarded = time_calls(reward, warmup=50, iterations=len(ids) - 50)
    return selected, rewarded


def in_process_rows(ctx: Context) -> Iterator[Result]:
    from llmopt.bandits import policies as P
    from llmopt.bandits.service import BanditService
    from llmopt.bandits.types import BanditSpec

    svc = BanditService(ctx.scratch("bandits-inproc"), sweep_interval=0)
    svc.warm_up()
    try:
        n = ctx.iterations(full=5_000, quick=500)
        for label, policy in (("ucb1", P.UCB1()), ("linucb", P.LinUCB())):
            svc.create_bandit(BanditSpec(label, policy, _arms(), seed=1))
            selected, rewarded = _time_loop(svc, label, n)
            yield latency_result(
                f"bandits.service.select_logged.{label}",
                selected,
                note="vectorise + select + decision logged durably (journal), 1 caller",
            )
            yield latency_result(
                f"bandits.service.reward_durable.{label}",
                rewarded,
                note="reward event durable, then the policy update, 1 caller",
            )
    finally:
        svc.close()


def servicer_rows(ctx: Context) -> Iterator[Result]:
    from llmopt.api.bandits import BanditsServicer
    from llmopt.api.convert import to_request_context
    from llmopt.bandits import policies as P
    from llmopt.bandits.service import BanditService
    from llmopt.bandits.types import BanditSpec
    from llmopt.gen.llmopt.v1 import bandits_pb2

    svc = BanditService(ctx.scratch("bandits-servicer"), sweep_interval=0)
    svc.warm_up()
    try:
        svc.create_bandit(BanditSpec("servicer", P.LinUCB(), _arms(), seed=3))
        servicer = BanditsServicer(svc)
        requests = [
            bandits_pb2.SelectArmRequest(
                bandit="servicer", context=to_request_context(c)
            ).SerializeToString()
            for c in _contexts(64)
        ]
        parse = bandits_pb2.SelectArmRequest.FromString
        answers: list[bytes] = []

        def select() -> None:
            answers.append(servicer.SelectArm(parse(requests[len(answers) % 64]), None))

        parse_reward = bandits_pb2.RecordRewardRequest.FromString
        rewards: Iterator[bytes] = iter(())

        def reward() -> None:
            servicer.RecordReward(parse_reward(next(rewards)), None)

        for run in hot_and_cold(ctx):
            yield run.result(
                "bandits.servicer.select",
                select,
                "SelectArm servicer, request bytes to answer bytes, LinUCB K=10",
            )
            # Each of those decisions rewarded once, in the order they were made.
            rewards = iter(
                [
                    bandits_pb2.RecordRewardRequest(
                        decision_id=bandits_pb2.Decision.FromString(a).decision_id, reward=0.5
                    ).SerializeToString()
                    for a in answers
                ]
            )
            yield run.result(
                "bandits.servicer.reward",
                reward,
                "RecordReward servicer (raw reward), request bytes to answer bytes, LinUCB K=10",
            )
            answers.clear()
    finally:
        svc.close()


def _log_decisions(root: Path, n: int) -> list[str]:
    """Create the bandit and ``n`` open decisions through the service; their ids."""
    from llmopt.bandits import policies as P
    from llmopt.bandits.service import BanditService
    from llmopt.bandits.types import BanditSpec

    svc = BanditService(root / "bandits", sweep_interval=0)
    svc.warm_up()
    try:
        svc.create_bandit(BanditSpec(BANDIT, P.ThompsonBeta(), _arms(), seed=2))
        contexts = _contexts(64)
        ids = [f"d{i}" for i in range(n)]

        def select(i: int) -> None:
            svc.select_arm(BANDIT, contexts[i % 64], decision_id=ids[i])

        with ThreadPoolExecutor(16) as pool:
            list(pool.map(select, range(n), chunksize=256))
    finally:
        svc.close()
    return ids


def reward_rows(ctx: Context) -> Iterator[Result]:
    """RecordReward in ``interleaved`` rounds with echo, each round rewarding decisions of its
    own (a decision takes one reward); then, as the framework's ceiling, Health/Check through the
    same server, against the median round's echo."""
    from grpc_health.v1 import health_pb2

    from llmopt.gen.llmopt.v1 import bandits_pb2

    c, n_rounds = REWARD_CONCURRENCY, rounds(ctx)
    if isinstance(ctx.pinning, str):
        yield Result.skip(f"e2e.RecordReward.c{c}", ctx.pinning, f"throughput c{c}", unit="req/s")
        return
    duration, warmup = ctx.seconds(3.0, 1.0), ctx.seconds(0.5, 0.3)
    with ctx.echo_server() as echo:
        probe = run_load(echo, Rpc.echo(48), concurrency=c, duration=1.0, warmup=0.3, clients=1)
    # Enough open decisions for every round at twice echo's speed (each is rewarded once).
    per_round = int(probe.throughput * (duration + warmup + 1.0) * 2.0) + 1000
    data = ctx.scratch("bandits-e2e") / "data"
    t0 = time.perf_counter()
    ids = _log_decisions(data, per_round * n_rounds)
    setup_s = time.perf_counter() - t0
    rpcs = [
        Rpc.of(
            "/llmopt.v1.Bandits/RecordReward",
            *(
                bandits_pb2.RecordRewardRequest(decision_id=d, reward=(i % 10) / 10)
                for i, d in enumerate(ids[k * per_round : (k + 1) * per_round])
            ),
        )
        for k in range(n_rounds)
    ]
    health = Rpc.of("/grpc.health.v1.Health/Check", health_pb2.HealthCheckRequest())
    with ctx.echo_server() as echo, ctx.server(args=("--data-dir", str(data))) as server:
        runs = interleaved(ctx, echo, server, rpcs, c, clients=1)
        ceiling = run_load(
            server, health, concurrency=c, duration=duration, warmup=warmup, clients=1
        )
    note = f"{per_round:,} decisions per round logged beforehand in {setup_s:.1f} s"
    rows = list(throughput_rows("RecordReward", c, runs, note, where(server)))
    yield from rows
    yield _ratio_row(
        f"e2e.RecordReward.c{c}.health_ceiling",
        ceiling,
        rows[0].measured or float("nan"),
        "the same server's cheapest RPC (interceptor, pool): the ceiling for any servicer",
    )


def _ratio_row(name: str, report: LoadReport, echo_rps: float, note: str) -> Result:
    ratio = report.throughput / echo_rps if echo_rps else float("nan")
    error = None
    if report.ok == 0 or report.error_count > 0.01 * (report.ok + report.error_count):
        error = f"{report.error_count} calls failed: {report.errors}"
    return Result(
        name,
        "throughput / echo",
        round(ratio, 3),
        "x",
        extra={
            **report.summary(),
            "ratio_to_echo": round(ratio, 3),
            "echo_throughput_rps": round(echo_rps, 1),
        },
        note=f"{report.throughput:,.0f} req/s, p99 {report.latency.p99 / 1e3:.2f} ms, "
        f"{report.cpu_us_per_req:,.0f} us server CPU/req; echo {echo_rps:,.0f} req/s (same single "
        f"client process); {note}",
        error=error,
    )


def create_restart_bandit(root: Path, seed: int = 0) -> int:
    """A LinUCB bandit (K = 10, d = 10) named "restart"; its id."""
    from llmopt.bandits import policies as P
    from llmopt.bandits.service import BanditService
    from llmopt.bandits.types import BanditSpec

    svc = BanditService(root, sweep_interval=0)
    svc.warm_up()
    svc.create_bandit(BanditSpec("restart", P.LinUCB(), _arms(), seed=seed))
    bandit_id = svc._bandits["restart"].id
    svc.close()
    return bandit_id


def append_rewards(root: Path, bandit_id: int, first: int, n: int, seed: int = 0) -> None:
    """Append ``n`` rewarded decisions to the log in bulk, in the store's own format (as if ``n``
    RecordRewards had been acknowledged while the server was down to its last snapshot)."""
    from llmopt.bandits import store as st

    rng = np.random.default_rng(seed + first)
    conn = sqlite3.connect(root / "bandits.db", isolation_level=None)
    scores = np.zeros(K).tobytes()
    chunk = 50_000
    for start in range(first, first + n, chunk):
        m = min(chunk, first + n - start)
        slots = rng.integers(0, K, m)
        rewards = rng.random(m)
        x = rng.random((m, 10))
        x[:, 8] = 1.0
        now = time.time()
        ids = [f"r{start + j}" for j in range(m)]
        conn.execute("BEGIN")
        conn.executemany(
            "INSERT INTO decisions (decision_id, bandit_id, slot, propensity, scores, context,"
            " time, expires, status) VALUES (?, ?, ?, 0.1, ?, ?, ?, ?, ?)",
            (
                (
                    ids[j],
                    bandit_id,
                    int(slots[j]),
                    scores,
                    x[j].tobytes(),
                    now,
                    now + 86400,
                    st.REWARDED,
                )
                for j in range(m)
            ),
        )
        conn.executemany(
            "INSERT INTO events (bandit_id, kind, slot, decision_id, reward, propensity, context,"
            " time) VALUES (?, ?, ?, ?, ?, 0.1, ?, ?)",
            (
                (
                    bandit_id,
                    st.REWARD,
                    int(slots[j]),
                    ids[j],
                    float(rewards[j]),
                    x[j].tobytes(),
                    now,
                )
                for j in range(m)
            ),
        )
        conn.execute("COMMIT")
    conn.close()


def _timed_start(root: Path) -> tuple[float, int]:
    """Seconds for BanditService start-up (recovery included) and the rewards it rebuilt; the
    service is closed afterwards, which writes a snapshot."""
    from llmopt.bandits.service import BanditService

    t0 = time.perf_counter()
    svc = BanditService(root, sweep_interval=0)
    svc.warm_up()
    elapsed = time.perf_counter() - t0
    rewards = svc.stats("restart").rewards
    svc.close()
    return elapsed, rewards


def restart_rows(ctx: Context) -> Iterator[Result]:
    from llmopt.bandits.service import SNAPSHOT_EVERY as tail

    n = ctx.iterations(full=1_000_000, quick=20_000)
    root = ctx.scratch("bandits-restart") / "bandits"
    bandit_id = create_restart_bandit(root)
    t0 = time.perf_counter()
    append_rewards(root, bandit_id, 0, n)
    written_s = time.perf_counter() - t0
    replay_s, rebuilt = _timed_start(root)  # no snapshot yet; close() writes one
    snapshot_s, rebuilt_again = _timed_start(root)
    append_rewards(root, bandit_id, n, tail - 1)  # the most a snapshot can lag behind
    tail_s, rebuilt_tail = _timed_start(root)
    if (rebuilt, rebuilt_again, rebuilt_tail) != (n, n, n + tail - 1):
        yield Result.failed(
            "bandits.restart", f"rebuilt {rebuilt}/{rebuilt_again}/{rebuilt_tail} rewards"
        )
        return
    rows = (
        ("replay", replay_s, "no snapshot: every reward replayed (worst case)"),
        ("snapshot", snapshot_s, "snapshot covers the whole log"),
        (
            "snapshot_tail",
            tail_s,
            f"snapshot plus {tail - 1:,} rewards after it (snapshots are written every {tail:,} "
            "changes, every 60 s and on close: the bound after kill -9)",
        ),
    )
    for label, seconds, what in rows:
        yield Result(
            f"bandits.restart.{label}",
            f"start-up with {n:,} logged rewards",
            round(seconds, 3),
            "s",
            extra={"rewards": n, "log_written_s": round(written_s, 1)},
            note=f"LinUCB K={K} d=10; {what}",
        )


def benchmarks(ctx: Context) -> Iterator[Result]:
    if ctx.wants("bandits.service"):
        yield from in_process_rows(ctx)
    if ctx.wants("bandits.servicer"):
        yield from servicer_rows(ctx)
    if ctx.wants("e2e.RecordReward"):
        yield from reward_rows(ctx)
    if ctx.wants("bandits.restart"):
        yield from restart_rows(ctx)

"""Explanations: why an arm was chosen, and why a model predicted what it did, in process.

- ``explain.select.lin_ucb.d20k10.{plain,explained}``: one ``BanditService.select_arm`` of a
  LinUCB bandit over a 20-slot feature set with 10 arms (the context vector given, decision
  logged durably), without and with ``explain``. Target (issue 25): explained p99 <= 200 us. The
  plain row is the same call as ``bandits.service.select_logged`` with a wider vector: a select
  that does not ask for an explanation must cost what it did before the explanations existed
  (the A/B against the commit before them is in benchmarks/README.md).
- ``explain.policy.<policy>``: ``policy.select`` + ``explain_selection`` for every policy of the
  policy table (d = 20, K = 10, trained for 2,000 rounds): what the explanation itself costs
  beside ``bandits.policy.<policy>.select``. Information.
- ``explain.servicer.select_explained.{hot,cold}``: the SelectArm servicer with ``explain: true``,
  request bytes to answer bytes (the explanation serialized on the wire). Information.
- ``explain.tree_shap.gbr100d6``: exact TreeSHAP of a 100-tree, depth-6 gradient-boosted
  regressor (20 features, the ONNX export read back), 200 rows per call, per row. Target:
  <= 1 ms per row (mean over the calls).
- ``explain.linear.per_row``: the linear explanation of the same rows. Information.
- ``explain.kernel_shap.mlp8.samples{N}``: KernelSHAP of an 8-feature MLP through batched
  onnxruntime runs, per row. Information.
- ``.shap`` and ``.vs_shap`` beside the TreeSHAP and KernelSHAP rows: the peer, shap (a dev
  extra), on the same model, rows and background (its TreeExplainer on the scikit-learn model,
  whose node counts are the training set's; its KernelExplainer with ``l1_reg=False``, the
  plain kernel regression), and the speed-up. Information.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

from benchmarks.harness import Context, Result, hot_and_cold, latency_result, time_calls

K = 10
DIM = 20
EXPLAINED_SELECT_P99_US = 200.0
TREE_ROW_US = 1000.0


def _arms() -> tuple:
    from llmopt.bandits.arms import Arm, LLMConfig

    return tuple(Arm(f"arm{i}", LLMConfig(model=f"model-{i}")) for i in range(K))


def _feature_set() -> Any:
    from llmopt.features.spec import Feature, FeatureSet

    return FeatureSet(
        name="bench20",
        entity_key="user_id",
        features=tuple(Feature(f"f{i:02d}") for i in range(DIM)),
    )


def _contexts(n: int) -> np.ndarray:
    return np.random.default_rng(0).uniform(-1.0, 1.0, size=(n, DIM))


@contextmanager
def _linucb_bandit(ctx: Context, prefix: str, seed: int) -> Iterator[Any]:
    """A BanditService with one LinUCB bandit "ex" of K arms over the 20-slot feature set."""
    from llmopt.bandits import policies as P
    from llmopt.bandits.service import BanditService
    from llmopt.bandits.types import BanditSpec
    from llmopt.features import FeatureService

    features = FeatureService(ctx.scratch(f"{prefix}-features"))
    features.warm_up()
    svc = BanditService(ctx.scratch(f"{prefix}-bandits"), features=features, sweep_interval=0)
    svc.warm_up()
    try:
        features.create_set(_feature_set())
        svc.create_bandit(BanditSpec("ex", P.LinUCB(), _arms(), feature_set="bench20", seed=seed))
        yield svc
    finally:
        svc.close()
        features.close()


def service_rows(ctx: Context) -> Iterator[Result]:
    with _linucb_bandit(ctx, "explain", seed=1) as svc:
        xs = _contexts(1024)
        env = np.random.default_rng(1)
        for i in range(2000):  # a learned state, not the cold start
            d = svc.select_arm("ex", vector=xs[i % len(xs)])
            p = 0.2 + int(d.arm.arm_id[3:]) / 20
            svc.record_reward(d.decision_id, reward=float(env.random() < p))
        n = ctx.iterations(full=5_000, quick=300)
        next_x = itertools.cycle(list(xs)).__next__
        for label, explain in (("plain", False), ("explained", True)):

            def select(e: bool = explain) -> None:
                svc.select_arm("ex", vector=next_x(), explain=e)

            pct = time_calls(select, warmup=200, iterations=n)
            yield latency_result(
                f"explain.select.lin_ucb.d20k10.{label}",
                pct,
                target_us=EXPLAINED_SELECT_P99_US if explain else None,
                note="BanditService.select_arm, vector given, decision logged durably, 1 caller",
            )


def policy_rows(ctx: Context) -> Iterator[Result]:
    from llmopt.bandits import policies as P
    from llmopt.bandits.explain import explain_selection

    xs = _contexts(1024)
    allowed = np.ones(K, dtype=np.uint8)
    removed = [False] * K
    arm_ids = [f"arm{i}" for i in range(K)]
    slots = [f"f{i:02d}" for i in range(DIM)]
    n = ctx.iterations(full=20_000, quick=500)
    for kind in P.POLICY_TABLE:
        label = kind.ONEOF  # type: ignore[attr-defined]
        name = f"explain.policy.{label}"
        if not ctx.wants(name):
            continue
        policy = P.make_policy(kind(), K, DIM, seed=1)
        env = np.random.default_rng(2)
        for t in range(2000):
            x = xs[t % len(xs)] if policy.contextual else None
            arm = policy.select(x, allowed).arm
            policy.update(arm, float(env.random() < 0.1 + arm / 20), x)
        next_x = itertools.cycle(list(xs) if policy.contextual else [None]).__next__

        def explained(p: P.Policy = policy, following: Callable[[], Any] = next_x) -> None:
            x = following()
            sel = p.select(x, allowed)
            explain_selection(p, x, allowed, removed, arm_ids, slots, sel)

        pct = time_calls(explained, warmup=200, iterations=n)
        yield latency_result(name, pct, note="select + explain_selection, K=10, d=20")


def servicer_rows(ctx: Context) -> Iterator[Result]:
    from llmopt.api.bandits import BanditsServicer
    from llmopt.gen.llmopt.v1 import bandits_pb2

    with _linucb_bandit(ctx, "explain-servicer", seed=3) as svc:
        servicer = BanditsServicer(svc)
        requests = [
            bandits_pb2.SelectArmRequest(
                bandit="ex", context_vector=x.tolist(), explain=True
            ).SerializeToString()
            for x in _contexts(64)
        ]
        parse = bandits_pb2.SelectArmRequest.FromString
        count = itertools.count()

        def select() -> None:
            servicer.SelectArm(parse(requests[next(count) % 64]), None)

        for run in hot_and_cold(ctx):
            yield run.result(
                "explain.servicer.select_explained",
                select,
                "SelectArm servicer with explain, request bytes to answer bytes, LinUCB K=10 d=20",
            )


def _per_row(
    name: str,
    call: Callable[[], object],
    rows: int,
    calls: int,
    target_us: float | None,
    note: str,
) -> Result:
    """Mean microseconds per row over ``calls`` calls of ``rows`` rows each (after one warm-up)."""
    call()
    start = time.perf_counter()
    for _ in range(calls):
        call()
    per_row = (time.perf_counter() - start) / calls / rows * 1e6
    return Result(name, "mean per row", per_row, "us", target=target_us, note=note)


def model_rows(ctx: Context) -> Iterator[Result]:
    import onnx
    from sklearn.ensemble import GradientBoostingRegressor
    from sklearn.linear_model import LinearRegression

    from llmopt.inference.explain.linear import LinearExplainer
    from llmopt.inference.explain.trees import TreeExplainer
    from llmopt.registry.export import export_sklearn

    rng = np.random.default_rng(0)
    X = rng.normal(size=(2000, DIM)).astype(np.float32)
    y = X[:, 0] * 2 + np.sin(X[:, 1] * 3) + X[:, 2] * X[:, 3] + 0.1 * rng.normal(size=len(X))
    background = X[:500]
    rows = X[1000:1200]
    calls = ctx.iterations(full=10, quick=1)

    trees = 100 if not ctx.quick else 10
    if ctx.wants("explain.tree_shap"):
        gbr = GradientBoostingRegressor(n_estimators=trees, max_depth=6, random_state=0)
        gbr.fit(X, y)
        model = onnx.load_from_string(export_sklearn(gbr, DIM, sample=rows).onnx_bytes)
        tree = TreeExplainer.from_onnx(model, background, "variable", 0)
        assert tree is not None
        name = f"explain.tree_shap.gbr{trees}d6"
        ours = _per_row(
            name,
            lambda: tree.explain(rows),
            len(rows),
            calls,
            TREE_ROW_US if trees == 100 else None,
            f"exact TreeSHAP, {trees} trees of depth 6, {DIM} features, {len(rows)} rows a call",
        )
        yield ours
        shap = _shap()
        if shap is None:
            yield Result.skip(f"{name}.shap", "skipped: shap not installed (a dev extra)")
        else:
            peer = shap.TreeExplainer(gbr)  # tree_path_dependent, sklearn's node counts
            theirs = _per_row(
                f"{name}.shap",
                lambda: peer.shap_values(rows.astype(np.float64)),
                len(rows),
                calls,
                None,
                f"shap {shap.__version__} TreeExplainer on the scikit-learn model, same rows",
            )
            yield theirs
            yield _speedup(f"{name}.vs_shap", theirs, ours)
    if ctx.wants("explain.linear"):
        lin = LinearRegression().fit(X, y)
        model = onnx.load_from_string(export_sklearn(lin, DIM, sample=rows).onnx_bytes)
        linear = LinearExplainer.from_onnx(model, background, "variable", 0)
        assert linear is not None
        yield _per_row(
            "explain.linear.per_row",
            lambda: linear.explain(rows),
            len(rows),
            calls * 10,
            None,
            f"coefficient x (x - baseline), {DIM} features, {len(rows)} rows a call",
        )
    if ctx.wants("explain.kernel_shap"):
        yield from kernel_rows(ctx)


def kernel_rows(ctx: Context) -> Iterator[Result]:
    """KernelSHAP of an 8-feature MLP regressor through onnxruntime: 100 background rows, the
    masked rows of each row's coalitions in large batches."""
    import onnxruntime as ort
    from sklearn.neural_network import MLPRegressor

    from llmopt.inference.explain.kernel import KernelExplainer, subsample
    from llmopt.registry.export import export_sklearn

    m = 8
    rng = np.random.default_rng(1)
    X = rng.normal(size=(1000, m)).astype(np.float32)
    y = np.tanh(X[:, 0] * X[:, 1]) + X[:, 2] ** 2 + 0.1 * rng.normal(size=len(X))
    mlp = MLPRegressor(hidden_layer_sizes=(32,), max_iter=300, random_state=0).fit(X, y)
    session = ort.InferenceSession(
        export_sklearn(mlp, m, sample=X[:64]).onnx_bytes, providers=["CPUExecutionProvider"]
    )

    def predict(rows: np.ndarray) -> np.ndarray:
        out = session.run(None, {"input": rows.astype(np.float32)})[0]
        return np.asarray(out, dtype=np.float64).reshape(len(rows))

    background = subsample(X[:500], 100, seed=0)
    explainer = KernelExplainer(predict, background)
    rows = X[500:504] if ctx.quick else X[500:520]
    shap = _shap()
    for samples in (256, 2048):
        name = f"explain.kernel_shap.mlp8.samples{samples}"

        def explain(budget: int = samples) -> None:
            explainer.explain(rows, samples=budget, seed=0)

        ours = _per_row(
            name,
            explain,
            len(rows),
            1,
            None,
            f"{samples} coalitions (2^8 - 2 = 254: fully enumerated) x 100 background rows",
        )
        yield ours
        if shap is None:
            yield Result.skip(f"{name}.shap", "skipped: shap not installed (a dev extra)")
            continue
        peer = shap.KernelExplainer(predict, background)

        def theirs_call(budget: int = samples, kernel: Any = peer) -> None:
            kernel.shap_values(rows.astype(np.float64), nsamples=budget, l1_reg=False, silent=True)

        theirs = _per_row(
            f"{name}.shap",
            theirs_call,
            len(rows),
            1,
            None,
            f"shap {shap.__version__} KernelExplainer, same model function and background",
        )
        yield theirs
        yield _speedup(f"{name}.vs_shap", theirs, ours)


def _shap() -> Any:
    """The shap package (a dev extra: the peer of these rows), or None when not installed."""
    try:
        import shap
    except ImportError:
        return None
    return shap


def _speedup(name: str, theirs: Result, ours: Result) -> Result:
    """How many times shap's time per row ours is (information: the issue sets no target)."""
    assert theirs.measured is not None and ours.measured is not None
    return Result(
        name, "speed-up", theirs.measured / ours.measured, "x", better="higher", note="shap / ours"
    )


def benchmarks(ctx: Context) -> Iterator[Result]:
    if ctx.wants("explain.select"):
        yield from service_rows(ctx)
    yield from policy_rows(ctx)
    if ctx.wants("explain.servicer"):
        yield from servicer_rows(ctx)
    yield from model_rows(ctx)

"""Alias changes swap sessions atomically: load and warm first, then switch, never a failed
request; a version that fails to load leaves the old one serving."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable

import numpy as np

from llmopt.inference import InferenceEngine, TrafficMode, TrafficPolicy, Variant
from llmopt.registry import Registry
from tests.support import onnx_models
from tests.unit.inference.conftest import upload

Engine = Callable[..., InferenceEngine]


def test_alias_change_swaps_and_old_session_closes_after_in_flight_requests(
    registry: Registry,
    make_engine: Engine,
    lr: onnx_models.TrainedModel,
    lr2: onnx_models.TrainedModel,
) -> None:
    upload(registry, "m", lr.onnx, alias="champion")
    upload(registry, "m", lr2.onnx)
    engine = make_engine()
    X = lr.X[:5]
    assert engine.predict("m", {"X": X}).version == 1
    old = engine._slots["m"].routing.champion  # a request in flight on version 1
    assert old is not None and old.acquire()
    registry.set_alias("m", "champion", 2)
    got = engine.predict("m", {"X": X})
    assert got.version == 2
    np.testing.assert_array_equal(got.outputs["label"], lr2.estimator.predict(X))
    assert not old.closed and old.in_flight == 1  # still finishing its request
    old.run({"X": X})
    old.release()
    assert old.closed
    assert engine.loaded_versions() == [("m", 2)]


def test_failed_load_keeps_the_old_version_serving_and_is_reported(
    registry: Registry,
    make_engine: Engine,
    lr: onnx_models.TrainedModel,
    lr2: onnx_models.TrainedModel,
) -> None:
    upload(registry, "m", lr.onnx, alias="champion")
    upload(registry, "m", lr2.onnx)
    path = registry.artifact_path("m", 2)
    os.chmod(path, 0o644)
    path.write_bytes(b"\x00" * 64)  # corrupt on disk: the registry's hash check refuses it
    engine = make_engine()
    engine.predict("m", {"X": lr.X[:1]})
    registry.set_alias("m", "champion", 2)
    assert engine.predict("m", {"X": lr.X[:1]}).version == 1
    (failure,) = engine.stats("m").load_failures
    assert (failure.version, failure.alias) == (2, "champion")
    entries = {(e.version, e.state) for e in engine.index() if e.model == "m"}
    assert entries == {(1, "READY"), (2, "UNAVAILABLE")}


def test_promote_and_rollback_under_concurrent_load_fail_no_request(
    registry: Registry,
    make_engine: Engine,
    lr: onnx_models.TrainedModel,
    lr2: onnx_models.TrainedModel,
) -> None:
    upload(registry, "m", lr.onnx, alias="champion")
    upload(registry, "m", lr2.onnx)
    engine = make_engine()
    engine.set_policy(TrafficPolicy("m", TrafficMode.SPLIT, 50.0))
    X = lr.X[:4]
    expected = {1: lr.estimator.predict(X), 2: lr2.estimator.predict(X)}

    # (started, finished, (champion, challenger)) of every alias change, in order.
    changes: list[tuple[float, float, tuple[int | None, int | None]]] = [
        (float("-inf"), float("-inf"), (1, None))
    ]
    results: list[tuple[float, float, int, Variant]] = []
    failures: list[BaseException] = []
    stop = threading.Event()

    def client() -> None:
        mine: list[tuple[float, float, int, Variant]] = []
        while not stop.is_set():
            start = time.monotonic()
            try:
                got = engine.predict("m", {"X": X})
                np.testing.assert_array_equal(got.outputs["label"], expected[got.version])
            except BaseException as exc:
                failures.append(exc)
                return
            mine.append((start, time.monotonic(), got.version, got.variant))
        results.extend(mine)

    def change(fn: Callable[[], object], state: tuple[int | None, int | None]) -> None:
        before = time.monotonic()
        fn()
        changes.append((before, time.monotonic(), state))

    clients = [threading.Thread(target=client) for _ in range(4)]
    for t in clients:
        t.start()
    try:
        for _ in range(20):
            change(lambda: registry.set_alias("m", "challenger", 2), (1, 2))
            change(lambda: registry.promote("m"), (2, None))
            change(lambda: registry.rollback("m"), (1, None))
    finally:
        stop.set()
        for t in clients:
            t.join()
    assert not failures, failures[:3]
    assert len(results) > 60
    for start, end, version, variant in results:
        allowed: set[int | None] = set()
        for i, (began, _, state) in enumerate(changes):
            next_done = changes[i + 1][1] if i + 1 < len(changes) else float("inf")
            if began <= end and next_done >= start:  # state i may have been live meanwhile
                allowed.update(state)
        assert version in allowed, (start, end, version, variant)
    assert {v for _, _, v, _ in results} == {1, 2}
    assert engine.loaded_versions() == [("m", 1)]

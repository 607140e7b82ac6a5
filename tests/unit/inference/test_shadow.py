"""The shadow queue is bounded: a full queue drops the copy, counts it, and never blocks."""

from __future__ import annotations

import threading

import numpy as np

from llmopt.inference.shadow import ShadowJob, ShadowRunner
from llmopt.inference.stats import ModelStatsBook


class BlockingChallenger:
    """Stands in for a LoadedModel whose run blocks until released (to fill the queue)."""

    model = "m"
    version = 2

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.started = threading.Event()

    def acquire(self) -> bool:
        return True

    def release(self) -> None:
        pass

    def run(self, inputs, output_names=None):  # type: ignore[no-untyped-def]
        self.started.set()
        self.gate.wait(10)
        return {"label": np.array([1, 0]), "p": np.array([0.5, 0.25])}


def test_full_queue_drops_and_counts_without_blocking() -> None:
    stats = ModelStatsBook("m")
    runner = ShadowRunner(capacity=2)
    challenger = BlockingChallenger()
    champion_outputs = {"label": np.array([1, 1]), "p": np.array([0.5, 0.5])}
    job = ShadowJob(stats, challenger, {"x": np.zeros((2, 1))}, None, champion_outputs)  # type: ignore[arg-type]
    try:
        assert runner.offer(job)
        assert challenger.started.wait(10)  # the worker holds one copy; the queue is empty
        accepted = [runner.offer(job) for _ in range(5)]  # put_nowait: never waits
        assert accepted == [True, True, False, False, False]
        challenger.gate.set()
        runner.drain()
        shadow = stats.snapshot().shadow
        assert (shadow.compared, shadow.dropped, shadow.errors) == (3, 3, 0)
        assert shadow.label_agreement == 0.5
        assert shadow.max_abs_diff == 0.25 and abs(shadow.mean_abs_diff - 0.125) < 1e-12
    finally:
        challenger.gate.set()
        runner.close()

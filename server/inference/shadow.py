"""SHADOW traffic: copies of champion requests run on the challenger, off the request path.

``offer`` never blocks: when the bounded queue is full the copy is dropped and counted. One worker
thread runs the copies and records how the challenger's answers compare with the champion's; a
copy that ran hands its inputs to the job's ``served`` sink as the challenger's (one dropped or
failed is no traffic of it).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from llmopt.inference.routing import Variant
from llmopt.inference.session import LoadedModel
from llmopt.inference.signature import row_count
from llmopt.inference.stats import ModelStatsBook, compare_outputs
from llmopt.ports import ServedRows

log = logging.getLogger("llmopt.inference.shadow")


@dataclass(frozen=True)
class ShadowJob:
    stats: ModelStatsBook
    challenger: LoadedModel
    inputs: Mapping[str, np.ndarray]
    output_names: Sequence[str] | None
    champion_outputs: dict[str, np.ndarray]
    served: ServedRows | None = None


_STOP = object()


class ShadowRunner:
    """A bounded queue of shadow copies and the thread that runs them."""

    def __init__(self, capacity: int = 1024) -> None:
        self._queue: queue.Queue[object] = queue.Queue(maxsize=max(1, capacity))
        self._thread = threading.Thread(target=self._loop, name="shadow-runner", daemon=True)
        self._thread.start()

    def offer(self, job: ShadowJob) -> bool:
        """Queue a copy; False (and counted as dropped) when the queue is full."""
        try:
            self._queue.put_nowait(job)
        except queue.Full:
            job.stats.shadow_dropped()
            return False
        return True

    def drain(self, timeout: float = 10.0) -> None:
        """Wait until every queued copy has run (tests and shutdown)."""
        deadline = time.monotonic() + timeout
        while self._queue.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.005)

    def close(self) -> None:
        self._queue.put(_STOP)
        self._thread.join(timeout=10)

    def _loop(self) -> None:
        while True:
            job = self._queue.get()
            try:
                if job is _STOP:
                    return
                assert isinstance(job, ShadowJob)
                self._run(job)
            except Exception:
                log.exception("shadow run failed")
            finally:
                self._queue.task_done()

    @staticmethod
    def _run(job: ShadowJob) -> None:
        challenger = job.challenger
        if not challenger.acquire():
            job.stats.shadow_dropped()  # the challenger was swapped out meanwhile
            return
        start = time.perf_counter()
        ok = False
        try:
            outputs = challenger.run(job.inputs, job.output_names)
            ok = True
        except Exception as exc:
            job.stats.shadow_failed()
            log.debug("shadow run on %r v%d failed: %s", challenger.model, challenger.version, exc)
            return
        finally:
            challenger.release()
            job.stats.record(
                challenger.version,
                Variant.SHADOW,
                row_count(job.inputs),
                time.perf_counter() - start,
                ok,
            )
        if job.served is not None:
            job.served.served(challenger.model, challenger.version, job.inputs)
        try:
            job.stats.shadow_compared(*compare_outputs(job.champion_outputs, outputs))
        except ValueError:
            job.stats.shadow_failed()

"""Per model serving figures, kept in-process and cheaply.

Counters per (version, variant) and the last ``window`` latencies in a ring buffer, from which
p50/p95/p99 are computed only when someone asks. Shadow comparisons accumulate sums, so reading
them costs nothing either. Beside them, per version, the Open Inference Protocol's statistics
(Triton's ModelStatistics): counts and cumulative nanoseconds of whole requests, of input
preparation, of the onnxruntime run and of the outputs, per batch size too. One lock per model.
"""

from __future__ import annotations

import threading
import time
from array import array
from dataclasses import dataclass, field

import numpy as np

from llmopt.inference.routing import Variant

LATENCY_WINDOW = 2048


@dataclass(frozen=True)
class LatencySummary:
    p50_ms: float
    p95_ms: float
    p99_ms: float


@dataclass(frozen=True)
class VariantStats:
    version: int
    variant: Variant
    requests: int
    rows: int
    errors: int
    latency: LatencySummary


@dataclass(frozen=True)
class ShadowStats:
    compared: int = 0
    dropped: int = 0
    errors: int = 0
    label_agreement: float = 0.0  # share of equal labels (integer, bool, string outputs)
    mean_abs_diff: float = 0.0  # over every element of float outputs
    max_abs_diff: float = 0.0


@dataclass(frozen=True)
class LoadFailure:
    version: int
    alias: str
    message: str


@dataclass(frozen=True)
class Duration:
    """A count and the total nanoseconds they took."""

    count: int = 0
    ns: int = 0


@dataclass(frozen=True)
class BatchStatistics:
    """Model runs of one batch size (rows)."""

    batch_size: int
    compute_input: Duration
    compute_infer: Duration
    compute_output: Duration


@dataclass(frozen=True)
class VersionStatistics:
    """One version's Open Inference Protocol statistics since the server started."""

    model: str
    version: int
    last_inference_ms: int = 0  # milliseconds since the epoch; 0: none yet
    inference_count: int = 0  # rows of successful requests
    execution_count: int = 0  # model runs
    success: Duration = Duration()  # whole requests, acquiring the version to the outputs
    fail: Duration = Duration()
    queue: Duration = Duration()  # waiting for a batch (0 ns without batching)
    compute_input: Duration = Duration()
    compute_infer: Duration = Duration()
    compute_output: Duration = Duration()
    batches: tuple[BatchStatistics, ...] = ()


class _Totals:
    """Mutable sums behind one version's ``VersionStatistics`` (index: 0 count, 1 ns)."""

    __slots__ = (
        "batches",
        "compute_infer",
        "compute_input",
        "compute_output",
        "executions",
        "fail",
        "inferences",
        "last_ms",
        "queue",
        "success",
    )

    def __init__(self) -> None:
        self.last_ms = 0
        self.inferences = 0
        self.executions = 0
        self.success = [0, 0]
        self.fail = [0, 0]
        self.queue = [0, 0]
        self.compute_input = [0, 0]
        self.compute_infer = [0, 0]
        self.compute_output = [0, 0]
        self.batches: dict[int, list[int]] = {}  # rows -> [count, input, infer, output ns]

    def snapshot(self, model: str, version: int) -> VersionStatistics:
        return VersionStatistics(
            model=model,
            version=version,
            last_inference_ms=self.last_ms,
            inference_count=self.inferences,
            execution_count=self.executions,
            success=Duration(*self.success),
            fail=Duration(*self.fail),
            queue=Duration(*self.queue),
            compute_input=Duration(*self.compute_input),
            compute_infer=Duration(*self.compute_infer),
            compute_output=Duration(*self.compute_output),
            batches=tuple(
                BatchStatistics(size, Duration(n, i), Duration(n, r), Duration(n, o))
                for size, (n, i, r, o) in sorted(self.batches.items())
            ),
        )


def _add(pair: list[int], ns: int) -> None:
    pair[0] += 1
    pair[1] += ns


@dataclass(frozen=True)
class ModelStats:
    model: str
    variants: tuple[VariantStats, ...]
    shadow: ShadowStats
    load_failures: tuple[LoadFailure, ...] = ()


class _Counters:
    __slots__ = ("errors", "latencies", "requests", "rows")

    def __init__(self, window: int) -> None:
        self.requests = 0
        self.rows = 0
        self.errors = 0
        self.latencies = array("d", bytes(8 * window))

    def summary(self) -> LatencySummary:
        n = min(self.requests, len(self.latencies))
        if n == 0:
            return LatencySummary(0.0, 0.0, 0.0)
        p50, p95, p99 = np.percentile(
            np.frombuffer(self.latencies, dtype=np.float64)[:n], [50, 95, 99]
        )
        return LatencySummary(float(p50) * 1e3, float(p95) * 1e3, float(p99) * 1e3)


@dataclass
class _ShadowSums:
    compared: int = 0
    dropped: int = 0
    errors: int = 0
    labels_equal: int = 0
    labels_total: int = 0
    diff_sum: float = 0.0
    diff_count: int = 0
    diff_max: float = 0.0


@dataclass
class ModelStatsBook:
    """The live counters of one model."""

    model: str
    window: int = LATENCY_WINDOW
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _counters: dict[tuple[int, Variant], _Counters] = field(default_factory=dict)
    _shadow: _ShadowSums = field(default_factory=_ShadowSums)
    _totals: dict[int, _Totals] = field(default_factory=dict)

    def record(
        self,
        version: int,
        variant: Variant,
        rows: int,
        seconds: float,
        ok: bool,
        timing: tuple[int, int, int] | None = None,
        queue_ns: int = 0,
    ) -> None:
        """One request: ``seconds`` from acquiring the version to its outputs; ``timing`` the
        (input, infer, output) nanoseconds of its run, when it ran; ``queue_ns`` its wait for a
        batch."""
        key = (version, variant)
        total_ns = round(seconds * 1e9)
        now_ms = time.time_ns() // 1_000_000
        with self._lock:
            counters = self._counters.get(key)
            if counters is None:
                counters = self._counters[key] = _Counters(self.window)
            counters.latencies[counters.requests % self.window] = seconds
            counters.requests += 1
            if ok:
                counters.rows += rows
            else:
                counters.errors += 1
            totals = self._totals.get(version)
            if totals is None:
                totals = self._totals[version] = _Totals()
            if not ok:
                _add(totals.fail, total_ns)
                return
            totals.last_ms = now_ms
            totals.inferences += rows
            _add(totals.success, total_ns)
            _add(totals.queue, queue_ns)
            if timing is not None:
                self._executed(totals, rows, timing)

    def executed(self, version: int, rows: int, timing: tuple[int, int, int]) -> None:
        """A model run that served several requests at once (a batch of ``rows``), recorded once;
        its requests are recorded with ``record`` and no ``timing``."""
        with self._lock:
            totals = self._totals.get(version)
            if totals is None:
                totals = self._totals[version] = _Totals()
            self._executed(totals, rows, timing)

    @staticmethod
    def _executed(totals: _Totals, rows: int, timing: tuple[int, int, int]) -> None:
        input_ns, infer_ns, output_ns = timing
        totals.executions += 1
        _add(totals.compute_input, input_ns)
        _add(totals.compute_infer, infer_ns)
        _add(totals.compute_output, output_ns)
        batch = totals.batches.get(rows)
        if batch is None:
            batch = totals.batches[rows] = [0, 0, 0, 0]
        batch[0] += 1
        batch[1] += input_ns
        batch[2] += infer_ns
        batch[3] += output_ns

    def statistics(self, versions: tuple[int, ...] = ()) -> list[VersionStatistics]:
        """Every recorded version's statistics, and zeros for ``versions`` not recorded yet;
        sorted by version."""
        with self._lock:
            out = {v: t.snapshot(self.model, v) for v, t in self._totals.items()}
        for v in versions:
            out.setdefault(v, VersionStatistics(self.model, v))
        return [out[v] for v in sorted(out)]

    def shadow_dropped(self) -> None:
        with self._lock:
            self._shadow.dropped += 1

    def shadow_failed(self) -> None:
        with self._lock:
            self._shadow.errors += 1

    def shadow_compared(
        self,
        labels_equal: int,
        labels_total: int,
        diff_sum: float,
        diff_count: int,
        diff_max: float,
    ) -> None:
        with self._lock:
            s = self._shadow
            s.compared += 1
            s.labels_equal += labels_equal
            s.labels_total += labels_total
            s.diff_sum += diff_sum
            s.diff_count += diff_count
            s.diff_max = max(s.diff_max, diff_max)

    def snapshot(self, load_failures: tuple[LoadFailure, ...] = ()) -> ModelStats:
        with self._lock:
            rows = [
                (version, variant, c.requests, c.rows, c.errors, c.summary())
                for (version, variant), c in self._counters.items()
            ]
            s = self._shadow
            shadow = ShadowStats(
                compared=s.compared,
                dropped=s.dropped,
                errors=s.errors,
                label_agreement=s.labels_equal / s.labels_total if s.labels_total else 0.0,
                mean_abs_diff=s.diff_sum / s.diff_count if s.diff_count else 0.0,
                max_abs_diff=s.diff_max,
            )
        variants = tuple(
            VariantStats(v, var, req, r, err, lat)
            for v, var, req, r, err, lat in sorted(rows, key=lambda t: (t[0], t[1].value))
        )
        return ModelStats(self.model, variants, shadow, load_failures)


def compare_outputs(
    champion: dict[str, np.ndarray], challenger: dict[str, np.ndarray]
) -> tuple[int, int, float, int, float]:
    """(labels equal, labels compared, abs diff sum, diffs compared, max abs diff) over the
    outputs both answers share; raises ValueError when shapes differ."""
    equal = total = count = 0
    diff_sum = diff_max = 0.0
    for name, a in champion.items():
        b = challenger.get(name)
        if b is None:
            continue
        if a.shape != b.shape:
            raise ValueError(f"output {name!r}: shape {a.shape} vs {b.shape}")
        if a.dtype.kind == "f" and b.dtype.kind == "f":
            diff = np.abs(a.astype(np.float64) - b.astype(np.float64))
            diff_sum += float(diff.sum())
            count += diff.size
            if diff.size:
                diff_max = max(diff_max, float(diff.max()))
        else:
            equal += int(np.count_nonzero(a == b))
            total += a.size
    return equal, total, diff_sum, count, diff_max

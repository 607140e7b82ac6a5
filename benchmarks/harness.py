"""The benchmark API: results, percentiles, an in-process timer and the context handed to benches.

A bench module is ``benchmarks/bench_<area>.py`` with one module-level function::

    def benchmarks(ctx: Context) -> Iterable[Result]: ...

The runner (``python -m benchmarks``) imports every such module, calls ``benchmarks(ctx)`` and
records each ``Result`` it yields. If the function raises, the runner records an ERROR row for the
module and goes on with the next one; a row whose ``error`` is set also makes the run fail.
See benchmarks/README.md for an example.
"""

from __future__ import annotations

import fnmatch
import json
import math
import os
import platform
import socket
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from benchmarks.load import LoadReport, LoadTarget, Rpc
    from benchmarks.procs import Pinning, ServerProc

Better = Literal["lower", "higher"]

PASS, FAIL, INFO, ERROR, SKIP = "PASS", "FAIL", "info", "ERROR", "skip"

PINNED = "pinned"
"""``Context.server`` / ``echo_server`` default: on the run's server core (``Context.pinning``)."""


@dataclass(frozen=True)
class Percentiles:
    """Latency distribution of ``count`` samples, every figure in microseconds."""

    count: int
    mean: float
    p50: float
    p95: float
    p99: float
    p999: float
    max: float

    def as_extra(self, prefix: str = "") -> dict[str, float]:
        """The figures as ``Result.extra`` fields (``p50_us``, ``p99_us``, ...)."""
        return {
            f"{prefix}p50_us": self.p50,
            f"{prefix}p95_us": self.p95,
            f"{prefix}p99_us": self.p99,
            f"{prefix}p999_us": self.p999,
            f"{prefix}max_us": self.max,
        }


def quantile(sorted_values: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0..1) of already sorted values, by linear interpolation (numpy's
    default method). ``nan`` for no values.

    >>> quantile([1.0, 2.0, 3.0, 4.0], 0.5)
    2.5
    >>> quantile([10.0], 0.99)
    10.0
    """
    n = len(sorted_values)
    if n == 0:
        return math.nan
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"q must be in [0, 1], got {q}")
    pos = q * (n - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, n - 1)
    frac = pos - lo
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * frac


def percentiles_ns(samples_ns: Sequence[float]) -> Percentiles:
    """Summarise latency samples given in nanoseconds (as ``perf_counter_ns`` gives them)."""
    values = sorted(samples_ns)
    if not values:
        nan = math.nan
        return Percentiles(0, nan, nan, nan, nan, nan, nan)

    def us(q: float) -> float:
        return quantile(values, q) / 1e3

    return Percentiles(
        count=len(values),
        mean=sum(values) / len(values) / 1e3,
        p50=us(0.50),
        p95=us(0.95),
        p99=us(0.99),
        p999=us(0.999),
        max=values[-1] / 1e3,
    )


def time_calls(
    fn: Callable[[], object],
    warmup: int = 1_000,
    iterations: int = 100_000,
    between: Callable[[], object] | None = None,
) -> Percentiles:
    """Call ``fn()`` ``warmup`` times untimed, then ``iterations`` times, timing each call alone
    with ``perf_counter_ns``. The timer's own cost (a few tens of ns) is included. ``between``,
    if given, runs untimed before every timed call (``evict_caches``: a call starting cold)."""
    for _ in range(warmup):
        fn()
    clock = time.perf_counter_ns
    samples = [0] * iterations
    for i in range(iterations):
        if between is not None:
            between()
        t0 = clock()
        fn()
        samples[i] = clock() - t0
    return percentiles_ns(samples)


_EVICT_DOC = {f"key{i}": [i, str(i), {"x": i * 1.5}] for i in range(3_000)}
_EVICT_FLOATS = [((i * 7_919) % 20_011) / 20_011 for i in range(20_000)]


def evict_caches() -> None:
    """Unrelated Python work (about 1-2 ms) that leaves the CPU caches full of other objects:
    what a server's handler meets between two calls (grpc's machinery, other requests, the
    client sharing the cores). A hot loop hides how much code and data a call touches; timed
    after this, a call pays for it as it does in the server (``benchmarks/README.md``)."""
    json.dumps(_EVICT_DOC)
    sorted(_EVICT_FLOATS)


_COLD_NOTE = ", other Python work between calls (as in the server)"


@dataclass(frozen=True)
class HandlerPass:
    """One of a handler's two in-process rows (``hot_and_cold``)."""

    label: str
    between: Callable[[], object] | None
    iterations: int

    def result(self, name: str, call: Callable[[], object], note: str) -> Result:
        """Row ``<name>.<label>``: the p50 of ``call`` timed in this pass."""
        return latency_result(
            f"{name}.{self.label}",
            time_calls(call, warmup=50, iterations=self.iterations, between=self.between),
            metric="p50",
            note=note + (_COLD_NOTE if self.between else ""),
        )


def hot_and_cold(ctx: Context) -> tuple[HandlerPass, HandlerPass]:
    """A handler's two in-process passes: ``hot`` (a hot loop, what profilers show) and ``cold``
    (``evict_caches`` before each call: the figure that tracks its cost end to end)."""
    return (
        HandlerPass("hot", None, ctx.iterations(full=5_000, quick=500)),
        HandlerPass("cold", evict_caches, ctx.iterations(full=1_000, quick=100)),
    )


@dataclass
class Result:
    """One row of the table: ``measured`` compared with ``target`` in the direction ``better``.

    ``target=None`` makes an informational row (verdict ``info``). ``error`` set makes an ERROR
    row (and a failed run); ``skipped`` set makes a ``skip`` row (not measurable yet).
    ``extra`` carries further figures (p50_us, p99_us, throughput_rps, ratio_to_echo,
    cpu_us_per_req, rss_mib...); the runner fills ``machine``.
    """

    name: str
    metric: str
    measured: float | None
    unit: str
    target: float | None = None
    better: Better = "lower"
    extra: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    note: str = ""
    machine: str = ""
    skipped: str | None = None

    @property
    def verdict(self) -> str:
        if self.skipped is not None:
            return SKIP
        if self.error is not None or self.measured is None or math.isnan(self.measured):
            return ERROR
        if self.target is None:
            return INFO
        ok = (
            self.measured <= self.target if self.better == "lower" else self.measured >= self.target
        )
        return PASS if ok else FAIL

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["verdict"] = self.verdict
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Result:
        keys = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in keys})

    @classmethod
    def failed(cls, name: str, error: str, metric: str = "") -> Result:
        """An ERROR row: the benchmark could not be measured."""
        return cls(name=name, metric=metric, measured=None, unit="", error=error)

    @classmethod
    def skip(
        cls,
        name: str,
        reason: str,
        metric: str = "",
        target: float | None = None,
        unit: str = "",
        better: Better = "lower",
    ) -> Result:
        """A row that cannot be measured *yet* (e.g. its RPC answers UNIMPLEMENTED): shown with
        its target, verdict ``skip``; does not fail the run."""
        return cls(
            name=name,
            metric=metric,
            measured=None,
            unit=unit,
            target=target,
            better=better,
            skipped=reason,
        )


def latency_result(
    name: str,
    pct: Percentiles,
    *,
    target_us: float | None = None,
    metric: str = "p99",
    note: str = "",
) -> Result:
    """A row judging one percentile (``p50``, ``p99``, ``p999``...) of ``pct`` in microseconds
    against ``target_us``; every percentile goes into ``extra``."""
    return Result(
        name=name,
        metric=f"{metric} latency",
        measured=getattr(pct, metric),
        unit="us",
        target=target_us,
        better="lower",
        extra={**pct.as_extra(), "samples": pct.count},
        note=note,
    )


def machine_info() -> dict[str, Any]:
    """What the figures were measured on: recorded with every run."""
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cores = os.cpu_count() or 0
    try:
        import grpc

        grpc_version = grpc.__version__
    except ImportError:  # pragma: no cover
        grpc_version = ""
    return {
        "host": socket.gethostname(),
        "cores": cores,
        "cpu": model,
        "python": platform.python_version(),
        "grpcio": grpc_version,
        "platform": platform.platform(),
    }


def machine_label(info: dict[str, Any]) -> str:
    return f"{info.get('cores', '?')} cores, {info.get('cpu', '') or 'unknown cpu'}"


@dataclass
class Context:
    """What a bench module gets: the run's mode, a scratch directory and helpers for end to end.

    ``quick``: CI mode; run a short version of everything (small iteration counts, ~1 s loads).
    ``tmp_dir``: a fresh directory for this run, removed afterwards.
    ``only``: the ``--only`` pattern, or None; test ``wants(name)`` before expensive work.
    ``cache``: shared by every module of the run (e.g. echo baselines measured once).
    """

    quick: bool
    tmp_dir: Path
    only: str | None = None
    cache: dict[Any, Any] = field(default_factory=dict)

    def wants(self, name: str) -> bool:
        """Whether the benchmark called ``name`` is selected by ``--only`` (a glob, or a
        case-insensitive substring)."""
        if not self.only:
            return True
        pattern = self.only.lower()
        lowered = name.lower()
        return pattern in lowered or fnmatch.fnmatch(lowered, pattern)

    def iterations(self, full: int, quick: int) -> int:
        return quick if self.quick else full

    def seconds(self, full: float, quick: float) -> float:
        return quick if self.quick else full

    def scratch(self, prefix: str) -> Path:
        """A new empty directory under ``tmp_dir``."""
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=f"{prefix}-", dir=self.tmp_dir))

    @property
    def pinning(self) -> Pinning | str:
        """The run's core split (``procs.split_cores``), or why there is none ("one core")."""
        from benchmarks.procs import split_cores

        if "pinning" not in self.cache:
            self.cache["pinning"] = split_cores()
        return self.cache["pinning"]  # type: ignore[no-any-return]

    def server_cpus(self, cpus: str | None = PINNED) -> str | None:
        """``cpus`` as given, or for ``PINNED`` the run's server core (None without one)."""
        if cpus != PINNED:
            return cpus
        pinning = self.pinning
        return None if isinstance(pinning, str) else pinning.server

    @contextmanager
    def server(self, args: Sequence[str] = (), cpus: str | None = PINNED) -> Iterator[ServerProc]:
        """The real server (``python -m llmopt --port 0``) in its own process with its own data
        dir, SERVING; pinned with ``taskset -c`` to the run's server core (``PINNED``, the
        default; the load generator's clients then keep off it), to ``cpus``, or not at all
        (``None``). Stopped on exit."""
        from benchmarks.procs import ServerProc

        proc = ServerProc.real(self.scratch("server"), args=args, cpus=self.server_cpus(cpus))
        try:
            proc.start()
            yield proc
        finally:
            proc.stop()

    @contextmanager
    def echo_server(self, cpus: str | None = PINNED, busy_us: float = 0.0) -> Iterator[ServerProc]:
        """The bare grpcio echo server (benchmarks/echo_server.py), same pool and options,
        pinned as ``server`` pins; ``busy_us``: Python work per call (``--busy-us``)."""
        from benchmarks.procs import ServerProc

        proc = ServerProc.echo(self.scratch("echo"), cpus=self.server_cpus(cpus), busy_us=busy_us)
        try:
            proc.start()
            yield proc
        finally:
            proc.stop()

    def load(
        self,
        server: LoadTarget,
        rpc: Rpc,
        *,
        concurrency: int,
        duration: float | None = None,
        warmup: float | None = None,
        rate: float | None = None,
    ) -> LoadReport:
        """Drive ``rpc`` against ``server`` from separate client processes: closed loop with
        ``concurrency`` calls in flight, or open loop at ``rate`` req/s when ``rate`` is given.
        Duration and warm-up default to the run's mode (5 s + 1 s full, 1 s + 0.3 s quick)."""
        from benchmarks.load import run_load

        return run_load(
            server,
            rpc,
            concurrency=concurrency,
            duration=self.seconds(5.0, 1.0) if duration is None else duration,
            warmup=self.seconds(1.0, 0.3) if warmup is None else warmup,
            rate=rate,
        )

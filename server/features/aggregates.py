"""Windowed aggregates of numeric streams, maintained incrementally with bounded memory.

Each (entity, stream) keeps a ring of 5-minute buckets (at most ``BUCKETS_KEPT``); each bucket
holds count, sum, min, max, the latest event time and a ``LogHistogram`` for quantiles. Reads
combine buckets:

* ``5m``: the 5-minute tumbling window (aligned to the epoch) that contains the read time;
* ``1h``: the sliding hour made of that bucket and the 11 before it (a 1-hour window that
  slides by 5 minutes).

Events older than the oldest bucket kept are dropped (counted in ``late_events``). Point-in-time
reads of aggregates have 5-minute granularity: a read at ``as_of`` sees whole buckets.

Quantiles come from ``LogHistogram``, a fixed-bucket logarithmic histogram (the DDSketch
mapping): for relative accuracy ``ALPHA`` = 1 %, a value x > 0 falls in bucket
``ceil(log(x) / log(GAMMA))`` with ``GAMMA = (1 + ALPHA) / (1 - ALPHA)``, and bucket i is read
back as ``2 * GAMMA**i / (GAMMA + 1)``. Histograms merge by adding counts.

**Error stated:** for the rank ``r = floor(q * (n - 1))`` of the sorted values ``x``, the
returned quantile ``x_hat`` satisfies ``|x_hat - x[r]| <= ALPHA * |x[r]|`` whenever
``MIN_MAGNITUDE <= |x[r]| <= MAX_MAGNITUDE``; values smaller in magnitude than ``MIN_MAGNITUDE``
(1e-9) are counted as 0 and larger ones are clamped to ``MAX_MAGNITUDE`` (1e12). A histogram
holds at most ``2 * ceil(log(1e21) / log(GAMMA)) + 1`` (about 4,840) bins.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field

ALPHA = 0.01
GAMMA = (1.0 + ALPHA) / (1.0 - ALPHA)
_LOG_GAMMA = math.log(GAMMA)
MIN_MAGNITUDE = 1e-9
MAX_MAGNITUDE = 1e12

BUCKET_US = 300 * 1_000_000  # 5 minutes
HOUR_BUCKETS = 12
BUCKETS_KEPT = HOUR_BUCKETS  # the sliding hour; older buckets are dropped


class LogHistogram:
    """Mergeable quantile sketch with relative error ``ALPHA`` (see the module docstring).

    >>> h = LogHistogram()
    >>> for x in range(1, 101):
    ...     h.add(float(x))
    >>> abs(h.quantile(0.5) - 50.0) <= ALPHA * 50.0
    True
    """

    __slots__ = ("count", "negative", "positive", "zero")

    def __init__(self) -> None:
        self.positive: dict[int, int] = {}
        self.negative: dict[int, int] = {}
        self.zero = 0
        self.count = 0

    @staticmethod
    def _index(magnitude: float) -> int:
        return math.ceil(math.log(min(magnitude, MAX_MAGNITUDE)) / _LOG_GAMMA)

    @staticmethod
    def _value(index: int) -> float:
        return 2.0 * GAMMA**index / (GAMMA + 1.0)

    def add(self, x: float, n: int = 1) -> None:
        self.count += n
        if abs(x) < MIN_MAGNITUDE:
            self.zero += n
        elif x > 0:
            i = self._index(x)
            self.positive[i] = self.positive.get(i, 0) + n
        else:
            i = self._index(-x)
            self.negative[i] = self.negative.get(i, 0) + n

    def merge(self, other: LogHistogram) -> None:
        self.count += other.count
        self.zero += other.zero
        for mine, theirs in ((self.positive, other.positive), (self.negative, other.negative)):
            for i, c in theirs.items():
                mine[i] = mine.get(i, 0) + c

    def quantile(self, q: float) -> float:
        """Approximate ``sorted(values)[floor(q * (count - 1))]``; NaN when empty."""
        if self.count == 0:
            return math.nan
        rank = math.floor(q * (self.count - 1))
        seen = 0
        for i in sorted(self.negative, reverse=True):
            seen += self.negative[i]
            if seen > rank:
                return -self._value(i)
        seen += self.zero
        if seen > rank:
            return 0.0
        for i in sorted(self.positive):
            seen += self.positive[i]
            if seen > rank:
                return self._value(i)
        return self._value(max(self.positive))  # unreachable unless counts disagree


@dataclass
class Bucket:
    count: int = 0
    total: float = 0.0
    lo: float = math.inf
    hi: float = -math.inf
    last_event_us: int = 0
    sketch: LogHistogram = field(default_factory=LogHistogram)

    def add(self, x: float, event_us: int) -> None:
        self.count += 1
        self.total += x
        self.lo = min(self.lo, x)
        self.hi = max(self.hi, x)
        self.last_event_us = max(self.last_event_us, event_us)
        self.sketch.add(x)


@dataclass(frozen=True)
class WindowStats:
    count: int
    sum: float
    mean: float
    min: float
    max: float
    p50: float
    p95: float
    p99: float
    last_event_us: int

    def stat(self, name: str) -> float:
        return float(getattr(self, name))


def combine(buckets: list[Bucket]) -> WindowStats | None:
    """Stats of the union of buckets; None when they hold no event."""
    live = [b for b in buckets if b.count]
    if not live:
        return None
    sketch = LogHistogram()
    for b in live:
        sketch.merge(b.sketch)
    count = sum(b.count for b in live)
    total = math.fsum(b.total for b in live)
    return WindowStats(
        count=count,
        sum=total,
        mean=total / count,
        min=min(b.lo for b in live),
        max=max(b.hi for b in live),
        p50=sketch.quantile(0.50),
        p95=sketch.quantile(0.95),
        p99=sketch.quantile(0.99),
        last_event_us=max(b.last_event_us for b in live),
    )


class StreamWindows:
    """The bucket ring of one numeric stream of one entity (at most BUCKETS_KEPT buckets)."""

    __slots__ = ("buckets", "head", "late_events")

    def __init__(self) -> None:
        self.buckets: dict[int, Bucket] = {}
        self.head = -(2**62)
        self.late_events = 0

    def add(self, x: float, event_us: int) -> None:
        index = event_us // BUCKET_US
        if index <= self.head - BUCKETS_KEPT:
            self.late_events += 1
            return
        if index > self.head:
            self.head = index
            for old in [i for i in self.buckets if i <= index - BUCKETS_KEPT]:
                del self.buckets[old]
        bucket = self.buckets.get(index)
        if bucket is None:
            bucket = self.buckets[index] = Bucket()
        bucket.add(x, event_us)

    def window(self, name: str, at_us: int) -> WindowStats | None:
        current = at_us // BUCKET_US
        if name == "5m":
            picked = [self.buckets[current]] if current in self.buckets else []
        else:
            picked = [b for i, b in self.buckets.items() if current - HOUR_BUCKETS < i <= current]
        return combine(picked)


class AggregateTable:
    """All windows of one feature set: (entity, stream) -> StreamWindows, under one lock."""

    def __init__(self, streams: tuple[str, ...]) -> None:
        self.streams = streams
        self._lock = threading.Lock()
        self._windows: dict[tuple[str, str], StreamWindows] = {}

    def add(self, entity: str, values: dict[str, object], event_us: int) -> None:
        with self._lock:
            for stream in self.streams:
                x = values.get(stream)
                if x is None or isinstance(x, str):
                    continue
                key = (entity, stream)
                w = self._windows.get(key)
                if w is None:
                    w = self._windows[key] = StreamWindows()
                w.add(float(x), event_us)  # type: ignore[arg-type]

    def read(self, entity: str, stream: str, window: str, at_us: int) -> WindowStats | None:
        with self._lock:
            w = self._windows.get((entity, stream))
            return None if w is None else w.window(window, at_us)

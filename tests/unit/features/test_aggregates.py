"""Windowed aggregates against a brute-force computation over the same events."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llmopt.features.aggregates import (
    ALPHA,
    BUCKET_US,
    HOUR_BUCKETS,
    AggregateTable,
    LogHistogram,
)

MIN = 60 * 1_000_000


def exact_quantile(xs: list[float], q: float) -> float:
    return sorted(xs)[math.floor(q * (len(xs) - 1))]


def within(approx: float, exact: float) -> bool:
    return abs(approx - exact) <= ALPHA * abs(exact) + 1e-12


def brute(events, at_us, window):
    current = at_us // BUCKET_US
    if window == "5m":
        keep = [x for t, x in events if t // BUCKET_US == current]
    else:
        keep = [x for t, x in events if current - HOUR_BUCKETS < t // BUCKET_US <= current]
    return keep


def test_windows_match_brute_force_with_out_of_order_events():
    rng = random.Random(7)
    start = 1_000 * BUCKET_US
    events = [
        (start + rng.randrange(0, 90 * MIN), rng.lognormvariate(4.0, 1.0)) for _ in range(3000)
    ]
    rng.shuffle(events)  # arrival order differs from event order
    table = AggregateTable(("latency",))
    for t, x in events:
        table.add("arm", {"latency": x}, t)
    # Only events no older than the retained hour (relative to the newest) can be compared.
    newest = max(t for t, _ in events)
    for at in (newest, newest - 4 * MIN, newest - 20 * MIN):
        for window in ("5m", "1h"):
            xs = brute(events, at, window)
            stats = table.read("arm", "latency", window, at)
            if at // BUCKET_US < newest // BUCKET_US and window == "1h":
                continue  # the oldest buckets of a past hour may have been evicted
            assert stats is not None and stats.count == len(xs)
            assert math.isclose(stats.sum, math.fsum(xs), rel_tol=1e-9)
            assert math.isclose(stats.mean, math.fsum(xs) / len(xs), rel_tol=1e-9)
            assert stats.min == min(xs) and stats.max == max(xs)
            for q, got in ((0.5, stats.p50), (0.95, stats.p95), (0.99, stats.p99)):
                assert within(got, exact_quantile(xs, q)), (window, q, got)


def test_late_events_are_dropped_and_memory_is_bounded():
    table = AggregateTable(("x",))
    for i in range(200):  # 200 buckets of data, only the last hour is kept
        table.add("e", {"x": float(i)}, i * BUCKET_US)
    windows = table._windows[("e", "x")]
    assert len(windows.buckets) == HOUR_BUCKETS
    table.add("e", {"x": 1.0}, 0)
    assert windows.late_events == 1
    stats = table.read("e", "x", "1h", 199 * BUCKET_US)
    assert stats is not None and stats.count == HOUR_BUCKETS and stats.min == 188.0


def test_an_empty_window_reads_none():
    table = AggregateTable(("x",))
    table.add("e", {"x": 1.0}, 0)
    assert table.read("e", "x", "5m", 10 * BUCKET_US) is None
    assert table.read("other", "x", "5m", 0) is None


@settings(max_examples=60, deadline=None)
@given(
    xs=st.lists(
        st.one_of(
            st.floats(min_value=1e-9, max_value=1e12),
            st.floats(min_value=-1e12, max_value=-1e-9),
            st.just(0.0),
        ),
        min_size=1,
        max_size=300,
    ),
    q=st.floats(min_value=0.0, max_value=1.0),
)
def test_sketch_quantiles_within_the_stated_error(xs, q):
    h = LogHistogram()
    for x in xs:
        h.add(x)
    assert within(h.quantile(q), exact_quantile(xs, q))


@pytest.mark.parametrize("split", [1, 50, 99])
def test_sketches_merge_like_one(split):
    rng = random.Random(split)
    xs = [rng.expovariate(0.01) for _ in range(100)]
    a, b, whole = LogHistogram(), LogHistogram(), LogHistogram()
    for x in xs[:split]:
        a.add(x)
    for x in xs[split:]:
        b.add(x)
    for x in xs:
        whole.add(x)
    a.merge(b)
    for q in (0.0, 0.5, 0.95, 0.99, 1.0):
        assert a.quantile(q) == whole.quantile(q)

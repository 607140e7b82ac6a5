"""In process: the default 10-dim request context vector (issue 6: p99 <= 5 us).

``llmopt.native.context.default_context_vector`` is the Cython kernel alone (into a preallocated
buffer); ``llmopt.features.context.default_context`` adds validation, string-to-code mapping
and the output allocation: what GetFeatureVector and SelectArm pay per request.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from benchmarks.harness import Context, Result, latency_result, time_calls

TARGET_P99_US = 5.0


def benchmarks(ctx: Context) -> Iterator[Result]:
    from llmopt.features.context import OutputLength, RequestContext, default_context
    from llmopt.native.context import default_context_matrix, default_context_vector

    iterations = ctx.iterations(200_000, 5_000)
    if ctx.wants("context.kernel"):
        out = np.empty(10, dtype=np.float64)
        pct = time_calls(
            lambda: default_context_vector(1234.0, 0.5, 5.0, 13.0, 2.0, 1.0, out),
            warmup=1_000,
            iterations=iterations,
        )
        yield latency_result(
            "context.kernel",
            pct,
            target_us=TARGET_P99_US,
            note="llmopt.native.context.default_context_vector",
        )
    if ctx.wants("context.default_context"):
        request = RequestContext(
            task_type="summarization",
            input_length=1234,
            output_length=OutputLength.MEDIUM,
            priority=5,
            hour_of_day=13,
            day_of_week=2,
        )
        pct = time_calls(lambda: default_context(request), warmup=1_000, iterations=iterations)
        yield latency_result(
            "context.default_context",
            pct,
            target_us=TARGET_P99_US,
            note="llmopt.features.context.default_context",
        )
    if ctx.wants("context.batch"):
        n = 1024
        rng = np.random.default_rng(0)
        facts = np.column_stack(
            [
                rng.integers(0, 10_000, n),
                rng.choice([0.0, 0.5, 1.0], n),
                rng.integers(1, 11, n),
                rng.integers(0, 24, n),
                rng.integers(0, 7, n),
                rng.choice([0.0, 0.33, 1.0], n),
            ]
        ).astype(np.float64)
        out = np.empty((n, 10), dtype=np.float64)
        pct = time_calls(
            lambda: default_context_matrix(facts, out),
            warmup=100,
            iterations=ctx.iterations(5_000, 200),
        )
        yield Result(
            "context.batch1024",
            "p50 per vector",
            round(pct.p50 / n * 1e3, 1),
            "ns",
            extra={**pct.as_extra("batch_"), "batch": n},
            note="llmopt.native.context.default_context_matrix, 1024 rows per call",
        )

"""In process: durable SQLite writes through the group-commit ``Database``.

Throughput of acknowledged writes (each ``Database.write`` returns after its commit) with 1
caller and with 16 callers (the server's pool size), where group commit should pay off; plus
the latency of one write. ``synchronous=normal`` as the server runs by default (survives kill -9);
``full`` (an fsync per commit) is measured too.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from functools import partial

from benchmarks.harness import Context, Result, latency_result, percentiles_ns

MIGRATION = "CREATE TABLE events (id INTEGER PRIMARY KEY, key TEXT NOT NULL, value REAL NOT NULL)"


def _insert(conn: sqlite3.Connection, key: str, value: float) -> None:
    conn.execute("INSERT INTO events (key, value) VALUES (?, ?)", (key, value))


def _writes(db: object, threads: int, seconds: float) -> tuple[float, list[int]]:
    """Run ``threads`` callers writing one row each per call for ``seconds``; (ops/s, latencies)."""
    from llmopt.storage import Database

    assert isinstance(db, Database)
    stop = time.monotonic() + seconds
    samples: list[list[int]] = [[] for _ in range(threads)]
    barrier = threading.Barrier(threads + 1)

    def caller(k: int) -> None:
        mine = samples[k]
        barrier.wait()
        i = 0
        while time.monotonic() < stop:
            t0 = time.perf_counter_ns()
            db.write(partial(_insert, key=f"k{k}-{i}", value=float(i)))
            mine.append(time.perf_counter_ns() - t0)
            i += 1

    workers = [threading.Thread(target=caller, args=(k,)) for k in range(threads)]
    for w in workers:
        w.start()
    barrier.wait()
    t_start = time.monotonic()
    for w in workers:
        w.join()
    elapsed = time.monotonic() - t_start
    flat = [s for per in samples for s in per]
    return len(flat) / elapsed, flat


def benchmarks(ctx: Context) -> Iterator[Result]:
    from llmopt.storage import Database

    seconds = ctx.seconds(3.0, 0.5)
    for sync in ("normal", "full"):
        for threads in (1, 16):
            name = f"storage.write.{sync}.t{threads}"
            if not ctx.wants(name):
                continue
            db = Database(
                ctx.scratch("sqlite") / "bench.db", migrations=[MIGRATION], synchronous=sync
            )
            try:
                _writes(db, threads, seconds / 5)  # warm-up
                rate, samples = _writes(db, threads, seconds)
            finally:
                db.close()
            pct = percentiles_ns(samples)
            yield Result(
                name,
                "durable writes/s",
                round(rate, 1),
                "ops/s",
                extra={**pct.as_extra(), "threads": threads, "synchronous": sync},
                note=f"{threads} caller(s); p50 {pct.p50:,.0f} us, p99 {pct.p99:,.0f} us per write",
            )
            if threads == 1 and sync == "normal":
                yield latency_result(
                    f"storage.write.{sync}.latency", pct, note="one caller, one row per commit"
                )

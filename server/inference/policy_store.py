"""Durable traffic policies: one row per model in ``<data_dir>/inference/inference.db``."""

from __future__ import annotations

import json
import time

from llmopt.inference.batching import BatchingConfig
from llmopt.inference.routing import TrafficMode, TrafficPolicy
from llmopt.storage import Database

MIGRATIONS = [
    """
    CREATE TABLE traffic_policy (
        model TEXT PRIMARY KEY,
        mode TEXT NOT NULL,
        challenger_bp INTEGER NOT NULL,  -- basis points: percent * 100
        update_time REAL NOT NULL
    );
    """,
    # 2: dynamic batching (0 rows: off, as every policy stored before it).
    """
    ALTER TABLE traffic_policy ADD COLUMN batch_rows INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE traffic_policy ADD COLUMN batch_delay_us INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE traffic_policy ADD COLUMN batch_preferred TEXT NOT NULL DEFAULT '[]';
    """,
]


class TrafficPolicyStore:
    """Reads and group-committed writes of traffic policies."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def save(self, policy: TrafficPolicy) -> None:
        """Returns once the policy is durable."""
        b = policy.batching
        row = (
            policy.model,
            policy.mode.value,
            policy.challenger_buckets,
            time.time(),
            b.max_batch_size,
            b.max_queue_delay_us,
            json.dumps(list(b.preferred_batch_sizes)),
        )
        self._db.write(
            lambda c: c.execute(
                "INSERT INTO traffic_policy (model, mode, challenger_bp, update_time, batch_rows, "
                "batch_delay_us, batch_preferred) VALUES (?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT(model) DO UPDATE SET mode = excluded.mode, "
                "challenger_bp = excluded.challenger_bp, update_time = excluded.update_time, "
                "batch_rows = excluded.batch_rows, batch_delay_us = excluded.batch_delay_us, "
                "batch_preferred = excluded.batch_preferred",
                row,
            )
        )

    def load(self, model: str) -> TrafficPolicy | None:
        row = self._db.read(
            lambda c: c.execute(
                "SELECT mode, challenger_bp, batch_rows, batch_delay_us, batch_preferred "
                "FROM traffic_policy WHERE model = ?",
                (model,),
            ).fetchone()
        )
        if row is None:
            return None
        mode, bp, rows, delay_us, preferred = row
        batching = BatchingConfig(rows, delay_us, tuple(json.loads(preferred)))
        return TrafficPolicy(model, TrafficMode(mode), bp / 100, batching)

"""Durable traffic policies: one row per model in ``<data_dir>/inference/inference.db``."""

from __future__ import annotations

import time

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
]


class TrafficPolicyStore:
    """Reads and group-committed writes of traffic policies."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def save(self, policy: TrafficPolicy) -> None:
        """Returns once the policy is durable."""
        row = (policy.model, policy.mode.value, policy.challenger_buckets, time.time())
        self._db.write(
            lambda c: c.execute(
                "INSERT INTO traffic_policy (model, mode, challenger_bp, update_time) "
                "VALUES (?, ?, ?, ?) ON CONFLICT(model) DO UPDATE SET mode = excluded.mode, "
                "challenger_bp = excluded.challenger_bp, update_time = excluded.update_time",
                row,
            )
        )

    def load(self, model: str) -> TrafficPolicy | None:
        row = self._db.read(
            lambda c: c.execute(
                "SELECT mode, challenger_bp FROM traffic_policy WHERE model = ?", (model,)
            ).fetchone()
        )
        if row is None:
            return None
        return TrafficPolicy(model, TrafficMode(row[0]), row[1] / 100)

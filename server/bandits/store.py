"""Durable bandit state in one SQLite database (``<data_dir>/bandits/bandits.db``).

Tables:
- ``bandits``: definitions (JSON), one row per live bandit; ids are never reused.
- ``arms``: every arm a bandit ever had, by policy slot, with its removed flag.
- ``decisions``: every decision with its context vector and scores; ``status`` open / rewarded /
  expired. ``seq`` orders a bandit's decisions (the snapshot's decision watermark).

Sequence numbers (``events.seq``, ``decisions.seq``) are AUTOINCREMENT: never reused, even after
a bandit's rows are deleted, because snapshot watermarks compare against them.
- ``events``: the ordered log that rebuilds a policy: rewards, expiries (with the default reward
  when the bandit has one) and arm additions/removals, in the order they were applied.
- ``snapshots``: the latest policy state and counters per bandit, with the watermarks it covers.

Every write goes through ``Database.write_async`` (group commit); the writer thread runs them in
submission order, which is the order the service applies them in memory.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from server import errors
from server.storage import Database, WriteFuture

OPEN, REWARDED, EXPIRED = 0, 1, 2

# events.kind
REWARD, EXPIRY, ARM_ADDED, ARM_REMOVED = 1, 2, 3, 4

MIGRATIONS = [
    """
    CREATE TABLE bandits (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        name TEXT NOT NULL UNIQUE,
        definition TEXT NOT NULL,
        dim INTEGER NOT NULL,
        create_time REAL NOT NULL
    );
    CREATE TABLE arms (
        bandit_id INTEGER NOT NULL REFERENCES bandits(id) ON DELETE CASCADE,
        slot INTEGER NOT NULL,
        arm_id TEXT NOT NULL,
        arm TEXT NOT NULL,
        removed INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (bandit_id, slot)
    );
    CREATE TABLE decisions (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        decision_id TEXT NOT NULL UNIQUE,
        bandit_id INTEGER NOT NULL,
        slot INTEGER NOT NULL,
        propensity REAL NOT NULL,
        scores BLOB NOT NULL,
        context BLOB NOT NULL,
        time REAL NOT NULL,
        expires REAL NOT NULL,
        status INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX open_decisions ON decisions(bandit_id) WHERE status = 0;
    CREATE TABLE events (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        bandit_id INTEGER NOT NULL,
        kind INTEGER NOT NULL,
        slot INTEGER NOT NULL,
        decision_id TEXT,
        reward REAL,
        propensity REAL,
        context BLOB,
        detail TEXT,
        time REAL NOT NULL
    );
    CREATE TABLE snapshots (
        bandit_id INTEGER PRIMARY KEY,
        event_seq INTEGER NOT NULL,
        decision_rowid INTEGER NOT NULL,
        state BLOB NOT NULL,
        time REAL NOT NULL
    );
    """
]


@dataclass(frozen=True)
class StoredBandit:
    id: int
    name: str
    definition: dict[str, Any]
    dim: int
    create_time: float


@dataclass(frozen=True)
class StoredDecision:
    decision_id: str
    bandit_id: int
    slot: int
    propensity: float
    scores: np.ndarray
    context: np.ndarray
    time: float
    expires: float
    status: int
    rowid: int = 0


@dataclass(frozen=True)
class Event:
    seq: int
    kind: int
    slot: int
    decision_id: str | None
    reward: float | None
    propensity: float | None
    context: np.ndarray | None


def _blob(array: np.ndarray) -> bytes:
    return np.ascontiguousarray(array, dtype="<f8").tobytes()


def _array(blob: bytes | None) -> np.ndarray | None:
    return None if blob is None else np.frombuffer(blob, dtype="<f8").astype(np.float64)


class BanditStore:
    """Reads and group-committed writes of bandit state."""

    def __init__(self, root: Path, *, synchronous: str = "normal") -> None:
        root.mkdir(parents=True, exist_ok=True)
        self.db = Database(root / "bandits.db", migrations=MIGRATIONS, synchronous=synchronous)

    def close(self) -> None:
        self.db.close()

    # -- definitions ----------------------------------------------------------------------------

    def create_bandit(
        self,
        name: str,
        definition: dict[str, Any],
        dim: int,
        arms: Sequence[dict[str, Any]],
        now: float,
    ) -> int:
        """Insert a bandit and its initial arms (slots 0..k-1); returns its id once durable."""

        def write(conn: sqlite3.Connection) -> int:
            try:
                cur = conn.execute(
                    "INSERT INTO bandits (name, definition, dim, create_time) VALUES (?, ?, ?, ?)",
                    (name, json.dumps(definition), dim, now),
                )
            except sqlite3.IntegrityError:
                raise errors.AlreadyExists(f"bandit {name!r} already exists") from None
            bandit_id = int(cur.lastrowid or 0)
            conn.executemany(
                "INSERT INTO arms (bandit_id, slot, arm_id, arm) VALUES (?, ?, ?, ?)",
                [(bandit_id, slot, a["arm_id"], json.dumps(a)) for slot, a in enumerate(arms)],
            )
            return bandit_id

        return self.db.write(write)

    def delete_bandit(self, bandit_id: int) -> None:
        def write(conn: sqlite3.Connection) -> None:
            conn.execute("DELETE FROM arms WHERE bandit_id = ?", (bandit_id,))
            conn.execute("DELETE FROM decisions WHERE bandit_id = ?", (bandit_id,))
            conn.execute("DELETE FROM events WHERE bandit_id = ?", (bandit_id,))
            conn.execute("DELETE FROM snapshots WHERE bandit_id = ?", (bandit_id,))
            conn.execute("DELETE FROM bandits WHERE id = ?", (bandit_id,))

        self.db.write(write)

    def load_bandits(self) -> list[StoredBandit]:
        rows = self.db.read(
            lambda c: c.execute(
                "SELECT id, name, definition, dim, create_time FROM bandits ORDER BY id"
            ).fetchall()
        )
        return [StoredBandit(r[0], r[1], json.loads(r[2]), r[3], r[4]) for r in rows]

    def load_arms(self, bandit_id: int) -> list[tuple[dict[str, Any], bool]]:
        rows = self.db.read(
            lambda c: c.execute(
                "SELECT arm, removed FROM arms WHERE bandit_id = ? ORDER BY slot", (bandit_id,)
            ).fetchall()
        )
        return [(json.loads(r[0]), bool(r[1])) for r in rows]

    def add_arm_async(
        self, bandit_id: int, slot: int, arm: dict[str, Any], now: float
    ) -> WriteFuture[int]:
        def write(conn: sqlite3.Connection) -> int:
            conn.execute(
                "INSERT INTO arms (bandit_id, slot, arm_id, arm) VALUES (?, ?, ?, ?)",
                (bandit_id, slot, arm["arm_id"], json.dumps(arm)),
            )
            return _event(conn, bandit_id, ARM_ADDED, slot, None, None, None, arm["arm_id"], now)

        return self.db.write_async(write)

    def remove_arm_async(
        self, bandit_id: int, slot: int, arm_id: str, now: float
    ) -> WriteFuture[int]:
        def write(conn: sqlite3.Connection) -> int:
            conn.execute(
                "UPDATE arms SET removed = 1 WHERE bandit_id = ? AND slot = ?", (bandit_id, slot)
            )
            return _event(conn, bandit_id, ARM_REMOVED, slot, None, None, None, arm_id, now)

        return self.db.write_async(write)

    # -- decisions and rewards ------------------------------------------------------------------

    def log_decision_async(self, d: StoredDecision) -> WriteFuture[int]:
        """Insert a decision; the future holds its rowid, or AlreadyExists for a taken id."""

        def write(conn: sqlite3.Connection) -> int:
            try:
                cur = conn.execute(
                    "INSERT INTO decisions (decision_id, bandit_id, slot, propensity, scores,"
                    " context, time, expires) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        d.decision_id,
                        d.bandit_id,
                        d.slot,
                        d.propensity,
                        _blob(d.scores),
                        _blob(d.context),
                        d.time,
                        d.expires,
                    ),
                )
            except sqlite3.IntegrityError:
                raise errors.AlreadyExists(
                    f"decision_id: {d.decision_id!r} is already taken by another decision"
                ) from None
            return int(cur.lastrowid or 0)

        return self.db.write_async(write)

    def record_reward_async(
        self,
        bandit_id: int,
        decision_id: str,
        slot: int,
        reward: float,
        propensity: float,
        context: np.ndarray,
        detail: dict[str, Any] | None,
        now: float,
    ) -> WriteFuture[int]:
        """Mark the decision rewarded and log the reward event; the future holds its seq."""

        def write(conn: sqlite3.Connection) -> int:
            cur = conn.execute(
                "UPDATE decisions SET status = ? WHERE decision_id = ? AND status = ?",
                (REWARDED, decision_id, OPEN),
            )
            if cur.rowcount != 1:
                raise errors.FailedPrecondition(
                    f"decision_id: {decision_id!r} is no longer open for a reward"
                )
            return _event(
                conn,
                bandit_id,
                REWARD,
                slot,
                decision_id,
                reward,
                _blob(context),
                json.dumps(detail) if detail else None,
                now,
                propensity,
            )

        return self.db.write_async(write)

    def expire_async(
        self,
        bandit_id: int,
        expired: Sequence[tuple[str, int, float, np.ndarray]],
        default_reward: float | None,
        now: float,
    ) -> WriteFuture[list[int]]:
        """Mark decisions expired, each with an EXPIRY event (with the default reward, if any)."""

        def write(conn: sqlite3.Connection) -> list[int]:
            seqs = []
            for decision_id, slot, propensity, context in expired:
                cur = conn.execute(
                    "UPDATE decisions SET status = ? WHERE decision_id = ? AND status = ?",
                    (EXPIRED, decision_id, OPEN),
                )
                if cur.rowcount != 1:
                    raise errors.FailedPrecondition(f"decision {decision_id!r} is not open")
                seqs.append(
                    _event(
                        conn,
                        bandit_id,
                        EXPIRY,
                        slot,
                        decision_id,
                        default_reward,
                        _blob(context),
                        None,
                        now,
                        propensity,
                    )
                )
            return seqs

        return self.db.write_async(write)

    def find_decision(self, decision_id: str) -> StoredDecision | None:
        row = self.db.read(
            lambda c: c.execute(
                "SELECT decision_id, bandit_id, slot, propensity, scores, context, time, expires,"
                " status, rowid FROM decisions WHERE decision_id = ?",
                (decision_id,),
            ).fetchone()
        )
        return None if row is None else _decision(row)

    def open_decisions(self, bandit_id: int) -> list[StoredDecision]:
        rows = self.db.read(
            lambda c: c.execute(
                "SELECT decision_id, bandit_id, slot, propensity, scores, context, time, expires,"
                " status, rowid FROM decisions INDEXED BY open_decisions"
                " WHERE bandit_id = ? AND status = 0 ORDER BY expires",
                (bandit_id,),
            ).fetchall()
        )
        return [_decision(r) for r in rows]

    def decision_counts_after(
        self, bandit_id: int, rowid: int
    ) -> tuple[list[tuple[int, int, float]], int]:
        """Per slot (slot, decisions, last time) for decisions past ``rowid``; and the max rowid."""

        def read(c: sqlite3.Connection) -> tuple[list[tuple[int, int, float]], int]:
            # A rowid range scan: the log's tail past the bandit's snapshot (no per-bandit index,
            # which every decision would pay for).
            rows = c.execute(
                "SELECT slot, count(*), max(time), max(rowid) FROM decisions"
                " WHERE rowid > ? AND bandit_id = ? GROUP BY slot",
                (rowid, bandit_id),
            ).fetchall()
            top = max((r[3] for r in rows), default=rowid)
            return [(r[0], r[1], r[2]) for r in rows], int(top)

        return self.db.read(read)

    def replay_events(
        self, bandit_id: int, seq: int, apply: Callable[[Event], None], *, contexts: bool = True
    ) -> int:
        """Call ``apply`` on each event past ``seq`` in log order (one read transaction, rows
        streamed); ``contexts=False`` skips decoding context vectors. Returns the count."""

        def read(c: sqlite3.Connection) -> int:
            cur = c.execute(
                "SELECT seq, kind, slot, decision_id, reward, propensity,"
                + (" context" if contexts else " NULL")
                + " FROM events WHERE seq > ? AND bandit_id = ? ORDER BY seq",
                (seq, bandit_id),
            )
            n = 0
            while rows := cur.fetchmany(4096):
                for r in rows:
                    apply(Event(r[0], r[1], r[2], r[3], r[4], r[5], _array(r[6])))
                n += len(rows)
            return n

        return self.db.read(read)

    def events_after(self, bandit_id: int, seq: int) -> list[Event]:
        out: list[Event] = []
        self.replay_events(bandit_id, seq, out.append)
        return out

    # -- snapshots ------------------------------------------------------------------------------

    def save_snapshot_async(
        self,
        bandit_id: int,
        event_seq: int,
        decision_rowid: int,
        state: bytes,
        now: float,
        *,
        to_log_end: bool = False,
    ) -> WriteFuture[None]:
        """Replace the bandit's snapshot. ``to_log_end``: the bandit has no write in flight, so
        its watermarks may move to the end of the log as it stands when this write runs."""

        def write(conn: sqlite3.Connection) -> None:
            nonlocal event_seq, decision_rowid
            # A bandit deleted meanwhile has no row to snapshot.
            if conn.execute("SELECT 1 FROM bandits WHERE id = ?", (bandit_id,)).fetchone():
                if to_log_end:
                    top_event = conn.execute("SELECT max(seq) FROM events").fetchone()[0]
                    top_decision = conn.execute("SELECT max(rowid) FROM decisions").fetchone()[0]
                    event_seq = max(event_seq, top_event or 0)
                    decision_rowid = max(decision_rowid, top_decision or 0)
                conn.execute(
                    "INSERT OR REPLACE INTO snapshots VALUES (?, ?, ?, ?, ?)",
                    (bandit_id, event_seq, decision_rowid, state, now),
                )

        return self.db.write_async(write)

    def load_snapshot(self, bandit_id: int) -> tuple[int, int, bytes] | None:
        row = self.db.read(
            lambda c: c.execute(
                "SELECT event_seq, decision_rowid, state FROM snapshots WHERE bandit_id = ?",
                (bandit_id,),
            ).fetchone()
        )
        return None if row is None else (row[0], row[1], bytes(row[2]))


def _event(
    conn: sqlite3.Connection,
    bandit_id: int,
    kind: int,
    slot: int,
    decision_id: str | None,
    reward: float | None,
    context: bytes | None,
    detail: str | None,
    now: float,
    propensity: float | None = None,
) -> int:
    cur = conn.execute(
        "INSERT INTO events (bandit_id, kind, slot, decision_id, reward, propensity, context,"
        " detail, time) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (bandit_id, kind, slot, decision_id, reward, propensity, context, detail, now),
    )
    return int(cur.lastrowid or 0)


def _decision(row: Sequence[Any]) -> StoredDecision:
    scores = _array(row[4])
    context = _array(row[5])
    assert scores is not None and context is not None
    return StoredDecision(
        row[0], row[1], row[2], row[3], scores, context, row[6], row[7], row[8], row[9]
    )

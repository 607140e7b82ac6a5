"""Durable bandit state in one SQLite database (``<data_dir>/bandits/bandits.db``).

Tables:
- ``bandits``: definitions (JSON), one row per live bandit; ids are never reused.
- ``arms``: every arm a bandit ever had, by policy slot, with its removed flag.
- ``decisions``: every decision with its context vector and scores; ``status`` open / rewarded /
  expired. ``seq`` orders a bandit's decisions (the snapshot's decision watermark).
  ``request_digest`` (migration 2) fingerprints the request of a caller-chosen decision id, so
  that a retry is told from another request reusing the id; NULL for server-made ids and for
  decisions logged before it existed. Migration 3 adds what GetDecision returns beside the
  choice: ``request_context`` (the caller's RequestContext as ``llmopt.storage.records``
  encodes it; NULL when none was sent), ``explanation`` (``Explanation.to_bytes`` of
  ``llmopt.bandits.explain``, when SelectArm asked for one), ``degraded``, and the
  indexes that list a bandit's decisions by time and find a decision's reward or expiry event.

Sequence numbers (``events.seq``, ``decisions.seq``) are AUTOINCREMENT: never reused, even after
a bandit's rows are deleted, because snapshot watermarks compare against them.
- ``events``: the ordered log that rebuilds a policy: rewards, expiries (with the default reward
  when the bandit has one) and arm additions/removals, in the order they were applied.
- ``snapshots``: the latest policy state and counters per bandit, with the watermarks it covers.

Decisions and rewards, the writes on the request path, are durable once appended to the journal
(``bandits-<n>.journal``, ``llmopt.storage.journal``; records built and read by
``llmopt.storage.records``): a copy into a mapped file instead of a SQLite transaction each. They
are applied to SQLite in the background, many per statement, and the journal is replayed at
start-up (idempotently: rows carry the sequence numbers given when they were journaled). Every
other write goes through ``Database.write_async`` (group commit). Both kinds are queued to the one
database writer under one lock, in the order their sequence numbers were given, so SQLite always
holds a prefix of that order (plus journal records beyond it after a crash): a snapshot's
watermarks and the ``events`` order mean the same before and after a crash. Reads that must see
the journal's latest writes (``find_decision``, ``logged_decision``, ``list_decisions``) flush it
first.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache, partial
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from llmopt import errors
from llmopt.storage import Database, WriteFuture
from llmopt.storage.journal import Journal
from llmopt.storage.records import DECISION, HEADER, decision_record, decode, reward_record

log = logging.getLogger("llmopt.bandits")
T = TypeVar("T")

OPEN, REWARDED, EXPIRED = 0, 1, 2

# events.kind
REWARD, EXPIRY, ARM_ADDED, ARM_REMOVED = 1, 2, 3, 4

# Events written by group-committed writes (arm changes, expiries), with their sequence number.
_INSERT_EVENT = (
    "INSERT INTO events (seq, bandit_id, kind, slot, decision_id, reward, propensity, context,"
    " detail, time) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_CLOSE_DECISION = "UPDATE decisions SET status = ? WHERE decision_id = ? AND status = ?"
_APPLY_CHUNK = 256  # journaled rows per statement


@lru_cache(maxsize=64)
def _apply_sql(table: str, n: int) -> str:
    """Insert ``n`` journaled rows in one statement (one GIL release for them all, where
    ``executemany`` lets go at every row). Idempotent (replay may find the rows there), and
    skipping rows of a bandit deleted since (ids are never reused: they must not come back)."""
    if table == "decisions":
        columns = (
            "seq, decision_id, bandit_id, slot, propensity, scores, context, time, expires,"
            " request_digest, request_context, explanation, degraded"
        )
        bandit_column = "column3"
    else:
        columns = (
            "seq, bandit_id, kind, slot, decision_id, reward, propensity, context, detail, time"
        )
        bandit_column = "column2"
    width = columns.count(",") + 1
    row = "(" + ", ".join("?" * width) + ")"
    return (
        f"INSERT OR IGNORE INTO {table} ({columns}) SELECT * FROM (VALUES "
        + ", ".join([row] * n)
        + f") WHERE {bandit_column} IN (SELECT id FROM bandits)"
    )


@lru_cache(maxsize=64)
def _close_sql(n: int) -> str:
    return (
        "UPDATE decisions SET status = ? WHERE status = ? AND decision_id IN ("
        + ", ".join("?" * n)
        + ")"
    )


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
    """,
    "ALTER TABLE decisions ADD COLUMN request_digest BLOB",
    """
    ALTER TABLE decisions ADD COLUMN request_context BLOB;
    ALTER TABLE decisions ADD COLUMN explanation BLOB;
    ALTER TABLE decisions ADD COLUMN degraded INTEGER NOT NULL DEFAULT 0;
    CREATE INDEX decisions_by_time ON decisions(bandit_id, time);
    CREATE INDEX events_by_decision ON events(decision_id) WHERE decision_id IS NOT NULL;
    """,
]

# The columns of a StoredDecision, in its order (``_decision`` reads them).
_DECISION_COLUMNS = (
    "d.decision_id, d.bandit_id, d.slot, d.propensity, d.scores, d.context, d.time, d.expires,"
    " d.status, d.rowid, d.request_digest, d.request_context, d.explanation, d.degraded"
)
# ... and the reward or expiry event that closed it, if any (``_logged``).
_LOGGED_SELECT = (
    f"SELECT {_DECISION_COLUMNS}, e.reward, e.detail, e.time FROM decisions d {{hint}}"
    " LEFT JOIN events e ON e.decision_id = d.decision_id AND e.bandit_id = d.bandit_id"
    f" AND e.kind IN ({REWARD}, {EXPIRY})"
)


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
    request_digest: bytes | None = None
    request_context: bytes | None = None  # llmopt.storage.records.encode_context's bytes
    explanation: bytes | str | None = None  # Explanation.to_bytes (str: its JSON)
    degraded: bool = False


@dataclass(frozen=True)
class LoggedRow:
    """A stored decision and the event that closed it (reward or expiry), if one did: what
    GetDecision and ListDecisions read."""

    decision: StoredDecision
    reward: float | None = None
    reward_detail: dict[str, Any] | None = None  # an outcome's fields (``rewards.outcome_detail``)
    close_time: float | None = None


@dataclass(frozen=True)
class Event:
    seq: int
    kind: int
    slot: int
    decision_id: str | None
    reward: float | None
    propensity: float | None
    context: np.ndarray | None


_F8 = np.dtype("<f8")


def _blob(array: np.ndarray) -> bytes:
    if array.dtype == _F8 and array.flags.c_contiguous:  # the usual case: no conversion
        return array.tobytes()
    return np.ascontiguousarray(array, dtype=_F8).tobytes()


def _array(blob: bytes | None) -> np.ndarray | None:
    return None if blob is None else np.frombuffer(blob, dtype="<f8").astype(np.float64)


@dataclass(slots=True, eq=False)
class _Rows:
    """Journaled rows waiting to be applied by one queued database write."""

    decisions: list[tuple[Any, ...]] = field(default_factory=list)
    rewards: list[tuple[Any, ...]] = field(default_factory=list)

    def add(self, record: bytes, start: int) -> None:
        """Add the row of the journal record whose payload begins at ``start``."""
        kind, row = decode(record, start)
        (self.decisions if kind == DECISION else self.rewards).append(row)


class BanditStore:
    """Reads and writes of bandit state: journaled decisions and rewards, group-committed
    everything else."""

    def __init__(
        self, root: Path, *, synchronous: str = "normal", journal_segment_bytes: int = 64 << 20
    ) -> None:
        root.mkdir(parents=True, exist_ok=True)
        self.db = Database(root / "bandits.db", migrations=MIGRATIONS, synchronous=synchronous)
        self._order = threading.Lock()  # gives sequence numbers and queues writes, in one order
        self._records: list[bytes] | None = None  # what the latest queued apply will still take
        self.journal = Journal(
            root,
            "bandits",
            fsync=synchronous == "full",
            segment_bytes=journal_segment_bytes,
        )
        self._replay_journal()
        self.journal.open()
        self._event_seq, self._decision_seq = self.db.read(_top_seqs)

    def close(self) -> None:
        self.db.close()  # commits everything queued, journaled rows included
        self.journal.close()
        if not self.db.commit_failures:
            self.journal.remove_segments(self.journal.segment)

    # -- the journal ----------------------------------------------------------------------------

    def _replay_journal(self) -> None:
        """Apply the journal left by the last run (rows it already holds are skipped), then
        delete it: at start-up nothing else is writing."""
        segments = self.journal.segments()
        if not segments:
            return
        rows = _Rows()
        n = 0
        for payload in self.journal.replay():
            rows.add(payload, 0)
            n += 1
            if n % 50_000 == 0:
                self.db.write(partial(_apply_rows, rows))
                rows = _Rows()
        self.db.write(partial(_apply_rows, rows))
        log.info("replayed %d journal records from %d segment(s)", n, len(segments))
        self.journal.remove_segments(segments[-1][0])

    def _append(self, record: bytes) -> None:
        """Append a framed record (durable on return) and queue it for the database; under
        ``_order``, where its sequence number was given."""
        if self.db.closed:
            raise errors.Unavailable("the bandit store is closed")
        sealed = self.journal.append_framed(record)
        if sealed:  # this record begins a new segment: the sealed one ends before it
            self._sealed(sealed)
        queued = self._records
        if queued is None:
            queued = self._records = []
            self.db.write_async(partial(self._take_records, queued))
        queued.append(record)

    def _take_records(self, queued: list[bytes], conn: sqlite3.Connection) -> None:
        """The queued apply (on the writer thread): later records go to the next one. The rows
        are decoded here, off the request path."""
        with self._order:
            if self._records is queued:
                self._records = None
        rows = _Rows()
        for record in queued:
            rows.add(record, HEADER)
        _apply_rows(rows, conn)

    def _queue(
        self, fn: Callable[[sqlite3.Connection, int], T], n_events: int = 0
    ) -> WriteFuture[T]:
        """Queue a group-committed write after every journaled row so far; ``fn(conn, seq)``
        gets the first of ``n_events`` event sequence numbers reserved for it."""
        with self._order:
            self._records = None  # journaled rows from now on are applied after this write
            first = self._event_seq + 1
            self._event_seq += n_events
            return self.db.write_async(lambda conn: fn(conn, first))

    def _sealed(self, number: int) -> None:
        """Journal segment ``number`` is sealed (called under ``_order``): delete it once every
        row queued so far, all of its own, is committed."""
        self._records = None
        future = self.db.write_async(lambda conn: None)

        def remove(f: WriteFuture[None]) -> None:
            if f.exception() is None and not self.db.commit_failures:
                self.journal.remove_segments(number)

        future.add_done_callback(remove)

    def flush(self) -> None:
        """Return once every journaled row is in the database (for reads that need them)."""
        self._queue(lambda conn, seq: None).result()

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

        def write(conn: sqlite3.Connection, _: int) -> int:
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

        return self._queue(write).result()

    def delete_bandit(self, bandit_id: int) -> None:
        def write(conn: sqlite3.Connection, _: int) -> None:
            conn.execute("DELETE FROM arms WHERE bandit_id = ?", (bandit_id,))
            conn.execute("DELETE FROM decisions WHERE bandit_id = ?", (bandit_id,))
            conn.execute("DELETE FROM events WHERE bandit_id = ?", (bandit_id,))
            conn.execute("DELETE FROM snapshots WHERE bandit_id = ?", (bandit_id,))
            conn.execute("DELETE FROM bandits WHERE id = ?", (bandit_id,))

        self._queue(write).result()

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
        def write(conn: sqlite3.Connection, seq: int) -> int:
            conn.execute(
                "INSERT INTO arms (bandit_id, slot, arm_id, arm) VALUES (?, ?, ?, ?)",
                (bandit_id, slot, arm["arm_id"], json.dumps(arm)),
            )
            conn.execute(
                _INSERT_EVENT,
                (seq, bandit_id, ARM_ADDED, slot, None, None, None, None, arm["arm_id"], now),
            )
            return seq

        return self._queue(write, 1)

    def remove_arm_async(
        self, bandit_id: int, slot: int, arm_id: str, now: float
    ) -> WriteFuture[int]:
        def write(conn: sqlite3.Connection, seq: int) -> int:
            conn.execute(
                "UPDATE arms SET removed = 1 WHERE bandit_id = ? AND slot = ?", (bandit_id, slot)
            )
            conn.execute(
                _INSERT_EVENT,
                (seq, bandit_id, ARM_REMOVED, slot, None, None, None, None, arm_id, now),
            )
            return seq

        return self._queue(write, 1)

    # -- decisions and rewards ------------------------------------------------------------------

    def log_decision(
        self,
        decision_id: str,
        bandit_id: int,
        slot: int,
        propensity: float,
        scores: np.ndarray,
        context: np.ndarray,
        time: float,
        expires: float,
        request_digest: bytes | None = None,
        request_context: Any = None,
        explanation: bytes | str | None = None,
        degraded: bool = False,
    ) -> int:
        """Journal a decision (durable on return); returns its sequence number. The caller has
        made sure its id is unused (``find_decision`` for ids a client chose).
        ``request_context`` is the caller's RequestContext (None: none was sent),
        ``explanation`` the stored form of the one SelectArm asked for (``to_bytes``),
        ``degraded`` whether a fallback made the choice (always false today: the resilience
        work sets it)."""
        with self._order:
            self._decision_seq = seq = self._decision_seq + 1
            self._append(
                decision_record(
                    seq,
                    decision_id,
                    bandit_id,
                    slot,
                    propensity,
                    scores,
                    context,
                    time,
                    expires,
                    request_digest,
                    request_context,
                    explanation,
                    degraded,
                )
            )
        return seq

    def record_reward(
        self,
        bandit_id: int,
        decision_id: str,
        slot: int,
        reward: float,
        propensity: float,
        context: np.ndarray,
        detail: dict[str, Any] | None,
        now: float,
    ) -> int:
        """Journal a reward for an open decision (durable on return): the decision is marked
        rewarded and a REWARD event logged. Returns the event's sequence number."""
        detail_json = json.dumps(detail) if detail else None
        with self._order:
            self._event_seq = seq = self._event_seq + 1
            self._append(
                reward_record(
                    seq,
                    bandit_id,
                    REWARD,
                    slot,
                    decision_id,
                    reward,
                    propensity,
                    context,
                    detail_json,
                    now,
                )
            )
        return seq

    def expire_async(
        self,
        bandit_id: int,
        expired: Sequence[tuple[str, int, float, np.ndarray]],
        default_reward: float | None,
        now: float,
    ) -> WriteFuture[list[int]]:
        """Mark decisions expired, each with an EXPIRY event (with the default reward, if any)."""

        def write(conn: sqlite3.Connection, first: int) -> list[int]:
            seqs = []
            for seq, (decision_id, slot, propensity, context) in enumerate(expired, first):
                cur = conn.execute(_CLOSE_DECISION, (EXPIRED, decision_id, OPEN))
                if cur.rowcount != 1:
                    raise errors.FailedPrecondition(f"decision {decision_id!r} is not open")
                conn.execute(
                    _INSERT_EVENT,
                    (
                        seq,
                        bandit_id,
                        EXPIRY,
                        slot,
                        decision_id,
                        default_reward,
                        propensity,
                        _blob(context),
                        None,
                        now,
                    ),
                )
                seqs.append(seq)
            return seqs

        return self._queue(write, len(expired))

    def find_decision(self, decision_id: str) -> StoredDecision | None:
        """The stored decision, journaled rows included (they are flushed first)."""
        self.flush()
        row = self.db.read(
            lambda c: c.execute(
                f"SELECT {_DECISION_COLUMNS} FROM decisions d WHERE decision_id = ?",
                (decision_id,),
            ).fetchone()
        )
        return None if row is None else _decision(row)

    def logged_decision(self, decision_id: str) -> LoggedRow | None:
        """A decision with its reward or expiry, journaled rows included (flushed first)."""
        self.flush()
        row = self.db.read(
            lambda c: c.execute(
                _LOGGED_SELECT.format(hint="") + " WHERE d.decision_id = ?", (decision_id,)
            ).fetchone()
        )
        return None if row is None else _logged(row)

    def list_decisions(
        self,
        bandit_id: int,
        start: float | None,
        end: float | None,
        after: tuple[float, int] | None,
        limit: int,
    ) -> list[LoggedRow]:
        """Up to ``limit`` of a bandit's decisions made in [start, end), oldest first (ties by
        sequence number), after the (time, rowid) ``after``; journaled rows included."""
        self.flush()
        where = ["d.bandit_id = ?"]
        args: list[Any] = [bandit_id]
        if start is not None:
            where.append("d.time >= ?")
            args.append(start)
        if end is not None:
            where.append("d.time < ?")
            args.append(end)
        if after is not None:
            where.append("(d.time > ? OR (d.time = ? AND d.rowid > ?))")
            args.extend((after[0], after[0], after[1]))
        sql = (
            _LOGGED_SELECT.format(hint="INDEXED BY decisions_by_time")
            + " WHERE "
            + " AND ".join(where)
            + " ORDER BY d.time, d.rowid LIMIT ?"
        )
        args.append(limit)
        rows = self.db.read(lambda c: c.execute(sql, args).fetchall())
        return [_logged(r) for r in rows]

    def open_decisions(self, bandit_id: int) -> list[StoredDecision]:
        rows = self.db.read(
            lambda c: c.execute(
                f"SELECT {_DECISION_COLUMNS} FROM decisions d INDEXED BY open_decisions"
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
            # A rowid range scan: the log's tail past the bandit's snapshot (NOT INDEXED: the
            # planner would otherwise take decisions_by_time and read every row of the bandit).
            rows = c.execute(
                "SELECT slot, count(*), max(time), max(rowid) FROM decisions NOT INDEXED"
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

        def write(conn: sqlite3.Connection, _: int) -> None:
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

        return self._queue(write)

    def load_snapshot(self, bandit_id: int) -> tuple[int, int, bytes] | None:
        row = self.db.read(
            lambda c: c.execute(
                "SELECT event_seq, decision_rowid, state FROM snapshots WHERE bandit_id = ?",
                (bandit_id,),
            ).fetchone()
        )
        return None if row is None else (row[0], row[1], bytes(row[2]))


def _apply_rows(rows: _Rows, conn: sqlite3.Connection) -> None:
    """Put journaled rows in the database: decisions first (a reward's decision is journaled
    before it), then the rewards, a chunk of rows per statement."""
    for start in range(0, len(rows.decisions), _APPLY_CHUNK):
        chunk = rows.decisions[start : start + _APPLY_CHUNK]
        conn.execute(_apply_sql("decisions", len(chunk)), [v for r in chunk for v in r])
    for start in range(0, len(rows.rewards), _APPLY_CHUNK):
        chunk = rows.rewards[start : start + _APPLY_CHUNK]
        conn.execute(_close_sql(len(chunk)), [REWARDED, OPEN, *(r[4] for r in chunk)])
        conn.execute(_apply_sql("events", len(chunk)), [v for r in chunk for v in r])


def _top_seqs(conn: sqlite3.Connection) -> tuple[int, int]:
    """The highest sequence numbers ever given to events and decisions (AUTOINCREMENT keeps
    them past deleted rows; explicit inserts raise them too)."""
    top = dict(conn.execute("SELECT name, seq FROM sqlite_sequence").fetchall())
    return int(top.get("events", 0)), int(top.get("decisions", 0))


def _decision(row: Sequence[Any]) -> StoredDecision:
    scores = _array(row[4])
    context = _array(row[5])
    assert scores is not None and context is not None
    digest = None if row[10] is None else bytes(row[10])
    request_context = None if row[11] is None else bytes(row[11])
    return StoredDecision(
        row[0],
        row[1],
        row[2],
        row[3],
        scores,
        context,
        row[6],
        row[7],
        row[8],
        row[9],
        digest,
        request_context,
        row[12],
        bool(row[13]),
    )


def _logged(row: Sequence[Any]) -> LoggedRow:
    detail = None if row[15] is None else json.loads(row[15])
    return LoggedRow(_decision(row), row[14], detail, row[16])

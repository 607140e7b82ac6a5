"""The online store: feature set versions and feature rows in SQLite, latest values in memory.

Rows are stored once each in ``feature_rows``: a write sequence number as the rowid (so inserts
append), the set's name (values survive new versions of a set), the entity, the event time in µs
and the values; an index on (set, entity, event time, seq) serves point-in-time scans. Values are
a pickled dict of str -> float | int | bool | str (protocol 5: stable across Python versions and
ten times cheaper to encode than JSON); ``decode`` refuses anything but those builtins.
Every write goes through ``Database.write`` (group commit) before it is acknowledged.

Latest values are served from memory: per entity, feature -> (value, event_us, seq), where the
greatest (event_us, seq) wins, so out-of-order writes never replace newer data. After a restart an
entity's entry is completed from SQLite on its first read; merging is "greatest wins" and thus
idempotent, so a read racing a write cannot lose it. Reads with ``as_of`` go to SQLite. Memory
grows with the number of entities read or written since the start.
"""

from __future__ import annotations

import io
import itertools
import logging
import pickle
import sqlite3
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from native.features import merge_latest

from server.features.aggregates import AggregateTable
from server.features.codec import set_from_json, set_to_json
from server.features.plan import CompiledPlan, compile_plan
from server.features.spec import FeatureSet, RawValue
from server.storage import Database, WriteFuture

log = logging.getLogger("llmopt.features")

MIGRATIONS = [
    """
    CREATE TABLE feature_sets (
        name TEXT NOT NULL,
        version INTEGER NOT NULL,
        definition TEXT NOT NULL,
        create_time REAL NOT NULL,
        PRIMARY KEY (name, version)
    );
    CREATE TABLE feature_rows (
        seq INTEGER PRIMARY KEY,
        set_name TEXT NOT NULL,
        entity_id TEXT NOT NULL,
        event_us INTEGER NOT NULL,
        payload BLOB NOT NULL
    );
    CREATE INDEX feature_rows_history ON feature_rows (set_name, entity_id, event_us, seq);
    """
]

_INSERT_ROW = (
    "INSERT INTO feature_rows (set_name, entity_id, event_us, seq, payload) VALUES (?, ?, ?, ?, ?)"
)
_HISTORY = (
    "SELECT event_us, seq, payload FROM feature_rows WHERE set_name = ? AND entity_id = ? "
    "AND event_us <= ? ORDER BY event_us DESC, seq DESC"
)
MAX_US = 2**62
DEFAULT_MAX_ENTITIES = 100_000  # per set, in the latest-value cache (--feature-cache-entities)


class _BuiltinsOnly(pickle.Unpickler):
    """Loads dicts, strings and numbers; refuses every class (no code runs on load)."""

    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"stored feature values may not hold {module}.{name}")


def encode(values: dict[str, Any]) -> bytes:
    return pickle.dumps(values, protocol=5)


def decode(payload: bytes) -> dict[str, Any]:
    return _BuiltinsOnly(io.BytesIO(payload)).load()  # type: ignore[no-any-return]


class FeatureRow(NamedTuple):
    """One write: an entity's values at an event time (µs since the epoch)."""

    entity_id: str
    values: dict[str, RawValue]
    event_us: int


# feature -> (value, event_us, seq)
Latest = dict[str, tuple[RawValue, int, int]]


@dataclass
class EntityState:
    values: Latest = field(default_factory=dict)
    complete: bool = False


class SetState:
    """Everything about one feature set name: its versions, plans, latest values, aggregates.

    One lock per set guards the versions and the latest-value table. That table is a cache of
    at most ``max_entities`` entities: beyond it the earliest added are dropped (a sixteenth at
    a time), and an entity read again is completed from SQLite like one never seen.
    """

    def __init__(self, versions: list[FeatureSet], max_entities: int = DEFAULT_MAX_ENTITIES):
        self.lock = threading.Lock()
        self.versions = versions
        self.plans: dict[int, CompiledPlan] = {fs.version: compile_plan(fs) for fs in versions}
        self.entities: dict[str, EntityState] = {}
        self.max_entities = max_entities
        self.aggregates = AggregateTable(self.latest.aggregates)

    @property
    def latest(self) -> FeatureSet:
        return self.versions[-1]

    def get(self, version: int) -> FeatureSet | None:
        if version == 0:
            return self.latest
        if 1 <= version <= len(self.versions):
            return self.versions[version - 1]
        return None

    def add_version(self, fs: FeatureSet) -> None:
        plan = compile_plan(fs)
        with self.lock:
            self.versions.append(fs)
            self.plans[fs.version] = plan
            if fs.aggregates != self.aggregates.streams:
                self.aggregates = AggregateTable(fs.aggregates)

    def apply(self, rows: Sequence[FeatureRow], seqs: Sequence[int]) -> None:
        """Fold committed rows into the latest values and the aggregates."""
        with self.lock:
            entities = self.entities
            for row, seq in zip(rows, seqs, strict=True):
                state = entities.get(row.entity_id)
                if state is None:
                    state = entities[row.entity_id] = EntityState()
                merge_latest(state.values, row.values, row.event_us, seq)
            self.bound_entities()
            aggregates = self.aggregates
        if aggregates.streams:
            for row in rows:
                aggregates.add(row.entity_id, row.values, row.event_us)  # type: ignore[arg-type]

    def bound_entities(self) -> None:
        """Drop the earliest added entities once there are more than ``max_entities`` (lock
        held); each later read of one of them goes back to SQLite once."""
        excess = len(self.entities) - self.max_entities
        if excess > 0:
            drop = excess + self.max_entities // 16
            for entity_id in list(itertools.islice(self.entities, drop)):
                del self.entities[entity_id]


def _log_failure(future: WriteFuture[Any]) -> None:
    if future.exception() is not None:
        log.error("background feature write failed", exc_info=future.exception())


class FeatureStore:
    """SQLite under ``<root>/features.db`` plus the in-memory state of every set."""

    def __init__(
        self, root: Path, synchronous: str = "normal", max_entities: int = DEFAULT_MAX_ENTITIES
    ) -> None:
        root.mkdir(parents=True, exist_ok=True)
        self.max_entities = max_entities
        self.db = Database(root / "features.db", migrations=MIGRATIONS, synchronous=synchronous)
        self._lock = threading.Lock()  # guards the name -> SetState table only
        self.sets: dict[str, SetState] = {}
        by_name: dict[str, list[FeatureSet]] = {}
        for name, version, definition, created in self.db.read(
            lambda c: c.execute(
                "SELECT name, version, definition, create_time FROM feature_sets "
                "ORDER BY name, version"
            ).fetchall()
        ):
            by_name.setdefault(name, []).append(set_from_json(definition, version, created))
        for name, versions in by_name.items():
            self.sets[name] = SetState(versions, max_entities)
        last = self.db.read(lambda c: c.execute("SELECT MAX(seq) FROM feature_rows").fetchone()[0])
        self._seq = itertools.count((last or 0) + 1)

    def close(self) -> None:
        self.db.close()

    # -- sets -------------------------------------------------------------------------------------

    def state(self, name: str) -> SetState | None:
        return self.sets.get(name)

    def save_version(self, fs: FeatureSet) -> None:
        """Persist a new version (its number already chosen) and make it the latest."""
        definition = set_to_json(fs)
        self.db.write(
            lambda c: c.execute(
                "INSERT INTO feature_sets VALUES (?, ?, ?, ?)",
                (fs.name, fs.version, definition, fs.create_time),
            )
        )
        with self._lock:
            state = self.sets.get(fs.name)
            if state is None:
                self.sets[fs.name] = SetState([fs], self.max_entities)
                return
        state.add_version(fs)

    def names(self) -> list[str]:
        with self._lock:
            return sorted(self.sets)

    # -- rows -------------------------------------------------------------------------------------

    def _encode(self, name: str, rows: Sequence[FeatureRow]) -> tuple[list[int], list[tuple]]:
        seqs = [next(self._seq) for _ in rows]
        dumps = pickle.dumps
        params = [
            (name, r.entity_id, r.event_us, s, dumps(r.values, 5))
            for r, s in zip(rows, seqs, strict=True)
        ]
        return seqs, params

    def write(self, state: SetState, rows: Sequence[FeatureRow], *, wait: bool = True) -> int:
        """Make rows durable (group commit), then fold them into memory. ``wait=False``: fold at
        once and let the commit finish in the background (for derived, re-creatable data)."""
        seqs, params = self._encode(state.latest.name, rows)
        future = self.db.write_async(lambda c: c.executemany(_INSERT_ROW, params).rowcount)
        if wait:
            future.result()
        else:
            future.add_done_callback(_log_failure)
        state.apply(rows, seqs)
        return len(rows)

    def latest(self, state: SetState, entity_id: str) -> Latest:
        """The entity's latest values (completed from SQLite the first time it is read)."""
        entry = state.entities.get(entity_id)
        if entry is not None and entry.complete:
            return entry.values
        wanted = {f.name for f in state.latest.stored_features}
        found = self._history(state.latest.name, entity_id, MAX_US, wanted)
        with state.lock:
            entry = state.entities.get(entity_id)
            if entry is None:
                entry = state.entities[entity_id] = EntityState()
            for name, triple in found.items():
                cur = entry.values.get(name)
                if cur is None or (triple[1], triple[2]) > (cur[1], cur[2]):
                    entry.values[name] = triple
            entry.complete = True
            state.bound_entities()
            return entry.values

    def as_of(self, state: SetState, entity_id: str, at_us: int, wanted: set[str]) -> Latest:
        """Point in time: per wanted feature, the value with the greatest (event_us, seq) and
        event_us <= at_us, read from SQLite."""
        return self._history(state.latest.name, entity_id, at_us, wanted)

    def _history(self, set_name: str, entity_id: str, at_us: int, wanted: set[str]) -> Latest:
        def scan(c: sqlite3.Connection) -> Latest:
            out: Latest = {}
            for event_us, seq, payload in c.execute(_HISTORY, (set_name, entity_id, at_us)):
                for name, value in decode(payload).items():
                    if name not in out:
                        out[name] = (value, event_us, seq)
                if wanted.issubset(out):
                    break
            return out

        return self.db.read(scan)

    def rows_since(self, set_name: str, since_us: int) -> Iterable[FeatureRow]:
        def load(c: sqlite3.Connection) -> list[FeatureRow]:
            return [
                FeatureRow(e, decode(p), t)
                for e, t, p in c.execute(
                    "SELECT entity_id, event_us, payload FROM feature_rows WHERE set_name = ? "
                    "AND event_us >= ? ORDER BY event_us, seq",
                    (set_name, since_us),
                )
            ]

        return self.db.read(load)

    def all_values(self, set_name: str, limit: int) -> list[dict[str, Any]]:
        """Values of the newest ``limit`` rows of a set, for fitting."""

        def load(c: sqlite3.Connection) -> list[dict[str, Any]]:
            return [
                decode(p)
                for (p,) in c.execute(
                    "SELECT payload FROM feature_rows WHERE set_name = ? "
                    "ORDER BY event_us DESC, seq DESC LIMIT ?",
                    (set_name, limit),
                )
            ]

        return self.db.read(load)

"""The online store: feature set versions and feature rows in SQLite, latest values in memory.

Durable writes are appends. Each write (one request's rows) is one record in a journal
(``features-<n>.journal``, ``llmopt.storage.journal``): the sequence number of its first row,
then the set's name and the rows pickled together. An append is a copy into a mapped file, so a
write waits for no commit, and it survives the process being killed as a WAL commit does.

The history of each entity, which point-in-time reads and cold entities need, is kept in
``feature_chunks``: per (set, entity), a chunk holds that entity's rows of one compaction,
pickled as a list of (event_us, seq, values), with the chunk's least and greatest event time.
Rows reach it by *compaction*: once a set has enough journaled rows (``SetState.due``), and on
close, they are grouped by entity and one chunk per entity is inserted, with the set's new
``through_seq`` (``feature_compactions``), in one transaction. A restart compacts the journal
records beyond each set's ``through_seq`` and deletes the journal; a journal segment is deleted
once every row in it is in a chunk.

Why not one row per feature row with an index on (set, entity, event time): every write then
touches one index page per distinct entity it names, and SQLite copies each touched page to the
WAL at commit. A 1,000-row write over 1,000 entities wrote about 4 MB, and the cost per row grew
with the history from 8 µs to over 30 µs (measured on the 2-core sandbox, 400k rows). Chunks
touch one index entry per entity per compaction instead of one per row.

The same effect, one level up, is why chunks belong to *generations*. Chunks are indexed by
(set, generation, entity, greatest event time), and a set's generation closes once it holds
``generation_chunks`` chunks. A compaction inserts an entry for nearly every entity, so with
the index on (set, entity, ...) alone it touched every page of it: the cost per row of a
compaction grew with the whole history (4 µs at 640k rows, 5,000 entities, and rising). Within
a generation the pages touched are bounded by its size. A history read asks each generation in
turn, newest first, skips those whose event times cannot matter and stops as soon as no older
one can hold a newer value (``feature_generations`` keeps each one's chunk count and least and
greatest event time, in memory as well).

Until they are compacted, rows stay in memory as well, per set and entity (``SetState.pending``,
and ``compacting`` while a compaction is being committed), and every history read merges them
with the chunks. Memory for them is bounded by ``OVERFLOW * compact_rows`` per set (twice that
during a compaction).

Values are a pickled dict of str -> float | int | bool | str (protocol 5: stable across Python
versions and ten times cheaper to encode than JSON); ``decode`` refuses anything but builtins.

Latest values are served from memory: per entity, feature -> (value, event_us, seq), where the
greatest (event_us, seq) wins, so out-of-order writes never replace newer data. After a restart an
entity's entry is completed from the history on its first read; merging is "greatest wins" and
thus idempotent, so a read racing a write or a compaction cannot lose it. Reads with ``as_of``
read the history. Memory grows with the number of entities read or written since the start, up
to ``max_entities`` per set.
"""

from __future__ import annotations

import heapq
import io
import itertools
import logging
import pickle
import sqlite3
import struct
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, NamedTuple

from llmopt import errors
from llmopt.features.aggregates import AggregateTable
from llmopt.features.codec import set_from_json, set_to_json
from llmopt.features.plan import CompiledPlan, compile_plan
from llmopt.features.spec import FeatureSet, RawValue
from llmopt.native.features import merge_latest, merge_rows, remember_rows
from llmopt.storage import Database, Migration, WriteFuture, private_folder, statements
from llmopt.storage.journal import Journal

log = logging.getLogger("llmopt.features")

_V1_SCHEMA = """
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

_V2_TABLES = """
    CREATE TABLE feature_chunks (
        id INTEGER PRIMARY KEY,
        set_name TEXT NOT NULL,
        entity_id TEXT NOT NULL,
        min_event_us INTEGER NOT NULL,
        max_event_us INTEGER NOT NULL,
        payload BLOB NOT NULL
    );
    CREATE INDEX feature_chunks_history ON feature_chunks (set_name, entity_id, max_event_us);
    CREATE TABLE feature_compactions (
        set_name TEXT PRIMARY KEY,
        through_seq INTEGER NOT NULL
    )
"""


def _to_chunks(conn: sqlite3.Connection) -> None:
    """Migration 2: one row per feature row (v1) becomes chunks (v2); every v1 row moves into
    one chunk per (set, entity)."""
    for statement in statements(_V2_TABLES):
        conn.execute(statement)
    rows = conn.execute(
        "SELECT set_name, entity_id, event_us, seq, payload FROM feature_rows "
        "ORDER BY set_name, entity_id, seq"
    ).fetchall()
    for (set_name, entity_id), group in itertools.groupby(rows, key=lambda r: (r[0], r[1])):
        history = [(event_us, seq, decode(payload)) for _, _, event_us, seq, payload in group]
        events = [r[0] for r in history]
        conn.execute(
            "INSERT INTO feature_chunks (set_name, entity_id, min_event_us, max_event_us, "
            "payload) VALUES (?, ?, ?, ?, ?)",
            (set_name, entity_id, min(events), max(events), pickle.dumps(history, 5)),
        )
    conn.execute(
        "INSERT INTO feature_compactions SELECT set_name, MAX(seq) FROM feature_rows "
        "GROUP BY set_name"
    )
    conn.execute("DROP TABLE feature_rows")


# Migration 3: chunks in generations (see the module's docstring); every chunk so far is in
# generation 0.
_GENERATIONS = """
    ALTER TABLE feature_chunks ADD COLUMN generation INTEGER NOT NULL DEFAULT 0;
    DROP INDEX feature_chunks_history;
    CREATE INDEX feature_chunks_history
        ON feature_chunks (set_name, generation, entity_id, max_event_us);
    CREATE TABLE feature_generations (
        set_name TEXT NOT NULL,
        generation INTEGER NOT NULL,
        chunks INTEGER NOT NULL,
        min_event_us INTEGER NOT NULL,
        max_event_us INTEGER NOT NULL,
        PRIMARY KEY (set_name, generation)
    );
    INSERT INTO feature_generations
        SELECT set_name, 0, count(*), min(min_event_us), max(max_event_us)
        FROM feature_chunks GROUP BY set_name
"""

MIGRATIONS: list[Migration] = [_V1_SCHEMA, _to_chunks, _GENERATIONS]

_INSERT_CHUNK = (
    "INSERT INTO feature_chunks "
    "(set_name, generation, entity_id, min_event_us, max_event_us, payload) "
    "VALUES (?, ?, ?, ?, ?, ?)"
)
_CHUNKS_PER_STATEMENT = 200
_COMPACTED = (
    "INSERT INTO feature_compactions VALUES (?, ?) ON CONFLICT (set_name) "
    "DO UPDATE SET through_seq = excluded.through_seq"
)
_GENERATION_GREW = (
    "INSERT INTO feature_generations VALUES (?, ?, ?, ?, ?) "
    "ON CONFLICT (set_name, generation) DO UPDATE SET chunks = chunks + excluded.chunks, "
    "min_event_us = min(min_event_us, excluded.min_event_us), "
    "max_event_us = max(max_event_us, excluded.max_event_us)"
)
# A journal record: the seq of its first row, then the pickled (set name, rows).
_RECORD = struct.Struct("<Q")
_HISTORY = (
    "SELECT max_event_us, payload FROM feature_chunks WHERE set_name = ? AND generation = ? "
    "AND entity_id = ? AND min_event_us <= ? ORDER BY max_event_us DESC"
)
MAX_US = 2**62
DEFAULT_MAX_ENTITIES = 100_000  # per set, in the latest-value cache (--feature-cache-entities)
# A compaction starts once a set has COMPACT_ROWS journaled rows and ROWS_PER_CHUNK per entity
# on average, or OVERFLOW * COMPACT_ROWS rows. Each chunk costs an index entry, a pickling and
# its parameters whatever its size: with 5,000 entities, chunks of 8 rows instead of 3.3 cut
# the cost of compacting from 3.1 to 2.4 µs per row (2-core sandbox). Waiting for more rows
# costs memory, hence the bound.
COMPACT_ROWS = 16_384
ROWS_PER_CHUNK = 8
OVERFLOW = 4
# Chunks of a set in one generation: about 3 MB of index with 10-character entity ids, so a
# compaction touches at most that much of it.
GENERATION_CHUNKS = 65_536


class Generation(NamedTuple):
    """What ``feature_generations`` says of one generation of a set's chunks."""

    number: int
    chunks: int
    min_event_us: int
    max_event_us: int

    def grown(self, chunks: int, min_event_us: int, max_event_us: int) -> Generation:
        return Generation(
            self.number,
            self.chunks + chunks,
            min(self.min_event_us, min_event_us),
            max(self.max_event_us, max_event_us),
        )


# One row of an entity's history: (event_us, seq, values).
HistoryRow = tuple[int, int, dict[str, RawValue]]


class _BuiltinsOnly(pickle.Unpickler):
    """Loads dicts, strings and numbers; refuses every class (no code runs on load)."""

    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"stored feature values may not hold {module}.{name}")


def encode(values: dict[str, Any]) -> bytes:
    return pickle.dumps(values, protocol=5)


def decode(payload: bytes) -> Any:
    """A stored payload: values, a chunk's rows or a journal record's (set, rows)."""
    return _BuiltinsOnly(io.BytesIO(payload)).load()


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
    """Everything about one feature set name: its versions, plans, latest values, aggregates,
    and its rows not yet compacted into chunks.

    One lock per set guards the versions, the latest-value table and the uncompacted rows. The
    latest-value table is a cache of at most ``max_entities`` entities: beyond it the earliest
    added are dropped (a sixteenth at a time), and an entity read again is completed from the
    history like one never seen.
    """

    def __init__(
        self,
        versions: list[FeatureSet],
        max_entities: int = DEFAULT_MAX_ENTITIES,
        compact_rows: int = COMPACT_ROWS,
    ) -> None:
        self.lock = threading.Lock()
        self.versions = versions
        self.plans: dict[int, CompiledPlan] = {fs.version: compile_plan(fs) for fs in versions}
        self.entities: dict[str, EntityState] = {}
        self.max_entities = max_entities
        self.aggregates = AggregateTable(self.latest.aggregates)
        self.compact_rows = compact_rows
        # Journaled rows not in chunks yet, per entity; how many, and the oldest journal
        # segment holding one of them.
        self.pending: dict[str, list[HistoryRow]] = {}
        self.pending_rows = 0
        self.pending_segment = 0
        self.pending_through = 0  # the greatest seq among them
        # The rows of the compaction being committed (still read from here until it is), and
        # their oldest segment.
        self.compacting: dict[str, list[HistoryRow]] | None = None
        self.compacting_segment = 0
        # The generations of its chunks, oldest first; the last one is filled up to
        # ``generation_chunks``. A compaction adds to it before its commit.
        self.generations: list[Generation] = []

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

    def apply(self, rows: Sequence[FeatureRow], first_seq: int, segment: int) -> bool:
        """Fold journaled rows (seqs ``first_seq``, ``first_seq + 1``, ...; in journal segment
        ``segment``) into the latest values, the uncompacted history and the aggregates.
        True when the set is due a compaction."""
        with self.lock:
            merge_rows(self.entities, rows, first_seq, EntityState)
            self.remember(rows, first_seq, segment)
            self.bound_entities()
            aggregates = self.aggregates
            due = self.compacting is None and self.due()
        if aggregates.streams:
            for row in rows:
                aggregates.add(row[0], row[1], row[2])  # type: ignore[arg-type]
        return due

    def remember(self, rows: Sequence[FeatureRow], first_seq: int, segment: int) -> None:
        """Keep journaled rows readable until they are compacted (lock held)."""
        if not self.pending:
            self.pending_segment = segment
        self.pending_through = remember_rows(self.pending, rows, first_seq) - 1
        self.pending_rows += len(rows)

    def due(self) -> bool:
        """Whether the uncompacted rows make a compaction worth its cost (lock held): at least
        ``compact_rows`` of them and, until there are ``OVERFLOW`` times as many, at least
        ``ROWS_PER_CHUNK`` per entity on average."""
        n = self.pending_rows
        if n < self.compact_rows:
            return False
        return n >= ROWS_PER_CHUNK * len(self.pending) or n >= OVERFLOW * self.compact_rows

    def uncompacted(self) -> list[tuple[str, HistoryRow]]:
        """(entity, row) of every row not yet in chunks."""
        with self.lock:
            parts = [self.pending] if self.compacting is None else [self.pending, self.compacting]
            return [(e, r) for part in parts for e, history in part.items() for r in history]

    def uncompacted_of(self, entity_id: str) -> tuple[list[HistoryRow], list[Generation]]:
        """The entity's rows not yet in chunks, and the generations that hold every row of it
        that is not among them."""
        with self.lock:
            rows = list(self.pending.get(entity_id, ()))
            if self.compacting is not None:
                rows += self.compacting.get(entity_id, ())
            return rows, list(self.generations)

    def bound_entities(self) -> None:
        """Drop the earliest added entities once there are more than ``max_entities`` (lock
        held); each later read of one of them goes back to the history once."""
        excess = len(self.entities) - self.max_entities
        if excess > 0:
            drop = excess + self.max_entities // 16
            for entity_id in list(itertools.islice(self.entities, drop)):
                del self.entities[entity_id]


def _chunk_params(
    set_name: str, generation: int, entity_id: str, history: list[HistoryRow]
) -> tuple:
    events = [r[0] for r in history]
    return (set_name, generation, entity_id, min(events), max(events), pickle.dumps(history, 5))


def _insert_chunks(conn: sqlite3.Connection, chunks: Sequence[tuple]) -> None:
    """Many chunks per statement: ``executemany`` lets go of the GIL at every row, and each
    time is a thread hand-off when other threads wait for it."""
    step = _CHUNKS_PER_STATEMENT
    for i in range(0, len(chunks), step):
        part = chunks[i : i + step]
        conn.execute(_chunks_sql(len(part)), [x for chunk in part for x in chunk])


@lru_cache(maxsize=8)
def _chunks_sql(n: int) -> str:
    return _INSERT_CHUNK + ", (?, ?, ?, ?, ?, ?)" * (n - 1)


def _merge_history(out: Latest, rows: Iterable[HistoryRow], at_us: int) -> None:
    """Per feature, keep the value with the greatest (event_us, seq) and event_us <= at_us."""
    for event_us, seq, values in rows:
        if event_us <= at_us:
            merge_latest(out, values, event_us, seq)


class FeatureStore:
    """SQLite under ``<root>/features.db``, the journal ``<root>/features-<n>.journal``, and the
    in-memory state of every set."""

    def __init__(
        self,
        root: Path,
        synchronous: str = "normal",
        max_entities: int = DEFAULT_MAX_ENTITIES,
        compact_rows: int = COMPACT_ROWS,
        journal_segment_bytes: int = 64 << 20,
        generation_chunks: int = GENERATION_CHUNKS,
    ) -> None:
        private_folder(root)
        self.max_entities = max_entities
        self.compact_rows = compact_rows
        self.generation_chunks = generation_chunks
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
            self.sets[name] = SetState(versions, max_entities, compact_rows)
        for name, *generation in self.db.read(
            lambda c: c.execute(
                "SELECT set_name, generation, chunks, min_event_us, max_event_us "
                "FROM feature_generations ORDER BY set_name, generation"
            ).fetchall()
        ):
            self.sets[name].generations.append(Generation(*generation))
        # Gives sequence numbers, appends to the journal and hands rows to their set, in one
        # order: so a set's pending rows are always every journaled row of it after the last
        # compaction, and a compaction's ``through_seq`` says exactly which records it holds.
        self._order = threading.Lock()
        self._closed = False
        self._removed_through = 0  # journal segments deleted up to here
        self.journal = Journal(
            root, "features", fsync=synchronous == "full", segment_bytes=journal_segment_bytes
        )
        self._next_seq = self._replay_journal() + 1
        self.journal.open()

    def _replay_journal(self) -> int:
        """Compact the records the last run left in the journal (those a compaction already
        holds are skipped), then delete it; returns the greatest seq in use."""
        through = dict(
            self.db.read(
                lambda c: c.execute(
                    "SELECT set_name, through_seq FROM feature_compactions"
                ).fetchall()
            )
        )
        last = max(through.values(), default=0)
        segments = self.journal.segments()
        if not segments:
            return last
        n = 0
        for payload in self.journal.replay():
            (first_seq,) = _RECORD.unpack_from(payload)
            set_name, rows = decode(payload[_RECORD.size :])
            last = max(last, first_seq + len(rows) - 1)
            state = self.sets.get(set_name)
            if state is None:  # never happens: a set is committed before it can be written
                log.error("features journal: %d rows of unknown set %r", len(rows), set_name)
                continue
            if first_seq > through.get(set_name, 0):
                with state.lock:
                    state.remember(rows, first_seq, 0)
                n += 1
        for state in self.sets.values():
            self.compact(state)
        log.info("features: %d journal records from %d segment(s) compacted", n, len(segments))
        if not any(s.pending for s in self.sets.values()) and not self.db.commit_failures:
            self.journal.remove_segments(segments[-1][0])
        return last

    def close(self) -> None:
        """Compact every set's journaled rows into chunks, close the database, and delete the
        journal if all of it is compacted."""
        with self._order:
            if self._closed:
                return
            self._closed = True
            self.journal.close()  # no more appends
        compacted = True
        try:
            for state in list(self.sets.values()):
                self.compact(state)
                compacted = compacted and not state.pending and state.compacting is None
        finally:
            self.db.close()
        if compacted and not self.db.commit_failures:
            self.journal.remove_segments(self.journal.segment)

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
                self.sets[fs.name] = SetState([fs], self.max_entities, self.compact_rows)
                return
        state.add_version(fs)

    def names(self) -> list[str]:
        with self._lock:
            return sorted(self.sets)

    # -- rows -------------------------------------------------------------------------------------

    def write(self, state: SetState, rows: Sequence[FeatureRow]) -> int:
        """Journal rows (durable on return), then fold them into memory."""
        # Plain tuples: a FeatureRow would pickle as a class reference, which decode refuses.
        body = pickle.dumps((state.latest.name, list(map(tuple, rows))), 5)
        with self._order:
            if self._closed:
                raise errors.Unavailable("the feature store is closed")
            first_seq = self._next_seq
            self._next_seq += len(rows)
            sealed = self.journal.append(_RECORD.pack(first_seq) + body)
            due = state.apply(rows, first_seq, self.journal.segment)
        if due:
            self._start_compaction(state)
        if sealed:  # compact every set still holding rows of the sealed segment, then drop it
            for other in list(self.sets.values()):
                if other.pending and other.pending_segment <= sealed:
                    self._start_compaction(other)
            self._release_segments()
        return len(rows)

    def compact(self, state: SetState) -> None:
        """Move every journaled row of the set into chunks now (start-up, close and tests)."""
        while True:
            future = self._start_compaction(state)
            if future is None:
                with state.lock:
                    idle = state.compacting is None
                    if idle and not state.pending:
                        return
                if not idle:  # another compaction is committing: wait for it
                    self.db.write(lambda c: None)
                continue
            if future.exception() is not None:
                return  # logged; the rows stay journaled and pending

    def _start_compaction(self, state: SetState) -> WriteFuture[None] | None:
        """Queue the set's uncompacted rows as chunks, one per entity, with the set's new
        ``through_seq``, in one transaction; None if there is nothing to do or one is
        committing."""
        with state.lock:
            if state.compacting is not None or not state.pending:
                return None
            taken, segment, through = state.pending, state.pending_segment, state.pending_through
            state.pending, state.pending_rows = {}, 0
            state.compacting, state.compacting_segment = taken, segment
            last = state.generations[-1] if state.generations else None
        if last is None:
            generation = 0
        elif last.chunks >= self.generation_chunks:
            generation = last.number + 1
        else:
            generation = last.number
        name = state.latest.name
        # In index order: the inserts then walk the index once instead of jumping about it.
        chunks = [_chunk_params(name, generation, e, taken[e]) for e in sorted(taken)]
        grew = (
            name,
            generation,
            len(chunks),
            min(chunk[3] for chunk in chunks),
            max(chunk[4] for chunk in chunks),
        )
        # Readers learn of the generation before its chunks are committed (asking it early
        # finds nothing yet), so never after the rows have left ``compacting``.
        with state.lock:
            if last is not None and last.number == generation:
                state.generations[-1] = last.grown(*grew[2:])
            else:
                state.generations.append(Generation(*grew[1:]))

        def run(c: sqlite3.Connection) -> None:
            _insert_chunks(c, chunks)
            c.execute(_GENERATION_GREW, grew)
            c.execute(_COMPACTED, (name, through))

        def finished(future: WriteFuture[None]) -> None:
            failed = future.exception()
            with state.lock:
                state.compacting = None
                if failed is not None:  # the journal still has them: keep them readable
                    for entity_id, history in taken.items():
                        state.pending.setdefault(entity_id, []).extend(history)
                    state.pending_rows += sum(map(len, taken.values()))
                    state.pending_segment = segment
                    state.pending_through = max(state.pending_through, through)
                # enough rows, or rows of a sealed segment, arrived while this one committed
                again = state.due() or (
                    state.pending and state.pending_segment < self.journal.segment
                )
            if failed is not None:
                log.error("feature set %r: compaction failed: %s", name, failed)
                return
            self._release_segments()
            if again:
                self._start_compaction(state)

        future = self.db.write_async(run)
        future.add_done_callback(finished)
        return future

    def _release_segments(self) -> None:
        """Delete the sealed journal segments whose every row is in chunks."""
        with self._order:
            keep = self.journal.segment  # the segment being appended to, at least
            for state in list(self.sets.values()):
                with state.lock:
                    if state.pending:
                        keep = min(keep, state.pending_segment)
                    if state.compacting is not None:
                        keep = min(keep, state.compacting_segment)
            if keep - 1 > self._removed_through and not self.db.commit_failures:
                self.journal.remove_segments(keep - 1)
                self._removed_through = keep - 1

    def latest(self, state: SetState, entity_id: str) -> Latest:
        """The entity's latest values (completed from the history the first time it is read)."""
        entry = state.entities.get(entity_id)
        if entry is not None and entry.complete:
            return entry.values
        wanted = {f.name for f in state.latest.stored_features}
        found = self._history(state, entity_id, MAX_US, wanted)
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
        event_us <= at_us."""
        return self._history(state, entity_id, at_us, wanted)

    def _history(self, state: SetState, entity_id: str, at_us: int, wanted: set[str]) -> Latest:
        # Memory first, then SQLite: a compaction committing in between puts rows in both
        # (merging twice is harmless), never in neither.
        out: Latest = {}
        rows, generations = state.uncompacted_of(entity_id)
        _merge_history(out, rows, at_us)
        if not generations:
            return out
        name = state.latest.name
        # older[i]: the greatest event time in generations[0..i]
        older = list(itertools.accumulate((g.max_event_us for g in generations), max))

        def beaten(event_us: int) -> bool:
            """Whether every wanted feature has a value newer than ``event_us``."""
            return wanted.issubset(out) and all(out[w][1] > event_us for w in wanted)

        def scan(c: sqlite3.Connection) -> Latest:
            for i in range(len(generations) - 1, -1, -1):
                if beaten(older[i]):  # nothing in this generation or before can win
                    break
                if generations[i].min_event_us > at_us:
                    continue
                key = (name, generations[i].number, entity_id, at_us)
                for max_event_us, payload in c.execute(_HISTORY, key):
                    # Newest first by greatest event time: once this chunk is beaten, so is
                    # every later one of the generation.
                    if beaten(max_event_us):
                        break
                    _merge_history(out, decode(payload), at_us)
            return out

        return self.db.read(scan)

    def rows_since(self, set_name: str, since_us: int) -> list[FeatureRow]:
        """Every row of the set with event_us >= since_us, in (event_us, seq) order."""
        found: dict[int, FeatureRow] = {}  # by seq: a row read from memory and from a chunk
        state = self.sets[set_name]
        for entity_id, (event_us, seq, values) in state.uncompacted():
            if event_us >= since_us:
                found[seq] = FeatureRow(entity_id, values, event_us)

        def load(c: sqlite3.Connection) -> None:
            for entity_id, payload in c.execute(
                "SELECT entity_id, payload FROM feature_chunks WHERE set_name = ? "
                "AND max_event_us >= ?",
                (set_name, since_us),
            ):
                for event_us, seq, values in decode(payload):
                    if event_us >= since_us:
                        found[seq] = FeatureRow(entity_id, values, event_us)

        self.db.read(load)
        return [found[seq] for seq in sorted(found, key=lambda s: (found[s].event_us, s))]

    def all_values(self, set_name: str, limit: int) -> list[dict[str, Any]]:
        """Values of the newest ``limit`` rows of a set, for fitting."""
        found: dict[int, HistoryRow] = {r[1]: r for _, r in self.sets[set_name].uncompacted()}

        def load(c: sqlite3.Connection) -> None:
            floor = None  # the limit-th newest event time among the rows read so far
            for max_event_us, payload in c.execute(
                "SELECT max_event_us, payload FROM feature_chunks WHERE set_name = ? "
                "ORDER BY max_event_us DESC",
                (set_name,),
            ):
                if floor is not None and max_event_us < floor:
                    break
                for row in decode(payload):
                    found[row[1]] = row
                if floor is None and len(found) >= limit:
                    floor = heapq.nlargest(limit, (r[0] for r in found.values()))[-1]

        self.db.read(load)
        newest = heapq.nlargest(limit, found.values(), key=lambda r: (r[0], r[1]))
        return [values for _, _, values in newest]

"""The feature store's history: journaled rows, their compaction into per-entity chunks, replay
after a killed process, and the migration from one SQLite row per feature row."""

from __future__ import annotations

import datetime as dt
import random
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from llmopt.features import FeatureService
from llmopt.features import store as fstore
from llmopt.features.service import from_us, to_us
from llmopt.features.spec import Feature, FeatureSet, FeatureType
from llmopt.storage import Database

ROOT = Path(__file__).resolve().parents[3]
T0 = dt.datetime(2026, 3, 2, 12, 0, tzinfo=dt.UTC)
T0_US = to_us(T0)
SEC = 1_000_000
SET = FeatureSet("users", "user_id", (Feature("age", FeatureType.INT), Feature("spend")))


class Clock:
    def __init__(self) -> None:
        self.now = T0.timestamp() + 10_000  # every write below is in the past

    def __call__(self) -> float:
        return self.now


def expected(written: list[tuple[int, str, dict, int]], entity: str, name: str, at: int):
    """Brute force: the value with the greatest (event_us, seq) and event_us <= at."""
    found = [(ev, seq, v[name]) for seq, e, v, ev in written if e == entity and name in v]
    found = [f for f in found if f[0] <= at]
    return max(found)[2] if found else None


def read(svc: FeatureService, entity: str, name: str, at: int | None = None):
    got = svc.read("users", [entity], [name], None if at is None else from_us(at))[0]
    return got.values[name].value


def random_writes(rng: random.Random, n: int) -> list[list[tuple[str, dict, int]]]:
    """Writes of 1-4 rows over 5 entities, event times out of order, some values missing."""
    writes = []
    for _ in range(n):
        rows = []
        for _ in range(rng.randint(1, 4)):
            values: dict = {}
            if rng.random() < 0.8:
                values["age"] = rng.randrange(100)
            if not values or rng.random() < 0.6:
                values["spend"] = rng.random()
            rows.append((f"u{rng.randrange(5)}", values, T0_US + rng.randrange(200) * SEC))
        writes.append(rows)
    return writes


def check_all(svc: FeatureService, written, times=(T0_US + 50 * SEC, T0_US + 150 * SEC)) -> None:
    for k in range(5):
        for name in ("age", "spend"):
            assert read(svc, f"u{k}", name) == expected(written, f"u{k}", name, 2**62), (k, name)
            for at in times:
                want = expected(written, f"u{k}", name, at)
                assert read(svc, f"u{k}", name, at) == want, (k, name, at)


def test_reads_merge_uncompacted_rows_with_chunks(tmp_path: Path) -> None:
    """With a compaction every 3 rows, a generation every 4 chunks and a 2-entity cache, every
    read mixes chunks of several generations, journaled rows and cache misses; each must equal
    the brute-force answer over what was written."""
    rng = random.Random(7)
    svc = FeatureService(tmp_path / "f", clock=Clock(), compact_rows=3, max_entities=2)
    svc._store.generation_chunks = 4
    written: list[tuple[int, str, dict, int]] = []
    mixed = 0  # reads made while the history was in both places
    try:
        svc.create_set(SET)
        state = svc._state("users")
        for rows in random_writes(rng, 40):
            svc.write("users", rows)
            written += [(len(written), e, v, ev) for e, v, ev in rows]
            svc._store.db.write(lambda c: None)  # any compaction started is committed
            chunks = svc._store.db.read(
                lambda c: c.execute("SELECT count(*) FROM feature_chunks").fetchone()[0]
            )
            mixed += bool(chunks and state.pending)
            check_all(svc, written)
        assert mixed >= 5
        assert len(state.generations) >= 5
    finally:
        svc.close()
    reopened = FeatureService(tmp_path / "f", clock=Clock())
    assert reopened._state("users").generations == state.generations
    try:
        check_all(reopened, written)
    finally:
        reopened.close()
    assert not list((tmp_path / "f").glob("*.journal"))  # a clean close leaves no journal


def test_a_failed_compaction_keeps_its_rows_readable_and_is_retried(tmp_path, monkeypatch):
    svc = FeatureService(tmp_path / "f", clock=Clock(), compact_rows=1)
    try:
        svc.create_set(SET)
        monkeypatch.setattr(fstore, "_chunks_sql", lambda n: "INSERT INTO no_such_table VALUES (1)")
        svc.write("users", [("u1", {"age": 1}, T0_US), ("u1", {"age": 2}, T0_US + SEC)])
        state = svc._state("users")
        svc._store.compact(state)  # fails again, logged
        assert state.pending_rows == 2 and state.compacting is None
        assert read(svc, "u1", "age", T0_US) == 1  # history reads still see the rows
        monkeypatch.undo()
        svc._store.compact(state)
        assert state.pending_rows == 0
        assert read(svc, "u1", "age", T0_US) == 1 and read(svc, "u1", "age") == 2
    finally:
        svc.close()


def run_and_die(root: Path, body: str) -> None:
    """Run ``body`` against a FeatureService ``svc`` in a child process that exits at once, as
    kill -9 would leave it (no close, no compaction of what is left)."""
    script = (
        textwrap.dedent(
            f"""
        import os
        from pathlib import Path
        from llmopt.features import FeatureService
        from llmopt.features.spec import Feature, FeatureSet, FeatureType
        svc = FeatureService(Path({str(root)!r}), compact_rows=5)
        svc.create_set(FeatureSet("users", "user_id",
                       (Feature("age", FeatureType.INT), Feature("spend"))))
        """
        )
        + textwrap.dedent(body)
        + "\nos._exit(0)\n"
    )
    subprocess.run([sys.executable, "-c", script], cwd=ROOT, check=True, timeout=60)


def all_chunk_rows(svc: FeatureService) -> list[tuple]:
    payloads = svc._store.db.read(
        lambda c: c.execute("SELECT entity_id, payload FROM feature_chunks").fetchall()
    )
    return [(e, *row) for e, p in payloads for row in fstore.decode(p)]


def test_a_killed_process_loses_no_row_and_replays_none_twice(tmp_path: Path) -> None:
    # 10 writes of 2 rows, compacted once 20 rows are pending (OVERFLOW * compact_rows: there
    # are too few per entity before), then one more row: 20 rows reached chunks (and are still
    # in the journal, whose only segment was never sealed), the last one only the journal.
    run_and_die(
        tmp_path,
        f"""
        for i in range(10):
            svc.write("users", [(f"u{{i % 3}}", {{"age": i}}, {T0_US} + i * 1_000_000),
                                ("u9", {{"spend": i / 10}}, {T0_US} - i * 1_000_000)])
        state = svc._state("users")
        while state.compacting is not None or state.pending:
            svc._store.db.write(lambda c: None)  # the compactions queued are committed
        svc.write("users", [("u1", {{"age": 99}}, {T0_US} - 50 * 1_000_000)])  # below 5 rows
        chunks = svc._store.db.read(
            lambda c: c.execute("SELECT count(*) FROM feature_chunks").fetchone()[0])
        assert chunks > 0 and state.pending_rows == 1
        """,
    )
    assert list(tmp_path.glob("features-*.journal"))
    svc = FeatureService(tmp_path, clock=Clock())
    try:
        # replayed, compacted and deleted; appends go to a new segment
        journal = [p.name for p in tmp_path.glob("features-*.journal")]
        assert journal == ["features-00000002.journal"]
        rows = all_chunk_rows(svc)
        assert len(rows) == 21 and len({r[2] for r in rows}) == 21  # every row once, by seq
        assert read(svc, "u0", "age") == 9 and read(svc, "u1", "age") == 7
        assert read(svc, "u1", "age", T0_US - 40 * SEC) == 99
        assert read(svc, "u9", "spend") == 0.0
        assert read(svc, "u9", "spend", T0_US - 5 * SEC) == 0.5
        # Sequence numbers go on after the replayed ones: a rewrite at the same time wins.
        svc.write("users", [("u9", {"spend": 7.0}, T0_US)])
        assert read(svc, "u9", "spend") == 7.0
    finally:
        svc.close()


def test_a_version_1_store_is_migrated_into_chunks(tmp_path: Path) -> None:
    root = tmp_path / "f"
    root.mkdir()
    v1 = Database(root / "features.db", migrations=[fstore.MIGRATIONS[0]])
    created = fstore.set_to_json(SET)
    rows = [
        (1, "u1", T0_US, {"age": 30}),
        (2, "u1", T0_US - 100 * SEC, {"age": 10, "spend": 1.5}),  # older, written later
        (3, "u2", T0_US, {"spend": 2.5}),
        (4, "u1", T0_US + 100 * SEC, {"spend": 4.5}),
    ]

    def fill(c) -> None:
        c.execute("INSERT INTO feature_sets VALUES ('users', 1, ?, 0.0)", (created,))
        for seq, entity, ev, values in rows:
            c.execute(
                "INSERT INTO feature_rows VALUES (?, 'users', ?, ?, ?)",
                (seq, entity, ev, fstore.encode(values)),
            )

    v1.write(fill)
    v1.close()
    svc = FeatureService(root, clock=Clock())
    try:
        tables = svc._store.db.read(
            lambda c: {r[0] for r in c.execute("SELECT name FROM sqlite_master").fetchall()}
        )
        assert "feature_rows" not in tables and "feature_chunks" in tables
        # migration 3: every chunk of a version 2 store is in generation 0
        generations = svc._store.db.read(
            lambda c: c.execute("SELECT * FROM feature_generations").fetchall()
        )
        assert generations == [("users", 0, 2, T0_US - 100 * SEC, T0_US + 100 * SEC)]
        assert read(svc, "u1", "age") == 30 and read(svc, "u1", "spend") == 4.5
        assert read(svc, "u1", "age", T0_US - 50 * SEC) == 10
        assert read(svc, "u1", "spend", T0_US) == 1.5
        assert read(svc, "u2", "spend") == 2.5
        svc.write("users", [("u1", {"age": 31}, T0_US)])  # same time as seq 1: seqs go on
        assert read(svc, "u1", "age", T0_US) == 31
    finally:
        svc.close()


def test_sealed_journal_segments_are_deleted_once_compacted(tmp_path) -> None:
    store = fstore.FeatureStore(tmp_path, compact_rows=50, journal_segment_bytes=4096)
    try:
        store.save_version(SET)
        state = store.state("users")
        assert state is not None
        for i in range(1000):
            store.write(state, [fstore.FeatureRow(f"u{i % 7}", {"age": i}, T0_US + i)])
        # Compactions run in the background, and one that commits may start the next from its
        # done-callback (rows arrived meanwhile), so wait for the state to settle, within a
        # bound: on a loaded machine one no-op write once returned with 10 segments left.
        deadline = time.monotonic() + 30
        while True:
            store.db.write(lambda c: None)
            segments = [n for n, _ in store.journal.segments()]
            if (len(segments) <= 3 and state.pending_rows < 60) or time.monotonic() > deadline:
                break
            time.sleep(0.01)
        # Of the dozens of segments written, only those holding uncompacted rows remain.
        assert store.journal.segment > 10
        assert len(segments) <= 3 and segments[-1] == store.journal.segment
        assert state.pending_rows < 60
    finally:
        store.close()


def test_merge_latest_keeps_the_greatest_time_and_seq_off_the_collector() -> None:
    import gc

    from llmopt.native.features import merge_latest

    latest: dict = {}
    merge_latest(latest, {"a": 1.5, "b": "x"}, T0_US, 5)
    merge_latest(latest, {"a": 2.5, "b": "y"}, T0_US - 1, 9)  # older time: kept out
    merge_latest(latest, {"a": 3.5}, T0_US, 4)  # same time, smaller seq: kept out
    merge_latest(latest, {"b": "z"}, T0_US, 6)  # same time, greater seq: wins
    assert latest == {"a": (1.5, T0_US, 5), "b": ("z", T0_US, 6)}
    # Entries of plain values can never be in a cycle: the collector never has to walk them.
    assert not any(gc.is_tracked(entry) for entry in latest.values())
    merge_latest(latest, {"c": [1]}, T0_US, 7)  # (no stored value is a container; if one were)
    assert gc.is_tracked(latest["c"])


def test_a_compaction_waits_for_rows_per_entity_up_to_a_bound() -> None:
    state = fstore.SetState([SET], compact_rows=4)

    def add(entities: list[str]) -> None:
        state.remember([fstore.FeatureRow(e, {"age": 1}, T0_US) for e in entities], 1, 1)

    add(["a"] * 3)
    assert not state.due()  # below compact_rows
    add(["a"] * 4)
    assert not state.due()  # 7 rows of one entity
    add(["a"])
    assert state.due()  # ROWS_PER_CHUNK rows per entity
    state.pending, state.pending_rows = {}, 0
    add([f"e{i}" for i in range(15)])
    assert not state.due()  # 15 rows, 1 per entity: not worth a chunk each yet
    add(["x"])
    assert state.due()  # OVERFLOW * compact_rows rows: memory comes first

"""The bandit store's journal: what a killed process leaves behind is replayed, once."""

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np

from llmopt.bandits import store as st

ROOT = Path(__file__).resolve().parents[3]


def die_after(root: Path, body: str, *, apply: bool, segment_bytes: int = 1 << 20) -> None:
    """Run ``body`` against a BanditStore ``s`` in a child process that then exits at once, as
    kill -9 would leave it (no close, no flush). ``apply=False``: its database writer never
    wakes on its own, so journaled rows stay in the journal alone (unless a segment fills:
    sealing one wakes the writer)."""
    script = (
        textwrap.dedent(
            f"""
        import os, numpy as np
        from pathlib import Path
        from llmopt.storage import sqlite
        if not {apply!r}:
            sqlite._IDLE_POLL_SECONDS = 3600
        from llmopt.bandits import store as st
        s = st.BanditStore(Path({str(root)!r}), journal_segment_bytes={segment_bytes})
        def bandit(name):
            arms = [{{"arm_id": f"a{{i}}"}} for i in range(3)]
            return s.create_bandit(name, {{"initial_arms": 3}}, 4, arms, 0.0)
        def decision(i, bandit_id):
            return (f"d{{i}}", bandit_id, i % 3, 0.5, np.arange(3.0), np.full(4, float(i)),
                    100.0 + i, 1e12)
        """
        )
        + textwrap.dedent(body)
        + "\nos._exit(0)\n"
    )
    subprocess.run([sys.executable, "-c", script], cwd=ROOT, check=True, timeout=60)


def rows(root: Path, sql: str) -> list[tuple]:
    s = st.BanditStore(root)
    try:
        return s.db.read(lambda c: c.execute(sql).fetchall())
    finally:
        s.close()


def test_journaled_rows_the_database_never_saw_are_replayed(tmp_path: Path) -> None:
    die_after(
        tmp_path,
        """
        b = bandit("b")
        for i in range(300):
            assert s.log_decision(*decision(i, b)) == i + 1
        for i in range(0, 300, 2):
            s.record_reward(b, f"d{i}", i % 3, 0.25, 0.5, np.full(4, float(i)), None, 200.0)
        n = s.db.read(lambda c: c.execute("SELECT count(*) FROM decisions").fetchone()[0])
        assert n == 0, n  # nothing applied: the journal is the only copy
        """,
        apply=False,
    )
    assert len(list(tmp_path.glob("bandits-*.journal"))) == 1
    s = st.BanditStore(tmp_path)
    try:
        assert not any(n < s.journal.segment for n, _ in s.journal.segments())  # replayed, gone
        d = s.find_decision("d7")
        assert d is not None and d.status == st.OPEN and d.slot == 1 and d.rowid == 8
        np.testing.assert_array_equal(d.context, np.full(4, 7.0))
        assert s.find_decision("d8").status == st.REWARDED
        events = s.events_after(1, 0)
        assert [e.seq for e in events] == list(range(1, 151))  # in journal order, no gaps
        assert [e.decision_id for e in events] == [f"d{i}" for i in range(0, 300, 2)]
        assert all(e.kind == st.REWARD and e.reward == 0.25 for e in events)
        # New sequence numbers carry on after the replayed ones.
        assert s.log_decision("new", 1, 0, 1.0, np.zeros(3), np.zeros(4), 1.0, 1e12) == 301
        assert s.record_reward(1, "new", 0, 1.0, 1.0, np.zeros(4), None, 2.0) == 151
    finally:
        s.close()


def test_rows_already_applied_are_not_applied_twice(tmp_path: Path) -> None:
    die_after(
        tmp_path,
        """
        b = bandit("b")
        for i in range(50):
            s.log_decision(*decision(i, b))
            s.record_reward(b, f"d{i}", i % 3, 1.0, 0.5, np.zeros(4), {"why": i}, 200.0)
        s.flush()  # every row in the database, and still in the journal
        """,
        apply=True,
        segment_bytes=2048,  # some in sealed segments, some in the open one
    )
    assert rows(tmp_path, "SELECT count(*), sum(status) FROM decisions") == [(50, 50)]
    assert rows(tmp_path, "SELECT count(*), count(DISTINCT decision_id) FROM events") == [(50, 50)]
    assert rows(tmp_path, "SELECT detail FROM events WHERE decision_id = 'd3'") == [('{"why": 3}',)]


def test_a_deleted_bandit_does_not_come_back_from_the_journal(tmp_path: Path) -> None:
    die_after(
        tmp_path,
        """
        gone = s.create_bandit("gone", {"initial_arms": 3}, 4, [{"arm_id": "a"}], 0.0)
        kept = s.create_bandit("kept", {"initial_arms": 3}, 4, [{"arm_id": "a"}], 0.0)
        for i in range(20):
            s.log_decision(*decision(i, gone if i % 2 else kept))
        s.record_reward(gone, "d1", 1, 1.0, 0.5, np.zeros(4), None, 200.0)
        s.delete_bandit(gone)
        """,
        apply=False,
    )
    assert rows(tmp_path, "SELECT DISTINCT bandit_id FROM decisions") == [(2,)]
    assert rows(tmp_path, "SELECT count(*) FROM decisions") == [(10,)]
    assert rows(tmp_path, "SELECT count(*) FROM events") == [(0,)]


def test_sealed_segments_are_deleted_once_applied(tmp_path: Path) -> None:
    s = st.BanditStore(tmp_path, journal_segment_bytes=2048)
    try:
        b = s.create_bandit("b", {"initial_arms": 1}, 4, [{"arm_id": "a"}], 0.0)
        for i in range(200):
            s.log_decision(f"d{i}", b, 0, 1.0, np.zeros(1), np.zeros(4), 1.0, 1e12)
        assert s.journal.segment > 5
        s.flush()  # commits the rows and the markers after each sealed segment
        s.db.write(lambda c: None)  # the callbacks that delete them have run
        assert [n for n, _ in s.journal.segments()] == [s.journal.segment]
    finally:
        s.close()
    assert list(tmp_path.glob("bandits-*.journal")) == []  # a clean close leaves no journal


def test_a_decisions_request_digest_survives_the_journal_and_old_records_have_none(
    tmp_path: Path,
) -> None:
    """The digest rides at the end of the decision record (records.pyx): replayed from the
    journal after kill -9 it is kept; a record in the format from before digests (nothing after
    the context) replays with none."""
    die_after(
        tmp_path,
        """
        from llmopt.storage.records import decision_record
        b = bandit("b")
        s.log_decision(*decision(1, b), b"0123456789abcdef")
        s.log_decision(*decision(2, b))
        old = decision_record(99, "d-old", b, 0, 0.5, np.arange(3.0), np.zeros(4), 1.0, 1e12)
        assert old == decision_record(
            99, "d-old", b, 0, 0.5, np.arange(3.0), np.zeros(4), 1.0, 1e12, b""
        )
        with s._order:
            s._append(old)
        """,
        apply=False,
    )
    s = st.BanditStore(tmp_path)
    try:
        d1, d2, old = (s.find_decision(i) for i in ("d1", "d2", "d-old"))
        assert d1 is not None and d1.request_digest == b"0123456789abcdef"
        assert d2 is not None and d2.request_digest is None
        assert old is not None and old.request_digest is None and old.slot == 0
    finally:
        s.close()


def test_a_decisions_context_and_explanation_survive_kill_9_through_the_journal(
    tmp_path: Path,
) -> None:
    """What GetDecision returns beside the choice rides in the record's second trailer: the
    request context, the explanation (its stored bytes, or text), the degraded flag; replayed
    after kill -9, each as the type it was logged as."""
    die_after(
        tmp_path,
        """
        from llmopt.features.context import RequestContext
        b = bandit("b")
        ctx = RequestContext(task_type="summarization", metadata={"k": "v"}, hour_of_day=0)
        s.log_decision(*decision(1, b), b"0123456789abcdef", ctx, '{"why": "naïve"}')
        s.log_decision(*decision(2, b), None, ctx, None, True)
        s.log_decision(*decision(3, b))
        s.log_decision(*decision(4, b), None, None, b"LXP1\\x00\\xff\\xfe not utf-8")
        s.record_reward(b, "d1", 1, 0.5, 0.5, np.zeros(4), {"cost": 0.01}, 300.0)
        """,
        apply=False,
    )
    from llmopt.bandits.bandit import context_of
    from llmopt.features.context import RequestContext

    s = st.BanditStore(tmp_path)
    try:
        d1, d2, d3 = (s.find_decision(f"d{i}") for i in (1, 2, 3))
        ctx = RequestContext(task_type="summarization", metadata={"k": "v"}, hour_of_day=0)
        assert d1.request_digest == b"0123456789abcdef" and d1.explanation == '{"why": "naïve"}'
        assert context_of(d1.request_context) == ctx and not d1.degraded
        assert d2.request_digest is None and d2.explanation is None and d2.degraded
        assert context_of(d2.request_context) == ctx
        assert d3.request_context is None and d3.explanation is None and not d3.degraded
        d4 = s.find_decision("d4")
        assert d4 is not None and d4.explanation == b"LXP1\x00\xff\xfe not utf-8"
        assert d4.request_context is None and not d4.degraded
        logged = s.logged_decision("d1")
        assert logged is not None and logged.decision.status == st.REWARDED
        assert logged.reward == 0.5 and logged.reward_detail == {"cost": 0.01}
        assert logged.close_time == 300.0
        open_row = s.logged_decision("d3")
        assert open_row.reward is None and open_row.close_time is None
    finally:
        s.close()


def test_a_data_dir_from_before_the_decision_log_opens_and_reads(tmp_path: Path) -> None:
    """Migration 3 on a database at schema 2: its decisions read back with no context, no
    explanation, not degraded, and list by time."""
    from llmopt.storage import Database

    db = Database(tmp_path / "bandits.db", migrations=st.MIGRATIONS[:2])
    db.write(
        lambda c: (
            c.execute(
                "INSERT INTO bandits (name, definition, dim, create_time)"
                " VALUES ('old', '{}', 4, 0)"
            ),
            c.executemany(
                "INSERT INTO decisions (decision_id, bandit_id, slot, propensity, scores, context,"
                " time, expires, request_digest) VALUES (?, 1, 0, 1.0, ?, ?, ?, 1e12, NULL)",
                [
                    (f"old{i}", np.zeros(2).tobytes(), np.ones(4).tobytes(), 10.0 - i)
                    for i in range(3)
                ],
            ),
        )
    )
    db.close()
    s = st.BanditStore(tmp_path)
    try:
        version = s.db.read(lambda c: c.execute("PRAGMA user_version").fetchone()[0])
        assert version == len(st.MIGRATIONS)
        d = s.find_decision("old0")
        assert d is not None and d.request_context is None and d.explanation is None
        assert not d.degraded and d.request_digest is None
        listed = s.list_decisions(1, None, None, None, 10)
        assert [r.decision.decision_id for r in listed] == ["old2", "old1", "old0"]
    finally:
        s.close()


def test_listing_is_by_time_then_log_order_and_resumes_after_a_cursor(tmp_path: Path) -> None:
    s = st.BanditStore(tmp_path)
    try:
        b = s.create_bandit("b", {"initial_arms": 1}, 4, [{"arm_id": "a"}], 0.0)
        other = s.create_bandit("o", {"initial_arms": 1}, 4, [{"arm_id": "a"}], 0.0)
        times = [5.0, 1.0, 3.0, 3.0, 3.0, 9.0]
        for i, t in enumerate(times):
            s.log_decision(f"d{i}", b, 0, 1.0, np.zeros(1), np.zeros(4), t, 1e12)
            s.log_decision(f"x{i}", other, 0, 1.0, np.zeros(1), np.zeros(4), t, 1e12)
        ids = lambda rows: [r.decision.decision_id for r in rows]  # noqa: E731
        everything = s.list_decisions(b, None, None, None, 100)
        assert ids(everything) == ["d1", "d2", "d3", "d4", "d0", "d5"]
        first = s.list_decisions(b, None, None, None, 2)
        last = first[-1].decision
        assert ids(first) == ["d1", "d2"]
        rest = s.list_decisions(b, None, None, (last.time, last.rowid), 100)
        assert ids(rest) == ["d3", "d4", "d0", "d5"]
        assert ids(s.list_decisions(b, 3.0, 9.0, None, 100)) == ["d2", "d3", "d4", "d0"]
    finally:
        s.close()

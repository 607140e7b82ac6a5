import subprocess
import sys
import textwrap
import threading
import time

import pytest

from llmopt import errors
from llmopt.storage import Database, DataDir

SCHEMA = ["CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT NOT NULL UNIQUE)"]


@pytest.fixture
def db(tmp_path):
    d = Database(tmp_path / "t.db", migrations=SCHEMA)
    yield d
    d.close()


def insert(v):
    return lambda c: c.execute("INSERT INTO t (v) VALUES (?)", (v,)).lastrowid


def count(db):
    return db.read(lambda c: c.execute("SELECT count(*) FROM t").fetchone()[0])


def test_writes_from_many_threads_all_commit(db):
    def worker(k):
        for i in range(200):
            db.write(insert(f"{k}-{i}"))

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert count(db) == 16 * 200


def test_a_failing_write_rolls_back_alone_and_raises_to_its_caller(db):
    db.write(insert("dup"))

    def half_then_fail(c):
        c.execute("INSERT INTO t (v) VALUES ('half')")
        c.execute("INSERT INTO t (v) VALUES ('dup')")  # UNIQUE violation

    futures = [
        db.write_async(insert("a")),
        db.write_async(half_then_fail),
        db.write_async(insert("b")),
    ]
    assert futures[0].result() and futures[2].result()
    with pytest.raises(Exception, match="UNIQUE"):
        futures[1].result()
    values = db.read(lambda c: sorted(r[0] for r in c.execute("SELECT v FROM t")))
    assert values == ["a", "b", "dup"]


def test_migrations_apply_once_and_resume(tmp_path):
    path = tmp_path / "m.db"
    Database(path, migrations=SCHEMA).close()
    more = [*SCHEMA, "CREATE TABLE u (x INTEGER)"]
    d = Database(path, migrations=more)
    try:
        assert d.read(lambda c: c.execute("PRAGMA user_version").fetchone()[0]) == 2
        d.write(lambda c: c.execute("INSERT INTO u VALUES (1)"))
    finally:
        d.close()


def test_closed_database_refuses_writes(tmp_path):
    d = Database(tmp_path / "c.db", migrations=SCHEMA)
    d.close()
    with pytest.raises(errors.Unavailable):
        d.write(insert("x"))


def test_acknowledged_writes_survive_kill_9(tmp_path):
    """A child acknowledges writes on stdout as they return, and is killed mid-stream."""
    path = tmp_path / "k.db"
    script = textwrap.dedent(
        f"""
        import sys, threading
        from llmopt.storage import Database
        db = Database({str(path)!r}, migrations={SCHEMA!r})
        out = threading.Lock()
        def worker(k):
            for i in range(100000):
                v = f"{{k}}-{{i}}"
                db.write(lambda c, v=v: c.execute("INSERT INTO t (v) VALUES (?)", (v,)))
                with out:
                    sys.stdout.write(f"{{k}}-{{i}}\n")
                    sys.stdout.flush()
        for k in range(4):
            threading.Thread(target=worker, args=(k,), daemon=True).start()
        threading.Event().wait()
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    acked = []
    assert proc.stdout is not None
    for line in proc.stdout:
        acked.append(line.strip())
        if len(acked) >= 500:
            break
    proc.kill()
    proc.wait()
    d = Database(path, migrations=SCHEMA)
    try:
        stored = set(d.read(lambda c: [r[0] for r in c.execute("SELECT v FROM t")]))
    finally:
        d.close()
    assert set(acked) <= stored


def test_data_dir_is_exclusive(tmp_path):
    first = DataDir(tmp_path / "d")
    try:
        with pytest.raises(errors.FailedPrecondition, match="in use"):
            DataDir(tmp_path / "d")
    finally:
        first.close()
    DataDir(tmp_path / "d").close()


def test_writes_nobody_waits_for_are_committed_in_the_background(db):
    done = threading.Event()
    db.write_async(insert("callback")).add_done_callback(lambda f: done.set())
    assert done.wait(10)
    db.write_async(insert("forgotten"))  # neither awaited nor called back: the idle poll commits it
    deadline = time.monotonic() + 10
    while count(db) < 2:
        assert time.monotonic() < deadline
        time.sleep(0.01)


def test_writes_commit_in_the_order_they_were_queued(db):
    futures = [db.write_async(insert(f"v{i:04d}")) for i in range(500)]
    ids = [f.result() for f in futures]
    assert ids == sorted(ids)


def test_close_commits_what_is_still_queued(tmp_path):
    d = Database(tmp_path / "q.db", migrations=SCHEMA)
    for i in range(50):
        d.write_async(insert(f"q{i}"))
    d.close()
    d = Database(tmp_path / "q.db", migrations=SCHEMA)
    try:
        assert count(d) == 50
    finally:
        d.close()


def test_a_failing_write_alone_changes_nothing(db):
    def half_then_fail(c):
        c.execute("INSERT INTO t (v) VALUES ('half')")
        raise ValueError("no")

    with pytest.raises(ValueError, match="no"):
        db.write(half_then_fail)
    assert count(db) == 0
    db.write(insert("after"))
    assert count(db) == 1


def test_write_future_wakes_every_waiter_and_reports_failure_to_each(db):
    gate = threading.Event()

    def slow(c):
        gate.wait(10)
        return c.execute("INSERT INTO t (v) VALUES ('slow')").lastrowid

    ok = db.write_async(slow)
    bad = db.write_async(lambda c: c.execute("INSERT INTO t (v) VALUES ('slow')"))  # duplicate
    seen = []

    def wait(f):
        seen.append(f.exception() or f.result())

    waiters = [threading.Thread(target=wait, args=(f,)) for f in (ok, ok, ok, bad, bad)]
    for t in waiters:
        t.start()
    time.sleep(0.05)
    assert not ok.done() and not seen  # all blocked behind the leader's write
    gate.set()
    for t in waiters:
        t.join(10)
    assert seen.count(1) == 3
    assert sum("UNIQUE" in str(s) for s in seen) == 2
    late = []
    ok.add_done_callback(late.append)  # already finished: called at once
    assert late == [ok] and ok.done() and ok.exception() is None


def test_write_future_wait_can_time_out(db):
    gate = threading.Event()
    leader = db.write_async(lambda c: gate.wait(10))
    threading.Thread(target=leader.result).start()  # becomes the leader and blocks in the write
    time.sleep(0.05)
    follower = db.write_async(insert("later"))
    with pytest.raises(TimeoutError):
        follower.result(timeout=0.05)
    gate.set()
    assert follower.result(timeout=10) and leader.result(timeout=10) is True

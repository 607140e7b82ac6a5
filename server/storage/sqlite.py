"""SQLite with group commit: many callers' writes share one transaction and one commit.

Why by hand: SQLite allows one writer at a time, and a commit (with its WAL write, and an fsync
in ``full`` mode) is the expensive part of a small write. Callers on many gRPC threads queue
their write and wait for it. The first waiter that finds nobody committing becomes the *leader*:
on its own thread it runs everything queued, in order, in one transaction, commits once, and
wakes the others (if one write fails, the batch is run again with a SAVEPOINT per write, so one
failure does not undo the others). A caller returns only after its write is durable, at the
cost of one commit per batch rather than one per call, and an uncontended caller commits its
own write without handing it to another thread (a thread hand-off under the GIL costs more than
a small SQLite write). A background thread commits writes that nobody waits for
(``add_done_callback`` wakes it at once; otherwise it looks every ``_IDLE_POLL_SECONDS``).

Reads use one connection per thread (WAL lets them run beside the writer).
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Generic, TypeVar

from llmopt import errors
from llmopt.storage.datadir import open_private

T = TypeVar("T")
# A schema migration: an SQL script, or a function run on the writer connection.
Migration = str | Callable[[sqlite3.Connection], None]
log = logging.getLogger("llmopt.storage")

_IDLE_POLL_SECONDS = 0.05


class WriteFuture(Generic[T]):
    """The outcome of a queued write. Waiting on it commits the queue when nobody else is.

    Not ``concurrent.futures.Future``: that one builds a Condition (an RLock and a Python-level
    waiter list) per future and takes it on every call, and a write on the request path waits on
    one per request. Here a plain lock, held until the write is finished, is the whole signal:
    a waiter acquires it (blocking without the GIL) and hands it straight on.
    """

    __slots__ = ("_callbacks", "_db", "_done", "_exception", "_finished", "_result")

    def __init__(self, db: Database) -> None:
        self._db = db
        self._finished = threading.Lock()
        self._finished.acquire()
        self._done = False
        self._result: Any = None
        self._exception: BaseException | None = None
        self._callbacks: list[Callable[[WriteFuture[T]], object]] | None = []

    @classmethod
    def completed(cls, result: T) -> WriteFuture[T]:
        """A future for a write already durable by other means (a journal record)."""
        future: WriteFuture[T] = cls.__new__(cls)
        future._db = None  # type: ignore[assignment]  # never asked to lead: it is done
        future._finished = _RELEASED
        future._done = True
        future._result = result
        future._exception = None
        future._callbacks = None
        return future

    def done(self) -> bool:
        return self._done

    def result(self, timeout: float | None = None) -> T:
        """The write's result once it is durable; its exception re-raised if it failed."""
        exc = self.exception(timeout)
        if exc is not None:
            raise exc
        return self._result  # type: ignore[no-any-return]

    def exception(self, timeout: float | None = None) -> BaseException | None:
        """None once the write is durable, or why it failed."""
        if not self._done:
            self._db._lead()
            if not self._finished.acquire(timeout=-1 if timeout is None else timeout):
                raise TimeoutError(f"write not finished within {timeout} s")
            self._finished.release()  # let any other waiter through
        return self._exception

    def add_done_callback(self, fn: Callable[[WriteFuture[T]], object]) -> None:
        """Call ``fn(self)`` once finished (at once if it is); nobody may wait for this write,
        so it also wakes the background committer."""
        with _CALLBACKS:
            if self._callbacks is not None:
                self._callbacks.append(fn)
                self._db._kick.set()
                return
        fn(self)

    def set_result(self, result: T) -> None:
        self._result = result
        self._finish()

    def set_exception(self, exc: BaseException) -> None:
        self._exception = exc
        self._finish()

    def _finish(self) -> None:
        self._done = True
        self._finished.release()
        with _CALLBACKS:
            callbacks, self._callbacks = self._callbacks, None
        for fn in callbacks or ():
            try:
                fn(self)
            except Exception:
                log.exception("write callback failed")


# The finish signal of every future born finished: never acquired, since it is done.
_RELEASED = threading.Lock()

# Guards the callback lists of every WriteFuture: taken only by the committer on finishing and
# by callers adding a callback (background writes), never on the waiting path.
_CALLBACKS = threading.Lock()


class Database:
    """One SQLite file: schema migrations, group-committed writes, per-thread reads.

    >>> import tempfile, pathlib
    >>> db = Database(pathlib.Path(tempfile.mkdtemp()) / "x.db",
    ...               migrations=["CREATE TABLE kv (k TEXT PRIMARY KEY, v TEXT)"])
    >>> db.write(lambda c: c.execute("INSERT INTO kv VALUES ('a', '1')").rowcount)
    1
    >>> db.read(lambda c: c.execute("SELECT v FROM kv").fetchone()[0])
    '1'
    >>> db.close()
    """

    def __init__(
        self,
        path: Path,
        *,
        migrations: Sequence[Migration] = (),
        synchronous: str = "normal",
        max_batch: int = 1024,
    ) -> None:
        if synchronous not in ("normal", "full"):
            raise ValueError(f"synchronous must be 'normal' or 'full', got {synchronous!r}")
        self.path = Path(path)
        self._synchronous = synchronous.upper()
        self._max_batch = max_batch
        self._pending: deque[tuple[Callable[[sqlite3.Connection], Any], WriteFuture[Any]]] = deque()
        self._leader = threading.Lock()
        self._kick = threading.Event()
        self._local = threading.local()
        self._readers: list[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()
        self._closed = False
        # Commits that failed (disk full, I/O error): a journal applied here keeps its records
        # while this is non-zero, since they may be the only copy.
        self.commit_failures = 0
        self._writer_conn = self._connect()
        self._migrate(migrations)
        self._writer = threading.Thread(
            target=self._write_loop, name=f"sqlite-writer:{self.path.name}", daemon=True
        )
        self._writer.start()

    def _connect(self) -> sqlite3.Connection:
        if not self.path.exists():
            # Created 0600 here rather than by SQLite (0644 less the umask); SQLite gives its
            # -wal and -shm files the mode of the database file.
            os.close(open_private(self.path, os.O_RDWR | os.O_CREAT))
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={self._synchronous}")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute("PRAGMA busy_timeout=10000")
        return conn

    def _migrate(self, migrations: Sequence[Migration]) -> None:
        """Apply the migrations past ``PRAGMA user_version``, each in its own transaction: an SQL
        script, or a function of the connection for changes SQL cannot express (re-encoding)."""
        conn = self._writer_conn
        current = conn.execute("PRAGMA user_version").fetchone()[0]
        for number, script in enumerate(migrations, start=1):
            if number <= current:
                continue
            conn.execute("BEGIN IMMEDIATE")
            try:
                if callable(script):
                    script(conn)
                else:
                    for statement in statements(script):
                        conn.execute(statement)
                conn.execute(f"PRAGMA user_version={number}")
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise

    # -- writes ---------------------------------------------------------------------------------

    def write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn`` in a write transaction; return its result once the transaction is committed.

        ``fn`` runs inside a savepoint, on whichever thread commits the batch: if it raises, its
        changes are rolled back, the exception is re-raised here, and other callers' writes in the
        batch still commit. ``fn`` must only touch the connection (no locks of its own).
        """
        return self.write_async(fn).result()

    @property
    def closed(self) -> bool:
        return self._closed

    def write_async(self, fn: Callable[[sqlite3.Connection], T]) -> WriteFuture[T]:
        """Queue ``fn``; writes run in the order they were queued. Waiting on the future (or
        adding a done callback) gets it committed."""
        if self._closed:
            raise errors.Unavailable(f"database {self.path.name} is closed")
        future: WriteFuture[T] = WriteFuture(self)
        self._pending.append((fn, future))
        return future

    def _lead(self) -> None:
        """Commit everything queued, on this thread, unless another thread is committing now.

        A thread that finds the leader lock taken leaves: the leader empties the queue before it
        lets go, and looks again after letting go, so an item queued at any moment is committed
        by someone.
        """
        pending = self._pending
        while pending:
            if not self._leader.acquire(blocking=False):
                return
            try:
                self._commit_queued()
            finally:
                self._leader.release()

    def _commit_queued(self) -> None:
        """Run the queue in batches of at most ``max_batch`` (the caller holds the leader lock)."""
        pending = self._pending
        while pending:
            batch: list[tuple[Callable[[sqlite3.Connection], Any], WriteFuture[Any]]] = []
            while pending and len(batch) < self._max_batch:
                batch.append(pending.popleft())
            self._run_batch(batch)

    def _write_loop(self) -> None:
        while not self._closed:
            self._kick.wait(_IDLE_POLL_SECONDS)
            self._kick.clear()
            self._lead()

    def _run_batch(self, batch: list[tuple[Callable[..., Any], WriteFuture[Any]]]) -> None:
        """One transaction for the batch. Writes are run bare first: a savepoint per write costs
        two more statements, and each statement lets go of the GIL, which under load means a
        thread hand-off. Only if one write fails is the transaction rolled back and the batch
        run again with a savepoint per write, so the failure undoes that write alone."""
        conn = self._writer_conn
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                results = [fn(conn) for fn, _ in batch]
            except BaseException as exc:
                conn.execute("ROLLBACK")
                if len(batch) == 1:
                    batch[0][1].set_exception(exc)
                    return
                outcomes = Database._run_isolated(conn, batch)
            else:
                conn.execute("COMMIT")
                outcomes = [(True, r) for r in results]
        except BaseException as exc:  # the commit itself failed: nothing in the batch is durable
            log.error("committing %d writes failed: %s", len(batch), exc)
            self.commit_failures += 1
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            for _, future in batch:
                future.set_exception(exc)
            return
        for (_, future), (ok, value) in zip(batch, outcomes, strict=True):
            if ok:
                future.set_result(value)
            else:
                future.set_exception(value)

    @staticmethod
    def _run_isolated(
        conn: sqlite3.Connection, batch: list[tuple[Callable[..., Any], WriteFuture[Any]]]
    ) -> list[tuple[bool, Any]]:
        """The batch again, each write in its own savepoint; committed (the caller rolls back
        if the commit fails)."""
        outcomes: list[tuple[bool, Any]] = []
        conn.execute("BEGIN IMMEDIATE")
        for fn, _ in batch:
            conn.execute("SAVEPOINT item")
            try:
                result = fn(conn)
            except BaseException as exc:
                conn.execute("ROLLBACK TO item")
                conn.execute("RELEASE item")
                outcomes.append((False, exc))
            else:
                conn.execute("RELEASE item")
                outcomes.append((True, result))
        conn.execute("COMMIT")
        return outcomes

    # -- reads ----------------------------------------------------------------------------------

    def read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn`` on this thread's read connection, in one read transaction."""
        conn = getattr(self._local, "conn", None)
        if conn is None:
            if self._closed:
                raise errors.Unavailable(f"database {self.path.name} is closed")
            conn = self._connect()
            conn.execute("PRAGMA query_only=ON")
            self._local.conn = conn
            with self._readers_lock:
                self._readers.append(conn)
        conn.execute("BEGIN")
        try:
            return fn(conn)
        finally:
            conn.execute("COMMIT")

    # -- lifecycle ------------------------------------------------------------------------------

    def close(self) -> None:
        """Finish queued writes, stop the writer, checkpoint the WAL and close every connection."""
        if self._closed:
            return
        self._closed = True
        self._kick.set()
        self._writer.join()
        with self._leader:  # nobody is committing any more
            self._commit_queued()
        try:
            self._writer_conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            self._writer_conn.close()
        with self._readers_lock:
            for conn in self._readers:
                conn.close()
            self._readers.clear()


def statements(script: str) -> list[str]:
    """Split a migration script into statements (sqlite3.complete_statement knows the grammar)."""
    out: list[str] = []
    buf = ""
    for line in script.splitlines(keepends=True):
        buf += line
        if sqlite3.complete_statement(buf):
            out.append(buf.strip())
            buf = ""
    if buf.strip():
        out.append(buf.strip())
    return out

"""The audit log: one SQLite table of admin RPCs, newest first, paged and filtered.

``record`` returns once its entry is committed (group commit: concurrent admin RPCs share one
commit), so an RPC the server answered has its entry on disk, even after kill -9. The database
runs with ``synchronous=full`` by default whatever the other stores use: admin RPCs are rare, and
an audit trail that loses its last entries to a power cut would miss exactly the ones asked about.
"""

from __future__ import annotations

import datetime as dt
import math
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from llmopt import errors
from llmopt.registry import paging
from llmopt.storage import Database, Migration, private_folder

PAGE_KIND = "audit"

MIGRATIONS: list[Migration] = [
    """
    CREATE TABLE entries (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        time REAL NOT NULL,
        principal TEXT NOT NULL,
        method TEXT NOT NULL,
        target TEXT NOT NULL,
        code TEXT NOT NULL
    );
    CREATE INDEX entries_time ON entries (time);
    CREATE INDEX entries_principal ON entries (principal, id);
    CREATE INDEX entries_target ON entries (target, id);
    """,
]


@dataclass(frozen=True)
class AuditEntry:
    """One admin RPC: who (``principal``, "" when nobody authenticated), what (``method``, a full
    name), on what (``target``), how it ended (``code``, a status code's name such as ``OK`` or
    ``PERMISSION_DENIED``) and when (``time``, seconds since the epoch, when it finished)."""

    id: int
    time: float
    principal: str
    method: str
    target: str
    code: str


class AuditLog:
    """Durable audit entries under ``folder`` (``audit.db``; the folder is created 0700).

    >>> import tempfile, pathlib
    >>> log = AuditLog(pathlib.Path(tempfile.mkdtemp()))
    >>> log.record("ci-bot", "/llmopt.v1.Registry/Promote", "quality-predictor", "OK", 1.0e9)
    >>> entries, next_token = log.query(principal="ci-bot")
    >>> [(e.method, e.target, e.code) for e in entries], next_token
    ([('/llmopt.v1.Registry/Promote', 'quality-predictor', 'OK')], '')
    >>> log.close()
    """

    def __init__(self, folder: Path, *, synchronous: str = "full") -> None:
        self.path = private_folder(Path(folder)) / "audit.db"
        self._db = Database(self.path, migrations=MIGRATIONS, synchronous=synchronous)

    def record(
        self, principal: str, method: str, target: str, code: str, time_s: float | None = None
    ) -> None:
        """Append one entry; returns once it is durable. ``time_s`` None: now."""
        at = time.time() if time_s is None else float(time_s)
        if not math.isfinite(at):
            raise errors.invalid("time", time_s, "a finite number of seconds since the epoch")
        row = (at, principal, method, target, code)
        self._db.write(
            lambda c: c.execute(
                "INSERT INTO entries (time, principal, method, target, code)"
                " VALUES (?, ?, ?, ?, ?)",
                row,
            )
        )

    def query(
        self,
        principal: str = "",
        method: str = "",
        target: str = "",
        since: float | dt.datetime | None = None,
        until: float | dt.datetime | None = None,
        page_size: int = 0,
        page_token: str = "",
    ) -> tuple[list[AuditEntry], str]:
        """Entries newest first, with the token of the next page ("" after the last).

        Empty filters match everything; ``principal``, ``method`` and ``target`` match exactly;
        ``since`` is inclusive and ``until`` exclusive (seconds since the epoch, or a datetime).
        A page token comes from a previous page of this listing; it keeps its place even while
        entries are added.
        """
        size = paging.page_size(page_size)
        after = paging.decode_token(page_token, PAGE_KIND)
        if after is not None and not isinstance(after, int):
            raise errors.invalid("page.page_token", page_token, "a token from a previous page")
        start, end = _seconds("since", since), _seconds("until", until)
        clauses: list[str] = []
        args: list[object] = []
        for column, value in (("principal", principal), ("method", method), ("target", target)):
            if value:
                clauses.append(f"{column} = ?")
                args.append(value)
        if start is not None:
            clauses.append("time >= ?")
            args.append(start)
        if end is not None:
            clauses.append("time < ?")
            args.append(end)
        if after is not None:
            clauses.append("id < ?")
            args.append(after)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        sql = (
            "SELECT id, time, principal, method, target, code FROM entries "
            f"{where} ORDER BY id DESC LIMIT ?"
        )

        def rows(c: sqlite3.Connection) -> list[tuple[int, float, str, str, str, str]]:
            return c.execute(sql, (*args, size + 1)).fetchall()

        found = [AuditEntry(*row) for row in self._db.read(rows)]
        if len(found) <= size:
            return found, ""
        page = found[:size]
        return page, paging.encode_token(PAGE_KIND, page[-1].id)

    def warm_up(self) -> None:
        self._db.read(lambda c: c.execute("SELECT 1 FROM entries LIMIT 1").fetchall())

    def close(self) -> None:
        self._db.close()


def _seconds(field: str, value: float | dt.datetime | None) -> float | None:
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            raise errors.invalid(field, value, "a datetime with a time zone")
        return value.timestamp()
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise errors.invalid(field, value, "seconds since the epoch, or a datetime")
    return float(value)

"""AuditLog: record and query, the filters, paging, durability across a reopen and a kill."""

from __future__ import annotations

import datetime as dt
import os
import stat
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

import llmopt.audit.log
from llmopt import errors
from llmopt.audit import AuditLog

PROMOTE = "/llmopt.v1.Registry/Promote"
SET_ALIAS = "/llmopt.v1.Registry/SetAlias"
DELETE_BANDIT = "/llmopt.v1.Bandits/DeleteBandit"


@pytest.fixture
def log(tmp_path: Path) -> Iterator[AuditLog]:
    audit = AuditLog(tmp_path / "audit")
    yield audit
    audit.close()


def seed(log: AuditLog) -> None:
    log.record("alice", PROMOTE, "m1", "OK", 100.0)
    log.record("bob", SET_ALIAS, "m1@champion", "OK", 200.0)
    log.record("alice", DELETE_BANDIT, "b1", "NOT_FOUND", 300.0)
    log.record("", PROMOTE, "m2", "PERMISSION_DENIED", 400.0)


def rows(entries: list[llmopt.audit.AuditEntry]) -> list[tuple[str, str, str, str, float]]:
    return [(e.principal, e.method, e.target, e.code, e.time) for e in entries]


def test_record_then_query_newest_first(log: AuditLog) -> None:
    seed(log)
    entries, token = log.query()
    assert token == ""
    assert rows(entries) == [
        ("", PROMOTE, "m2", "PERMISSION_DENIED", 400.0),
        ("alice", DELETE_BANDIT, "b1", "NOT_FOUND", 300.0),
        ("bob", SET_ALIAS, "m1@champion", "OK", 200.0),
        ("alice", PROMOTE, "m1", "OK", 100.0),
    ]


def test_a_record_without_a_time_is_now(log: AuditLog) -> None:
    before = dt.datetime.now(dt.UTC).timestamp()
    log.record("alice", PROMOTE, "m1", "OK")
    (entry,), _ = log.query()
    assert before - 1 <= entry.time <= dt.datetime.now(dt.UTC).timestamp() + 1


@pytest.mark.parametrize(
    ("filters", "targets"),
    [
        ({"principal": "alice"}, ["b1", "m1"]),
        ({"principal": "nobody"}, []),
        ({"method": PROMOTE}, ["m2", "m1"]),
        ({"target": "m1@champion"}, ["m1@champion"]),
        ({"principal": "alice", "method": PROMOTE}, ["m1"]),
        ({"since": 200.0}, ["m2", "b1", "m1@champion"]),
        ({"until": 300.0}, ["m1@champion", "m1"]),
        ({"since": 200.0, "until": 400.0}, ["b1", "m1@champion"]),
        ({"since": dt.datetime.fromtimestamp(300, dt.UTC)}, ["m2", "b1"]),
    ],
)
def test_filters(log: AuditLog, filters: dict[str, object], targets: list[str]) -> None:
    seed(log)
    entries, _ = log.query(**filters)  # type: ignore[arg-type]
    assert [e.target for e in entries] == targets


def test_pages_cover_every_entry_once_even_while_entries_are_added(log: AuditLog) -> None:
    for i in range(7):
        log.record("alice", PROMOTE, f"m{i}", "OK", float(i))
    seen: list[str] = []
    entries, token = log.query(page_size=3)
    seen += [e.target for e in entries]
    log.record("alice", PROMOTE, "later", "OK", 99.0)  # newer: not on the pages that follow
    while token:
        entries, token = log.query(page_size=3, page_token=token)
        assert len(entries) <= 3
        seen += [e.target for e in entries]
    assert seen == [f"m{i}" for i in reversed(range(7))]


def test_a_page_exactly_full_has_no_next_token(log: AuditLog) -> None:
    seed(log)
    entries, token = log.query(page_size=4)
    assert len(entries) == 4 and token == ""


def test_paging_keeps_the_filter(log: AuditLog) -> None:
    seed(log)
    first, token = log.query(principal="alice", page_size=1)
    second, end = log.query(principal="alice", page_size=1, page_token=token)
    assert [e.target for e in first + second] == ["b1", "m1"] and end == ""


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"page_size": -1}, "page.page_size"),
        ({"page_size": 1001}, "page.page_size"),
        ({"page_token": "not a token"}, "page.page_token"),
        ({"since": float("nan")}, "since"),
        ({"until": dt.datetime(2026, 1, 1)}, "until"),  # naive: refused
    ],
)
def test_bad_queries_name_the_field(log: AuditLog, kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(errors.InvalidArgument, match=field.replace(".", r"\.")):
        log.query(**kwargs)  # type: ignore[arg-type]


def test_a_token_of_another_listing_is_refused(log: AuditLog) -> None:
    from llmopt.registry.paging import encode_token

    with pytest.raises(errors.InvalidArgument, match="page_token"):
        log.query(page_token=encode_token("models", "m1"))


def test_entries_survive_a_reopen(tmp_path: Path) -> None:
    first = AuditLog(tmp_path / "audit")
    seed(first)
    first.close()
    again = AuditLog(tmp_path / "audit")
    try:
        entries, _ = again.query()
        assert len(entries) == 4
        again.record("carol", PROMOTE, "m3", "OK", 500.0)
        assert [e.target for e in again.query(page_size=2)[0]] == ["m3", "m2"]
    finally:
        again.close()


def test_a_recorded_entry_survives_kill_9(tmp_path: Path) -> None:
    """``record`` returned, then the process died without closing anything."""
    folder = tmp_path / "audit"
    script = textwrap.dedent(
        f"""
        import os, signal
        from llmopt.audit import AuditLog
        log = AuditLog({str(folder)!r})
        log.record("alice", {PROMOTE!r}, "m1", "OK", 100.0)
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], check=False, timeout=60)
    assert proc.returncode == -9
    log = AuditLog(folder)
    try:
        assert rows(log.query()[0]) == [("alice", PROMOTE, "m1", "OK", 100.0)]
    finally:
        log.close()


def test_files_are_private(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        log = AuditLog(tmp_path / "audit")
        log.record("alice", PROMOTE, "m1", "OK", 1.0)
        log.close()
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "audit" / "audit.db").stat().st_mode) == 0o600


def test_docstring_examples() -> None:
    import doctest

    import llmopt.audit.targets

    for module in (llmopt.audit.log, llmopt.audit.targets):
        failures, tried = doctest.testmod(module)
        assert tried > 0 and failures == 0, module.__name__

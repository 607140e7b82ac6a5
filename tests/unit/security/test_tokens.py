"""llmopt.security.tokens: the token file, its errors and its reload."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from llmopt.security import AuthConfigError, Principal, hash_token
from llmopt.security.tokens import TokenFile, parse_tokens

CI = hash_token("ci-secret")
ADMIN = hash_token("admin-secret")


def test_entries_comments_and_blank_lines():
    table = parse_tokens(
        f"# the CI bot\n\n{CI} ci-bot read,decide  # trailing comment\n"
        f"  {ADMIN.upper()}\tops admin\nsubject:agent build-agent admin,read\nsubject:cn2 read\n",
        "tokens",
    )
    assert table.by_hash == {
        CI: Principal("ci-bot", frozenset({"read", "decide"}), "token"),
        ADMIN: Principal("ops", frozenset({"admin"}), "token"),
    }
    assert table.by_subject == {
        "agent": Principal("build-agent", frozenset({"admin", "read"}), "mtls"),
        "cn2": Principal("cn2", frozenset({"read"}), "mtls"),
    }


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (f"{CI} ci-bot", "got 2 columns"),
        (f"{CI} ci-bot read extra", "got 4 columns"),
        ("ci-secret ci-bot read", "64 hex digits"),
        (f"{CI} ci-bot read,root", "unknown scope 'root'"),
        ("subject: read", "expected 'subject:<common name>"),
    ],
)
def test_a_bad_line_names_the_file_and_line(line: str, expected: str):
    with pytest.raises(AuthConfigError) as caught:
        parse_tokens(f"# ok\n{ADMIN} ops admin\n{line}\n", "/etc/tokens")
    assert str(caught.value).startswith("/etc/tokens line 3: ")
    assert expected in str(caught.value)
    assert "ci-secret" not in str(caught.value)  # a token pasted in clear is not echoed


def test_a_hash_listed_twice_is_refused():
    with pytest.raises(AuthConfigError, match="line 2: the same token hash"):
        parse_tokens(f"{CI} a read\n{CI} b admin\n", "f")


def test_an_unreadable_file_is_a_config_error(tmp_path: Path):
    with pytest.raises(AuthConfigError, match="cannot be read"):
        TokenFile(tmp_path / "absent")


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _rewrite(path: Path, text: str) -> None:
    before = path.stat().st_mtime_ns
    path.write_text(text)
    os.utime(path, ns=(before + 10**9, before + 10**9))  # a change whatever the fs's resolution


def test_reload_on_change_at_most_once_a_second(tmp_path: Path):
    path = tmp_path / "tokens"
    path.write_text(f"{CI} ci-bot read\n")
    clock = Clock()
    tokens = TokenFile(path, clock=clock)
    assert set(tokens.current().by_hash) == {CI}
    _rewrite(path, f"{ADMIN} ops admin\n")
    clock.now += 0.5
    assert set(tokens.current().by_hash) == {CI}  # not looked at yet
    clock.now += 0.5
    assert set(tokens.current().by_hash) == {ADMIN}


def test_a_reload_that_fails_keeps_the_old_table_and_logs(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    path = tmp_path / "tokens"
    path.write_text(f"{CI} ci-bot read\n")
    clock = Clock()
    tokens = TokenFile(path, clock=clock)
    _rewrite(path, f"{ADMIN} ops\n")
    clock.now += 1
    with caplog.at_level(logging.ERROR, logger="llmopt.security"):
        assert set(tokens.current().by_hash) == {CI}
    assert any("line 1" in r.getMessage() for r in caplog.records)
    _rewrite(path, f"{ADMIN} ops admin\n")  # fixed: taken up
    clock.now += 1
    assert set(tokens.current().by_hash) == {ADMIN}


def test_tokens_are_held_by_hash_only():
    """The table is keyed by sha256: a lookup compares hashes, never the token's bytes, and no
    token is held in clear."""
    table = parse_tokens(f"{CI} ci-bot read\n", "f")
    assert list(table.by_hash) == [CI]
    assert "ci-secret" not in repr(table)

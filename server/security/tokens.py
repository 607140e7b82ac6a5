"""The token file: who holds which token, by the token's sha256, never the token itself.

One entry a line, ``#`` starting a comment::

    # <sha256 of the token, hex> <principal> <scope>[,<scope>...]
    9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08 ci-bot read,decide
    # a client certificate whose subject common name is build-agent (mTLS):
    subject:build-agent build-agent admin

A ``subject:<CN>`` entry may leave out the principal (``subject:<CN> <scopes>``): the common
name is the principal then. ``TokenFile`` re-reads the file when its size or modification time
changes, looking at most once a second; a file that no longer parses keeps the old table.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from llmopt.security.principal import Principal
from llmopt.security.scopes import SCOPES

log = logging.getLogger("llmopt.security")

SUBJECT_PREFIX = "subject:"
CHECK_INTERVAL_S = 1.0
_HEX = frozenset("0123456789abcdef")


class AuthConfigError(ValueError):
    """An auth file (token file, JWT key) that cannot be used; the message names the file and,
    for a token file, the line. At start-up the server exits 2 with it."""


def hash_token(token: str) -> str:
    """The sha256 of ``token``, lowercase hex: what the token file stores."""
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class TokenTable:
    """A parsed token file: principals by token hash and by certificate subject."""

    by_hash: dict[str, Principal] = field(default_factory=dict)
    by_subject: dict[str, Principal] = field(default_factory=dict)


def _scopes(text: str, where: str) -> frozenset[str]:
    scopes = frozenset(s.strip() for s in text.split(","))
    unknown = sorted(s for s in scopes if s not in SCOPES)
    if unknown:
        raise AuthConfigError(
            f"{where}: unknown scope {unknown[0]!r}: expected a comma-separated list of "
            f"{', '.join(SCOPES)}"
        )
    return scopes


def parse_tokens(text: str, source: str) -> TokenTable:
    """The table of a token file's ``text``; ``source`` names the file in errors."""
    table = TokenTable()
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        where = f"{source} line {number}"
        columns = line.split()
        key = columns[0]
        if key.startswith(SUBJECT_PREFIX):
            subject = key[len(SUBJECT_PREFIX) :]
            if not subject or len(columns) not in (2, 3):
                raise AuthConfigError(
                    f"{where}: expected 'subject:<common name> [<principal>] <scope>[,<scope>...]'"
                )
            name = columns[1] if len(columns) == 3 else subject
            if subject in table.by_subject:
                raise AuthConfigError(f"{where}: subject {subject!r} is listed twice")
            table.by_subject[subject] = Principal(name, _scopes(columns[-1], where), "mtls")
            continue
        if len(columns) != 3:
            raise AuthConfigError(
                f"{where}: expected '<sha256 of the token, hex> <principal> <scope>[,<scope>...]'"
                f", got {len(columns)} columns"
            )
        digest = key.lower()
        if len(digest) != 64 or not set(digest) <= _HEX:
            # The column is not echoed: a token pasted in clear by mistake stays out of the log.
            raise AuthConfigError(
                f"{where}: the first column must be the token's sha256 as 64 hex digits "
                f"(got {len(key)} characters); tokens are never stored in clear"
            )
        if digest in table.by_hash:
            raise AuthConfigError(f"{where}: the same token hash is listed twice")
        table.by_hash[digest] = Principal(columns[1], _scopes(columns[2], where), "token")
    return table


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise AuthConfigError(f"token file {path}: cannot be read: {exc}") from None


class TokenFile:
    """A token file kept current: re-read when it changes, at most one look a second."""

    def __init__(self, path: Path, clock: Callable[[], float] = time.monotonic) -> None:
        self.path = Path(path)
        self._clock = clock
        self._lock = threading.Lock()
        self._stamp = self._stat()
        self.table = parse_tokens(_read(self.path), str(self.path))
        self._checked = clock()

    def _stat(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def current(self) -> TokenTable:
        """The table, re-read first when a second has passed and the file changed."""
        now = self._clock()
        if now - self._checked >= CHECK_INTERVAL_S and self._lock.acquire(blocking=False):
            try:
                self._checked = now
                stamp = self._stat()
                if stamp is not None and stamp != self._stamp:
                    self._reload(stamp)
            finally:
                self._lock.release()
        return self.table

    def _reload(self, stamp: tuple[int, int, int]) -> None:
        try:
            table = parse_tokens(_read(self.path), str(self.path))
        except AuthConfigError as exc:
            log.error("token file not reloaded, the previous table stays in force: %s", exc)
            self._stamp = stamp  # logged once per change, not once a second
            return
        self._stamp = stamp
        self.table = table
        log.info(
            "token file %s reloaded: %d tokens, %d subjects",
            self.path,
            len(table.by_hash),
            len(table.by_subject),
        )

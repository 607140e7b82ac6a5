"""The data dir's ownership and the modes of what is created in it."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from llmopt.storage import Database, DataDir, open_private, private_folder


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def no_umask() -> Iterator[None]:
    """Umask 0: a mode left to the umask would come out 0644/0755 or wider."""
    old = os.umask(0)
    yield
    os.umask(old)


@pytest.mark.usefixtures("no_umask")
def test_private_folder_makes_it_and_its_missing_parents_0700(tmp_path: Path) -> None:
    (tmp_path / "kept").mkdir(0o755)
    made = private_folder(tmp_path / "kept" / "a" / "b")
    assert made == tmp_path / "kept" / "a" / "b" and made.is_dir()
    assert (mode(tmp_path / "kept" / "a"), mode(made)) == (0o700, 0o700)
    assert mode(tmp_path / "kept") == 0o755  # what existed is left as it was
    assert private_folder(made) == made  # again: nothing to do


@pytest.mark.usefixtures("no_umask")
def test_open_private_creates_0600_and_leaves_an_existing_file_alone(tmp_path: Path) -> None:
    os.close(open_private(tmp_path / "new", os.O_RDWR | os.O_CREAT))
    assert mode(tmp_path / "new") == 0o600
    (tmp_path / "old").write_bytes(b"")
    (tmp_path / "old").chmod(0o640)
    os.close(open_private(tmp_path / "old", os.O_RDWR | os.O_CREAT))
    assert mode(tmp_path / "old") == 0o640


@pytest.mark.usefixtures("no_umask")
def test_a_data_dir_and_its_lock_are_private(tmp_path: Path) -> None:
    dd = DataDir(tmp_path / "data")
    try:
        assert (mode(dd.root), mode(dd.root / "LOCK")) == (0o700, 0o600)
        folder = dd.folder("component")
        assert folder == dd.path("component") and mode(folder) == 0o700
    finally:
        dd.close()


@pytest.mark.usefixtures("no_umask")
def test_a_database_and_its_wal_and_shm_files_are_0600(tmp_path: Path) -> None:
    db = Database(tmp_path / "x.db", migrations=["CREATE TABLE t (a INTEGER)"])
    try:
        db.write(lambda c: c.execute("INSERT INTO t VALUES (1)"))
        assert db.read(lambda c: c.execute("SELECT a FROM t").fetchall()) == [(1,)]
        files = sorted(p.name for p in tmp_path.iterdir())
        assert files == ["x.db", "x.db-shm", "x.db-wal"]
        assert {mode(tmp_path / name) for name in files} == {0o600}
    finally:
        db.close()


@pytest.mark.parametrize("module", ["llmopt.storage.journal", "llmopt.storage.sqlite"])
def test_docstring_examples(module: str) -> None:
    import doctest
    import importlib

    failures, tried = doctest.testmod(importlib.import_module(module))
    assert tried > 0 and failures == 0

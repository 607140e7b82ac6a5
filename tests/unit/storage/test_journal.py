import logging
import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from llmopt.storage.journal import Journal


def opened(path: Path, **kw) -> Journal:
    j = Journal(path, "j", **kw)
    j.open()
    return j


def test_records_come_back_in_order_across_segments(tmp_path: Path) -> None:
    j = opened(tmp_path, segment_bytes=256)
    payloads = [f"record {i}".encode() * (1 + i % 5) for i in range(100)]
    sealed = [j.append(p) for p in payloads]
    j.close()
    assert len(j.segments()) > 5  # the small segments filled and were sealed
    assert [n for n in sealed if n] == [n for n, _ in j.segments()][:-1]
    assert list(Journal(tmp_path, "j").replay()) == payloads


def test_a_sealed_segment_ends_before_the_record_that_sealed_it(tmp_path: Path) -> None:
    j = opened(tmp_path, segment_bytes=64)
    assert j.append(b"a" * 24) == 0
    assert j.append(b"b" * 24) == 1  # did not fit after the first: segment 1 sealed
    assert j.segment == 2
    j.close()
    (first, _), (second, path2) = j.segments()
    assert (first, second) == (1, 2)
    assert list(Journal(tmp_path, "j").replay()) == [b"a" * 24, b"b" * 24]
    path2.unlink()
    assert list(Journal(tmp_path, "j").replay()) == [b"a" * 24]


def test_a_record_larger_than_a_segment_gets_a_segment_of_its_own(tmp_path: Path) -> None:
    j = opened(tmp_path, segment_bytes=64)
    big = bytes(range(256)) * 10
    j.append(b"small")
    j.append(big)
    j.append(b"after")
    j.close()
    assert list(Journal(tmp_path, "j").replay()) == [b"small", big, b"after"]


def test_a_torn_record_ends_the_replay_of_its_segment(tmp_path: Path, caplog) -> None:
    j = opened(tmp_path)
    for p in (b"first", b"second", b"third"):
        j.append(p)
    j.close()
    ((_, path),) = j.segments()
    data = bytearray(path.read_bytes())
    data[data.index(b"third") + 2] ^= 0xFF  # the process died while copying it
    path.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING, logger="llmopt.storage"):
        assert list(Journal(tmp_path, "j").replay()) == [b"first", b"second"]
    assert "torn or corrupt" in caplog.text


def test_the_unwritten_rest_of_a_segment_ends_it_quietly(tmp_path: Path, caplog) -> None:
    j = opened(tmp_path, segment_bytes=1 << 20)
    j.append(b"only")
    # Read while still open, as a crash leaves it: the file is its full size, zeros after.
    ((_, path),) = j.segments()
    assert path.stat().st_size == 1 << 20
    with caplog.at_level(logging.WARNING, logger="llmopt.storage"):
        assert list(Journal(tmp_path, "j").replay()) == [b"only"]
    assert caplog.text == ""
    j.close()


def test_remove_segments_keeps_the_one_being_written(tmp_path: Path) -> None:
    j = opened(tmp_path, segment_bytes=64)
    for _ in range(6):
        j.append(b"x" * 30)
    current = j.segment
    j.remove_segments(current)
    assert [n for n, _ in j.segments()] == [current]
    j.append(b"still")
    j.close()
    assert list(Journal(tmp_path, "j").replay())[-1] == b"still"


def test_a_reopened_journal_begins_a_new_segment(tmp_path: Path) -> None:
    j = opened(tmp_path)
    j.append(b"one")
    j.close()
    again = Journal(tmp_path, "j")
    assert list(again.replay()) == [b"one"]
    again.open()
    assert again.segment == 2  # never appends after a possibly torn tail
    again.append(b"two")
    again.close()
    assert list(Journal(tmp_path, "j").replay()) == [b"one", b"two"]


def test_fsync_mode_appends_are_readable(tmp_path: Path) -> None:
    j = opened(tmp_path, fsync=True, segment_bytes=128)
    for i in range(20):
        j.append(f"synced {i}".encode())
    j.close()
    assert list(Journal(tmp_path, "j").replay()) == [f"synced {i}".encode() for i in range(20)]


def test_appends_need_an_open_journal(tmp_path: Path) -> None:
    j = Journal(tmp_path, "j")
    with pytest.raises(RuntimeError, match="not open"):
        j.append(b"early")
    j.open()
    j.close()
    with pytest.raises(RuntimeError, match="not open"):
        j.append(b"late")


def test_other_names_and_files_are_left_alone(tmp_path: Path) -> None:
    (tmp_path / "j-notanumber.journal").write_bytes(b"junk")
    (tmp_path / "k-00000001.journal").write_bytes(b"junk")
    j = opened(tmp_path)
    j.append(b"mine")
    j.close()
    assert [n for n, _ in j.segments()] == [1]
    assert list(Journal(tmp_path, "j").replay()) == [b"mine"]


def test_pages_unmapped_behind_the_writer_keep_their_records(tmp_path: Path) -> None:
    j = opened(tmp_path, segment_bytes=8 << 20)
    payloads = [i.to_bytes(4, "little") * 250 for i in range(4000)]  # about 4 MiB
    for p in payloads:
        j.append(p)
    assert j._released >= 3 << 20  # most of what was written is no longer mapped in
    assert list(Journal(tmp_path, "j").replay()) == payloads  # read back while still open
    j.close()
    assert list(Journal(tmp_path, "j").replay()) == payloads


def test_without_fallocate_the_segment_is_sized_by_ftruncate(tmp_path: Path, monkeypatch) -> None:
    from llmopt.storage import journal

    monkeypatch.setattr(journal, "_fallocate", journal._no_fallocate)
    j = opened(tmp_path, segment_bytes=8192)
    j.append(b"still works")
    ((_, path),) = j.segments()
    assert path.stat().st_size == 8192
    j.close()
    assert list(Journal(tmp_path, "j").replay()) == [b"still works"]


def test_a_segment_begins_small_and_doubles_in_place(tmp_path: Path) -> None:
    j = opened(tmp_path, segment_bytes=1 << 20, initial_bytes=4096)
    ((_, path),) = j.segments()
    assert path.stat().st_size == 4096
    payloads = [i.to_bytes(4, "little") * 50 for i in range(1500)]  # about 300 KiB
    sealed = [j.append(p) for p in payloads]
    assert not any(sealed) and len(j.segments()) == 1  # grown, never sealed
    assert path.stat().st_size == 512 * 1024  # 4 KiB doubled seven times
    # Read back while still open, as kill -9 leaves it: every record, then zeros.
    assert list(Journal(tmp_path, "j").replay()) == payloads
    j.close()
    again = Journal(tmp_path, "j", segment_bytes=1 << 20, initial_bytes=4096)
    assert list(again.replay()) == payloads
    again.open()
    again.append(b"after reopening")
    again.close()
    assert list(Journal(tmp_path, "j").replay()) == [*payloads, b"after reopening"]


def test_growth_stops_at_the_segment_maximum_and_seals(tmp_path: Path) -> None:
    j = opened(tmp_path, segment_bytes=16384, initial_bytes=4096)
    payloads = [bytes([i % 251]) * 200 for i in range(300)]  # about 62 KiB
    for p in payloads:
        j.append(p)
    j.close()
    sizes = [path.stat().st_size for _, path in j.segments()]
    assert len(sizes) >= 4 and max(sizes) == 16384
    assert list(Journal(tmp_path, "j").replay()) == payloads


def test_records_written_past_a_growth_survive_kill_9(tmp_path: Path) -> None:
    script = f"""
import os, signal, sys
from pathlib import Path
from llmopt.storage.journal import Journal
j = Journal(Path({str(tmp_path)!r}), "j", segment_bytes=1 << 20, initial_bytes=4096)
j.open()
for i in range(2000):
    j.append(i.to_bytes(4, "little") * 40)
sys.stdout.write("written\\n"); sys.stdout.flush()
os.kill(os.getpid(), signal.SIGKILL)
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=60)
    assert done.returncode == -signal.SIGKILL and done.stdout == b"written\n", done.stderr
    ((_, path),) = Journal(tmp_path, "j").segments()
    assert path.stat().st_size > 4096  # it grew before the kill
    got = list(Journal(tmp_path, "j").replay())
    assert got == [i.to_bytes(4, "little") * 40 for i in range(2000)]


def test_a_fresh_journal_takes_one_megabyte(tmp_path: Path) -> None:
    j = opened(tmp_path)
    j.append(b"x")
    ((_, path),) = j.segments()
    assert path.stat().st_size == 1 << 20
    j.close()


def test_fsync_mode_syncs_each_acknowledged_append(tmp_path: Path, monkeypatch) -> None:
    from llmopt.storage import journal

    synced: list[bytes] = []
    real_sync = journal._sync

    def spy(m, start: int, length: int) -> None:
        synced.append(bytes(m[start : start + length]))
        real_sync(m, start, length)

    monkeypatch.setattr(journal, "_sync", spy)
    j = opened(tmp_path, fsync=True, segment_bytes=8192, initial_bytes=1024)
    payloads = [f"acknowledged {i:04d}".encode() * 8 for i in range(120)]  # grows and seals
    for n, p in enumerate(payloads, start=1):
        j.append(p)
        assert len(synced) == n  # flushed before append returned
        assert p in synced[-1]  # the flushed range holds the record just written
    assert len(j.segments()) > 1
    j.close()
    assert list(Journal(tmp_path, "j").replay()) == payloads


def test_without_fsync_nothing_is_synced(tmp_path: Path, monkeypatch) -> None:
    from llmopt.storage import journal

    calls: list[int] = []
    monkeypatch.setattr(journal, "_sync", lambda m, start, length: calls.append(length))
    j = opened(tmp_path, segment_bytes=8192, initial_bytes=1024)
    for i in range(50):
        j.append(b"%d" % i)
    j.close()
    assert calls == []


def test_segment_files_are_private_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        j = opened(tmp_path, segment_bytes=4096, initial_bytes=1024)
        for _ in range(40):
            j.append(b"y" * 100)  # grows, then seals and begins more segments
        j.close()
    finally:
        os.umask(old)
    modes = {stat.S_IMODE(path.stat().st_mode) for _, path in j.segments()}
    assert modes == {0o600}

"""An append-only journal: a write is durable once its record is in the file's pages.

Why by hand: a SQLite transaction per acknowledged write (BEGIN, the statements, COMMIT with its
WAL frames) costs tens of microseconds and lets go of the GIL at every statement; under load each
of those is a thread hand-off that costs more than the write. Here a segment file is allocated
ahead of the writes and mapped shared into memory, and an append is a copy into the mapping: no
system call (bar one ``madvise`` per MiB written, which unmaps the pages behind, and a few when a
segment doubles), so the GIL is kept. The
mapped pages are the file's page cache, which the kernel writes back whether or not the process
lives on: a record survives the process being killed (kill -9), as a WAL commit with
``synchronous=NORMAL`` does, and not a power loss. With ``fsync=True`` each append is also
``msync``-ed to disk, matching ``synchronous=FULL``.

The owner applies records to its database in the background and replays the journal at start-up
(its apply must be idempotent: a record may already be in the database). Records live in
numbered segment files ``<name>-<n>.journal``. A segment begins at ``initial_bytes`` (1 MiB) and
doubles in place while it is under ``segment_bytes``: the file is extended (its blocks reserved)
before it is mapped larger, and a record is only ever copied into file space that exists, so the
kill -9 promise holds through a growth. When the next record would take a segment past
``segment_bytes``, the segment is sealed and a new one begun (``append`` returns the sealed
segment's number), and the owner deletes it (``remove_segments``) once everything in it is
committed elsewhere. So a quiet journal takes a megabyte, not its maximum. Records are framed
by ``llmopt.storage.records`` (``length u32 | crc32 u32 | payload``); the unwritten rest of a
segment is zeros, so a zero header ends it. A record whose crc
does not match (a copy cut short by the process dying) ends the segment's replay and is logged.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import mmap
import os
import threading
from collections.abc import Iterator
from pathlib import Path

from llmopt.storage.datadir import open_private
from llmopt.storage.records import HEADER, frame, read_frame

log = logging.getLogger("llmopt.storage")

_DEFAULT_SEGMENT_BYTES = 64 * 1024 * 1024  # the most a segment grows to
_INITIAL_SEGMENT_BYTES = 1024 * 1024  # what a segment begins with
# Written pages are unmapped every this many bytes: they stay in the page cache (and the file),
# dirty ones still written back, but stop counting in the process's resident memory.
_RELEASE_BYTES = 1024 * 1024
_DONTNEED: int | None = getattr(mmap, "MADV_DONTNEED", None)


def _no_fallocate(fd: int, offset: int, size: int) -> None:
    raise OSError(errno.EOPNOTSUPP, "posix_fallocate is not available here")


_fallocate = getattr(os, "posix_fallocate", _no_fallocate)


def _reserve(fd: int, size: int) -> None:
    """Make the file ``size`` bytes, its blocks reserved where the filesystem can: a full disk
    fails here, not as SIGBUS on a later copy."""
    try:
        _fallocate(fd, 0, size)
    except OSError as exc:
        if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL):
            raise
        os.ftruncate(fd, size)  # a filesystem (or platform) without fallocate


def _sync(m: mmap.mmap, start: int, length: int) -> None:
    """Write ``length`` bytes of the mapping from ``start`` (a multiple of the allocation
    granularity) to disk before returning: ``msync(MS_SYNC)``."""
    m.flush(start, length)


class Journal:
    """One writer process; many threads may ``append`` at once (appends are serialised).

    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> j = Journal(d, "x", segment_bytes=4096)
    >>> list(j.replay())
    []
    >>> j.open()
    >>> j.append(b"one"), j.append(b"two")
    (0, 0)
    >>> j.close()
    >>> list(Journal(d, "x").replay())
    [b'one', b'two']
    """

    def __init__(
        self,
        directory: Path,
        name: str,
        *,
        fsync: bool = False,
        segment_bytes: int = _DEFAULT_SEGMENT_BYTES,
        initial_bytes: int = _INITIAL_SEGMENT_BYTES,
    ) -> None:
        self.directory = Path(directory)
        self.name = name
        self._fsync = fsync
        self._segment_bytes = segment_bytes
        self._initial_bytes = min(initial_bytes, segment_bytes)
        self._lock = threading.Lock()
        self._map: mmap.mmap | None = None
        self._closed = True  # until ``open``
        self._pos = self._released = 0
        self._path: Path | None = None
        self._number = max((n for n, _ in self.segments()), default=0)

    # -- segments -------------------------------------------------------------------------------

    def segments(self) -> list[tuple[int, Path]]:
        """The segment files on disk, oldest first."""
        prefix, suffix = f"{self.name}-", ".journal"
        found = []
        for path in self.directory.glob(f"{prefix}*{suffix}"):
            digits = path.name[len(prefix) : -len(suffix)]
            if digits.isdigit():
                found.append((int(digits), path))
        return sorted(found)

    def replay(self) -> Iterator[bytes]:
        """Every intact record of every segment on disk, in the order written."""
        for _, path in self.segments():
            data = path.read_bytes()
            pos = 0
            while True:
                try:
                    found = read_frame(data, pos)
                except ValueError as exc:
                    log.warning(
                        "journal %s: the record at offset %d is torn or corrupt (%s); replay of "
                        "this segment stops there",
                        path.name,
                        pos,
                        exc,
                    )
                    break
                if found is None:  # the unwritten rest of the segment
                    break
                payload, pos = found
                yield payload

    def remove_segments(self, through: int) -> None:
        """Delete the segments numbered ``through`` or lower (their records are applied)."""
        for number, path in self.segments():
            if number <= through and path != self._path:
                path.unlink(missing_ok=True)

    # -- writing --------------------------------------------------------------------------------

    def open(self) -> None:
        """Begin a new segment for appends (after ``replay``: old segments are never appended
        to, so a torn record stays the last of its own file)."""
        with self._lock:
            self._begin_segment(self._initial_bytes)
            self._closed = False

    def _begin_segment(self, size: int) -> None:
        self._number += 1
        path = self.directory / f"{self.name}-{self._number:08d}.journal"
        fd = open_private(path, os.O_RDWR | os.O_CREAT | os.O_EXCL)
        try:
            _reserve(fd, size)
            self._map = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        finally:
            os.close(fd)  # the mapping keeps the file
        self._path = path
        self._pos = self._released = 0
        if self._fsync:  # the new file's directory entry must survive too
            dir_fd = os.open(self.directory, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)

    @property
    def segment(self) -> int:
        """The number of the segment being appended to."""
        return self._number

    def append(self, payload: bytes) -> int:
        """Write one record; it is durable when this returns. Returns the number of the segment
        sealed to make room for it (it is the first record of a new one), else 0."""
        return self.append_framed(frame(payload))

    def append_framed(self, record: bytes) -> int:
        """``append`` for a record already framed (``frame``, or a bandit record of
        ``llmopt.storage.records``)."""
        size = len(record)
        with self._lock:
            if self._closed:
                raise RuntimeError(f"journal {self.name} is not open")
            m = self._map
            sealed = 0
            # Keep a header's worth of zeros after the last record: replay's end mark.
            needed = self._pos + size + HEADER
            if m is not None and needed > len(m) and needed <= self._segment_bytes:
                # (if this fails, say on a full disk, the next append tries again)
                m = self._grow(m, needed)
            if m is None or needed > len(m):
                if m is not None:
                    sealed = self._number
                    self._close_map()
                self._begin_segment(max(self._initial_bytes, size + HEADER))
                m = self._map
                assert m is not None
            pos = self._pos
            m[pos : pos + size] = record
            self._pos = end = pos + size
            if self._fsync:
                start = pos - pos % mmap.ALLOCATIONGRANULARITY
                _sync(m, start, end - start)
            if _DONTNEED is not None and end - self._released >= _RELEASE_BYTES:
                upto = end - end % mmap.PAGESIZE
                m.madvise(_DONTNEED, self._released, upto - self._released)
                self._released = upto
            return sealed

    def _grow(self, m: mmap.mmap, needed: int) -> mmap.mmap:
        """The mapping of the open segment, doubled (to at most ``segment_bytes``) until
        ``needed`` bytes fit. The file is extended first, then mapped: what is written stays
        where it was in the file, and the new space reads as zeros, the end mark."""
        size = len(m)
        while size < needed:
            size *= 2
        size = min(size, self._segment_bytes)
        assert self._path is not None
        fd = os.open(self._path, os.O_RDWR)
        try:
            _reserve(fd, size)
            if self._fsync:  # the file's new size survives a power loss too
                os.fsync(fd)
        finally:
            os.close(fd)
        # The file already has this size: only the mapping grows. Without mremap (not Linux)
        # it stays as it was, and the caller seals the segment instead.
        with contextlib.suppress(OSError, SystemError):
            m.resize(size)
        return m

    def _close_map(self) -> None:
        if self._map is not None:
            self._map.close()
            self._map = None

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._close_map()
            self._path = None  # no longer being written: remove_segments may take it

"""Content-addressed artifact files: named by the sha256 of their bytes, verified on every read.

A new artifact is streamed into ``tmp/`` while it is hashed, fsynced, and only renamed to its
final name (``sha256/<2 hex>/<64 hex>.onnx``) when the caller is ready to commit the row that
refers to it. Files are immutable once placed (0400, in 0700 folders); a file whose bytes no
longer hash to its name is reported as corrupted and never served. ``chunks`` turns what an
uploader hands over (bytes, an iterable of chunks, a binary file) into the chunks that
``ArtifactStore.receive`` streams.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

from llmopt import errors
from llmopt.storage import private_folder

READ_CHUNK = 1 << 20
LOCK_STRIPES = 64

# What an upload may hand over: the ONNX bytes, an iterable of byte chunks, or a binary file.
Artifact = bytes | bytearray | memoryview | Iterable[bytes] | BinaryIO


class ArtifactCorrupted(errors.DataLoss):
    """A stored artifact is missing or its bytes do not match its sha256: it is never served."""


class StagedArtifact:
    """A fully received artifact in ``tmp/``: hashed and fsynced, not yet placed."""

    def __init__(self, path: Path, sha256: str, size: int) -> None:
        self.path = path
        self.sha256 = sha256
        self.size = size

    def discard(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


class ArtifactStore:
    """The folder of artifact files. Thread-safe; placement and removal of one hash serialise on
    a striped lock so a removal never races an upload of the same bytes."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._files = self.root / "sha256"
        self._tmp = self.root / "tmp"
        private_folder(self._files)
        private_folder(self._tmp)
        self._stripes = tuple(threading.Lock() for _ in range(LOCK_STRIPES))

    def path(self, sha256: str) -> Path:
        return self._files / sha256[:2] / f"{sha256}.onnx"

    def lock(self, sha256: str) -> threading.Lock:
        """The lock to hold while placing or removing ``sha256`` and committing its row."""
        return self._stripes[int(sha256[:2], 16) % LOCK_STRIPES]

    # -- writing --------------------------------------------------------------------------------

    @contextlib.contextmanager
    def receive(self, chunks: Iterable[bytes], max_bytes: int) -> Iterator[StagedArtifact]:
        """Stream ``chunks`` into a temporary file while hashing; the file is removed on exit
        unless it was placed (``place`` renames it away)."""
        fd, name = tempfile.mkstemp(dir=self._tmp, suffix=".part")
        path = Path(name)
        staged: StagedArtifact | None = None
        try:
            digest = hashlib.sha256()
            size = 0
            with os.fdopen(fd, "wb") as out:
                for chunk in chunks:
                    size += len(chunk)
                    if size > max_bytes:
                        raise errors.invalid(
                            "artifact", f"more than {max_bytes} bytes", f"at most {max_bytes} bytes"
                        )
                    digest.update(chunk)
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            staged = StagedArtifact(path, digest.hexdigest(), size)
            yield staged
        finally:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

    def place(self, staged: StagedArtifact) -> Path:
        """Rename the staged file to its content address (hold ``lock(sha256)``)."""
        target = self.path(staged.sha256)
        if not target.parent.is_dir():
            private_folder(target.parent)
            _fsync_dir(self._files)
        os.chmod(staged.path, 0o400)  # immutable, and the server's own
        os.replace(staged.path, target)
        _fsync_dir(target.parent)
        return target

    def remove(self, sha256: str) -> None:
        """Delete the file of ``sha256`` if present (hold ``lock(sha256)``)."""
        with contextlib.suppress(FileNotFoundError):
            self.path(sha256).unlink()

    # -- reading --------------------------------------------------------------------------------

    def read(self, sha256: str, size: int) -> bytes:
        """The whole artifact, verified against its hash and size."""
        try:
            data = self.path(sha256).read_bytes()
        except FileNotFoundError:
            raise ArtifactCorrupted(f"artifact {sha256}: file is missing") from None
        actual = hashlib.sha256(data).hexdigest()
        if actual != sha256 or len(data) != size:
            raise ArtifactCorrupted(
                f"artifact {sha256}: stored bytes hash to {actual} ({len(data)} bytes, "
                f"{size} expected); refusing to serve it"
            )
        return data

    def open_verified(self, sha256: str, size: int) -> BinaryIO:
        """An open file positioned at 0 whose bytes were hashed and matched (one pass, no copy)."""
        try:
            f = open(self.path(sha256), "rb")  # noqa: SIM115 - returned to the caller
        except FileNotFoundError:
            raise ArtifactCorrupted(f"artifact {sha256}: file is missing") from None
        try:
            digest = hashlib.sha256()
            total = 0
            while block := f.read(READ_CHUNK):
                digest.update(block)
                total += len(block)
            if digest.hexdigest() != sha256 or total != size:
                raise ArtifactCorrupted(
                    f"artifact {sha256}: stored bytes hash to {digest.hexdigest()} ({total} bytes, "
                    f"{size} expected); refusing to serve it"
                )
            f.seek(0)
            return f
        except BaseException:
            f.close()
            raise

    def stored(self) -> Iterator[str]:
        """Hashes of every placed file."""
        for path in self._files.glob("*/*.onnx"):
            yield path.stem

    def sweep_tmp(self) -> int:
        """Remove leftovers of interrupted uploads; only safe while nothing uploads."""
        removed = 0
        for path in self._tmp.iterdir():
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
                removed += 1
        return removed


def chunks(artifact: Artifact) -> Iterator[bytes]:
    """The artifact's bytes, as chunks: a file is read ``READ_CHUNK`` bytes at a time, an iterable
    is checked to hold only bytes."""
    if isinstance(artifact, bytes | bytearray | memoryview):
        yield bytes(artifact) if not isinstance(artifact, bytes) else artifact
    elif hasattr(artifact, "read"):
        # Not isinstance(io.IOBase) nor a runtime-checkable Protocol: tempfile's wrappers are
        # neither IOBase nor, from Python 3.12, seen by the Protocol (they delegate ``read``
        # through __getattr__); both would read them line by line instead of in blocks.
        while block := artifact.read(READ_CHUNK):
            yield block
    else:
        for chunk in artifact:
            if not isinstance(chunk, bytes | bytearray | memoryview):
                raise errors.invalid("artifact", type(chunk).__name__, "chunks of bytes")
            yield chunk


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

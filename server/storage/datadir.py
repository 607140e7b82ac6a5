"""The data directory: created on start, owned by one server process at a time.

Everything the server creates under it is private to the user it runs as: folders 0700, files
0600 (artifacts 0400), set explicitly rather than left to the umask.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

from llmopt import errors

FOLDER_MODE = 0o700
FILE_MODE = 0o600


def private_folder(path: Path) -> Path:
    """``path``, with it and any missing parents created 0700 whatever the umask; folders that
    exist already are left as they are."""
    path = Path(path)
    missing: list[Path] = []
    at = path
    while not at.exists():
        missing.append(at)
        at = at.parent
    for folder in reversed(missing):
        with contextlib.suppress(FileExistsError):  # another creator won the race
            folder.mkdir(FOLDER_MODE)
            os.chmod(folder, FOLDER_MODE)  # mkdir's mode is filtered by the umask
    return path


def open_private(path: Path, flags: int) -> int:
    """``os.open`` that creates the file 0600 whatever the umask (``flags`` include O_CREAT)."""
    existed = os.path.exists(path)
    fd = os.open(path, flags, FILE_MODE)
    if not existed:
        try:
            os.fchmod(fd, FILE_MODE)
        except BaseException:
            os.close(fd)
            raise
    return fd


class DataDir:
    """Holds an exclusive lock on ``<root>/LOCK`` so two servers never share one store."""

    def __init__(self, root: Path) -> None:
        self.root = private_folder(Path(root).resolve())
        self._lock_fd = open_private(self.root / "LOCK", os.O_RDWR | os.O_CREAT)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lock_fd)
            raise errors.FailedPrecondition(
                f"data_dir: {str(self.root)!r} is in use by another llmopt-server process"
            ) from None
        os.ftruncate(self._lock_fd, 0)
        os.write(self._lock_fd, f"{os.getpid()}\n".encode())

    def path(self, *parts: str) -> Path:
        return self.root.joinpath(*parts)

    def folder(self, *parts: str) -> Path:
        """The path of a component's folder, created 0700 when missing."""
        return private_folder(self.path(*parts))

    def close(self) -> None:
        if self._lock_fd >= 0:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)
            self._lock_fd = -1

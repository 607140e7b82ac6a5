"""The data directory: created on start, owned by one server process at a time."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from llmopt import errors


class DataDir:
    """Holds an exclusive lock on ``<root>/LOCK`` so two servers never share one store."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self._lock_fd = os.open(self.root / "LOCK", os.O_RDWR | os.O_CREAT, 0o644)
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

    def close(self) -> None:
        if self._lock_fd >= 0:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)
            self._lock_fd = -1

"""Embedded storage: SQLite in WAL mode with group commit, and data-directory ownership."""

from server.storage.datadir import DataDir
from server.storage.sqlite import Database, WriteFuture

__all__ = ["DataDir", "Database", "WriteFuture"]

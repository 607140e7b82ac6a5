"""Embedded storage: SQLite in WAL mode with group commit, an append-only journal
(``server.storage.journal``) for durable writes on the request path, and data-directory
ownership."""

from server.storage.datadir import DataDir
from server.storage.sqlite import Database, Migration, WriteFuture, statements

__all__ = ["DataDir", "Database", "Migration", "WriteFuture", "statements"]

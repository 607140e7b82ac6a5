"""Embedded storage: SQLite in WAL mode with group commit, an append-only journal
(``llmopt.storage.journal``) for durable writes on the request path, and data-directory
ownership."""

from llmopt.storage.datadir import DataDir, open_private, private_folder
from llmopt.storage.sqlite import Database, Migration, WriteFuture, statements

__all__ = [
    "DataDir",
    "Database",
    "Migration",
    "WriteFuture",
    "open_private",
    "private_folder",
    "statements",
]

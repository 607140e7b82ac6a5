"""The registry's catalog in SQLite: the schema, and every statement that reads or writes
models, versions, aliases and the alias history.

Each function runs on the connection it is given, inside a read or write transaction of
``llmopt.storage.Database``. Transactions and locks belong to the caller (``model_registry``),
and so do the rules of which alias may move where (``aliases``).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import numpy as np

from llmopt import errors
from llmopt.registry import paging
from llmopt.registry.types import (
    AliasChange,
    Model,
    ModelTask,
    ModelVersion,
    Page,
    TensorSpec,
    VersionMetadata,
)

MIGRATIONS = [
    """
    CREATE TABLE models (
        name TEXT PRIMARY KEY,
        description TEXT NOT NULL,
        task TEXT NOT NULL,
        tags TEXT NOT NULL,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        last_version INTEGER NOT NULL DEFAULT 0
    );
    CREATE TABLE versions (
        model TEXT NOT NULL REFERENCES models(name) ON DELETE CASCADE,
        version INTEGER NOT NULL,
        sha256 TEXT NOT NULL,
        size_bytes INTEGER NOT NULL,
        inputs TEXT NOT NULL,
        outputs TEXT NOT NULL,
        semver TEXT NOT NULL,
        parent_version INTEGER,
        metrics TEXT NOT NULL,
        tags TEXT NOT NULL,
        description TEXT NOT NULL,
        created_at REAL NOT NULL,
        PRIMARY KEY (model, version)
    ) WITHOUT ROWID;
    CREATE INDEX versions_by_sha ON versions(sha256);
    CREATE TABLE aliases (
        model TEXT NOT NULL,
        alias TEXT NOT NULL,
        version INTEGER NOT NULL,
        PRIMARY KEY (model, alias),
        FOREIGN KEY (model, version) REFERENCES versions(model, version)
    ) WITHOUT ROWID;
    CREATE TABLE alias_history (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        model TEXT NOT NULL,
        alias TEXT NOT NULL,
        from_version INTEGER,
        to_version INTEGER,
        time REAL NOT NULL,
        reason TEXT NOT NULL,
        actor TEXT NOT NULL,
        kind TEXT NOT NULL
    );
    CREATE INDEX alias_history_by_alias ON alias_history(model, alias, id);
    """,
    # 2: a background sample with each version (float64 rows, little-endian, row-major), the
    # baseline of explanations; NULL and 0 rows for versions uploaded without one.
    """
    ALTER TABLE versions ADD COLUMN background BLOB;
    ALTER TABLE versions ADD COLUMN background_rows INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE versions ADD COLUMN background_cols INTEGER NOT NULL DEFAULT 0;
    """,
]

VERSION_COLUMNS = (
    "model, version, sha256, size_bytes, inputs, outputs, semver, parent_version, metrics, tags, "
    "description, created_at, background_rows"
)
# The background's bytes are read on their own (``background``), never with a listing.
_INSERT_COLUMNS = f"{VERSION_COLUMNS}, background, background_cols"
_BACKGROUND_DTYPE = np.dtype("<f8")
HISTORY_COLUMNS = "id, model, alias, from_version, to_version, time, reason, actor, kind"
_MODEL_COLUMNS = "name, description, task, tags, created_at, updated_at, last_version"


# -- models -------------------------------------------------------------------------------------


def insert_model(
    c: sqlite3.Connection,
    name: str,
    description: str,
    task: ModelTask,
    tags: Mapping[str, str],
    now: float,
) -> None:
    try:
        c.execute(
            "INSERT INTO models (name, description, task, tags, created_at, updated_at)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (name, description, task.value, _dump(tags), now, now),
        )
    except sqlite3.IntegrityError:
        raise errors.AlreadyExists(f"name: model {name!r} already exists") from None


def model_row(c: sqlite3.Connection, name: str) -> tuple[Any, ...]:
    """The model's row (NotFound when there is none); index 6 is its last version number."""
    row = c.execute(f"SELECT {_MODEL_COLUMNS} FROM models WHERE name = ?", (name,)).fetchone()
    if row is None:
        raise errors.NotFound(f"model: {name!r} is not a registered model")
    return tuple(row)


def model_from_row(c: sqlite3.Connection, row: tuple[Any, ...]) -> Model:
    return Model(
        name=row[0],
        description=row[1],
        task=ModelTask(row[2]),
        tags=json.loads(row[3]),
        created_at=row[4],
        updated_at=row[5],
        aliases=aliases(c, row[0]),
        latest_version=row[6],
    )


def models_page(
    c: sqlite3.Connection, size: int, after: str | int | None, tag_filter: Mapping[str, str]
) -> Page[Model]:
    """Models by name, ``size`` of them after the name ``after``, with every tag of the filter."""
    where, args = _tag_clause("models", tag_filter)
    if after is not None:
        where.append("name > ?")
        args.append(after)
    sql = f"SELECT {_MODEL_COLUMNS} FROM models {_where(where)} ORDER BY name LIMIT ?"
    rows = c.execute(sql, (*args, size + 1)).fetchall()
    models = [model_from_row(c, row) for row in rows[:size]]
    token = paging.encode_token("models", models[-1].name) if len(rows) > size else ""
    return Page(models, token)


def version_shas(c: sqlite3.Connection, model: str) -> list[str]:
    """The sha256 of each version of the model (one per version, repeats included)."""
    rows = c.execute("SELECT sha256 FROM versions WHERE model = ?", (model,)).fetchall()
    return [r[0] for r in rows]


def delete_model(c: sqlite3.Connection, name: str) -> None:
    """Drop the model with its versions and alias history (its aliases must be gone already)."""
    c.execute("DELETE FROM versions WHERE model = ?", (name,))
    c.execute("DELETE FROM alias_history WHERE model = ?", (name,))
    c.execute("DELETE FROM models WHERE name = ?", (name,))


def count_models(c: sqlite3.Connection) -> int:
    return int(c.execute("SELECT count(*) FROM models").fetchone()[0])


# -- versions -----------------------------------------------------------------------------------


def version_row(c: sqlite3.Connection, model: str, version: int) -> tuple[Any, ...]:
    """The version's row (NotFound when there is none); index 2 is its sha256."""
    row = c.execute(
        f"SELECT {VERSION_COLUMNS} FROM versions WHERE model = ? AND version = ?",
        (model, version),
    ).fetchone()
    if row is None:
        raise errors.NotFound(f"version: model {model!r} has no version {version}")
    return tuple(row)


def version_with_sha(c: sqlite3.Connection, model: str, sha256: str) -> tuple[Any, ...] | None:
    """The row of the model's lowest-numbered version whose artifact hashes to ``sha256``."""
    row = c.execute(
        f"SELECT {VERSION_COLUMNS} FROM versions WHERE model = ? AND sha256 = ?"
        " ORDER BY version LIMIT 1",
        (model, sha256),
    ).fetchone()
    return None if row is None else tuple(row)


def version_exists(c: sqlite3.Connection, model: str, version: int) -> bool:
    row = c.execute(
        "SELECT 1 FROM versions WHERE model = ? AND version = ?", (model, version)
    ).fetchone()
    return row is not None


def newest_version(c: sqlite3.Connection, model: str) -> int | None:
    """The highest version number the model has now (None: it has no versions)."""
    row = c.execute("SELECT max(version) FROM versions WHERE model = ?", (model,)).fetchone()
    return None if row[0] is None else int(row[0])


def version_with_aliases(c: sqlite3.Connection, row: tuple[Any, ...]) -> ModelVersion:
    return version_from_row(row, version_aliases(c, row[0], row[1]))


def version_from_row(
    row: tuple[Any, ...],
    aliases: Iterable[str],
    signatures: dict[str, tuple[TensorSpec, ...]] | None = None,
) -> ModelVersion:
    """A ModelVersion from its row; ``signatures`` memoises parsed signatures within a page
    (versions of one model usually share them)."""
    memo = {} if signatures is None else signatures
    return ModelVersion(
        model=row[0],
        version=row[1],
        sha256=row[2],
        size_bytes=row[3],
        inputs=_signature(row[4], memo),
        outputs=_signature(row[5], memo),
        semver=row[6],
        parent_version=row[7],
        metrics=json.loads(row[8]),
        tags=json.loads(row[9]),
        description=row[10],
        created_at=row[11],
        aliases=tuple(aliases),
        background_rows=row[12],
    )


def _signature(text: str, memo: dict[str, tuple[TensorSpec, ...]]) -> tuple[TensorSpec, ...]:
    specs = memo.get(text)
    if specs is None:
        specs = memo[text] = tuple(TensorSpec.from_dict(d) for d in json.loads(text))
    return specs


def versions_page(
    c: sqlite3.Connection,
    model: str,
    size: int,
    after: str | int | None,
    tag_filter: Mapping[str, str],
) -> Page[ModelVersion]:
    """Versions newest first, ``size`` of them below ``after``, with every tag of the filter."""
    where, args = _tag_clause("versions", tag_filter)
    where.insert(0, "model = ?")
    args.insert(0, model)
    if after is not None:
        where.append("version < ?")
        args.append(int(after))
    sql = f"SELECT {VERSION_COLUMNS} FROM versions {_where(where)} ORDER BY version DESC LIMIT ?"
    rows = c.execute(sql, (*args, size + 1)).fetchall()
    by_version: dict[int, list[str]] = {}
    for alias, number in c.execute(
        "SELECT alias, version FROM aliases WHERE model = ? ORDER BY alias", (model,)
    ):
        by_version.setdefault(number, []).append(alias)
    memo: dict[str, tuple[TensorSpec, ...]] = {}
    items = [version_from_row(row, by_version.get(row[1], ()), memo) for row in rows[:size]]
    token = paging.encode_token("versions", items[-1].version) if len(rows) > size else ""
    return Page(items, token)


def insert_version(
    c: sqlite3.Connection,
    model: str,
    sha256: str,
    size: int,
    inputs: tuple[TensorSpec, ...],
    outputs: tuple[TensorSpec, ...],
    meta: VersionMetadata,
    now: float,
    actor: str,
    number: int | None = None,
) -> tuple[ModelVersion, list[AliasChange]]:
    """Give the version the model's next number (or ``number``, which must be above every number
    the model used) and, when ``meta.alias`` names one, point that alias at it in the same
    transaction."""
    last = int(model_row(c, model)[6])
    if number is not None and number <= last:
        raise errors.FailedPrecondition(
            f"version: model {model!r} already used version numbers up to {last}; "
            f"cannot number a new version {number}"
        )
    version = last + 1 if number is None else number
    if meta.parent_version is not None and meta.parent_version > last:
        raise errors.invalid(
            "parent_version", meta.parent_version, f"model {model!r} has no version above {last}"
        )
    c.execute(
        "UPDATE models SET last_version = ?, updated_at = ? WHERE name = ?", (version, now, model)
    )
    sample = meta.background
    rows, cols = sample.shape if sample is not None else (0, 0)
    blob = np.ascontiguousarray(sample, _BACKGROUND_DTYPE).tobytes() if sample is not None else None
    c.execute(
        f"INSERT INTO versions ({_INSERT_COLUMNS})"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            model,
            version,
            sha256,
            size,
            json.dumps([s.to_dict() for s in inputs]),
            json.dumps([s.to_dict() for s in outputs]),
            meta.semver,
            meta.parent_version,
            _dump(meta.metrics),
            _dump(meta.tags),
            meta.description,
            now,
            rows,
            blob,
            cols,
        ),
    )
    changes: list[AliasChange] = []
    if meta.alias:
        change = move_alias(
            c, model, meta.alias, version, now, f"uploaded version {version}", actor, "upload"
        )
        if change is not None:
            changes.append(change)
    aliases = (meta.alias,) if meta.alias else ()
    mv = ModelVersion(
        model,
        version,
        sha256,
        size,
        inputs,
        outputs,
        meta.semver,
        meta.parent_version,
        dict(meta.metrics),
        dict(meta.tags),
        meta.description,
        now,
        aliases,
        rows,
    )
    return mv, changes


def background(c: sqlite3.Connection, model: str, version: int) -> np.ndarray | None:
    """The version's background sample, [rows, features] float64 (None: it has none); NotFound
    when there is no such version."""
    row = c.execute(
        "SELECT background, background_rows, background_cols FROM versions"
        " WHERE model = ? AND version = ?",
        (model, version),
    ).fetchone()
    if row is None:
        raise errors.NotFound(f"version: model {model!r} has no version {version}")
    blob, rows, cols = row
    if blob is None:
        return None
    return np.frombuffer(blob, dtype=_BACKGROUND_DTYPE).reshape(rows, cols)


def delete_version(c: sqlite3.Connection, model: str, version: int, now: float) -> None:
    c.execute("DELETE FROM versions WHERE model = ? AND version = ?", (model, version))
    c.execute("UPDATE models SET updated_at = ? WHERE name = ?", (now, model))


def referenced_shas(c: sqlite3.Connection) -> list[str]:
    """Every artifact hash some version refers to."""
    return [r[0] for r in c.execute("SELECT DISTINCT sha256 FROM versions")]


def sha_in_use(c: sqlite3.Connection, sha256: str) -> bool:
    row = c.execute("SELECT 1 FROM versions WHERE sha256 = ? LIMIT 1", (sha256,)).fetchone()
    return row is not None


def artifact_rows(c: sqlite3.Connection) -> list[tuple[str, int, str, int]]:
    """(model, version, sha256, size_bytes) of every version."""
    return c.execute("SELECT model, version, sha256, size_bytes FROM versions").fetchall()


# -- aliases ------------------------------------------------------------------------------------


def aliases(c: sqlite3.Connection, model: str) -> dict[str, int]:
    return dict(
        c.execute(
            "SELECT alias, version FROM aliases WHERE model = ? ORDER BY alias", (model,)
        ).fetchall()
    )


def alias_names(c: sqlite3.Connection, model: str) -> list[str]:
    rows = c.execute("SELECT alias FROM aliases WHERE model = ? ORDER BY alias", (model,))
    return [alias for (alias,) in rows.fetchall()]


def version_aliases(c: sqlite3.Connection, model: str, version: int) -> list[str]:
    """The aliases pointing at the version, by name."""
    return [
        a
        for (a,) in c.execute(
            "SELECT alias FROM aliases WHERE model = ? AND version = ? ORDER BY alias",
            (model, version),
        )
    ]


def alias_version(c: sqlite3.Connection, model: str, alias: str) -> int | None:
    """The version the alias points at (None: it is not set)."""
    row = c.execute(
        "SELECT version FROM aliases WHERE model = ? AND alias = ?", (model, alias)
    ).fetchone()
    return None if row is None else int(row[0])


def move_alias(
    c: sqlite3.Connection,
    model: str,
    alias: str,
    to_version: int | None,
    now: float,
    reason: str,
    actor: str,
    kind: str,
) -> AliasChange | None:
    """Point ``alias`` at ``to_version`` (None: remove it) and record the change; None when the
    alias already is where it should be."""
    from_version = alias_version(c, model, alias)
    if from_version == to_version:
        return None
    if to_version is None:
        c.execute("DELETE FROM aliases WHERE model = ? AND alias = ?", (model, alias))
    else:
        c.execute(
            "INSERT INTO aliases (model, alias, version) VALUES (?, ?, ?)"
            " ON CONFLICT (model, alias) DO UPDATE SET version = excluded.version",
            (model, alias, to_version),
        )
    (change_id,) = c.execute(
        f"INSERT INTO alias_history ({HISTORY_COLUMNS.removeprefix('id, ')})"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
        (model, alias, from_version, to_version, now, reason, actor, kind),
    ).fetchone()
    c.execute("UPDATE models SET updated_at = ? WHERE name = ?", (now, model))
    return AliasChange(change_id, model, alias, from_version, to_version, now, reason, actor, kind)


def last_change(c: sqlite3.Connection, model: str, alias: str) -> AliasChange:
    row = c.execute(
        f"SELECT {HISTORY_COLUMNS} FROM alias_history WHERE model = ? AND alias = ?"
        " ORDER BY id DESC LIMIT 1",
        (model, alias),
    ).fetchone()
    return _change(row)


def history_moves(c: sqlite3.Connection, model: str, alias: str) -> Iterator[tuple[str, Any]]:
    """(kind, from_version) of each recorded change of the alias, newest first."""
    return c.execute(
        "SELECT kind, from_version FROM alias_history WHERE model = ? AND alias = ?"
        " ORDER BY id DESC",
        (model, alias),
    )


def history_page(
    c: sqlite3.Connection, model: str, alias: str, size: int, after: str | int | None
) -> Page[AliasChange]:
    """Recorded changes newest first, ``size`` of them older than the id ``after`` (one alias,
    or every alias when ``alias`` is empty)."""
    where = ["model = ?"]
    args: list[Any] = [model]
    if alias:
        where.append("alias = ?")
        args.append(alias)
    if after is not None:
        where.append("id < ?")
        args.append(int(after))
    sql = f"SELECT {HISTORY_COLUMNS} FROM alias_history {_where(where)} ORDER BY id DESC LIMIT ?"
    rows = c.execute(sql, (*args, size + 1)).fetchall()
    items = [_change(row) for row in rows[:size]]
    token = paging.encode_token("history", items[-1].id) if len(rows) > size else ""
    return Page(items, token)


def _change(row: tuple[Any, ...]) -> AliasChange:
    return AliasChange(*row)


# -- SQL text -----------------------------------------------------------------------------------


def _dump(value: Mapping[str, Any]) -> str:
    return json.dumps(dict(value), sort_keys=True)


def _tag_clause(table: str, tag_filter: Mapping[str, str]) -> tuple[list[str], list[Any]]:
    where: list[str] = []
    args: list[Any] = []
    for key, value in sorted(tag_filter.items()):
        where.append(f"EXISTS (SELECT 1 FROM json_each({table}.tags) WHERE key = ? AND value = ?)")
        args.extend((key, value))
    return where, args


def _where(clauses: list[str]) -> str:
    return "WHERE " + " AND ".join(clauses) if clauses else ""

"""The model registry: models, versions, aliases and their history, in SQLite plus artifact files.

Every durable change goes through ``Database.write`` (group commit, one transaction per change).
An artifact file is placed under its content address before the row that refers to it commits;
on open, files that no committed row refers to (an upload cut short by a crash) are removed, so
a half-written version is never visible.

Locks: the artifact store's striped lock serialises placing/removing a file with committing or
deleting the rows that use it; a per-model lock serialises alias changes of one model together
with the notification of subscribers, so subscribers see a model's changes in commit order.
Lock order is always artifact stripe, then model.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, BinaryIO

from llmopt import errors
from llmopt.registry import onnx_check, validation
from llmopt.registry.artifacts import ArtifactCorrupted, ArtifactStore
from llmopt.registry.types import (
    AliasChange,
    AliasEvent,
    Model,
    ModelTask,
    ModelVersion,
    Page,
    TensorSpec,
    VersionMetadata,
)
from llmopt.storage import Database

log = logging.getLogger("llmopt.registry")

CHAMPION = "champion"
CHALLENGER = "challenger"
LATEST = "latest"
DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000
# ONNX files are protobuf messages, which cannot exceed 2 GiB.
MAX_ARTIFACT_BYTES = 2**31 - 1

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
    """
]

_VERSION_COLUMNS = (
    "model, version, sha256, size_bytes, inputs, outputs, semver, parent_version, metrics, tags, "
    "description, created_at"
)
_HISTORY_COLUMNS = "id, model, alias, from_version, to_version, time, reason, actor, kind"

Subscriber = Callable[[AliasEvent], None]
Artifact = bytes | bytearray | memoryview | Iterable[bytes] | BinaryIO


class Registry:
    """Versioned ONNX models with aliases, usable as a library (thread-safe) or behind gRPC.

    >>> import tempfile, pathlib
    >>> reg = Registry(pathlib.Path(tempfile.mkdtemp()))
    >>> reg.create_model("demo").name
    'demo'
    >>> reg.aliases("demo")
    {}
    >>> reg.close()
    """

    def __init__(
        self,
        root: Path,
        synchronous: str = "normal",
        *,
        max_artifact_bytes: int = MAX_ARTIFACT_BYTES,
    ) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.max_artifact_bytes = max_artifact_bytes
        self._db = Database(
            self.root / "registry.db", migrations=MIGRATIONS, synchronous=synchronous
        )
        self._artifacts = ArtifactStore(self.root / "artifacts")
        self._model_locks: dict[str, threading.RLock] = {}
        self._model_locks_guard = threading.Lock()
        self._subscribers: tuple[Subscriber, ...] = ()
        self._subscribers_lock = threading.Lock()
        self._recover()

    # -- lifecycle ------------------------------------------------------------------------------

    def _recover(self) -> None:
        """Drop what an interrupted upload left: temp files, and placed files no row refers to."""
        swept = self._artifacts.sweep_tmp()
        referenced = set(
            self._db.read(
                lambda c: [r[0] for r in c.execute("SELECT DISTINCT sha256 FROM versions")]
            )
        )
        orphans = [sha for sha in self._artifacts.stored() if sha not in referenced]
        for sha in orphans:
            self._artifacts.remove(sha)
        if swept or orphans:
            log.info(
                "registry recovery: removed %d temp and %d unreferenced artifact files",
                swept,
                len(orphans),
            )

    def warm_up(self) -> None:
        """Touch the database so the first request does not pay for opening it."""
        self._db.read(lambda c: c.execute("SELECT count(*) FROM models").fetchone())

    def close(self) -> None:
        self._db.close()

    # -- subscriptions --------------------------------------------------------------------------

    def subscribe(self, callback: Subscriber) -> Callable[[], None]:
        """Call ``callback(AliasEvent)`` after every committed alias change; returns unsubscribe.

        Callbacks run synchronously on the thread that made the change, in commit order per
        model, before that change's call returns. Their exceptions are logged, never raised.
        """
        with self._subscribers_lock:
            self._subscribers = (*self._subscribers, callback)

        def unsubscribe() -> None:
            with self._subscribers_lock:
                subs = list(self._subscribers)
                with contextlib.suppress(ValueError):
                    subs.remove(callback)
                self._subscribers = tuple(subs)

        return unsubscribe

    def _notify(self, changes: Iterable[AliasChange]) -> None:
        subscribers = self._subscribers
        for change in changes:
            event = AliasEvent.of(change)
            for callback in subscribers:
                try:
                    callback(event)
                except Exception:
                    log.exception("alias subscriber %r failed on %s", callback, event)

    def _model_lock(self, model: str) -> threading.RLock:
        with self._model_locks_guard:
            lock = self._model_locks.get(model)
            if lock is None:
                lock = self._model_locks[model] = threading.RLock()
            return lock

    def _change_aliases(
        self, model: str, fn: Callable[[sqlite3.Connection], tuple[Any, list[AliasChange]]]
    ) -> Any:
        """Run an alias-changing write and notify subscribers, in commit order for the model."""
        with self._model_lock(model):
            result, changes = self._db.write(fn)
            self._notify(changes)
        return result

    # -- models ---------------------------------------------------------------------------------

    def create_model(
        self,
        name: str,
        description: str = "",
        task: ModelTask = ModelTask.UNSPECIFIED,
        tags: Mapping[str, str] | None = None,
    ) -> Model:
        validation.model_name(name, "name")
        description = validation.description(description)
        tag_map = validation.tags(tags or {})
        if not isinstance(task, ModelTask):
            raise errors.invalid("task", task, "a ModelTask")
        now = time.time()

        def insert(c: sqlite3.Connection) -> None:
            try:
                c.execute(
                    "INSERT INTO models (name, description, task, tags, created_at, updated_at)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    (name, description, task.value, _dump(tag_map), now, now),
                )
            except sqlite3.IntegrityError:
                raise errors.AlreadyExists(f"name: model {name!r} already exists") from None

        self._db.write(insert)
        return Model(name, description, task, tag_map, now, now, {}, 0)

    def get_model(self, name: str) -> Model:
        validation.model_name(name, "name")
        return self._db.read(lambda c: _model(c, _model_row(c, name)))

    def list_models(self, tag_filter: Mapping[str, str] | None = None) -> list[Model]:
        """Every model (sorted by name), optionally only those carrying every tag of the filter."""
        out: list[Model] = []
        token = ""
        while True:
            page = self.list_models_page(MAX_PAGE_SIZE, token, tag_filter)
            out.extend(page.items)
            if not page.next_page_token:
                return out
            token = page.next_page_token

    def list_models_page(
        self,
        page_size: int = DEFAULT_PAGE_SIZE,
        page_token: str = "",
        tag_filter: Mapping[str, str] | None = None,
    ) -> Page[Model]:
        size = _page_size(page_size)
        after = _decode_token(page_token, "models")
        where, args = _tag_clause("models", validation.tags(tag_filter or {}, "tag_filter"))
        if after is not None:
            where.append("name > ?")
            args.append(after)
        sql = (
            "SELECT name, description, task, tags, created_at, updated_at, last_version"
            f" FROM models {_where(where)} ORDER BY name LIMIT ?"
        )

        def query(c: sqlite3.Connection) -> Page[Model]:
            rows = c.execute(sql, (*args, size + 1)).fetchall()
            models = [_model(c, row) for row in rows[:size]]
            token = _encode_token("models", models[-1].name) if len(rows) > size else ""
            return Page(models, token)

        return self._db.read(query)

    def delete_model(
        self, name: str, force: bool = False, *, reason: str = "", actor: str = ""
    ) -> int:
        """Delete a model; with versions it needs ``force`` (which also drops its aliases).

        Returns the number of versions deleted. Subscribers hear of every alias removed.
        """
        validation.model_name(name, "name")
        reason = validation.reason(reason)
        actor = validation.actor(actor)
        now = time.time()

        def delete(c: sqlite3.Connection) -> tuple[tuple[int, list[str]], list[AliasChange]]:
            _model_row(c, name)
            rows = c.execute("SELECT sha256 FROM versions WHERE model = ?", (name,)).fetchall()
            if rows and not force:
                raise errors.FailedPrecondition(
                    f"name: model {name!r} still has {len(rows)} version(s); delete them first "
                    "or set force"
                )
            changes = []
            aliases = c.execute(
                "SELECT alias FROM aliases WHERE model = ? ORDER BY alias", (name,)
            ).fetchall()
            for (alias,) in aliases:
                change = _move_alias(
                    c, name, alias, None, now, reason or "model deleted", actor, "delete_model"
                )
                if change is not None:
                    changes.append(change)
            c.execute("DELETE FROM versions WHERE model = ?", (name,))
            c.execute("DELETE FROM alias_history WHERE model = ?", (name,))
            c.execute("DELETE FROM models WHERE name = ?", (name,))
            return (len(rows), [r[0] for r in rows]), changes

        count, shas = self._change_aliases(name, delete)
        for sha in set(shas):
            self._collect(sha)
        return int(count)

    # -- versions -------------------------------------------------------------------------------

    def upload_version(
        self,
        model: str,
        artifact: Artifact,
        metadata: VersionMetadata | None = None,
        *,
        actor: str = "",
    ) -> ModelVersion:
        """Validate and store a new version; its number is assigned when its row commits.

        ``artifact`` is the ONNX bytes, an iterable of byte chunks (streamed to disk while
        hashed), or a binary file object. On any failure nothing is stored and no version number
        is used up.
        """
        meta = _check_metadata(metadata or VersionMetadata())
        actor = validation.actor(actor)
        validation.model_name(model)
        if meta.size_bytes > self.max_artifact_bytes:
            raise errors.invalid(
                "size_bytes", meta.size_bytes, f"at most {self.max_artifact_bytes} bytes"
            )
        last = self._db.read(lambda c: _model_row(c, model)[6])
        if meta.parent_version is not None and meta.parent_version > last:
            raise errors.invalid(
                "parent_version",
                meta.parent_version,
                f"model {model!r} has no version above {last}",
            )
        with self._artifacts.receive(_chunks(artifact), self.max_artifact_bytes) as staged:
            if staged.size == 0:
                raise errors.invalid("artifact", "0 bytes", "an ONNX model (got no bytes)")
            if meta.size_bytes and meta.size_bytes != staged.size:
                raise errors.invalid(
                    "size_bytes",
                    meta.size_bytes,
                    f"the size of the artifact received ({staged.size} bytes)",
                )
            if meta.sha256 and meta.sha256 != staged.sha256:
                raise errors.invalid(
                    "sha256",
                    meta.sha256,
                    f"the received {staged.size} bytes hash to {staged.sha256}",
                )
            inputs, outputs = onnx_check.inspect(staged.path)
            now = time.time()

            def insert(c: sqlite3.Connection) -> tuple[ModelVersion, list[AliasChange]]:
                return _insert_version(
                    c, model, staged.sha256, staged.size, inputs, outputs, meta, now, actor
                )

            with self._artifacts.lock(staged.sha256):
                self._artifacts.place(staged)
                try:
                    if meta.alias:
                        return self._change_aliases(model, insert)  # type: ignore[no-any-return]
                    version, _ = self._db.write(insert)
                    return version
                except BaseException:
                    self._collect_locked(staged.sha256)
                    raise

    def get_version(
        self, model: str, version: int | None = None, alias: str | None = None
    ) -> ModelVersion:
        """One version by number or by alias ("latest": the newest); NotFound when absent."""
        validation.model_name(model)
        if (version is None) == (alias is None):
            raise errors.invalid("version", version, "give exactly one of version and alias")
        if version is not None:
            validation.version_number(version)
        else:
            validation.alias_name(alias or "", settable=False)

        def query(c: sqlite3.Connection) -> ModelVersion:
            _model_row(c, model)
            number = version if version is not None else _resolve_alias(c, model, alias or "")
            return _version(c, _version_row(c, model, number))

        return self._db.read(query)

    def list_versions(
        self,
        model: str,
        page_size: int = DEFAULT_PAGE_SIZE,
        page_token: str = "",
        tag_filter: Mapping[str, str] | None = None,
    ) -> Page[ModelVersion]:
        """Versions newest first, ``page_size`` at a time, optionally only those with every tag."""
        validation.model_name(model)
        size = _page_size(page_size)
        after = _decode_token(page_token, "versions")
        where, args = _tag_clause("versions", validation.tags(tag_filter or {}, "tag_filter"))
        where.insert(0, "model = ?")
        args.insert(0, model)
        if after is not None:
            where.append("version < ?")
            args.append(int(after))
        sql = (
            f"SELECT {_VERSION_COLUMNS} FROM versions {_where(where)} ORDER BY version DESC LIMIT ?"
        )

        def query(c: sqlite3.Connection) -> Page[ModelVersion]:
            _model_row(c, model)
            rows = c.execute(sql, (*args, size + 1)).fetchall()
            by_version: dict[int, list[str]] = {}
            for alias, number in c.execute(
                "SELECT alias, version FROM aliases WHERE model = ? ORDER BY alias", (model,)
            ):
                by_version.setdefault(number, []).append(alias)
            memo: dict[str, tuple[TensorSpec, ...]] = {}
            items = [
                _version_from_row(row, by_version.get(row[1], ()), memo) for row in rows[:size]
            ]
            token = _encode_token("versions", items[-1].version) if len(rows) > size else ""
            return Page(items, token)

        return self._db.read(query)

    def delete_version(self, model: str, version: int) -> None:
        """Delete a version no alias points at; its artifact goes when nothing else uses it."""
        validation.model_name(model)
        validation.version_number(version)

        def delete(c: sqlite3.Connection) -> str:
            row = _version_row(c, model, version)
            aliases = [
                a
                for (a,) in c.execute(
                    "SELECT alias FROM aliases WHERE model = ? AND version = ? ORDER BY alias",
                    (model, version),
                )
            ]
            if aliases:
                raise errors.FailedPrecondition(
                    f"version: {model} version {version} is aliased as "
                    f"{', '.join(repr(a) for a in aliases)}; move or delete the alias first"
                )
            c.execute("DELETE FROM versions WHERE model = ? AND version = ?", (model, version))
            c.execute("UPDATE models SET updated_at = ? WHERE name = ?", (time.time(), model))
            return str(row[2])

        sha = self._db.write(delete)
        self._collect(sha)

    def read_artifact(self, model: str, version: int) -> bytes:
        """The artifact's bytes, verified against the stored sha256 (ArtifactCorrupted if not)."""
        mv = self.get_version(model, version)
        try:
            return self._artifacts.read(mv.sha256, mv.size_bytes)
        except ArtifactCorrupted as exc:
            log.error("%s version %d: %s", model, version, exc)
            raise

    def open_artifact(
        self, model: str, version: int | None = None, alias: str | None = None
    ) -> tuple[ModelVersion, BinaryIO]:
        """The version and an open, already verified file of its bytes (for streaming)."""
        mv = self.get_version(model, version, alias)
        try:
            return mv, self._artifacts.open_verified(mv.sha256, mv.size_bytes)
        except ArtifactCorrupted as exc:
            log.error("%s version %d: %s", model, mv.version, exc)
            raise

    def artifact_path(self, model: str, version: int) -> Path:
        """Where the artifact lives (not verified: prefer ``read_artifact``)."""
        return self._artifacts.path(self.get_version(model, version).sha256)

    def _collect(self, sha256: str) -> None:
        with self._artifacts.lock(sha256):
            self._collect_locked(sha256)

    def _collect_locked(self, sha256: str) -> None:
        used = self._db.read(
            lambda c: c.execute(
                "SELECT 1 FROM versions WHERE sha256 = ? LIMIT 1", (sha256,)
            ).fetchone()
        )
        if used is None:
            self._artifacts.remove(sha256)

    # -- aliases --------------------------------------------------------------------------------

    def aliases(self, model: str) -> dict[str, int]:
        validation.model_name(model)

        def query(c: sqlite3.Connection) -> dict[str, int]:
            _model_row(c, model)
            return _aliases(c, model)

        return self._db.read(query)

    def set_alias(
        self, model: str, alias: str, version: int, reason: str = "", actor: str = ""
    ) -> AliasChange:
        """Point ``alias`` at ``version``. Setting it to where it already points changes nothing
        and returns the change that put it there."""
        validation.model_name(model)
        validation.alias_name(alias)
        validation.version_number(version)
        reason = validation.reason(reason)
        actor = validation.actor(actor)
        now = time.time()

        def move(c: sqlite3.Connection) -> tuple[AliasChange, list[AliasChange]]:
            _version_row(c, model, version)
            change = _move_alias(c, model, alias, version, now, reason, actor, "set")
            if change is None:
                return _last_change(c, model, alias), []
            return change, [change]

        return self._change_aliases(model, move)  # type: ignore[no-any-return]

    def delete_alias(
        self, model: str, alias: str, reason: str = "", actor: str = ""
    ) -> AliasChange:
        validation.model_name(model)
        validation.alias_name(alias)
        reason = validation.reason(reason)
        actor = validation.actor(actor)
        now = time.time()

        def move(c: sqlite3.Connection) -> tuple[AliasChange, list[AliasChange]]:
            _model_row(c, model)
            change = _move_alias(c, model, alias, None, now, reason, actor, "delete")
            if change is None:
                raise errors.NotFound(f"alias: model {model!r} has no alias {alias!r}")
            return change, [change]

        return self._change_aliases(model, move)  # type: ignore[no-any-return]

    def promote(
        self, model: str, reason: str = "", actor: str = ""
    ) -> tuple[AliasChange, AliasChange]:
        """The challenger's version becomes the champion and the challenger alias is removed,
        in one transaction. Returns (champion change, challenger removal)."""
        validation.model_name(model)
        reason = validation.reason(reason)
        actor = validation.actor(actor)
        now = time.time()

        def move(
            c: sqlite3.Connection,
        ) -> tuple[tuple[AliasChange, AliasChange], list[AliasChange]]:
            _model_row(c, model)
            current = _aliases(c, model)
            challenger = current.get(CHALLENGER)
            if challenger is None:
                raise errors.FailedPrecondition(
                    f"model: {model!r} has no {CHALLENGER!r} alias, so there is nothing to promote"
                )
            if current.get(CHAMPION) == challenger:
                raise errors.FailedPrecondition(
                    f"model: {model!r} champion and challenger both point at version "
                    f"{challenger}; nothing to promote (delete the challenger alias instead)"
                )
            champion = _move_alias(c, model, CHAMPION, challenger, now, reason, actor, "promote")
            removed = _move_alias(c, model, CHALLENGER, None, now, reason, actor, "promote")
            assert champion is not None and removed is not None
            return (champion, removed), [champion, removed]

        return self._change_aliases(model, move)  # type: ignore[no-any-return]

    def rollback(self, model: str, reason: str = "", actor: str = "") -> AliasChange:
        """The champion goes back to the version it pointed at before its last change.

        Rollbacks stack: each one undoes one more earlier change (3 -> 2, then 2 -> 1), like an
        undo history, rather than toggling between the last two versions.
        """
        validation.model_name(model)
        reason = validation.reason(reason)
        actor = validation.actor(actor)
        now = time.time()

        def move(c: sqlite3.Connection) -> tuple[AliasChange, list[AliasChange]]:
            _model_row(c, model)
            current = _aliases(c, model).get(CHAMPION)
            target = _rollback_target(c, model)
            if target is None:
                raise errors.FailedPrecondition(
                    f"model: {model!r} champion has no earlier version to roll back to"
                )
            if target == current:
                raise errors.FailedPrecondition(
                    f"model: {model!r} champion already points at version {target}"
                )
            exists = c.execute(
                "SELECT 1 FROM versions WHERE model = ? AND version = ?", (model, target)
            ).fetchone()
            if exists is None:
                raise errors.FailedPrecondition(
                    f"model: {model!r} champion would roll back to version {target}, which was "
                    "deleted"
                )
            change = _move_alias(c, model, CHAMPION, target, now, reason, actor, "rollback")
            assert change is not None
            return change, [change]

        return self._change_aliases(model, move)  # type: ignore[no-any-return]

    def alias_history(
        self,
        model: str,
        alias: str = "",
        page_size: int = DEFAULT_PAGE_SIZE,
        page_token: str = "",
    ) -> Page[AliasChange]:
        """Recorded alias changes, newest first (one alias, or every alias when empty)."""
        validation.model_name(model)
        if alias:
            validation.alias_name(alias)
        size = _page_size(page_size)
        after = _decode_token(page_token, "history")
        where = ["model = ?"]
        args: list[Any] = [model]
        if alias:
            where.append("alias = ?")
            args.append(alias)
        if after is not None:
            where.append("id < ?")
            args.append(int(after))
        sql = (
            f"SELECT {_HISTORY_COLUMNS} FROM alias_history {_where(where)} ORDER BY id DESC LIMIT ?"
        )

        def query(c: sqlite3.Connection) -> Page[AliasChange]:
            _model_row(c, model)
            rows = c.execute(sql, (*args, size + 1)).fetchall()
            items = [_change(row) for row in rows[:size]]
            token = _encode_token("history", items[-1].id) if len(rows) > size else ""
            return Page(items, token)

        return self._db.read(query)

    # -- integrity ------------------------------------------------------------------------------

    def verify(self) -> list[str]:
        """Check every stored artifact against its hash; returns a problem description for each
        version whose bytes are missing or wrong (empty: all good)."""
        rows = self._db.read(
            lambda c: c.execute(
                "SELECT model, version, sha256, size_bytes FROM versions"
            ).fetchall()
        )
        problems = []
        for model, version, sha, size in rows:
            try:
                self._artifacts.open_verified(sha, size).close()
            except errors.LLMOptError as exc:
                problems.append(f"{model} version {version}: {exc}")
        return problems


# -- SQL helpers (run inside a read or write transaction) ---------------------------------------


def _model_row(c: sqlite3.Connection, name: str) -> tuple[Any, ...]:
    row = c.execute(
        "SELECT name, description, task, tags, created_at, updated_at, last_version"
        " FROM models WHERE name = ?",
        (name,),
    ).fetchone()
    if row is None:
        raise errors.NotFound(f"model: {name!r} is not a registered model")
    return tuple(row)


def _model(c: sqlite3.Connection, row: tuple[Any, ...]) -> Model:
    return Model(
        name=row[0],
        description=row[1],
        task=ModelTask(row[2]),
        tags=json.loads(row[3]),
        created_at=row[4],
        updated_at=row[5],
        aliases=_aliases(c, row[0]),
        latest_version=row[6],
    )


def _aliases(c: sqlite3.Connection, model: str) -> dict[str, int]:
    return dict(
        c.execute(
            "SELECT alias, version FROM aliases WHERE model = ? ORDER BY alias", (model,)
        ).fetchall()
    )


def _version_row(c: sqlite3.Connection, model: str, version: int) -> tuple[Any, ...]:
    row = c.execute(
        f"SELECT {_VERSION_COLUMNS} FROM versions WHERE model = ? AND version = ?",
        (model, version),
    ).fetchone()
    if row is None:
        raise errors.NotFound(f"version: model {model!r} has no version {version}")
    return tuple(row)


def _version(c: sqlite3.Connection, row: tuple[Any, ...]) -> ModelVersion:
    aliases = [
        a
        for (a,) in c.execute(
            "SELECT alias FROM aliases WHERE model = ? AND version = ? ORDER BY alias",
            (row[0], row[1]),
        )
    ]
    return _version_from_row(row, aliases)


def _version_from_row(
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
    )


def _signature(text: str, memo: dict[str, tuple[TensorSpec, ...]]) -> tuple[TensorSpec, ...]:
    specs = memo.get(text)
    if specs is None:
        specs = memo[text] = tuple(TensorSpec.from_dict(d) for d in json.loads(text))
    return specs


def _resolve_alias(c: sqlite3.Connection, model: str, alias: str) -> int:
    if alias == LATEST:
        row = c.execute("SELECT max(version) FROM versions WHERE model = ?", (model,)).fetchone()
        if row[0] is None:
            raise errors.NotFound(f"alias: model {model!r} has no versions, so no {LATEST!r}")
        return int(row[0])
    row = c.execute(
        "SELECT version FROM aliases WHERE model = ? AND alias = ?", (model, alias)
    ).fetchone()
    if row is None:
        raise errors.NotFound(f"alias: model {model!r} has no alias {alias!r}")
    return int(row[0])


def _insert_version(
    c: sqlite3.Connection,
    model: str,
    sha256: str,
    size: int,
    inputs: tuple[TensorSpec, ...],
    outputs: tuple[TensorSpec, ...],
    meta: VersionMetadata,
    now: float,
    actor: str,
) -> tuple[ModelVersion, list[AliasChange]]:
    last = int(_model_row(c, model)[6])
    version = last + 1
    if meta.parent_version is not None and meta.parent_version > last:
        raise errors.invalid(
            "parent_version", meta.parent_version, f"model {model!r} has no version above {last}"
        )
    c.execute(
        "UPDATE models SET last_version = ?, updated_at = ? WHERE name = ?", (version, now, model)
    )
    c.execute(
        f"INSERT INTO versions ({_VERSION_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
        ),
    )
    changes: list[AliasChange] = []
    if meta.alias:
        change = _move_alias(
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
    )
    return mv, changes


def _move_alias(
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
    row = c.execute(
        "SELECT version FROM aliases WHERE model = ? AND alias = ?", (model, alias)
    ).fetchone()
    from_version = None if row is None else int(row[0])
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
        f"INSERT INTO alias_history ({_HISTORY_COLUMNS.removeprefix('id, ')})"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
        (model, alias, from_version, to_version, now, reason, actor, kind),
    ).fetchone()
    c.execute("UPDATE models SET updated_at = ? WHERE name = ?", (now, model))
    return AliasChange(change_id, model, alias, from_version, to_version, now, reason, actor, kind)


def _last_change(c: sqlite3.Connection, model: str, alias: str) -> AliasChange:
    row = c.execute(
        f"SELECT {_HISTORY_COLUMNS} FROM alias_history WHERE model = ? AND alias = ?"
        " ORDER BY id DESC LIMIT 1",
        (model, alias),
    ).fetchone()
    return _change(row)


def _rollback_target(c: sqlite3.Connection, model: str) -> int | None:
    """Walk the champion's history newest first; each rollback undoes one earlier change."""
    undone = 0
    for kind, from_version in c.execute(
        "SELECT kind, from_version FROM alias_history WHERE model = ? AND alias = ?"
        " ORDER BY id DESC",
        (model, CHAMPION),
    ):
        if kind == "rollback":
            undone += 1
        elif undone:
            undone -= 1
        else:
            return None if from_version is None else int(from_version)
    return None


def _change(row: tuple[Any, ...]) -> AliasChange:
    return AliasChange(*row)


def _check_metadata(meta: VersionMetadata) -> VersionMetadata:
    if meta.parent_version is not None:
        validation.version_number(meta.parent_version, "parent_version")
    if meta.alias:
        validation.alias_name(meta.alias)
    if (
        isinstance(meta.size_bytes, bool)
        or not isinstance(meta.size_bytes, int)
        or meta.size_bytes < 0
    ):
        raise errors.invalid("size_bytes", meta.size_bytes, "0 (unknown) or the artifact's size")
    return VersionMetadata(
        semver=validation.semver(meta.semver),
        parent_version=meta.parent_version,
        metrics=validation.metrics(meta.metrics),
        tags=validation.tags(meta.tags),
        description=validation.description(meta.description),
        sha256=validation.sha256(meta.sha256),
        alias=meta.alias,
        size_bytes=meta.size_bytes,
    )


def _chunks(artifact: Artifact) -> Iterator[bytes]:
    if isinstance(artifact, bytes | bytearray | memoryview):
        yield bytes(artifact) if not isinstance(artifact, bytes) else artifact
    elif hasattr(artifact, "read"):
        while block := artifact.read(1 << 20):
            yield block
    else:
        for chunk in artifact:
            if not isinstance(chunk, bytes | bytearray | memoryview):
                raise errors.invalid("artifact", type(chunk).__name__, "chunks of bytes")
            yield chunk  # type: ignore[misc]


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


def _page_size(value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0 or value > MAX_PAGE_SIZE:
        raise errors.invalid(
            "page.page_size", value, f"0 (default {DEFAULT_PAGE_SIZE}) to {MAX_PAGE_SIZE}"
        )
    return value or DEFAULT_PAGE_SIZE


def _encode_token(kind: str, after: str | int) -> str:
    raw = json.dumps([kind, after], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_token(token: str, kind: str) -> str | int | None:
    if not token:
        return None
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        got_kind, after = json.loads(raw)
    except (ValueError, binascii.Error, TypeError):
        raise errors.invalid("page.page_token", token, "a token from a previous response") from None
    if got_kind != kind or not isinstance(after, str | int) or isinstance(after, bool):
        raise errors.invalid("page.page_token", token, f"a token from a previous {kind} listing")
    return after

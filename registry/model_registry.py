"""The model registry: models, versions, aliases and their history, in SQLite plus artifact files.

``Registry`` is the facade; the jobs behind it live beside it: ``catalog`` (the schema and the
SQL of every row), ``alias_rules`` (which alias moves are allowed and what they record),
``notifications`` (telling subscribers after commit), ``artifacts`` (the content-addressed
files), ``paging`` (page sizes and tokens) and ``validation`` (checks on what callers send).

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

import logging
import sqlite3
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import BinaryIO, TypeVar

import numpy as np

from llmopt import errors
from llmopt.registry import alias_rules, catalog, onnx_check, paging, validation
from llmopt.registry.alias_rules import CHALLENGER, CHAMPION, LATEST
from llmopt.registry.artifacts import Artifact, ArtifactCorrupted, ArtifactStore, chunks
from llmopt.registry.catalog import MIGRATIONS
from llmopt.registry.notifications import AliasNotifier, Subscriber
from llmopt.registry.paging import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE
from llmopt.registry.types import (
    AliasChange,
    Model,
    ModelTask,
    ModelVersion,
    Page,
    VersionMetadata,
)
from llmopt.storage import Database, private_folder

__all__ = [
    "CHALLENGER",
    "CHAMPION",
    "DEFAULT_PAGE_SIZE",
    "LATEST",
    "MAX_ARTIFACT_BYTES",
    "MAX_PAGE_SIZE",
    "MIGRATIONS",
    "Artifact",
    "Registry",
    "Subscriber",
]

log = logging.getLogger("llmopt.registry")

T = TypeVar("T")
# ONNX files are protobuf messages, which cannot exceed 2 GiB.
MAX_ARTIFACT_BYTES = 2**31 - 1


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
        self.root = private_folder(Path(root))
        self.max_artifact_bytes = max_artifact_bytes
        self._db = Database(
            self.root / "registry.db", migrations=MIGRATIONS, synchronous=synchronous
        )
        self._artifacts = ArtifactStore(self.root / "artifacts")
        self._notifier = AliasNotifier()
        self._recover()

    # -- lifecycle ------------------------------------------------------------------------------

    def _recover(self) -> None:
        """Drop what an interrupted upload left: temp files, and placed files no row refers to."""
        swept = self._artifacts.sweep_tmp()
        referenced = set(self._db.read(catalog.referenced_shas))
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
        self._db.read(catalog.count_models)

    def close(self) -> None:
        self._db.close()

    # -- subscriptions --------------------------------------------------------------------------

    def subscribe(self, callback: Subscriber) -> Callable[[], None]:
        """Call ``callback(AliasEvent)`` after every committed alias change; returns unsubscribe.

        Callbacks run synchronously on the thread that made the change, in commit order per
        model, before that change's call returns. Their exceptions are logged, never raised.
        """
        return self._notifier.subscribe(callback)

    def _change_aliases(
        self, model: str, fn: Callable[[sqlite3.Connection], tuple[T, list[AliasChange]]]
    ) -> T:
        """Run an alias-changing write and notify subscribers, in commit order for the model."""
        return self._notifier.commit(model, lambda: self._db.write(fn))

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
        self._db.write(lambda c: catalog.insert_model(c, name, description, task, tag_map, now))
        return Model(name, description, task, tag_map, now, now, {}, 0)

    def get_model(self, name: str) -> Model:
        validation.model_name(name, "name")
        return self._db.read(lambda c: catalog.model_from_row(c, catalog.model_row(c, name)))

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
        size = paging.page_size(page_size)
        after = paging.decode_token(page_token, "models")
        tag_map = validation.tags(tag_filter or {}, "tag_filter")
        return self._db.read(lambda c: catalog.models_page(c, size, after, tag_map))

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

        def delete(c: sqlite3.Connection) -> tuple[list[str], list[AliasChange]]:
            catalog.model_row(c, name)
            shas = catalog.version_shas(c, name)
            if shas and not force:
                raise errors.FailedPrecondition(
                    f"name: model {name!r} still has {len(shas)} version(s); delete them first "
                    "or set force"
                )
            changes = alias_rules.remove_all(c, name, now, reason or "model deleted", actor)
            catalog.delete_model(c, name)
            return shas, changes

        shas = self._change_aliases(name, delete)
        for sha in set(shas):
            self._collect(sha)
        return len(shas)

    # -- versions -------------------------------------------------------------------------------

    def upload_version(
        self,
        model: str,
        artifact: Artifact,
        metadata: VersionMetadata | None = None,
        *,
        actor: str = "",
        number: int | None = None,
    ) -> ModelVersion:
        """Validate and store a new version; its number is assigned when its row commits (the
        model's next one, or ``number`` when given: it must be above every number the model has
        used, else FailedPrecondition).

        ``artifact`` is the ONNX bytes, an iterable of byte chunks (streamed to disk while
        hashed), or a binary file object. ``metadata.background`` (optional) is a sample of
        the inputs kept with the version, checked against the model's one float input. On any
        failure nothing is stored and no version number is used up.
        """
        meta = validation.version_metadata(metadata or VersionMetadata())
        actor = validation.actor(actor)
        validation.model_name(model)
        if number is not None:
            validation.version_number(number, "number")
        if meta.size_bytes > self.max_artifact_bytes:
            raise errors.invalid(
                "size_bytes", meta.size_bytes, f"at most {self.max_artifact_bytes} bytes"
            )
        last = self._db.read(lambda c: catalog.model_row(c, model)[6])
        if meta.parent_version is not None and meta.parent_version > last:
            raise errors.invalid(
                "parent_version",
                meta.parent_version,
                f"model {model!r} has no version above {last}",
            )
        with self._artifacts.receive(chunks(artifact), self.max_artifact_bytes) as staged:
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
            if meta.background is not None:
                validation.background_fits(meta.background, inputs)
            now = time.time()

            def insert(c: sqlite3.Connection) -> tuple[ModelVersion, list[AliasChange]]:
                return catalog.insert_version(
                    c, model, staged.sha256, staged.size, inputs, outputs, meta, now, actor, number
                )

            with self._artifacts.lock(staged.sha256):
                self._artifacts.place(staged)
                try:
                    if meta.alias:
                        return self._change_aliases(model, insert)
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
            catalog.model_row(c, model)
            number = version if version is not None else alias_rules.resolve(c, model, alias or "")
            return catalog.version_with_aliases(c, catalog.version_row(c, model, number))

        return self._db.read(query)

    def find_version(self, model: str, sha256: str) -> ModelVersion | None:
        """The model's lowest-numbered version whose artifact hashes to ``sha256`` (hex), None
        when it has none; NotFound when there is no such model."""
        validation.model_name(model)

        def query(c: sqlite3.Connection) -> ModelVersion | None:
            catalog.model_row(c, model)
            row = catalog.version_with_sha(c, model, sha256.lower())
            return None if row is None else catalog.version_with_aliases(c, row)

        return self._db.read(query)

    def background(
        self, model: str, version: int | None = None, alias: str | None = None
    ) -> np.ndarray | None:
        """The version's background sample ([rows, features] float64, read-only), or None when it
        was uploaded without one; NotFound when there is no such version."""
        number = self.get_version(model, version, alias).version
        return self._db.read(lambda c: catalog.background(c, model, number))

    def list_versions(
        self,
        model: str,
        page_size: int = DEFAULT_PAGE_SIZE,
        page_token: str = "",
        tag_filter: Mapping[str, str] | None = None,
    ) -> Page[ModelVersion]:
        """Versions newest first, ``page_size`` at a time, optionally only those with every tag."""
        validation.model_name(model)
        size = paging.page_size(page_size)
        after = paging.decode_token(page_token, "versions")
        tag_map = validation.tags(tag_filter or {}, "tag_filter")

        def query(c: sqlite3.Connection) -> Page[ModelVersion]:
            catalog.model_row(c, model)
            return catalog.versions_page(c, model, size, after, tag_map)

        return self._db.read(query)

    def delete_version(self, model: str, version: int) -> None:
        """Delete a version no alias points at; its artifact goes when nothing else uses it."""
        validation.model_name(model)
        validation.version_number(version)

        def delete(c: sqlite3.Connection) -> str:
            row = catalog.version_row(c, model, version)
            names = catalog.version_aliases(c, model, version)
            if names:
                raise errors.FailedPrecondition(
                    f"version: {model} version {version} is aliased as "
                    f"{', '.join(repr(a) for a in names)}; move or delete the alias first"
                )
            catalog.delete_version(c, model, version, time.time())
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
        if not self._db.read(lambda c: catalog.sha_in_use(c, sha256)):
            self._artifacts.remove(sha256)

    # -- aliases --------------------------------------------------------------------------------

    def aliases(self, model: str) -> dict[str, int]:
        validation.model_name(model)

        def query(c: sqlite3.Connection) -> dict[str, int]:
            catalog.model_row(c, model)
            return catalog.aliases(c, model)

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
        return self._change_aliases(
            model, lambda c: alias_rules.set_alias(c, model, alias, version, now, reason, actor)
        )

    def delete_alias(
        self, model: str, alias: str, reason: str = "", actor: str = ""
    ) -> AliasChange:
        validation.model_name(model)
        validation.alias_name(alias)
        reason = validation.reason(reason)
        actor = validation.actor(actor)
        now = time.time()
        return self._change_aliases(
            model, lambda c: alias_rules.delete_alias(c, model, alias, now, reason, actor)
        )

    def promote(
        self, model: str, reason: str = "", actor: str = ""
    ) -> tuple[AliasChange, AliasChange]:
        """The challenger's version becomes the champion and the challenger alias is removed,
        in one transaction. Returns (champion change, challenger removal)."""
        validation.model_name(model)
        reason = validation.reason(reason)
        actor = validation.actor(actor)
        now = time.time()
        return self._change_aliases(
            model, lambda c: alias_rules.promote(c, model, now, reason, actor)
        )

    def rollback(self, model: str, reason: str = "", actor: str = "") -> AliasChange:
        """The champion goes back to the version it pointed at before its last change.

        Rollbacks stack: each one undoes one more earlier change (3 -> 2, then 2 -> 1), like an
        undo history, rather than toggling between the last two versions.
        """
        validation.model_name(model)
        reason = validation.reason(reason)
        actor = validation.actor(actor)
        now = time.time()
        return self._change_aliases(
            model, lambda c: alias_rules.rollback(c, model, now, reason, actor)
        )

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
        size = paging.page_size(page_size)
        after = paging.decode_token(page_token, "history")

        def query(c: sqlite3.Connection) -> Page[AliasChange]:
            catalog.model_row(c, model)
            return catalog.history_page(c, model, alias, size, after)

        return self._db.read(query)

    # -- integrity ------------------------------------------------------------------------------

    def verify(self) -> list[str]:
        """Check every stored artifact against its hash; returns a problem description for each
        version whose bytes are missing or wrong (empty: all good)."""
        rows = self._db.read(catalog.artifact_rows)
        problems = []
        for model, version, sha, size in rows:
            try:
                self._artifacts.open_verified(sha, size).close()
            except errors.LLMOptError as exc:
                problems.append(f"{model} version {version}: {exc}")
        return problems

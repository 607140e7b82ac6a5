"""The alias state machine: which moves of a model's aliases are allowed, and what they record.

An alias names one version of a model (``champion``, ``challenger``, any other lower-case name);
``latest`` is not stored but always means the newest version. Each move is recorded as an
``AliasChange`` in the alias history, which rollback walks back through.

Every transition runs inside one write transaction, on the connection it is given, and returns
``(result, changes)``: the caller commits, then tells subscribers of ``changes`` in that order.
The statements themselves live in ``catalog``.
"""

from __future__ import annotations

import sqlite3

from llmopt import errors
from llmopt.registry import catalog
from llmopt.registry.types import AliasChange

CHAMPION = "champion"
CHALLENGER = "challenger"
LATEST = "latest"


def resolve(c: sqlite3.Connection, model: str, alias: str) -> int:
    """The version number ``alias`` stands for ("latest": the newest); NotFound when none."""
    if alias == LATEST:
        newest = catalog.newest_version(c, model)
        if newest is None:
            raise errors.NotFound(f"alias: model {model!r} has no versions, so no {LATEST!r}")
        return newest
    version = catalog.alias_version(c, model, alias)
    if version is None:
        raise errors.NotFound(f"alias: model {model!r} has no alias {alias!r}")
    return version


def set_alias(
    c: sqlite3.Connection,
    model: str,
    alias: str,
    version: int,
    now: float,
    reason: str,
    actor: str,
) -> tuple[AliasChange, list[AliasChange]]:
    """Point ``alias`` at an existing ``version``; when it already points there, nothing changes
    and the result is the change that put it there."""
    catalog.version_row(c, model, version)
    change = catalog.move_alias(c, model, alias, version, now, reason, actor, "set")
    if change is None:
        return catalog.last_change(c, model, alias), []
    return change, [change]


def delete_alias(
    c: sqlite3.Connection, model: str, alias: str, now: float, reason: str, actor: str
) -> tuple[AliasChange, list[AliasChange]]:
    """Remove ``alias``; NotFound when the model has no such alias."""
    catalog.model_row(c, model)
    change = catalog.move_alias(c, model, alias, None, now, reason, actor, "delete")
    if change is None:
        raise errors.NotFound(f"alias: model {model!r} has no alias {alias!r}")
    return change, [change]


def promote(
    c: sqlite3.Connection, model: str, now: float, reason: str, actor: str
) -> tuple[tuple[AliasChange, AliasChange], list[AliasChange]]:
    """The challenger's version becomes the champion and the challenger alias is removed."""
    catalog.model_row(c, model)
    current = catalog.aliases(c, model)
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
    champion = catalog.move_alias(c, model, CHAMPION, challenger, now, reason, actor, "promote")
    removed = catalog.move_alias(c, model, CHALLENGER, None, now, reason, actor, "promote")
    assert champion is not None and removed is not None
    return (champion, removed), [champion, removed]


def rollback(
    c: sqlite3.Connection, model: str, now: float, reason: str, actor: str
) -> tuple[AliasChange, list[AliasChange]]:
    """The champion goes back to the version it pointed at before its last change."""
    catalog.model_row(c, model)
    current = catalog.aliases(c, model).get(CHAMPION)
    target = rollback_target(c, model)
    if target is None:
        raise errors.FailedPrecondition(
            f"model: {model!r} champion has no earlier version to roll back to"
        )
    if target == current:
        raise errors.FailedPrecondition(
            f"model: {model!r} champion already points at version {target}"
        )
    if not catalog.version_exists(c, model, target):
        raise errors.FailedPrecondition(
            f"model: {model!r} champion would roll back to version {target}, which was deleted"
        )
    change = catalog.move_alias(c, model, CHAMPION, target, now, reason, actor, "rollback")
    assert change is not None
    return change, [change]


def rollback_target(c: sqlite3.Connection, model: str) -> int | None:
    """Walk the champion's history newest first; each rollback undoes one earlier change."""
    undone = 0
    for kind, from_version in catalog.history_moves(c, model, CHAMPION):
        if kind == "rollback":
            undone += 1
        elif undone:
            undone -= 1
        else:
            return None if from_version is None else int(from_version)
    return None


def remove_all(
    c: sqlite3.Connection, model: str, now: float, reason: str, actor: str
) -> list[AliasChange]:
    """Remove every alias of a model that is being deleted, in alias order."""
    changes = []
    for alias in catalog.alias_names(c, model):
        change = catalog.move_alias(c, model, alias, None, now, reason, actor, "delete_model")
        if change is not None:
            changes.append(change)
    return changes

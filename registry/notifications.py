"""Telling subscribers of alias changes: after the change commits, on the thread that made it,
in commit order for each model.

A per-model lock is held from the commit of a model's alias change until every subscriber has
been told of it, so two changes of one model can never be delivered out of order. A subscriber's
exception is logged and never reaches the writer.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterable
from typing import TypeVar

from llmopt.registry.types import AliasChange, AliasEvent

log = logging.getLogger("llmopt.registry")

T = TypeVar("T")
Subscriber = Callable[[AliasEvent], None]


class AliasNotifier:
    """The subscribers of one registry and the per-model order of telling them. Thread-safe."""

    def __init__(self) -> None:
        self._subscribers: tuple[Subscriber, ...] = ()
        self._subscribers_lock = threading.Lock()
        self._model_locks: dict[str, threading.RLock] = {}
        self._model_locks_guard = threading.Lock()

    def subscribe(self, callback: Subscriber) -> Callable[[], None]:
        """Call ``callback(AliasEvent)`` after every committed alias change; returns unsubscribe."""
        with self._subscribers_lock:
            self._subscribers = (*self._subscribers, callback)

        def unsubscribe() -> None:
            with self._subscribers_lock:
                subs = list(self._subscribers)
                with contextlib.suppress(ValueError):
                    subs.remove(callback)
                self._subscribers = tuple(subs)

        return unsubscribe

    def commit(self, model: str, write: Callable[[], tuple[T, Iterable[AliasChange]]]) -> T:
        """Run ``write`` (which commits alias changes of ``model`` and returns its result with
        them) and tell every subscriber of those changes before another can commit."""
        with self._model_lock(model):
            result, changes = write()
            self._notify(changes)
        return result

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

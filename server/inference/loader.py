"""Model loading: open a version's onnxruntime session, keep it while it is used, unload the rest.

Loaded versions live in one table bounded by ``max_loaded_models``. The versions routing serves
(every model's champion and challenger, which the ``routed`` callback names) always stay; other
versions (pinned by callers) go least recently used first, and after ``idle_seconds`` without
use. An unloaded version is retired (``LoadedModel.retire``): it closes once the requests already
running on it have finished.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable

from llmopt.inference.session import LoadedModel, SessionConfig
from llmopt.inference.signature import signature_from
from llmopt.ports import ArtifactSource

log = logging.getLogger("llmopt.inference")


class ModelLoader:
    """Loads and warms model versions and bounds how many stay open; safe from many threads."""

    def __init__(
        self,
        source: ArtifactSource,
        session: SessionConfig,
        *,
        max_loaded_models: int,
        idle_seconds: float,
        routed: Callable[[], Iterable[LoadedModel]],
    ) -> None:
        self._source = source
        self._session = session
        self._max_loaded = max_loaded_models
        self._idle_seconds = idle_seconds
        self._routed = routed
        self._loaded: dict[tuple[str, int], LoadedModel] = {}
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._janitor = threading.Thread(
            target=self._unload_idle_loop, name="model-janitor", daemon=True
        )
        self._janitor.start()

    def close(self) -> None:
        """Stop unloading idle versions and retire every version in the table."""
        if self._closed.is_set():
            return
        self._closed.set()
        self._janitor.join(timeout=5)
        with self._lock:
            loaded = list(self._loaded.values())
            self._loaded.clear()
        for m in loaded:
            m.retire()

    def get(self, model: str, version: int) -> LoadedModel | None:
        """The table's session of a version (possibly closed), without loading it."""
        return self._loaded.get((model, version))

    def loaded_versions(self) -> set[tuple[str, int]]:
        """(model, version) of every open session in the table."""
        return {k for k, m in list(self._loaded.items()) if not m.closed}

    def ensure_loaded(self, model: str, version: int, evict: bool = True) -> LoadedModel:
        """The open session of a version, loading and warming it if needed.

        Callers hold the model's lock, so one version is loaded once. ``evict``: make room in the
        table afterwards (routing evicts once after changing what it serves instead).
        """
        key = (model, version)
        loaded = self._loaded.get(key)
        if loaded is not None and not loaded.closed:
            return loaded
        for m in self._routed():
            if m.model == model and m.version == version and not m.closed:
                return m
        mv = self._source.get_version(model, version=version)
        artifact = self._source.read_artifact(model, version)
        start = time.perf_counter()
        loaded = LoadedModel(
            model, version, artifact, self._session, signature_from(mv.inputs, mv.outputs)
        )
        log.info(
            "model %r version %d loaded and warmed in %.1f ms",
            model,
            version,
            (time.perf_counter() - start) * 1e3,
        )
        with self._lock:
            self._loaded[key] = loaded
        if evict:
            self.evict(keep=loaded)
        return loaded

    def drop(self, loaded: LoadedModel) -> None:
        """A version left the routing: keep it if a caller pinned it recently, else retire it."""
        if time.monotonic() - loaded.pinned_at < self._idle_seconds:
            return
        with self._lock:
            if self._loaded.get((loaded.model, loaded.version)) is loaded:
                del self._loaded[(loaded.model, loaded.version)]
        loaded.retire()

    def drop_model(self, model: str) -> None:
        """Retire every version of ``model`` in the table, pinned or not (an unload)."""
        with self._lock:
            victims = [m for key, m in self._loaded.items() if key[0] == model]
            for m in victims:
                del self._loaded[(m.model, m.version)]
        for m in victims:
            m.retire()

    def evict(self, keep: LoadedModel | None = None, idle_before: float | None = None) -> None:
        """Retire unrouted versions beyond ``max_loaded_models`` (LRU first) or idle too long."""
        routed = set(self._routed())
        with self._lock:
            candidates = sorted(
                (m for m in self._loaded.values() if m not in routed and m is not keep),
                key=lambda m: m.last_used,
            )
            excess = len(self._loaded) - self._max_loaded
            victims = candidates[: max(excess, 0)]
            if idle_before is not None:
                victims += [m for m in candidates[len(victims) :] if m.last_used < idle_before]
            for m in victims:
                del self._loaded[(m.model, m.version)]
        for m in victims:
            log.info(
                "model %r version %d unloaded (%s)",
                m.model,
                m.version,
                "idle" if idle_before is not None and m.last_used < idle_before else "LRU",
            )
            m.retire()

    def _unload_idle_loop(self) -> None:
        period = min(max(self._idle_seconds / 4, 0.05), 30.0)
        while not self._closed.wait(period):
            try:
                self.evict(idle_before=time.monotonic() - self._idle_seconds)
            except Exception:
                log.exception("unloading idle models failed")

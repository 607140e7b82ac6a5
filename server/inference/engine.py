"""The model server: registry models served from onnxruntime sessions, and the routing that
picks which version answers (champion/challenger, traffic policy, shadow copies, hot swap).

Per model, a ``_ModelSlot`` holds an immutable ``_Routing`` snapshot (champion, challenger,
policy). Requests read the snapshot without a lock; alias changes and policy changes build a new
snapshot under the model's lock and replace it in one assignment, after the new version is loaded
and warmed. A version no longer routed to is handed back to the loader, which retires it unless a
caller pinned it recently.

Each prediction that ran hands its inputs to the ``ServedRows`` sink, when one is attached
(``sample_served_rows``: the explainer's sample of recent traffic, for global importance); a
SHADOW copy does once it has run on the challenger.

Loading, warming and unloading sessions (the bounded table of loaded versions, LRU and idle
eviction) is ``llmopt.inference.loader.ModelLoader``'s job; the champion and challenger it is told
about (``routed``) are never evicted.

``unload`` (the Open Inference Protocol's RepositoryModelUnload) drops every session of a model and
marks its slot unloaded: its requests answer UNAVAILABLE until ``load``, and alias changes meanwhile
are read at that load. The registry keeps its versions throughout.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import secrets
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from llmopt import errors
from llmopt.inference.batching import BatchingConfig, DynamicBatcher, batchable
from llmopt.inference.loader import ModelLoader
from llmopt.inference.policy_store import TrafficPolicyStore
from llmopt.inference.routing import ChampionChallengerRouter, TrafficMode, TrafficPolicy, Variant
from llmopt.inference.session import LoadedModel, SessionConfig
from llmopt.inference.shadow import ShadowJob, ShadowRunner
from llmopt.inference.signature import Signature, row_count, signature_from
from llmopt.inference.stats import LoadFailure, ModelStats, ModelStatsBook, VersionStatistics
from llmopt.ports import ModelSource, ServedRows

if TYPE_CHECKING:
    from llmopt.registry.types import AliasEvent

log = logging.getLogger("llmopt.inference")

CHAMPION = "champion"
CHALLENGER = "challenger"
VARIANT_BY_ALIAS = {CHAMPION: Variant.CHAMPION, CHALLENGER: Variant.CHALLENGER}
_ACQUIRE_ATTEMPTS = 16
_VERSION_PAGE = 1000  # the registry's largest page


@dataclass(frozen=True)
class EngineConfig:
    session: SessionConfig = field(default_factory=SessionConfig)
    max_loaded_models: int = 32
    idle_seconds: float = 600.0
    shadow_queue_size: int = 1024
    seed: int | None = None  # random (non-sticky) routing draws


class Prediction(NamedTuple):
    model: str
    version: int
    variant: Variant
    outputs: dict[str, np.ndarray]
    request_id: str


@dataclass(frozen=True)
class ModelDescription:
    """What the Open Inference Protocol's metadata calls report."""

    model: str
    version: int
    signature: Signature
    versions: tuple[int, ...]  # served now: champion and challenger
    servable: tuple[int, ...] = ()  # every version of the model in the registry


@dataclass(frozen=True)
class IndexEntry:
    model: str
    version: int
    state: str  # READY or UNAVAILABLE
    reason: str


@dataclass(frozen=True)
class _Routing:
    champion: LoadedModel | None
    challenger: LoadedModel | None
    policy: TrafficPolicy


class _ModelSlot:
    """One model's routing snapshot, stats and load failures; ``lock`` serialises changes."""

    def __init__(self, name: str, policy: TrafficPolicy) -> None:
        self.name = name
        self.lock = threading.RLock()
        self.routing = _Routing(None, None, policy)
        self.stats = ModelStatsBook(name)
        self.failures: dict[str, LoadFailure] = {}
        self.ready = False
        self.unloaded = False  # RepositoryModelUnload: no sessions, no requests until a load


def _row_feed(loaded: LoadedModel, row: np.ndarray) -> dict[str, np.ndarray]:
    """A feature vector as one row of the model's single input."""
    specs = loaded.signature.inputs
    if len(specs) != 1 or len(specs[0].shape) != 2 or specs[0].dtype.kind != "f":
        raise errors.invalid(
            "feature_set",
            f"model {loaded.model!r} version {loaded.version}",
            "a model with one float input of shape [rows, features] to predict from a feature "
            "vector; send input tensors instead",
        )
    return {specs[0].name: np.ascontiguousarray(row, dtype=specs[0].dtype).reshape(1, -1)}


class InferenceEngine:
    """Serves every registry model; safe to call from many threads."""

    def __init__(
        self, registry: ModelSource, policies: TrafficPolicyStore, config: EngineConfig
    ) -> None:
        if config.max_loaded_models < 1:
            raise errors.invalid("max_loaded_models", config.max_loaded_models, ">= 1")
        config.session.ort_providers()  # a provider that is not there fails now, not per model
        self.config = config
        self._registry = registry
        self._policies = policies
        self._router = ChampionChallengerRouter(config.seed)
        self._slots: dict[str, _ModelSlot] = {}
        self._slots_lock = threading.Lock()
        self._ids = itertools.count(1)
        self._id_prefix = secrets.token_hex(4)
        self._closed = threading.Event()
        self._shadow = ShadowRunner(config.shadow_queue_size)
        self._loader = ModelLoader(
            registry,
            config.session,
            max_loaded_models=config.max_loaded_models,
            idle_seconds=config.idle_seconds,
            routed=self._routed,
        )
        self._served: ServedRows | None = None
        # Per loaded version with batching on: (the version, its config, its batcher).
        self._batchers: dict[int, tuple[LoadedModel, BatchingConfig, DynamicBatcher]] = {}
        self._batchers_lock = threading.Lock()
        self._unsubscribe = registry.subscribe(self._on_alias_event)
        self.warm = False

    # -- lifecycle (llmopt.ports.Component) ------------------------------------------------------

    def warm_up(self) -> None:
        """Load and warm every model's champion and challenger before the server takes traffic."""
        for entry in self._registry.list_models():
            name = entry.name
            try:
                self._slot(name)
            except Exception as exc:
                log.error("model %r: could not be prepared at start: %s", name, exc)
        self.warm = True

    def close(self) -> None:
        if self._closed.is_set():
            return
        self._closed.set()
        self._unsubscribe()
        self._close_batchers(lambda loaded: True)
        self._shadow.close()
        self._loader.close()
        for m in self._routed():
            m.retire()

    # -- predictions ----------------------------------------------------------------------------

    def predict(
        self,
        model: str,
        inputs: Mapping[str, np.ndarray],
        *,
        version: int = 0,
        alias: str = "",
        output_names: Sequence[str] | None = None,
        routing_key: str = "",
        row: np.ndarray | None = None,
        deadline: float | None = None,
    ) -> Prediction:
        """Run ``inputs`` on the version the request names, or the one the policy routes to.

        ``row`` (a feature vector, instead of ``inputs``) is fed as one row to the model's single
        input, in that input's dtype. ``deadline`` (``time.monotonic()`` seconds): under dynamic
        batching, a request whose batch would start after it is dropped before compute
        (DeadlineExceeded).
        """
        start = time.perf_counter()
        slot, loaded, variant, routing = self._acquire(model, version, alias, routing_key)
        try:
            if row is not None:
                inputs = _row_feed(loaded, row)
            outputs = self._run(slot, loaded, variant, inputs, output_names, start, deadline)
        finally:
            loaded.release()
        served = self._served
        if served is not None:
            try:
                served.served(loaded.model, loaded.version, inputs)
            except Exception:
                log.exception("model %r: keeping the served rows failed", loaded.model)
        challenger = routing.challenger if routing is not None else None
        if (
            routing is not None
            and routing.policy.mode is TrafficMode.SHADOW
            and variant is Variant.CHAMPION
            and challenger is not None
            and not alias
        ):
            self._shadow.offer(
                ShadowJob(slot.stats, challenger, inputs, output_names, outputs, self._served)
            )
        return Prediction(model, loaded.version, variant, outputs, self._request_id())

    def sample_served_rows(self, sink: ServedRows | None) -> None:
        """Hand the inputs of every prediction that runs from now on to ``sink`` (None: to
        nobody); one sink, a later call replaces it."""
        self._served = sink

    @contextlib.contextmanager
    def serving(
        self, model: str, *, version: int = 0, alias: str = "", routing_key: str = ""
    ) -> Iterator[tuple[LoadedModel, Variant]]:
        """The loaded version a request naming ``version`` / ``alias`` (or neither: routed by
        the traffic policy, sticky by ``routing_key``) would run on, held for the block: the
        same resolution as ``predict``, for callers that run the session themselves (Explain).
        """
        _, loaded, variant, _ = self._acquire(model, version, alias, routing_key)
        try:
            yield loaded, variant
        finally:
            loaded.release()

    def _acquire(
        self, model: str, version: int, alias: str, routing_key: str
    ) -> tuple[_ModelSlot, LoadedModel, Variant, _Routing | None]:
        """Resolve and acquire the version a request runs on; the caller releases it. The
        routing snapshot it was chosen from comes back with it (None when pinned)."""
        if version and alias:
            raise errors.invalid("version", version, "name a version or an alias, not both")
        if version < 0:
            raise errors.invalid("version", version, "a version number >= 1 (0: routed)")
        slot = self._slot(model)
        if slot.unloaded:
            raise self._unloaded(model)
        if version or (alias and alias not in VARIANT_BY_ALIAS):
            return slot, self._acquire_pinned(slot, version, alias), Variant.PINNED, None
        for _ in range(_ACQUIRE_ATTEMPTS):
            routing = slot.routing
            if alias:
                variant = VARIANT_BY_ALIAS[alias]
            elif routing.champion is None:
                raise self._no_version(slot, CHAMPION)
            else:
                variant = self._router.choose(
                    routing.policy, routing.challenger is not None, routing_key
                )
            loaded = routing.champion if variant is Variant.CHAMPION else routing.challenger
            if loaded is None:
                raise self._no_version(slot, alias or CHAMPION)
            if loaded.acquire():
                return slot, loaded, variant, routing
        raise errors.Unavailable(f"model {model!r} is being swapped; retry")

    def _acquire_pinned(self, slot: _ModelSlot, version: int, alias: str) -> LoadedModel:
        if alias:
            version = int(self._registry.get_version(slot.name, alias=alias).version)
        key = (slot.name, version)
        for _ in range(_ACQUIRE_ATTEMPTS):
            loaded = self._loader.get(*key)
            if loaded is None or loaded.closed:
                with slot.lock:
                    if slot.unloaded:
                        raise self._unloaded(slot.name)
                    loaded = self._loader.ensure_loaded(slot.name, version)
            if loaded.acquire():
                loaded.pinned_at = loaded.last_used
                return loaded
        raise errors.Unavailable(f"model {slot.name!r} version {version} is being unloaded")

    def _run(
        self,
        slot: _ModelSlot,
        loaded: LoadedModel,
        variant: Variant,
        inputs: Mapping[str, np.ndarray],
        output_names: Sequence[str] | None,
        start: float,
        deadline: float | None = None,
    ) -> dict[str, np.ndarray]:
        """Run (batched when the policy says so) and record: ``start`` is when the request began
        acquiring its version."""
        config = slot.routing.policy.batching
        if config.enabled and batchable(loaded.signature):
            return self._run_batched(slot, loaded, variant, inputs, output_names, start, deadline)
        timing = None
        try:
            outputs, timing = loaded.run_timed(inputs, output_names)
            return outputs
        finally:
            slot.stats.record(
                loaded.version,
                variant,
                row_count(inputs),
                time.perf_counter() - start,
                timing is not None,
                timing,
            )

    def _run_batched(
        self,
        slot: _ModelSlot,
        loaded: LoadedModel,
        variant: Variant,
        inputs: Mapping[str, np.ndarray],
        output_names: Sequence[str] | None,
        start: float,
        deadline: float | None,
    ) -> dict[str, np.ndarray]:
        """The request through its version's batcher; each merged run is recorded once (by the
        batcher's run), each request with its wait."""
        batcher = self._batcher(slot, loaded, slot.routing.policy.batching)
        ok, queue_ns = False, 0
        try:
            result = batcher.submit(inputs, output_names, deadline)
            ok, queue_ns = True, result.queue_ns
            return result.outputs
        finally:
            seconds = time.perf_counter() - start
            slot.stats.record(
                loaded.version, variant, row_count(inputs), seconds, ok, None, queue_ns
            )

    def _batcher(
        self, slot: _ModelSlot, loaded: LoadedModel, config: BatchingConfig
    ) -> DynamicBatcher:
        """The batcher of ``loaded`` under ``config``: made on first use, made again when the
        config changed; batchers of closed versions are closed on the way."""
        key = id(loaded)
        with self._batchers_lock:
            entry = self._batchers.get(key)
            if entry is not None and entry[0] is loaded and entry[1] == config:
                return entry[2]
            stale = [k for k, (m, _, _) in self._batchers.items() if m.closed or k == key]
            old = [self._batchers.pop(k)[2] for k in stale]

            def run(batch: Mapping[str, np.ndarray], names: Sequence[str] | None) -> dict:
                outputs, timing = loaded.run_timed(batch, names)
                slot.stats.executed(loaded.version, row_count(batch), timing)
                return outputs

            name = f"{loaded.model}:v{loaded.version}"
            batcher = DynamicBatcher(run, config, name, signature=loaded.signature)
            self._batchers[key] = (loaded, config, batcher)
        for b in old:  # outside the lock: a close waits for its queued requests
            b.close()
        return batcher

    def _close_batchers(self, which: Callable[[LoadedModel], bool]) -> None:
        with self._batchers_lock:
            keys = [k for k, (m, _, _) in self._batchers.items() if which(m)]
            closing = [self._batchers.pop(k)[2] for k in keys]
        for b in closing:
            b.close()

    def _request_id(self) -> str:
        return f"{self._id_prefix}-{next(self._ids)}"

    @staticmethod
    def _unloaded(model: str) -> errors.LLMOptError:
        return errors.Unavailable(
            f"model: {model!r} is unloaded; RepositoryModelLoad loads it again"
        )

    def _no_version(self, slot: _ModelSlot, alias: str) -> errors.LLMOptError:
        if slot.unloaded:  # unloaded while the request was being routed
            return self._unloaded(slot.name)
        failure = slot.failures.get(alias)
        detail = ""
        if failure is not None:
            detail = f" (version {failure.version} failed to load: {failure.message})"
        return errors.FailedPrecondition(
            f"model: {slot.name!r} has no {alias} to serve{detail}; set its {alias!r} alias"
        )

    # -- traffic policy and stats ---------------------------------------------------------------

    def set_policy(self, policy: TrafficPolicy) -> TrafficPolicy:
        """Store the policy durably, then route by it."""
        slot = self._slot(policy.model)
        with slot.lock:
            self._policies.save(policy)
            before = slot.routing.policy.batching
            slot.routing = replace(slot.routing, policy=policy)
        if policy.batching != before:  # queued requests still run; new ones take the new config
            self._close_batchers(lambda loaded: loaded.model == policy.model)
        log.info(
            "model %r: traffic policy %s %.2f%%",
            policy.model,
            policy.mode.name,
            policy.challenger_percent,
        )
        return policy

    def get_policy(self, model: str) -> TrafficPolicy:
        return self._slot(model).routing.policy

    def stats(self, model: str) -> ModelStats:
        slot = self._slot(model)
        return slot.stats.snapshot(tuple(slot.failures.values()))

    def statistics(self, model: str = "", version: int = 0) -> list[VersionStatistics]:
        """Per version statistics of ``model`` (every model: ""), or of one ``version`` of it;
        versions served now are listed even before their first request. NotFound for a model or
        version the registry does not have."""
        if version < 0:
            raise errors.invalid("version", version, "a version number >= 1 (0: every version)")
        if not model:
            if version:
                raise errors.invalid("version", version, "empty when no model is named")
            out: list[VersionStatistics] = []
            for entry in self._registry.list_models():
                try:
                    out.extend(self.statistics(entry.name))
                except errors.LLMOptError:
                    continue  # deleted meanwhile
            return out
        slot = self._slot(model)
        if version:
            self._registry.get_version(model, version=version)  # NotFound when there is none
            return [s for s in slot.stats.statistics((version,)) if s.version == version]
        routing = slot.routing
        served = tuple(m.version for m in (routing.champion, routing.challenger) if m is not None)
        return slot.stats.statistics(served)

    def batching(self, model: str) -> BatchingConfig:
        """The model's dynamic batching settings (its traffic policy's; max_batch_size 0: off)."""
        return self._slot(model).routing.policy.batching

    def wait_for_shadow(self, timeout: float = 10.0) -> None:
        """Block until queued shadow copies have run (tests, benchmarks)."""
        self._shadow.drain(timeout)

    # -- metadata (Open Inference Protocol) ------------------------------------------------------

    def describe(self, model: str, version: int = 0) -> ModelDescription:
        slot = self._slot(model)
        routing = slot.routing
        versions = tuple(sorted({m.version for m in (routing.champion, routing.challenger) if m}))
        servable = self._servable(model)
        if version:
            mv = self._registry.get_version(model, version=version)
            signature = signature_from(mv.inputs, mv.outputs)
            loaded = self._loader.get(model, version)
            if loaded is not None:
                signature = loaded.signature
            return ModelDescription(model, version, signature, versions, servable)
        if slot.unloaded:
            raise self._unloaded(model)
        if routing.champion is None:
            raise self._no_version(slot, CHAMPION)
        return ModelDescription(
            model, routing.champion.version, routing.champion.signature, versions, servable
        )

    def _servable(self, model: str) -> tuple[int, ...]:
        """Every version of ``model`` in the registry, ascending."""
        numbers: set[int] = set()
        token = ""
        while True:
            page = self._registry.list_versions(model, page_size=_VERSION_PAGE, page_token=token)
            numbers.update(int(v.version) for v in page.items)
            token = page.next_page_token
            if not token:
                return tuple(sorted(numbers))

    def knows(self, model: str) -> bool:
        """Whether the registry has ``model`` (served or not)."""
        if not model:
            return False
        try:
            self._registry.aliases(model)
        except errors.NotFound:
            return False
        return True

    # -- the repository extension (Open Inference Protocol) --------------------------------------

    def unload(self, model: str) -> None:
        """Drop every session of ``model`` (routed and pinned) and refuse its requests
        (UNAVAILABLE) until ``load``; the registry keeps its versions."""
        slot = self._slot(model)
        with slot.lock:
            routing = slot.routing
            slot.unloaded = True
            slot.routing = _Routing(None, None, routing.policy)
            slot.failures.clear()
            self._loader.drop_model(model)
            for m in {routing.champion, routing.challenger} - {None}:
                assert m is not None
                m.retire()
        self._close_batchers(lambda loaded: loaded.model == model)
        log.info("model %r: unloaded", model)

    def load(self, model: str) -> None:
        """Load and warm the model's champion (and challenger) and serve them again after an
        ``unload``; FailedPrecondition naming the reason when its champion cannot be served."""
        slot = self._slot(model)
        with slot.lock:
            slot.unloaded = False
            self._reconcile(slot)
            if self._slots.get(model) is not slot:  # deleted from the registry meanwhile
                raise errors.NotFound(f"model: {model!r} is not a registered model")
            if slot.routing.champion is None:
                raise self._no_version(slot, CHAMPION)
        log.info("model %r: loaded", model)

    def is_ready(self, model: str, version: int = 0) -> bool:
        """Whether a request for this model (and version) would be served without loading."""
        try:
            slot = self._slot(model)
        except errors.LLMOptError:
            return False
        if slot.unloaded:
            return False
        routing = slot.routing
        if not version:
            return routing.champion is not None and not routing.champion.closed
        if any(
            m is not None and m.version == version and not m.closed
            for m in (routing.champion, routing.challenger)
        ):
            return True
        loaded = self._loader.get(model, version)
        return loaded is not None and not loaded.closed

    def index(self) -> list[IndexEntry]:
        """Every model's champion and challenger with their state, and failed loads."""
        entries: list[IndexEntry] = []
        for entry in self._registry.list_models():
            name = entry.name
            try:
                slot = self._slot(name)
            except errors.LLMOptError as exc:
                entries.append(IndexEntry(name, 0, "UNAVAILABLE", str(exc)))
                continue
            if slot.unloaded:
                entries.append(IndexEntry(name, 0, "UNAVAILABLE", "unloaded"))
                continue
            routing = slot.routing
            served = [m for m in (routing.champion, routing.challenger) if m is not None]
            for m in sorted(set(served), key=lambda m: m.version):
                entries.append(IndexEntry(name, m.version, "READY", ""))
            for failure in slot.failures.values():
                entries.append(IndexEntry(name, failure.version, "UNAVAILABLE", failure.message))
            if not served and not slot.failures:
                entries.append(IndexEntry(name, 0, "UNAVAILABLE", "no champion alias"))
        return entries

    def loaded_versions(self) -> list[tuple[str, int]]:
        """(model, version) of every open session, routed or not."""
        seen = self._loader.loaded_versions()
        seen.update((m.model, m.version) for m in self._routed() if not m.closed)
        return sorted(seen)

    # -- routing: which versions serve each model -----------------------------------------------

    def _slot(self, model: str) -> _ModelSlot:
        slot = self._slots.get(model)
        if slot is not None and slot.ready:
            return slot
        if not model:
            raise errors.invalid("model", model, "a model name")
        if slot is None:
            policy = self._policies.load(model) or TrafficPolicy(model)
            with self._slots_lock:
                slot = self._slots.setdefault(model, _ModelSlot(model, policy))
        with slot.lock:
            if not slot.ready:
                try:
                    self._reconcile(slot, initial=True)
                except BaseException:
                    with self._slots_lock:
                        if self._slots.get(model) is slot:
                            del self._slots[model]
                    raise
                slot.ready = True
        return slot

    def _on_alias_event(self, event: AliasEvent) -> None:
        """Registry callback after an alias change commits: load, warm, then switch.

        The removal of the challenger alias (Promote, DeleteAlias) ends the experiment: the
        stored policy becomes OFF, so GetTrafficPolicy says what routing does, and a later
        challenger gets no traffic until a policy is set for it.
        """
        if event.alias not in VARIANT_BY_ALIAS or self._closed.is_set():
            return
        slot = self._slots.get(event.model)
        try:
            if event.alias == CHALLENGER and event.to_version is None:
                self._end_experiment(event.model, slot)
            if slot is None:
                return  # not served yet; its first request reads the aliases afresh
            with slot.lock:
                if slot.ready and not slot.unloaded:
                    self._reconcile(slot)
        except Exception:
            log.exception(
                "model %r: applying alias change %s -> v%s failed",
                event.model,
                event.alias,
                event.to_version,
            )

    def _end_experiment(self, model: str, slot: _ModelSlot | None) -> None:
        """Store (then route by) the OFF policy once the model has no challenger any more.

        Runs on the registry's thread before the alias change is acknowledged, so an
        acknowledged Promote has its policy change durable too.
        """
        off = TrafficPolicy(model)
        if slot is None:
            stored = self._policies.load(model)
            if stored is not None and stored != off:
                self._policies.save(off)
                log.info("model %r: no challenger any more, traffic policy OFF", model)
            slot = self._slots.get(model)  # one made meanwhile may hold what was stored
            if slot is None:
                return
        with slot.lock:
            if slot.routing.policy == off:
                return
            self._policies.save(off)
            slot.routing = replace(slot.routing, policy=off)
        log.info("model %r: no challenger any more, traffic policy OFF", model)

    def _reconcile(self, slot: _ModelSlot, initial: bool = False) -> None:
        """Point the slot's champion and challenger at what the registry's aliases say.

        Called with ``slot.lock`` held. Reads the aliases afresh rather than trusting an event, so
        events that arrive out of order still end in the registry's state.
        """
        deleted = False
        try:
            aliases = self._registry.aliases(slot.name)
        except errors.NotFound:
            if initial:
                raise
            aliases, deleted = {}, True  # the model was deleted: stop serving it
        old = slot.routing
        champion = self._resolve(slot, CHAMPION, aliases.get(CHAMPION), old.champion)
        challenger = self._resolve(slot, CHALLENGER, aliases.get(CHALLENGER), old.challenger)
        slot.routing = _Routing(champion, challenger, old.policy)
        for gone in {old.champion, old.challenger} - {champion, challenger, None}:
            assert gone is not None
            log.info("model %r: version %d no longer routed", slot.name, gone.version)
            self._loader.drop(gone)
        self._loader.evict()
        if deleted:
            with self._slots_lock:
                if self._slots.get(slot.name) is slot:
                    del self._slots[slot.name]  # its next request answers NOT_FOUND
            log.info("model %r: deleted from the registry, no longer served", slot.name)
            return
        if (champion, challenger) != (old.champion, old.challenger):
            log.info(
                "model %r: serving champion %s, challenger %s",
                slot.name,
                champion.version if champion else None,
                challenger.version if challenger else None,
            )

    def _resolve(
        self, slot: _ModelSlot, alias: str, version: int | None, current: LoadedModel | None
    ) -> LoadedModel | None:
        if not version:
            slot.failures.pop(alias, None)
            return None
        if current is not None and current.version == version and not current.closed:
            return current
        try:
            loaded = self._loader.ensure_loaded(slot.name, int(version), evict=False)
        except Exception as exc:
            message = str(exc)
            slot.failures[alias] = LoadFailure(int(version), alias, message)
            log.error(
                "model %r: %s version %s failed to load, %s: %s",
                slot.name,
                alias,
                version,
                "previous version keeps serving" if current else "nothing to serve",
                message,
            )
            return current
        slot.failures.pop(alias, None)
        return loaded

    def _routed(self) -> set[LoadedModel]:
        routed: set[LoadedModel] = set()
        for slot in list(self._slots.values()):
            routing = slot.routing
            routed.update(m for m in (routing.champion, routing.challenger) if m is not None)
        return routed

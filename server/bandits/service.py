"""The bandit service: every bandit of the server, the decision/reward loop, expiry, recovery.

``BanditService`` owns the store (``<data_dir>/bandits/bandits.db``), one ``Bandit`` per name
(each with its own lock), an index of open decisions by id (rewards arrive by decision id alone),
and a sweeper thread that expires unrewarded decisions after their bandit's ``reward_wait`` and
writes periodic snapshots (every ``SNAPSHOT_EVERY`` changes, every ``SNAPSHOT_SECONDS`` while a
bandit changes, and on ``close``), so a restart loads a snapshot and replays only the log after it.

Contexts: a ready vector, else the bandit's feature set through ``features.vector`` (the
``FeatureService``), else the built-in 10-dim request context vector. Rewards given as outcomes
also feed ``features.record_arm_outcome`` under the arm key ``"<bandit>/<arm_id>"``.

The decision log: every decision keeps the request's context (when one was sent), its vector
and scores, and, when SelectArm asked (``explain``), its explanation
(``llmopt.bandits.explain``); ``get_decision`` and ``list_decisions`` read it back joined with
the reward or expiry that closed it, ``arm_estimates`` reads what each policy has learned.

>>> import tempfile, pathlib
>>> from llmopt.bandits.arms import Arm, LLMConfig
>>> from llmopt.bandits.policies import UCB1
>>> svc = BanditService(pathlib.Path(tempfile.mkdtemp()))
>>> svc.warm_up()
>>> arms = (Arm("small", LLMConfig("gpt-4o-mini")), Arm("large", LLMConfig("gpt-4o")))
>>> _ = svc.create_bandit(BanditSpec("router", UCB1(), arms))
>>> d = svc.select_arm("router", decision_id="req-1")
>>> svc.record_reward("req-1", reward=1.0).arm_id == d.arm.arm_id
True
>>> svc.stats("router").rewards
1
>>> svc.close()
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import hashlib
import logging
import math
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import numpy as np

from llmopt import errors
from llmopt.bandits import store as st
from llmopt.bandits.arms import Arm, check_id
from llmopt.bandits.bandit import Bandit, KeptExplanation, reused_id, same_request
from llmopt.bandits.explain import ArmEstimates
from llmopt.bandits.rewards import (
    Outcome,
    check_raw_reward,
    outcome_detail,
    outcome_quality,
    outcome_reward,
)
from llmopt.bandits.types import (
    BanditInfo,
    BanditSpec,
    BanditStats,
    Decision,
    LoggedDecision,
    RewardReceipt,
)
from llmopt.features.context import DEFAULT_CONTEXT_SLOTS, RequestContext, default_context
from llmopt.native.context import DEFAULT_CONTEXT_DIM
from llmopt.ports import BanditFeatures

log = logging.getLogger("llmopt.bandits")

_NO_CONTEXT = RequestContext()  # what a request without a context is read as
DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000
SNAPSHOT_EVERY = 10_000  # changes (decisions, rewards, expiries, arm edits) between snapshots
SNAPSHOT_SECONDS = 60.0  # and at least this often while a bandit changes


class BanditService:
    """Domain object behind ``llmopt.v1.Bandits``; safe to call from many threads."""

    def __init__(
        self,
        root: Path,
        *,
        features: BanditFeatures | None = None,
        synchronous: str = "normal",
        snapshot_every: int = SNAPSHOT_EVERY,
        snapshot_seconds: float = SNAPSHOT_SECONDS,
        sweep_interval: float = 1.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._root = Path(root)
        self._features = features
        self._snapshot_every = snapshot_every
        self._snapshot_seconds = snapshot_seconds
        self._sweep_interval = sweep_interval
        self._clock = clock
        self._store = st.BanditStore(self._root, synchronous=synchronous)
        self._bandits: dict[str, Bandit] = {}
        self._by_id: dict[int, Bandit] = {}
        # Open decision id -> its bandit's id (ints, not objects: the collector skips the map).
        self._index: dict[str, int] = {}
        self._names_lock = threading.Lock()  # create/delete of names only, never on hot paths
        self._stop = threading.Event()
        self._sweeper: threading.Thread | None = None
        self._ready = False

    # -- lifecycle ------------------------------------------------------------------------------

    def warm_up(self) -> None:
        """Rebuild every bandit (snapshot + later events) and start the expiry sweeper."""
        if self._ready:
            return
        start = time.perf_counter()
        for row in self._store.load_bandits():
            bandit = Bandit.recover(
                row, self._store, self._index, snapshot_every=self._snapshot_every
            )
            self._bandits[bandit.name] = bandit
            self._by_id[bandit.id] = bandit
        self._ready = True
        log.info("bandits: %d loaded in %.3f s", len(self._bandits), time.perf_counter() - start)
        if self._sweep_interval > 0:  # 0: no sweeper thread (tests call sweep() themselves)
            self._sweeper = threading.Thread(
                target=self._sweep_loop, name="bandit-sweeper", daemon=True
            )
            self._sweeper.start()

    def close(self) -> None:
        """Stop the sweeper, snapshot every bandit, close the store."""
        self._stop.set()
        if self._sweeper is not None:
            self._sweeper.join()
        for bandit in list(self._bandits.values()):
            try:
                bandit.snapshot()
            except Exception:
                log.exception("bandit %r: snapshot on close failed", bandit.name)
        self._ready = False
        self._store.close()

    def _sweep_loop(self) -> None:
        while not self._stop.wait(self._next_sweep_wait()):
            try:
                self.sweep()
                for bandit in list(self._bandits.values()):
                    bandit.maybe_snapshot(self._snapshot_seconds)
            except Exception:
                log.exception("bandit expiry sweep or snapshot failed")

    def _next_sweep_wait(self) -> float:
        """The sweep interval, shortened so a short ``reward_wait`` expires within ~25 % of it."""
        waits = [b.spec.reward_wait for b in list(self._bandits.values())]
        shortest = min(waits, default=self._sweep_interval)
        return max(0.01, min(self._sweep_interval, shortest / 4))

    def sweep(self, now: float | None = None) -> int:
        """Expire every overdue decision now; returns how many (the sweeper calls this)."""
        now = self._clock() if now is None else now
        return sum(bandit.sweep(now) for bandit in list(self._bandits.values()))

    # -- definitions ----------------------------------------------------------------------------

    def _bandit(self, name: str, field: str = "bandit") -> Bandit:
        if not self._ready:
            raise errors.Unavailable("bandits are loading; retry shortly")
        bandit = self._bandits.get(name)
        if bandit is None:
            if not name:
                raise errors.invalid(field, name, "must name a bandit")
            raise errors.NotFound(f"{field}: bandit {name!r} does not exist")
        return bandit

    def create_bandit(self, spec: BanditSpec) -> BanditInfo:
        if not self._ready:
            raise errors.Unavailable("bandits are loading; retry shortly")
        spec.validate()
        dim = self._dimension(spec.feature_set)
        with self._names_lock:
            if spec.name in self._bandits:
                raise errors.AlreadyExists(f"bandit.name: bandit {spec.name!r} already exists")
            now = self._clock()
            bandit_id = self._store.create_bandit(
                spec.name, spec.to_json(), dim, [a.to_json() for a in spec.arms], now
            )
            bandit = Bandit.create(
                bandit_id,
                spec,
                dim,
                now,
                self._store,
                self._index,
                snapshot_every=self._snapshot_every,
            )
            self._bandits[spec.name] = bandit
            self._by_id[bandit_id] = bandit
        return bandit.info()

    def get_bandit(self, name: str) -> BanditInfo:
        return self._bandit(name, "name").info()

    def list_bandits(
        self, page_size: int = 0, page_token: str = ""
    ) -> tuple[list[BanditInfo], str]:
        """Bandits in name order, ``page_size`` at a time (0: 100); the token resumes the list."""
        if not self._ready:
            raise errors.Unavailable("bandits are loading; retry shortly")
        if not 0 <= page_size <= MAX_PAGE_SIZE:
            raise errors.invalid("page.page_size", page_size, f"must be in 0..{MAX_PAGE_SIZE}")
        size = page_size or DEFAULT_PAGE_SIZE
        after = _decode_token(page_token)
        names = sorted(n for n in list(self._bandits) if n > after)
        infos = []
        for name in names[:size]:
            try:
                infos.append(self._bandits[name].info())
            except (KeyError, errors.NotFound):
                continue  # deleted meanwhile
        token = _encode_token(names[size - 1]) if len(names) > size else ""
        return infos, token

    def delete_bandit(self, name: str) -> None:
        with self._names_lock:
            bandit = self._bandit(name, "name")
            bandit.mark_deleted()
            del self._bandits[name]
            self._by_id.pop(bandit.id, None)
            self._store.delete_bandit(bandit.id)

    def add_arm(self, name: str, arm: Arm) -> BanditInfo:
        bandit = self._bandit(name)
        arm.validate()
        return bandit.add_arm(arm, self._clock())

    def remove_arm(self, name: str, arm_id: str) -> BanditInfo:
        bandit = self._bandit(name)
        if not arm_id:
            raise errors.invalid("arm_id", arm_id, "must name an arm")
        return bandit.remove_arm(arm_id, self._clock())

    # -- decisions ------------------------------------------------------------------------------

    def select_arm(
        self,
        bandit: str,
        context: RequestContext | None = None,
        vector: np.ndarray | None = None,
        excluded: Iterable[str] = (),
        decision_id: str = "",
        entity_ids: Mapping[str, str] | None = None,
        explain: bool = False,
    ) -> Decision:
        """Pick an arm. A ``decision_id`` already used makes the call a retry: the same request
        (``request_digest``: the bandit, context, vector, entity ids and excluded arms) gets that
        decision as it was, with its kept explanation if it has one; a different one is refused
        with AlreadyExists naming the id. ``explain``: the decision carries its explanation
        (``llmopt.bandits.explain``), which the log keeps (``get_decision``)."""
        b = self._bandit(bandit)
        digest = None
        if decision_id:
            check_id("decision_id", decision_id)
            excluded = tuple(excluded)
            digest = request_digest(bandit, context, vector, excluded, entity_ids)
        x = self._context_vector(b, context, vector, entity_ids)
        slot_names = self._names_of(b) if explain else ()
        if decision_id and not b.holds(decision_id):
            # A client's id must be new, or one of this bandit's finished decisions (a retry
            # after the reward came in), which is then returned as it was. Decisions are
            # journaled, so the database's unique index would say so too late: ask it first.
            stored = self._store.find_decision(decision_id)
            if stored is not None:
                return self._stored_decision(b, decision_id, stored, digest)
        try:
            return b.select(
                x,
                excluded,
                decision_id or None,
                self._clock(),
                digest,
                context,
                explain,
                slot_names,
            )
        except errors.AlreadyExists:
            if not decision_id:
                raise
        except KeptExplanation:
            pass  # a retry of an explained decision: as the log keeps it
        return self._stored_decision(b, decision_id, self._store.find_decision(decision_id), digest)

    @staticmethod
    def _stored_decision(
        b: Bandit, decision_id: str, stored: st.StoredDecision | None, digest: bytes | None
    ) -> Decision:
        """The decision a retry with ``decision_id`` gets: this bandit's, as it was, when it was
        made for the same request."""
        if (
            stored is None
            or stored.bandit_id != b.id
            or not same_request(stored.request_digest, digest)
        ):
            raise reused_id(decision_id)
        return b.decision_from_store(stored)

    def _dimension(self, feature_set: str) -> int:
        if not feature_set:
            return DEFAULT_CONTEXT_DIM
        features = self._features
        if features is None:
            raise errors.FailedPrecondition(
                f"bandit.feature_set: {feature_set!r} cannot be used: this server has no feature "
                "store with feature vectors"
            )
        return int(features.vector_width(feature_set))

    def _context_vector(
        self,
        b: Bandit,
        context: RequestContext | None,
        vector: np.ndarray | None,
        entity_ids: Mapping[str, str] | None,
    ) -> np.ndarray:
        if vector is not None and len(vector):
            if context is not None:
                raise errors.invalid(
                    "context_vector",
                    f"{len(vector)} values",
                    "give either context or context_vector, not both",
                )
            x = np.ascontiguousarray(vector, dtype=np.float64)
            if x.shape != (b.dim,):
                raise errors.invalid(
                    "context_vector", f"{x.size} values", f"bandit {b.name!r} needs {b.dim}"
                )
            if not np.isfinite(x).all():
                raise errors.invalid("context_vector", "non-finite value", "must be finite")
            return x.copy()
        ctx = context or RequestContext()
        if not b.spec.feature_set:
            return default_context(ctx)
        if self._features is None:
            raise errors.FailedPrecondition(
                f"bandit {b.name!r} reads feature set {b.spec.feature_set!r}, but this server "
                "has no feature store"
            )
        values = self._features.vector(b.spec.feature_set, ctx, dict(entity_ids or {})).values
        x = np.ascontiguousarray(values, dtype=np.float64)
        if x.shape != (b.dim,):
            raise errors.FailedPrecondition(
                f"feature set {b.spec.feature_set!r} now gives {x.size} values; bandit "
                f"{b.name!r} was created for {b.dim}"
            )
        return x

    def _names_of(self, b: Bandit) -> tuple[str, ...]:
        """The names of a bandit's context slots: the default context's, or its feature set's
        (x0.. when the set is gone or no longer as wide as the bandit)."""
        if not b.spec.feature_set:
            return DEFAULT_CONTEXT_SLOTS
        names: tuple[str, ...] = ()
        if self._features is not None:
            with contextlib.suppress(errors.LLMOptError):  # the set was deleted
                names = tuple(self._features.slot_names(b.spec.feature_set))
        return names if len(names) == b.dim else tuple(f"x{i}" for i in range(b.dim))

    # -- the decision log -----------------------------------------------------------------------

    def get_decision(self, decision_id: str, explain: bool = False) -> LoggedDecision:
        """A decision as logged, open or closed, with its reward or expiry once recorded;
        ``explain``: with an explanation (the kept one, else recomputed from the logged vector
        and scores against the policy's state now, marked ``explanation_recomputed``)."""
        if not self._ready:
            raise errors.Unavailable("bandits are loading; retry shortly")
        check_id("decision_id", decision_id)
        row = self._store.logged_decision(decision_id)
        if row is None:
            raise errors.NotFound(f"decision_id: {decision_id!r} is not a known decision")
        bandit = self._by_id.get(row.decision.bandit_id)
        if bandit is None:
            raise errors.NotFound(f"decision_id: {decision_id!r} belongs to no live bandit")
        return bandit.logged(row, self._names_of(bandit), explain)

    def list_decisions(
        self,
        bandit: str,
        start_time: float | None = None,
        end_time: float | None = None,
        page_size: int = 0,
        page_token: str = "",
    ) -> tuple[list[LoggedDecision], str]:
        """A bandit's decisions made in [start_time, end_time) (None: unbounded), oldest first,
        ``page_size`` at a time (0: 100); the token resumes the list (journaled decisions are
        flushed to the log first, so none is missed)."""
        b = self._bandit(bandit)
        if not 0 <= page_size <= MAX_PAGE_SIZE:
            raise errors.invalid("page.page_size", page_size, f"must be in 0..{MAX_PAGE_SIZE}")
        if start_time is not None and end_time is not None and end_time < start_time:
            raise errors.invalid(
                "end_time", _iso(end_time), f"is before start_time {_iso(start_time)}"
            )
        after = _decode_cursor(page_token)
        size = page_size or DEFAULT_PAGE_SIZE
        rows = self._store.list_decisions(b.id, start_time, end_time, after, size + 1)
        names = self._names_of(b)
        page = [b.logged(r, names) for r in rows[:size]]
        token = ""
        if len(rows) > size:
            last = rows[size - 1].decision
            token = _encode_cursor(last.time, last.rowid)
        return page, token

    def arm_estimates(self, bandit: str) -> ArmEstimates:
        """What the bandit's policy has learned, per arm."""
        b = self._bandit(bandit)
        return b.estimates(self._names_of(b))

    def record_reward(
        self, decision_id: str, reward: float | None = None, outcome: Outcome | None = None
    ) -> RewardReceipt:
        """Reward a decision exactly once, from a raw reward in [0, 1] or an outcome.

        The one place a reward is validated: a raw reward is checked for everything a policy's
        update checks, and an outcome's reward is in [0, 1] by construction, before either is
        journaled (a journaled reward is replayed at every start, so it must never be refused)."""
        if not self._ready:
            raise errors.Unavailable("bandits are loading; retry shortly")
        if (reward is None) == (outcome is None):
            raise errors.invalid("value", None, "give exactly one of reward or outcome")
        if outcome is not None:
            outcome.validate()
        elif reward is not None:
            reward = check_raw_reward(reward)
        # An id in the index was checked when its decision was made.
        bandit_id = self._index.get(decision_id)
        bandit = self._by_id.get(bandit_id) if bandit_id is not None else None
        if bandit is not None:
            if outcome is not None:
                value = outcome_reward(outcome, bandit.spec.reward)
                detail = outcome_detail(outcome)
            else:
                assert reward is not None  # exactly one of the two, checked above
                value, detail = reward, None
            arm_id = bandit.record_reward(decision_id, value, detail, self._clock())
            if arm_id is not None:
                if outcome is not None:
                    self._arm_outcome(bandit, arm_id, outcome, value)
                return RewardReceipt(decision_id, arm_id, value)
        check_id("decision_id", decision_id)
        raise self._closed_decision_error(decision_id)

    def _closed_decision_error(self, decision_id: str) -> errors.LLMOptError:
        stored = self._store.find_decision(decision_id)
        if stored is None:
            return errors.NotFound(f"decision_id: {decision_id!r} is not a known decision")
        if stored.status == st.REWARDED:
            return errors.AlreadyExists(f"decision_id: {decision_id!r} already has a reward")
        if stored.status == st.EXPIRED:
            return errors.FailedPrecondition(
                f"decision_id: {decision_id!r} expired unrewarded and takes no reward"
            )
        return errors.NotFound(f"decision_id: {decision_id!r} belongs to no live bandit")

    def _arm_outcome(self, bandit: Bandit, arm_id: str, outcome: Outcome, reward: float) -> None:
        if self._features is None:
            return
        try:
            self._features.record_arm_outcome(
                f"{bandit.name}/{arm_id}",
                latency_ms=outcome.latency_ms,
                cost=outcome.cost,
                quality=outcome_quality(outcome),
                error=outcome.error,
            )
        except Exception:
            log.exception("record_arm_outcome failed for bandit %r arm %r", bandit.name, arm_id)

    def stats(self, bandit: str) -> BanditStats:
        return self._bandit(bandit).stats()


def request_digest(
    bandit: str,
    context: RequestContext | None,
    vector: np.ndarray | None,
    excluded: Iterable[str],
    entity_ids: Mapping[str, str] | None,
) -> bytes:
    """The fingerprint of a SelectArm request (16 bytes of BLAKE2b), kept with a decision made
    for a caller's own id: what tells a retry from another request that reuses the id.

    It covers everything the caller sent that the choice depends on: the bandit's name, every
    field of the context (no context is the default context), the context vector's values, the
    entity ids (as a set of pairs) and the excluded arms (as a set), not the vector built from
    them (features and the clock move; a retry must still match).

    >>> ctx = RequestContext(task_type="generation", metadata={"a": "1", "b": "2"})
    >>> same = RequestContext(task_type="generation", metadata={"b": "2", "a": "1"})
    >>> request_digest("r", ctx, None, (), None) == request_digest("r", same, None, (), None)
    True
    >>> request_digest("r", ctx, None, (), None) == request_digest("s", ctx, None, (), None)
    False
    >>> request_digest("r", None, None, (), None) == request_digest("r", RequestContext(), None,
    ...                                                            (), {})
    True
    """
    c = context or _NO_CONTEXT
    h = hashlib.blake2b(digest_size=16)
    fixed = (bandit, c.user_id, c.task_type, c.input_length, int(c.output_length), c.priority)
    h.update(repr((*fixed, c.region, c.hour_of_day, c.day_of_week, c.language)).encode())
    # The optional parts, each tagged, only when given (the usual request has none of them).
    if c.metadata:
        h.update(b"\x00metadata" + repr(sorted(c.metadata.items())).encode())
    if c.features:
        h.update(b"\x00features" + repr(sorted(c.features.items())).encode())
    if excluded:
        h.update(b"\x00excluded" + repr(sorted(set(excluded))).encode())
    if entity_ids:
        h.update(b"\x00entities" + repr(sorted(entity_ids.items())).encode())
    if vector is not None and len(vector):
        h.update(b"\x00vector" + np.ascontiguousarray(vector, dtype="<f8").tobytes())
    return h.digest()  # 16 bytes: never the 1-byte SERVER_MADE


def _iso(t: float) -> str:
    """``t`` (seconds since the epoch) as ISO 8601 where a datetime holds it, else as seconds."""
    try:
        return dt.datetime.fromtimestamp(t, dt.UTC).isoformat()
    except (OverflowError, OSError, ValueError):
        return f"{t!r} s"


def _encode_cursor(when: float, rowid: int) -> str:
    """The page token after the decision logged at ``when`` with sequence number ``rowid``."""
    return _encode_token(f"{when!r}/{rowid}")


def _decode_cursor(token: str) -> tuple[float, int] | None:
    if not token:
        return None
    text = _decode_token(token)
    try:
        when, rowid = text.split("/")
        cursor = float(when), int(rowid)
    except ValueError:
        raise errors.invalid(
            "page.page_token", token, "is not a token this server issued"
        ) from None
    if not (math.isfinite(cursor[0]) and cursor[1] >= 0):
        raise errors.invalid("page.page_token", token, "is not a token this server issued")
    return cursor


def _encode_token(name: str) -> str:
    return base64.urlsafe_b64encode(name.encode()).decode()


def _decode_token(token: str) -> str:
    if not token:
        return ""
    try:
        return check_id("page.page_token", base64.b64decode(token, b"-_", validate=True).decode())
    except (ValueError, UnicodeDecodeError, errors.InvalidArgument):
        raise errors.invalid(
            "page.page_token", token, "is not a token this server issued"
        ) from None


__all__ = ["BanditService"]

"""One bandit behind its own lock: the order in which its changes become durable and apply.

The in-memory state (arms, policy, open decisions, statistics) is ``BanditState``
(``llmopt.bandits.state``); ``Bandit`` adds the store and the lock, recovery (snapshot, then the
log after it), snapshots and the expiry sweep.

Ordering. Every change (a decision, a reward, an expiry, an arm added or removed) is handed to the
store *under the bandit lock*. Decisions and rewards are journaled: durable when the store
returns. The rest are group-committed: queued in ``_pending`` with the function that applies them
in memory, and the writer runs writes in submission order, so futures complete in that order. A
journaled change applies at once unless a committed one is still ahead of it in ``_pending``;
whoever holds the lock applies the completed head of the queue (``_drain``). Hence:

* a change is applied in memory only once it is durable; a reward is acknowledged once durable,
  and every locked entry point drains first, so whatever was acknowledged is applied before the
  next selection, statistic or snapshot reads the state;
* the policy sees updates in exactly the order of the ``events`` log, which is the order replay
  uses after a restart (snapshot, then the events after its watermark).

The policy's ``select`` runs under the lock at request time (it advances the generator and, for
epsilon-greedy, the selection count: those are restored from the latest snapshot after a crash).
"""

from __future__ import annotations

import logging
import os
import pickle
import random
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import partial
from threading import Lock
from typing import Any

import numpy as np

from llmopt import errors
from llmopt.bandits import store as st
from llmopt.bandits.arms import Arm
from llmopt.bandits.explain import ArmEstimates, Explanation
from llmopt.bandits.policies import make_policy
from llmopt.bandits.policy import Policy
from llmopt.bandits.rewards import outcome_from_detail
from llmopt.bandits.state import BanditState, OpenDecision
from llmopt.bandits.types import (
    BanditInfo,
    BanditSpec,
    BanditStats,
    Decision,
    DecisionStatus,
    LoggedDecision,
)
from llmopt.features.context import OutputLength, RequestContext
from llmopt.storage import WriteFuture
from llmopt.storage.records import decode_context

log = logging.getLogger("llmopt.bandits")

# States of an open decision whose reward or expiry is being written.
_REWARDING, _EXPIRING = 1, 2
_EXPIRY_SLACK = 4096  # stale expiry entries always tolerated before compacting


# Decision ids must be unique, not secret (they carry no authority a caller does not already
# have), so their random half comes from a generator seeded once from the OS: os.urandom per id is
# a system call that lets go of the GIL, and under load that hand-off costs more than the id.
_ids = random.Random(os.urandom(32))


def new_decision_id() -> str:
    """32 hex digits: the time in ns, then 64 random bits. Time-ordered ids land at the right
    edge of the decisions index, which halves the cost of logging a decision next to uuid4's
    random inserts (measured: 20 vs 39 us per insert at 60,000 rows, worse as the log grows).

    >>> a, b = new_decision_id(), new_decision_id()
    >>> len(a), a < b or a[:16] == b[:16]
    (32, True)
    """
    return f"{time.time_ns():016x}{_ids.getrandbits(64):016x}"


SERVER_MADE = b"\x00"
"""The request digest of a decision whose id the server made: no request a caller sends matches
it (its id was never the caller's), so reusing such an id is refused."""


def same_request(stored: bytes | None, given: bytes | None) -> bool:
    """Whether a decision whose request had digest ``stored`` answers a request of digest
    ``given``. A decision logged before digests were kept (None) answers any request of its
    bandit, as it always did.

    >>> same_request(b"a", b"a"), same_request(b"a", b"b"), same_request(None, b"b")
    (True, False, True)
    >>> same_request(SERVER_MADE, b"a")
    False
    """
    return stored is None or stored == given


def reused_id(decision_id: str) -> errors.AlreadyExists:
    """The error for a decision id already used by a different request."""
    return errors.AlreadyExists(
        f"decision_id: {decision_id!r} is already used by a different request (another bandit, "
        "context, context vector, entity ids or excluded arms); a retry must repeat the request "
        "exactly, a new request needs a new id"
    )


_STATUS = {
    st.OPEN: DecisionStatus.OPEN,
    st.REWARDED: DecisionStatus.REWARDED,
    st.EXPIRED: DecisionStatus.EXPIRED,
}


def context_of(blob: bytes) -> RequestContext:
    """The RequestContext a decision record kept (``llmopt.storage.records.encode_context``)."""
    fields = decode_context(blob)
    fields["output_length"] = OutputLength(fields["output_length"])
    return RequestContext(**fields)


def _kept(stored: bytes | str | None) -> Explanation | None:
    """The explanation a logged decision keeps: ``Explanation.to_bytes`` (its JSON in logs
    written before that)."""
    if stored is None:
        return None
    if isinstance(stored, str):
        return Explanation.from_json(stored)
    return Explanation.from_bytes(stored)


class KeptExplanation(Exception):
    """A retry of an open decision whose explanation was kept: the answer comes from the log
    (``BanditStore.find_decision``), where the explanation is, instead of from memory."""


def _ignore(exc: BaseException) -> None:
    """A journaled change cannot fail once queued: it is already durable."""


@dataclass(slots=True)
class _Pending:
    future: WriteFuture[Any]
    apply: Callable[[Any], None]
    fail: Callable[[BaseException], None]


class Bandit(BanditState):
    """Thread-safe: every public method takes this bandit's lock (and only it).

    Beside the state it inherits, a bandit keeps what ordering needs: the writes in flight
    (``_pending``), the decisions whose reward or expiry is being written (``_writing``), the
    expiry queue, and the log positions applied so far (the snapshot's watermarks)."""

    def __init__(
        self,
        bandit_id: int,
        spec: BanditSpec,
        arms: Sequence[tuple[Arm, bool]],
        policy: Policy,
        dim: int,
        create_time: float,
        store: st.BanditStore,
        index: dict[str, int],
        *,
        snapshot_every: int,
    ) -> None:
        super().__init__(spec, arms, policy, dim, create_time)
        self.id = bandit_id
        self._store = store
        self._index = index  # open decision id -> bandit id, shared by the service
        self._snapshot_every = snapshot_every
        self._lock = Lock()
        self._writing: dict[str, int] = {}  # decision id -> _REWARDING / _EXPIRING
        self._expiry: deque[tuple[float, str]] = deque()
        self._pending: deque[_Pending] = deque()
        self._event_seq = 0  # last event applied
        self._decision_rowid = 0  # last decision applied
        self._changes = 0  # since the last snapshot
        self._snapshot_time = time.monotonic()
        self._deleted = False

    # -- construction and recovery --------------------------------------------------------------

    @classmethod
    def create(
        cls,
        bandit_id: int,
        spec: BanditSpec,
        dim: int,
        create_time: float,
        store: st.BanditStore,
        index: dict[str, int],
        *,
        snapshot_every: int,
    ) -> Bandit:
        policy = make_policy(spec.policy, len(spec.arms), dim, spec.seed)
        return cls(
            bandit_id,
            spec,
            [(a, False) for a in spec.arms],
            policy,
            dim,
            create_time,
            store,
            index,
            snapshot_every=snapshot_every,
        )

    @classmethod
    def recover(
        cls,
        row: st.StoredBandit,
        store: st.BanditStore,
        index: dict[str, int],
        *,
        snapshot_every: int,
    ) -> Bandit:
        """Rebuild from the latest snapshot plus the events and decisions logged after it."""
        arm_rows = store.load_arms(row.id)
        arms = [(Arm.from_json(a), removed) for a, removed in arm_rows]
        spec = BanditSpec.from_json(row.name, row.definition, tuple(a for a, _ in arms))
        snapshot = store.load_snapshot(row.id)
        if snapshot is None:
            n_arms = int(row.definition["initial_arms"])
            policy = make_policy(spec.policy, n_arms, row.dim, spec.seed)
            learned: dict[str, Any] = {"counters": [], "decisions": 0, "expired": 0}
            event_seq, decision_rowid = 0, 0
        else:
            event_seq, decision_rowid, blob = snapshot
            learned = pickle.loads(blob)
            policy = make_policy(spec.policy, 0, row.dim, spec.seed)
            policy.set_state(learned["policy"])
        bandit = cls(
            row.id,
            spec,
            arms,
            policy,
            row.dim,
            row.create_time,
            store,
            index,
            snapshot_every=snapshot_every,
        )
        bandit._restore_counts(learned)
        bandit._event_seq, bandit._decision_rowid = event_seq, decision_rowid
        store.replay_events(row.id, event_seq, bandit._replay, contexts=policy.contextual)
        counts, top = store.decision_counts_after(row.id, decision_rowid)
        # Exact unless a decision was in flight when the snapshot was taken (then one too many).
        bandit._count_logged_decisions(counts)
        bandit._decision_rowid = max(decision_rowid, top)
        if policy.n_arms != len(arms):
            raise RuntimeError(
                f"bandit {row.name!r}: policy has {policy.n_arms} slots, store has {len(arms)} arms"
            )
        for d in store.open_decisions(row.id):
            od = OpenDecision(
                d.slot,
                d.context,
                d.propensity,
                d.scores,
                d.time,
                d.expires,
                d.request_digest,
                d.explanation is not None,
            )
            bandit._open[d.decision_id] = od
            bandit._expiry.append((d.expires, d.decision_id))
            index[d.decision_id] = row.id
        return bandit

    def _replay(self, e: st.Event) -> None:
        if e.kind == st.REWARD:
            if e.reward is not None:
                self._learn(e.slot, e.reward, e.context, e.propensity)
        elif e.kind == st.EXPIRY:
            self._count_expiry(e.slot, e.reward, e.context, e.propensity)
        elif e.kind == st.ARM_ADDED:
            self._grow_policy()
        self._event_seq = e.seq

    # -- the pending queue ----------------------------------------------------------------------

    def _drain(self) -> None:
        """Apply, in order, every change at the head of the queue whose write has finished."""
        pending = self._pending
        while pending and pending[0].future.done():
            p = pending.popleft()
            exc = p.future.exception()
            if exc is None:
                p.apply(p.future.result())
            else:
                p.fail(exc)
        if self._changes >= self._snapshot_every:
            self._save_snapshot()

    def _check_live(self) -> None:
        """Refuse calls on a deleted bandit; otherwise apply what became durable (under lock)."""
        if self._deleted:
            raise errors.NotFound(f"bandit: {self.name!r} does not exist (deleted)")
        self._drain()

    def _applied(self, apply: Callable[..., None], *args: Any) -> None:
        """A journaled change is durable: ``apply(*args)`` now, or after the writes ahead of it
        (the usual case, nothing pending, builds no closure)."""
        if self._pending:
            self._pending.append(
                _Pending(WriteFuture.completed(None), lambda _: apply(*args), _ignore)
            )
        else:
            apply(*args)

    # -- decisions ------------------------------------------------------------------------------

    def select(
        self,
        x: np.ndarray,
        excluded: Iterable[str],
        decision_id: str | None,
        now: float,
        request_digest: bytes | None = None,
        context: RequestContext | None = None,
        explain: bool = False,
        slot_names: Sequence[str] = (),
    ) -> Decision:
        """Choose an arm for context ``x``; log the decision durably before returning it. An
        open decision with the same ``decision_id`` is returned as it was when it was made for
        the same request (``same_request``), and refused (AlreadyExists) otherwise; one with a
        kept explanation raises ``KeptExplanation`` (the caller reads it from the log).
        ``context`` is the request's (logged with the decision); ``explain`` explains the choice
        over ``x``'s ``slot_names`` and keeps the explanation with the logged decision."""
        did = decision_id or new_decision_id()  # outside the lock
        if not decision_id:
            request_digest = SERVER_MADE
        explanation = None
        with self._lock:
            self._check_live()
            od = self._open.get(did)
            if od is None:
                # Open decisions keep no explanation in memory, only a flag: a retry reads the
                # log's (KeptExplanation).
                od, explanation = self._new_decision(
                    x, excluded, did, now, request_digest, context, explain, slot_names
                )
            elif not same_request(od.request_digest, request_digest):
                raise reused_id(did)
            elif od.explained:
                raise KeptExplanation(did)
        # The answer is built outside the lock: every other caller of this bandit queues on it.
        return self._decision(did, od.slot, od.propensity, od.scores, od.time, explanation)

    def holds(self, decision_id: str) -> bool:
        """Whether ``decision_id`` is one of this bandit's open decisions (no lock: a hint)."""
        return decision_id in self._open

    def _new_decision(
        self,
        x: np.ndarray,
        excluded: Iterable[str],
        decision_id: str,
        now: float,
        request_digest: bytes | None,
        context: RequestContext | None,
        explain: bool,
        slot_names: Sequence[str],
    ) -> tuple[OpenDecision, Explanation | None]:
        if self._index.setdefault(decision_id, self.id) != self.id:
            raise reused_id(decision_id)
        try:
            return self._log_decision(
                x, excluded, decision_id, now, request_digest, context, explain, slot_names
            )
        except BaseException:
            self._forget(decision_id)
            raise

    def _log_decision(
        self,
        x: np.ndarray,
        excluded: Iterable[str],
        decision_id: str,
        now: float,
        request_digest: bytes | None,
        context: RequestContext | None,
        explain: bool,
        slot_names: Sequence[str],
    ) -> tuple[OpenDecision, Explanation | None]:
        allowed = self._allowed(excluded)
        sel = self._policy.select(x if self._contextual else None, allowed)
        propensity = float(sel.propensity)
        expires = now + self.spec.reward_wait
        explanation = self._explain(x, allowed, sel, slot_names) if explain else None
        seq = self._store.log_decision(
            decision_id,
            self.id,
            sel.arm,
            propensity,
            sel.scores,
            x,
            now,
            expires,
            request_digest,
            context,
            None if explanation is None else explanation.to_bytes(),
        )
        od = OpenDecision(sel.arm, x, propensity, sel.scores, now, expires, request_digest, explain)
        self._open[decision_id] = od
        self._expiry.append((expires, decision_id))
        self._applied(self._apply_decision, od, seq)
        return od, explanation

    def _apply_decision(self, od: OpenDecision, seq: int) -> None:
        self._count_decision(od)
        self._decision_rowid = seq
        self._changes += 1

    def _forget(self, decision_id: str) -> None:
        self._open.pop(decision_id, None)
        self._writing.pop(decision_id, None)
        if self._index.get(decision_id) == self.id:
            del self._index[decision_id]

    def decision_from_store(self, d: st.StoredDecision) -> Decision:
        explanation = _kept(d.explanation)
        with self._lock:
            return self._decision(
                d.decision_id, d.slot, d.propensity, d.scores, d.time, explanation
            )

    def logged(
        self, row: st.LoggedRow, slot_names: Sequence[str], explain: bool = False
    ) -> LoggedDecision:
        """A stored decision of this bandit as GetDecision returns it; ``explain``: recompute
        its explanation, when none was kept, against the policy's state now."""
        d = row.decision
        explanation = _kept(d.explanation)
        recomputed = False
        with self._lock:
            self._check_live()
            if explanation is None and explain:
                explanation = self._explain_logged(
                    d.context, d.slot, d.propensity, d.scores, slot_names
                )
                recomputed = True
            arm = self._arms[d.slot]
            arm_ids = self._arm_ids
        status = _STATUS[d.status]
        outcome = None
        if row.reward_detail is not None:
            outcome = outcome_from_detail(row.reward_detail)
        return LoggedDecision(
            decision_id=d.decision_id,
            bandit=self.name,
            arm=arm,
            propensity=d.propensity,
            arm_ids=arm_ids,
            arm_scores=d.scores,
            time=d.time,
            expire_time=d.expires,
            context=None if d.request_context is None else context_of(d.request_context),
            context_vector=d.context,
            slot_names=tuple(slot_names),
            status=status,
            reward=row.reward if status != DecisionStatus.OPEN else None,
            outcome=outcome,
            reward_time=row.close_time if status != DecisionStatus.OPEN else None,
            explanation=explanation,
            explanation_recomputed=recomputed,
            degraded=d.degraded,
        )

    def estimates(self, slot_names: Sequence[str]) -> ArmEstimates:
        """What the policy has learned, per arm (``llmopt.bandits.explain.arm_estimates``)."""
        with self._lock:
            self._check_live()
            return self._estimates(slot_names)

    # -- rewards and expiry ---------------------------------------------------------------------

    def record_reward(
        self, decision_id: str, reward: float, detail: dict[str, Any] | None, now: float
    ) -> str | None:
        """Reward an open decision; the arm id once durable and learned, None when this bandit
        holds no open decision of that id (the caller then asks the store why).

        ``reward`` must be a float in [0, 1] already (``BanditService.record_reward`` checks a
        caller's reward where it enters): it is journaled before the policy learns it, and a
        journaled reward is replayed at every start."""
        with self._lock:
            self._check_live()
            od = self._open.get(decision_id)
            if od is None:
                return None
            writing = self._writing.get(decision_id)
            if writing == _REWARDING:
                raise errors.AlreadyExists(f"decision_id: {decision_id!r} already has a reward")
            if writing == _EXPIRING or now >= od.expires:
                raise errors.FailedPrecondition(
                    f"decision_id: {decision_id!r} expired (reward_wait "
                    f"{self.spec.reward_wait:g}s passed) and takes no reward"
                )
            seq = self._store.record_reward(
                self.id, decision_id, od.slot, reward, od.propensity, od.x, detail, now
            )
            self._writing[decision_id] = _REWARDING
            self._applied(self._apply_reward, decision_id, od, reward, seq)
            return self._arms[od.slot].arm_id

    def _apply_reward(self, decision_id: str, od: OpenDecision, reward: float, seq: int) -> None:
        self._learn(od.slot, reward, od.x, od.propensity)
        self._event_seq = seq
        self._changes += 1
        self._forget(decision_id)

    def _reopen(self, batch: list[tuple[str, OpenDecision]], exc: BaseException) -> None:
        """A reward or expiry write failed: the decisions are open again."""
        for decision_id, od in batch:
            if self._writing.pop(decision_id, None) is not None and decision_id in self._open:
                self._expiry.append((od.expires, decision_id))

    def sweep(self, now: float) -> int:
        """Expire open decisions whose reward_wait has passed (applying the default reward, if
        the bandit has one); returns how many."""
        with self._lock:
            if self._deleted:
                return 0
            self._drain()
            batch: list[tuple[str, OpenDecision]] = []
            while self._expiry and self._expiry[0][0] <= now:
                _, decision_id = self._expiry.popleft()
                od = self._open.get(decision_id)
                if od is not None and decision_id not in self._writing:
                    batch.append((decision_id, od))
            self._compact_expiry()
            if not batch:
                return 0
            future = self._store.expire_async(
                self.id,
                [(decision_id, od.slot, od.propensity, od.x) for decision_id, od in batch],
                self.spec.default_reward,
                now,
            )
            for decision_id, _ in batch:
                self._writing[decision_id] = _EXPIRING
            self._pending.append(
                _Pending(future, partial(self._apply_expiry, batch), partial(self._reopen, batch))
            )
        try:
            future.result()
        except Exception:
            log.exception("bandit %r: expiring %d decisions failed", self.name, len(batch))
            return 0
        return len(batch)

    def _compact_expiry(self) -> None:
        """Drop the queue's entries for decisions no longer open (rewarded ones stay queued
        until their expiry time otherwise: a day of every decision's id, 7 MiB a minute at 700
        decisions/s). Done once stale entries outnumber open ones, so each entry is copied at
        most once on average; lock held."""
        if len(self._expiry) > 2 * len(self._open) + _EXPIRY_SLACK:
            is_open = self._open.__contains__
            self._expiry = deque(e for e in self._expiry if is_open(e[1]))

    def _apply_expiry(self, batch: list[tuple[str, OpenDecision]], seqs: list[int]) -> None:
        default = self.spec.default_reward
        for (decision_id, od), seq in zip(batch, seqs, strict=True):
            self._count_expiry(od.slot, default, od.x, od.propensity)
            self._event_seq = seq
            self._changes += 1
            self._forget(decision_id)

    # -- arms -----------------------------------------------------------------------------------

    def add_arm(self, arm: Arm, now: float) -> BanditInfo:
        with self._lock:
            self._check_live()
            self._check_new_arm(arm)
            slot = len(self._arms)
            future = self._store.add_arm_async(self.id, slot, arm.to_json(), now)
            self._pending.append(_Pending(future, partial(self._apply_add, arm), lambda exc: None))
            try:
                future.result()
            finally:
                self._drain()
            return self._info()

    def _apply_add(self, arm: Arm, seq: int) -> None:
        self._append_arm(arm)
        self._event_seq = seq
        self._changes += 1

    def remove_arm(self, arm_id: str, now: float) -> BanditInfo:
        with self._lock:
            self._check_live()
            slot = self._active_slot(arm_id)
            future = self._store.remove_arm_async(self.id, slot, arm_id, now)
            self._pending.append(
                _Pending(future, partial(self._apply_remove, slot), lambda exc: None)
            )
            try:
                future.result()
            finally:
                self._drain()
            return self._info()

    def _apply_remove(self, slot: int, seq: int) -> None:
        self._remove_slot(slot)
        self._event_seq = seq
        self._changes += 1

    # -- reads ----------------------------------------------------------------------------------

    def info(self) -> BanditInfo:
        with self._lock:
            self._check_live()
            return self._info()

    def stats(self) -> BanditStats:
        with self._lock:
            self._check_live()
            return self._stats()

    # -- snapshots and lifecycle ----------------------------------------------------------------

    def _save_snapshot(self) -> WriteFuture[None]:
        """Queue a snapshot of everything applied so far (call under the lock).

        With nothing in flight, every row of this bandit already in the log is applied, so the
        snapshot's watermarks may advance to the log's end: a quiet bandit's restart then skips
        the other bandits' later rows instead of scanning them."""
        self._changes = 0
        self._snapshot_time = time.monotonic()
        return self._store.save_snapshot_async(
            self.id,
            self._event_seq,
            self._decision_rowid,
            pickle.dumps(self._learned(), protocol=pickle.HIGHEST_PROTOCOL),
            time.time(),
            to_log_end=not self._pending,
        )

    def snapshot(self) -> None:
        """Write a snapshot now and wait for it (used on close)."""
        with self._lock:
            if self._deleted:
                return
            self._drain()
            future = self._save_snapshot()
        future.result()

    def maybe_snapshot(self, interval: float) -> WriteFuture[None] | None:
        """Snapshot when ``interval`` seconds passed since the last one and something changed
        (or ten intervals passed: the watermarks then catch up with the log's end); returns the
        queued write, if any."""
        with self._lock:
            if self._deleted:
                return None
            self._drain()
            age = time.monotonic() - self._snapshot_time
            if (self._changes and age >= interval) or age >= 10 * interval:
                return self._save_snapshot()
            return None

    def mark_deleted(self) -> list[str]:
        """Refuse every later call; returns the ids of the open decisions to unindex."""
        with self._lock:
            self._deleted = True
            ids = list(self._open)
            for decision_id in ids:
                self._forget(decision_id)
            return ids

"""What one bandit knows in memory: its arms by slot, its policy, its open decisions and the
statistics of each arm, and the changes that move them.

``BanditState`` holds no lock and writes nothing: its subclass ``llmopt.bandits.bandit.Bandit``
takes the bandit's lock, makes each change durable, and only then applies it here, in the order
of the log. Slots are never reused: a removed arm keeps its slot, masked out of selection.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

import numpy as np

from llmopt import errors
from llmopt.bandits.arms import Arm
from llmopt.bandits.explain import ArmEstimates, Explanation, arm_estimates, explain_selection
from llmopt.bandits.policy import Policy, Selection
from llmopt.bandits.types import (
    ArmCounters,
    ArmStats,
    BanditInfo,
    BanditSpec,
    BanditStats,
    Decision,
)


class OpenDecision(NamedTuple):
    """A decision that may still receive a reward, with the context it was made for.

    Deliberately one flat object of atoms and (untracked) arrays: with millions of open
    decisions (24 h of traffic) the collector's passes stay cheap, where a decision object with
    its future, nested tuples and dicts made them cost a third of SelectArm's handler time.
    """

    slot: int
    x: np.ndarray
    propensity: float
    scores: np.ndarray
    time: float
    expires: float
    request_digest: bytes | None = None  # of a caller-chosen id's request (see BanditService)
    explained: bool = False  # its explanation is kept in the log (not in memory)


class BanditState:
    """The in-memory state of one bandit. Not thread-safe: ``Bandit`` calls it under its lock."""

    def __init__(
        self,
        spec: BanditSpec,
        arms: Sequence[tuple[Arm, bool]],
        policy: Policy,
        dim: int,
        create_time: float,
    ) -> None:
        self.spec = spec
        self.name = spec.name
        self.dim = dim
        self.create_time = create_time
        self._policy = policy
        self._contextual = policy.contextual
        self._arms: list[Arm] = [a for a, _ in arms]
        self._removed: list[bool] = [r for _, r in arms]
        self._slot_of = {a.arm_id: i for i, a in enumerate(self._arms)}
        # Replaced, never changed in place, so a select can hand it to the kernel uncopied.
        self._active = np.array([not r for r in self._removed], dtype=np.uint8)
        self._arm_ids = tuple(a.arm_id for a in self._arms)  # by slot, for decisions' scores
        self._any_active = bool(self._active.any())  # kept, not derived: .any() costs ~2 us
        self._counters = [ArmCounters() for _ in self._arms]
        self._open: dict[str, OpenDecision] = {}
        self._decisions = 0
        self._expired = 0

    # -- decisions ------------------------------------------------------------------------------

    def _allowed(self, excluded: Iterable[str]) -> np.ndarray:
        """The uint8 mask of the arms a selection may choose: active and not ``excluded`` (the
        kept active mask itself when nothing is excluded; never change it in place)."""
        allowed, any_left = self._active, self._any_active
        if excluded:
            allowed = allowed.copy()
            for arm_id in excluded:
                slot = self._slot_of.get(arm_id)
                if slot is None:
                    raise errors.invalid(
                        "excluded_arms", arm_id, f"is not an arm of bandit {self.name!r}"
                    )
                allowed[slot] = 0
            any_left = bool(allowed.any())
        if not any_left:
            raise errors.FailedPrecondition(
                f"bandit {self.name!r}: no arm left to choose (every arm is removed or excluded)"
            )
        return allowed

    def _explain(
        self, x: np.ndarray, allowed: np.ndarray, sel: Selection, slot_names: Sequence[str]
    ) -> Explanation:
        """Why ``sel`` was chosen: right after the policy's select, before any other change
        (``llmopt.bandits.explain.explain_selection``)."""
        return explain_selection(
            self._policy,
            x if self._contextual else None,
            allowed,
            self._removed,
            self._arm_ids,
            slot_names,
            sel,
        )

    def _explain_logged(
        self,
        x: np.ndarray,
        slot: int,
        propensity: float,
        scores: np.ndarray,
        slot_names: Sequence[str],
    ) -> Explanation:
        """An explanation recomputed for a logged decision against the policy's state now: the
        arms eligible then are those with a score (arms added since were not), and the logged
        scores stand for the selection's (a Thompson decision's are its draws)."""
        n = self._policy.n_arms
        padded = np.full(n, np.nan)
        padded[: min(n, len(scores))] = scores[:n]
        allowed = (~np.isnan(padded)).astype(np.uint8)
        return self._explain(x, allowed, Selection(slot, propensity, padded), slot_names)

    def _estimates(self, slot_names: Sequence[str]) -> ArmEstimates:
        return arm_estimates(self.name, self._policy, self._arm_ids, self._removed, slot_names)

    def _decision(
        self,
        decision_id: str,
        slot: int,
        propensity: float,
        scores: np.ndarray,
        when: float,
        explanation: Explanation | None = None,
    ) -> Decision:
        return Decision(
            decision_id,
            self.name,
            self._arms[slot],
            propensity,
            self._arm_ids,
            scores,
            when,
            explanation,
        )

    def _count_decision(self, od: OpenDecision) -> None:
        self._counters[od.slot].add_pull(od.time)
        self._decisions += 1

    def _count_logged_decisions(self, counts: Iterable[tuple[int, int, float]]) -> None:
        """Count decisions found in the log at start-up: (slot, how many, latest time) per slot.
        They were selections too (epsilon-greedy's decay counts them)."""
        total = 0
        for slot, n, last in counts:
            c = self._counters[slot]
            c.pulls += n
            c.last_selected = last if c.last_selected is None else max(c.last_selected, last)
            total += n
        self._decisions += total
        self._policy.add_selections(total)

    # -- rewards and expiry ---------------------------------------------------------------------

    def _learn(
        self, slot: int, reward: float, x: np.ndarray | None, propensity: float | None
    ) -> None:
        """Learn a reward already validated (``BanditService.record_reward`` checks it)."""
        self._policy.update(slot, reward, x if self._contextual else None, propensity)
        self._counters[slot].add_reward(reward)

    def _count_expiry(
        self, slot: int, reward: float | None, x: np.ndarray | None, propensity: float | None
    ) -> None:
        """An expired decision: learn the bandit's default reward, if it has one."""
        if reward is not None:
            self._learn(slot, reward, x, propensity)
        self._expired += 1

    # -- arms -----------------------------------------------------------------------------------

    def _check_new_arm(self, arm: Arm) -> None:
        if arm.arm_id in self._slot_of:
            removed = self._removed[self._slot_of[arm.arm_id]]
            raise errors.AlreadyExists(
                f"arm.arm_id: {arm.arm_id!r} "
                + ("was removed from" if removed else "already exists in")
                + f" bandit {self.name!r}; arm ids are never reused"
            )

    def _append_arm(self, arm: Arm) -> None:
        slot = self._policy.add_arm()
        assert slot == len(self._arms), (slot, len(self._arms))
        self._arms.append(arm)
        self._removed.append(False)
        self._slot_of[arm.arm_id] = slot
        self._active = np.append(self._active, np.uint8(1))
        self._arm_ids += (arm.arm_id,)
        self._any_active = True
        self._counters.append(ArmCounters())

    def _grow_policy(self) -> None:
        """Replay of an arm added after the snapshot: the arm is already loaded, its policy slot
        is not."""
        self._policy.add_arm()
        if len(self._counters) < self._policy.n_arms:
            self._counters.append(ArmCounters())

    def _active_slot(self, arm_id: str) -> int:
        """The slot of an arm that may be removed."""
        slot = self._slot_of.get(arm_id)
        if slot is None:
            raise errors.NotFound(f"arm_id: {arm_id!r} is not an arm of bandit {self.name!r}")
        if self._removed[slot]:
            raise errors.FailedPrecondition(
                f"arm_id: {arm_id!r} is already removed from bandit {self.name!r}"
            )
        return slot

    def _remove_slot(self, slot: int) -> None:
        self._removed[slot] = True
        active = self._active.copy()
        active[slot] = 0
        self._active = active
        self._any_active = bool(active.any())

    # -- reads ----------------------------------------------------------------------------------

    def _info(self) -> BanditInfo:
        arms = tuple(zip(self._arms, self._removed, strict=True))
        spec = self.spec
        return BanditInfo(
            BanditSpec(
                spec.name,
                spec.policy,
                tuple(self._arms),
                spec.reward,
                spec.reward_wait,
                spec.default_reward,
                spec.feature_set,
                spec.seed,
                spec.description,
            ),
            arms,
            self.dim,
            self.create_time,
        )

    def _stats(self) -> BanditStats:
        arms = []
        total_rewards, total_sum = 0, 0.0
        for arm, removed, c in zip(self._arms, self._removed, self._counters, strict=True):
            low, high = c.confidence_interval()
            arms.append(
                ArmStats(
                    arm.arm_id,
                    c.pulls,
                    c.rewards,
                    c.reward_sum,
                    c.mean,
                    c.variance,
                    low,
                    high,
                    c.last_selected,
                    removed,
                )
            )
            total_rewards += c.rewards
            total_sum += c.reward_sum
        return BanditStats(
            self.name,
            tuple(arms),
            self._decisions,
            total_rewards,
            len(self._open),
            self._expired,
            total_sum / total_rewards if total_rewards else 0.0,
        )

    # -- snapshots ------------------------------------------------------------------------------

    def _learned(self) -> dict[str, Any]:
        """Everything learned, for a snapshot (open decisions are logged, not snapshotted)."""
        return {
            "policy": self._policy.get_state(),
            "counters": [c.to_tuple() for c in self._counters],
            "decisions": self._decisions,
            "expired": self._expired,
        }

    def _restore_counts(self, learned: dict[str, Any]) -> None:
        """The counters of a snapshot's ``_learned`` (its policy state is restored when the
        policy is built)."""
        for slot, values in enumerate(learned["counters"]):
            self._counters[slot] = ArmCounters.from_tuple(tuple(values))
        self._decisions = learned["decisions"]
        self._expired = learned["expired"]

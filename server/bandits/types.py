"""Domain values of the bandit service: definitions, decisions, reward receipts and statistics."""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any

import numpy as np

from llmopt import errors, naming
from llmopt.bandits.arms import Arm
from llmopt.bandits.policies import CONFIG_BY_ONEOF, UCB1, PolicyConfig
from llmopt.bandits.rewards import Outcome, RewardConfig
from llmopt.features.context import RequestContext

if TYPE_CHECKING:
    from llmopt.bandits.explain import Explanation

DEFAULT_REWARD_WAIT = 24 * 3600.0
MAX_REWARD_WAIT = 366 * 24 * 3600.0
MAX_ARMS = 10_000


@dataclass(frozen=True)
class BanditSpec:
    """What a caller asks for when creating a bandit (validated by ``validate``)."""

    name: str
    policy: PolicyConfig = field(default_factory=UCB1)
    arms: tuple[Arm, ...] = ()
    reward: RewardConfig = field(default_factory=RewardConfig)
    reward_wait: float = DEFAULT_REWARD_WAIT  # seconds
    default_reward: float | None = None
    feature_set: str = ""
    seed: int = 0
    description: str = ""

    def validate(self) -> BanditSpec:
        naming.check("bandit.name", self.name)  # only on creation: stored names still load
        if type(self.policy) not in {cfg for cfg in CONFIG_BY_ONEOF.values()}:
            raise errors.invalid("bandit.policy", type(self.policy).__name__, "must name a policy")
        if len(self.arms) > MAX_ARMS:
            raise errors.invalid("bandit.arms", f"{len(self.arms)} arms", f"at most {MAX_ARMS}")
        seen: set[str] = set()
        for i, arm in enumerate(self.arms):
            arm.validate(f"bandit.arms[{i}]")
            if arm.arm_id in seen:
                raise errors.invalid(f"bandit.arms[{i}].arm_id", arm.arm_id, "is a duplicate")
            seen.add(arm.arm_id)
        if not (math.isfinite(self.reward_wait) and 0 < self.reward_wait <= MAX_REWARD_WAIT):
            raise errors.invalid(
                "bandit.reward_wait", f"{self.reward_wait}s", "must be > 0 and at most 366 days"
            )
        if self.default_reward is not None and not (
            math.isfinite(self.default_reward) and 0.0 <= self.default_reward <= 1.0
        ):
            raise errors.invalid("bandit.default_reward", self.default_reward, "must be in [0, 1]")
        if self.feature_set:
            naming.check("bandit.feature_set", self.feature_set)
        if not 0 <= self.seed < 2**64:
            raise errors.invalid("bandit.seed", self.seed, "must be in [0, 2**64)")
        if len(self.description) > 4096:
            raise errors.invalid("bandit.description", "...", "at most 4096 characters")
        return self

    def to_json(self) -> dict[str, Any]:
        """The durable definition (arms are stored beside it, by slot)."""
        params = {f.name: _plain(getattr(self.policy, f.name)) for f in fields(self.policy)}
        r = self.reward
        return {
            "policy": {"kind": self.policy.ONEOF, "params": params},
            "reward": {
                "preset": r.preset,
                "weights": list(r.weights),
                "max_cost": r.max_cost,
                "max_latency_ms": r.max_latency_ms,
            },
            "reward_wait": self.reward_wait,
            "default_reward": self.default_reward,
            "feature_set": self.feature_set,
            "seed": self.seed,
            "description": self.description,
            "initial_arms": len(self.arms),
        }

    @classmethod
    def from_json(cls, name: str, data: dict[str, Any], arms: tuple[Arm, ...]) -> BanditSpec:
        policy = CONFIG_BY_ONEOF[data["policy"]["kind"]](**data["policy"]["params"])
        r = data["reward"]
        q, c, lat = r["weights"]
        reward = RewardConfig(q, c, lat, r["max_cost"], r["max_latency_ms"], r["preset"])
        return cls(
            name=name,
            policy=policy,
            arms=arms,
            reward=reward,
            reward_wait=data["reward_wait"],
            default_reward=data["default_reward"],
            feature_set=data["feature_set"],
            seed=data["seed"],
            description=data["description"],
        )


def _plain(value: Any) -> Any:
    return int(value) if isinstance(value, int) else value


@dataclass(frozen=True)
class BanditInfo:
    """A bandit as GetBandit shows it: its definition, every arm (removed ones flagged)."""

    spec: BanditSpec
    arms: tuple[tuple[Arm, bool], ...]  # (arm, removed)
    dim: int
    create_time: float


@dataclass(frozen=True, eq=False, slots=True)
class Decision:
    """A choice and what it was made from. ``arm_scores`` holds one score per id in
    ``arm_ids`` (the bandit's arms, removed ones included), NaN where the arm was not eligible;
    a decision stored before arms were added has fewer scores than ids. ``explanation`` only
    when SelectArm asked for one (``explain``)."""

    decision_id: str
    bandit: str
    arm: Arm
    propensity: float
    arm_ids: tuple[str, ...]
    arm_scores: np.ndarray
    time: float
    explanation: Explanation | None = None

    @property
    def scores(self) -> tuple[tuple[str, float], ...]:
        """(arm id, score) of every eligible arm, in arm order."""
        pairs = zip(self.arm_ids, self.arm_scores.tolist(), strict=False)
        return tuple([(arm_id, score) for arm_id, score in pairs if score == score])

    def _key(self) -> tuple[Any, ...]:
        return (self.decision_id, self.bandit, self.arm, self.propensity, self.scores, self.time)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Decision):
            return NotImplemented
        return self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())


class DecisionStatus(enum.IntEnum):
    """Where a logged decision stands (values equal the contract's DecisionStatus)."""

    OPEN = 1
    REWARDED = 2
    EXPIRED = 3


@dataclass(frozen=True, eq=False)
class LoggedDecision:
    """A decision as the log keeps it (GetDecision, ListDecisions): the choice, what it was
    made from, and how it ended. ``reward`` is the reward learned (an expired decision's is the
    bandit's default reward, if it has one); ``outcome`` is set when the reward came as one;
    ``reward_time`` is when it was rewarded or expired. ``degraded``: a fallback made the
    choice, not the policy (always false until degraded mode exists)."""

    decision_id: str
    bandit: str
    arm: Arm
    propensity: float
    arm_ids: tuple[str, ...]
    arm_scores: np.ndarray
    time: float
    expire_time: float
    context: RequestContext | None
    context_vector: np.ndarray
    slot_names: tuple[str, ...]
    status: DecisionStatus
    reward: float | None = None
    outcome: Outcome | None = None
    reward_time: float | None = None
    explanation: Explanation | None = None
    explanation_recomputed: bool = False
    degraded: bool = False

    @property
    def scores(self) -> tuple[tuple[str, float], ...]:
        """(arm id, score) of every eligible arm, in arm order."""
        pairs = zip(self.arm_ids, self.arm_scores.tolist(), strict=False)
        return tuple([(arm_id, score) for arm_id, score in pairs if score == score])


@dataclass(frozen=True)
class RewardReceipt:
    decision_id: str
    arm_id: str
    reward: float


@dataclass(frozen=True)
class ArmStats:
    arm_id: str
    pulls: int
    rewards: int
    reward_sum: float
    mean: float
    variance: float
    ci_low: float
    ci_high: float
    last_selected: float | None
    removed: bool


@dataclass(frozen=True)
class BanditStats:
    bandit: str
    arms: tuple[ArmStats, ...]
    decisions: int
    rewards: int
    open_decisions: int
    expired_decisions: int
    mean_reward: float


Z_95 = 1.959963984540054


@dataclass
class ArmCounters:
    """Pulls (decisions) and the reward statistics of one arm slot (Welford's running variance).

    >>> c = ArmCounters()
    >>> for r in (0.0, 1.0, 1.0, 0.0):
    ...     c.add_reward(r)
    >>> c.rewards, c.mean, round(c.variance, 12)
    (4, 0.5, 0.333333333333)
    """

    pulls: int = 0
    rewards: int = 0
    reward_sum: float = 0.0
    mean: float = 0.0
    m2: float = 0.0
    last_selected: float | None = None

    def add_reward(self, reward: float) -> None:
        self.rewards += 1
        self.reward_sum += reward
        delta = reward - self.mean
        self.mean += delta / self.rewards
        self.m2 += delta * (reward - self.mean)

    def add_pull(self, when: float) -> None:
        self.pulls += 1
        if self.last_selected is None or when > self.last_selected:
            self.last_selected = when

    @property
    def variance(self) -> float:
        """Sample variance of the rewards (0 below two rewards)."""
        return self.m2 / (self.rewards - 1) if self.rewards > 1 else 0.0

    def confidence_interval(self) -> tuple[float, float]:
        """Normal-approximation 95 % interval of the mean reward, clipped to [0, 1]."""
        if self.rewards == 0:
            return 0.0, 1.0
        half = Z_95 * math.sqrt(self.variance / self.rewards)
        return max(0.0, self.mean - half), min(1.0, self.mean + half)

    def to_tuple(self) -> tuple[Any, ...]:
        return (self.pulls, self.rewards, self.reward_sum, self.mean, self.m2, self.last_selected)

    @classmethod
    def from_tuple(cls, values: tuple[Any, ...]) -> ArmCounters:
        return cls(*values)

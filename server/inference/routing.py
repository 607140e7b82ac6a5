"""Champion/challenger traffic policy and the router that applies it.

A policy is a small frozen value, validated once where it enters the system. The share of traffic
is held in basis points (1/100 of a percent), the policy's resolution, so 10.005 % is refused
rather than silently rounded. Sticky routing hashes the routing key into one of 10,000 buckets: no
table is stored, the same key lands in the same bucket for as long as the policy is unchanged,
and raising the share only moves keys from champion to challenger, never back.
"""

from __future__ import annotations

import enum
import hashlib
import random
from dataclasses import dataclass, field

from llmopt import errors
from llmopt.inference.batching import BatchingConfig

BUCKETS = 10_000  # 100 % at a resolution of 0.01 %


class TrafficMode(enum.Enum):
    OFF = "off"  # the champion answers everything
    SPLIT = "split"  # challenger_percent of requests are answered by the challenger
    SHADOW = "shadow"  # the champion answers; a copy of every request runs on the challenger


class Variant(enum.Enum):
    CHAMPION = "champion"
    CHALLENGER = "challenger"
    PINNED = "pinned"  # the caller named a version or another alias
    SHADOW = "shadow"  # the challenger's off-path runs in SHADOW mode (stats only)


@dataclass(frozen=True)
class TrafficPolicy:
    """How a model's routed requests are shared between champion and challenger, and whether
    concurrent requests are merged into batches (``batching``).

    >>> TrafficPolicy("m", TrafficMode.SPLIT, 12.5).challenger_buckets
    1250
    >>> TrafficPolicy("m", TrafficMode.SPLIT, 10.005)
    Traceback (most recent call last):
    ...
    llmopt.errors.InvalidArgument: policy.challenger_percent: 10.005 is invalid: ...
    """

    model: str
    mode: TrafficMode = TrafficMode.OFF
    challenger_percent: float = 0.0
    # Dynamic batching of the model's requests (``llmopt.inference.batching``); off by default.
    batching: BatchingConfig = field(default_factory=BatchingConfig)

    def __post_init__(self) -> None:
        if not self.model:
            raise errors.invalid("policy.model", self.model, "a model name")
        self.batching.validate("policy.batching")
        pct = self.challenger_percent
        if not (0.0 <= pct <= 100.0):
            raise errors.invalid("policy.challenger_percent", pct, "between 0 and 100")
        if abs(pct * 100 - round(pct * 100)) > 1e-6:
            raise errors.invalid(
                "policy.challenger_percent", pct, "a multiple of 0.01 (the policy's resolution)"
            )

    @property
    def challenger_buckets(self) -> int:
        """How many of the 10,000 buckets go to the challenger."""
        return round(self.challenger_percent * 100)


def bucket_of(model: str, routing_key: str) -> int:
    """The sticky bucket (0..9999) of a routing key for a model: a stable hash, no table."""
    data = model.encode() + b"\0" + routing_key.encode()
    digest = hashlib.blake2b(data, digest_size=8, person=b"llmopt-route").digest()
    return int.from_bytes(digest, "little") % BUCKETS


class ChampionChallengerRouter:
    """Chooses CHAMPION or CHALLENGER for a routed request; random draws from a seeded generator."""

    def __init__(self, seed: int | None = None) -> None:
        # random() is one C call, atomic under the GIL: no lock needed to share the generator.
        self._rng = random.Random(seed)

    def choose(self, policy: TrafficPolicy, has_challenger: bool, routing_key: str = "") -> Variant:
        if policy.mode is not TrafficMode.SPLIT or not has_challenger:
            return Variant.CHAMPION
        share = policy.challenger_buckets
        if share <= 0:
            return Variant.CHAMPION
        if share >= BUCKETS:
            return Variant.CHALLENGER
        if routing_key:
            bucket = bucket_of(policy.model, routing_key)
        else:
            bucket = int(self._rng.random() * BUCKETS)
        return Variant.CHALLENGER if bucket < share else Variant.CHAMPION

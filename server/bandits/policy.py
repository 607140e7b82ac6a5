"""The contract between the bandit service layer and every policy implementation.

A policy owns the learned state of one bandit over arm *slots* 0..n-1. Slots are never reused:
removing an arm masks its slot out of selection, adding an arm appends a slot. The service layer
(``llmopt.bandits.service``) maps arm ids to slots, holds one lock per bandit, and calls the policy
under that lock, so implementations need not be thread-safe.

Each policy has a frozen config (validated once, in ``__post_init__``) and an implementation;
``llmopt.bandits.policies.POLICY_TABLE`` maps the config type to its class.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, NamedTuple

import numpy as np


class Selection(NamedTuple):
    """The arm slot chosen, the probability that this policy chose it for this context, and the
    per-slot scores behind the choice (NaN for slots that were not eligible).

    An immutable named tuple rather than a frozen dataclass: one is built per request, and a
    frozen dataclass costs about 0.4 us to construct, a tenth of the selection budget."""

    arm: int
    propensity: float
    scores: np.ndarray


class Policy(ABC):
    """Learned state of one bandit policy. ``x`` is the float64 context vector (length ``dim``)
    for contextual policies and ``None`` for context-free ones."""

    contextual: bool = False
    """Whether ``select`` and ``update`` read ``x`` (set by each implementation)."""

    config: Any
    """The frozen config this policy implements (its ``ONEOF`` and ``EXPLORATION`` name it)."""

    @abstractmethod
    def add_arm(self) -> int:
        """Append a cold arm slot and return its index."""

    @abstractmethod
    def select(self, x: np.ndarray | None, allowed: np.ndarray) -> Selection:
        """Choose among slots where ``allowed`` (uint8 mask, one per slot) is 1."""

    @abstractmethod
    def update(
        self, arm: int, reward: float, x: np.ndarray | None, propensity: float | None = None
    ) -> None:
        """Learn from one reward in [0, 1] for slot ``arm`` (with the context logged at decision).

        ``propensity`` is the one logged with the decision; EXP3 weighs the reward by its inverse
        (without it, the probability the arm had at its latest selection); others ignore it."""

    @abstractmethod
    def explain(
        self, x: np.ndarray | None, allowed: np.ndarray, selection: Selection
    ) -> dict[str, np.ndarray]:
        """Why ``selection`` (what ``select(x, allowed)`` just returned) scored what it did.

        Call it right after that ``select``, under the same lock, before any other change.
        Per-slot float64 arrays: ``exploitation`` + ``exploration`` = the score of each
        eligible slot (NaN for the others); ``mean``; ``posterior_mean`` and ``posterior_sd``
        (Thompson policies, NaN otherwise); ``probability`` (of choosing the slot for this
        context and mask; NaN where only the chosen slot's propensity is known); ``pulls``;
        contextual policies add ``theta_x`` (slots x dim, theta_i x_i). Policy-wide values may
        be added (epsilon-greedy: ``epsilon``, the one the selection drew with). Explanations
        read ``llmopt.bandits.explain``'s types; this is the raw form."""

    @abstractmethod
    def estimates(self, allowed: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """What the policy has learned, per slot: ``pulls``, ``mean``, ``sd`` (the policy's own
        uncertainty about the mean); linear policies ``theta`` and ``theta_sd`` (slots x dim);
        EXP3 and softmax ``probability`` of choosing each slot now, among ``allowed`` (a uint8
        mask; default every slot)."""

    @abstractmethod
    def add_selections(self, n: int) -> None:
        """Count ``n`` selections made after the restored state was saved (decisions found in
        the log at start-up): only state that moves on select, such as epsilon-greedy's decay."""

    @abstractmethod
    def get_state(self) -> dict[str, Any]:
        """Everything needed to resume exactly (arrays, counters, generator state): snapshots."""

    @abstractmethod
    def set_state(self, state: dict[str, Any]) -> None:
        """Restore what ``get_state`` returned."""

    @property
    @abstractmethod
    def n_arms(self) -> int:
        """Number of slots (removed ones included)."""

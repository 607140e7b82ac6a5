"""Why a policy chose an arm, and what it has learned: the value types and their JSON form.

``explain_selection`` turns a policy's raw explanation (``Policy.explain``: per-slot arrays from
the kernel, recomputed right after ``select``) into an ``Explanation``: every arm's score split
into its exploitation and exploration parts, its status, its probability, and for linear
policies its per-feature contributions theta_i x_i; plus a one-line reason. ``arm_estimates``
reads ``Policy.estimates`` into ``ArmEstimates`` (means and their 95 % intervals, or theta and
its sd). No grpc here: ``llmopt.api`` converts these to messages.

Speed: an explained selection is on the request path, so the per-feature contributions (slots
x dim of them) are kept as the kernel's array and become ``FeatureContribution`` values only
when ``ArmExplanation.contributions`` is read; ``Explanation.to_json`` writes them straight
from the array.

>>> import numpy as np
>>> from llmopt.bandits.policies import UCB1, make_policy
>>> p = make_policy(UCB1(), n_arms=2, dim=1, seed=0)
>>> p.update(0, 1.0, None)
>>> allowed = np.ones(2, dtype=np.uint8)
>>> e = explain_selection(p, None, allowed, [False, False], ["a", "b"], (), p.select(None, allowed))
>>> e.reason
'chose b: untried: every arm without a reward scores +inf'
>>> Explanation.from_json(e.to_json()).arms[1].exploration
inf
"""

from __future__ import annotations

import base64
import binascii
import enum
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from operator import itemgetter
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from llmopt import errors
from llmopt.bandits.policy import Policy, Selection

CI_Z = 1.959963984540054
"""The normal quantile of a two-sided 95 % interval: ci = mean +- CI_Z sd."""


class ArmStatus(enum.IntEnum):
    """Whether an arm could be chosen by one selection (values = the proto enum's)."""

    ELIGIBLE = 1
    EXCLUDED = 2  # by the request (excluded_arms)
    REMOVED = 3  # from the bandit


class FeatureContribution(NamedTuple):
    """One context slot's share of a linear estimate: ``contribution = theta_i * value``.

    A named tuple: an explanation of 10 arms over 20 slots holds 200 of them, and a frozen
    dataclass costs about 0.5 us to build."""

    name: str
    value: float
    contribution: float


_ARM_FIELDS = (
    "arm_id",
    "status",
    "score",
    "exploitation",
    "exploration",
    "mean",
    "posterior_mean",
    "posterior_sd",
    "probability",
    "pulls",
)
_FLOAT_FIELDS = _ARM_FIELDS[2:]


class _LazyContributions:
    """The per-feature contributions of every arm of one explanation, as the kernel wrote them
    (slots x dim), turned into ``FeatureContribution`` tuples row by row when first read."""

    __slots__ = ("names", "rows", "theta_x", "values")

    def __init__(self, names: tuple[str, ...], values: list[float], theta_x: np.ndarray) -> None:
        self.names = names
        self.values = values
        self.theta_x = theta_x
        self.rows: list[tuple[FeatureContribution, ...] | None] = [None] * len(theta_x)

    def row(self, i: int) -> tuple[FeatureContribution, ...]:
        got = self.rows[i]
        if got is None:
            got = tuple(map(FeatureContribution, self.names, self.values, self.theta_x[i].tolist()))
            self.rows[i] = got
        return got


class ArmExplanation(tuple):  # type: ignore[type-arg]
    """Why one arm scored what it did (immutable; read it by attribute).

    For an eligible arm ``score = exploitation + exploration`` within 1e-9 (an untried arm of
    an optimistic policy scores +inf: the exploration part); ``score``, ``exploitation`` and
    ``exploration`` are NaN for an arm that was not eligible. ``mean`` is the arm's mean
    estimate (context-free) or theta . x (linear); ``posterior_mean`` and ``posterior_sd`` the
    distribution of a Thompson draw (NaN otherwise); ``probability`` the probability that this
    arm is chosen for this context and eligibility (NaN where only the chosen arm's propensity
    is estimated); ``pulls`` the rewards learned from (NaN where the policy keeps no count);
    ``contributions`` (linear policies) theta_i x_i per context slot, summing to ``mean``.

    A tuple underneath rather than a frozen dataclass: one is built per arm on the request
    path, a tuple in 0.2 us where a frozen dataclass of eleven fields takes 2 us; and
    ``contributions`` is built from the kernel's array only when read (see the module's note
    on speed). Equality is field by field with NaN equal to NaN (an unknown stays the same
    unknown through JSON)."""

    __slots__ = ()

    def __new__(
        cls,
        arm_id: str,
        status: ArmStatus,
        score: float,
        exploitation: float,
        exploration: float,
        mean: float,
        posterior_mean: float,
        posterior_sd: float,
        probability: float,
        pulls: float,
        contributions: Sequence[FeatureContribution] = (),
    ) -> ArmExplanation:
        return tuple.__new__(
            cls,
            (
                arm_id,
                ArmStatus(status),
                float(score),
                float(exploitation),
                float(exploration),
                float(mean),
                float(posterior_mean),
                float(posterior_sd),
                float(probability),
                float(pulls),
                tuple(FeatureContribution(*c) for c in contributions),
                -1,
            ),
        )

    if TYPE_CHECKING:
        arm_id: str
        status: ArmStatus
        score: float
        exploitation: float
        exploration: float
        mean: float
        posterior_mean: float
        posterior_sd: float
        probability: float
        pulls: float
    else:
        arm_id = property(itemgetter(0))
        status = property(itemgetter(1))
        score = property(itemgetter(2))
        exploitation = property(itemgetter(3))
        exploration = property(itemgetter(4))
        mean = property(itemgetter(5))
        posterior_mean = property(itemgetter(6))
        posterior_sd = property(itemgetter(7))
        probability = property(itemgetter(8))
        pulls = property(itemgetter(9))

    @property
    def contributions(self) -> tuple[FeatureContribution, ...]:
        row: int = self[11]
        if row < 0:
            direct: tuple[FeatureContribution, ...] = self[10]
            return direct
        lazy: _LazyContributions = self[10]
        return lazy.row(row)

    def _parts(self) -> tuple[tuple[str, ...], list[float], list[float]] | None:
        """(names, values, contributions) as lists, without building the tuple."""
        row: int = self[11]
        if row >= 0:
            lazy: _LazyContributions = self[10]
            return lazy.names, lazy.values, lazy.theta_x[row].tolist()
        c = self.contributions
        if not c:
            return None
        return tuple(f.name for f in c), [f.value for f in c], [f.contribution for f in c]

    def _fields(self) -> tuple[Any, ...]:
        return (*self[:10], self.contributions)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ArmExplanation):
            return NotImplemented
        if self[0] != other[0] or self[1] != other[1]:
            return False
        if not all(_same(a, b) for a, b in zip(self[2:10], other[2:10], strict=True)):
            return False
        mine, theirs = self.contributions, other.contributions
        return len(mine) == len(theirs) and all(
            a.name == b.name and _same(a.value, b.value) and _same(a.contribution, b.contribution)
            for a, b in zip(mine, theirs, strict=True)
        )

    def __ne__(self, other: object) -> bool:
        eq = self.__eq__(other)
        return eq if eq is NotImplemented else not eq

    def __hash__(self) -> int:  # NaN hashes by identity: hash it as None, as __eq__ sees it
        return hash(
            (
                *(None if v != v else v for v in self[:10]),
                tuple(tuple(None if v != v else v for v in c) for c in self.contributions),
            )
        )

    def __repr__(self) -> str:
        shown = ", ".join(f"{f}={v!r}" for f, v in zip(_ARM_FIELDS, self, strict=False))
        return f"ArmExplanation({shown}, contributions={self.contributions!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (ArmExplanation, self._fields())


@dataclass(frozen=True, slots=True)
class Explanation:
    """Why one selection chose its arm: every arm (removed ones included, in slot order), the
    choice, its propensity and a one-line ``reason``."""

    policy: str  # the config's ONEOF ("ucb1", "lin_ucb", ...)
    exploration_kind: str  # "optimism" | "posterior" | "randomized"
    chosen_arm_id: str
    propensity: float
    reason: str
    arms: tuple[ArmExplanation, ...]

    def to_json(self) -> str:
        """Compact, strict JSON that round-trips exactly (NaN and infinities included).

        The names and words as JSON values; the numbers as base64 of little-endian float64
        blocks (exact, and a fifth of the time that writing 300 floats in decimal takes):
        ``arms_f64`` the arms' float fields (arms x 8, in ``ArmExplanation`` order), and for
        linear policies ``slots``, ``x_f64`` (the context vector) and ``contributions_f64``
        (arms x slots). Arms whose contributions were built by hand over different slots
        are written as ``contributions``: per arm a list of [name, value, contribution]."""
        arms = self.arms
        doc: dict[str, Any] = {
            "v": 1,
            "policy": self.policy,
            "kind": self.exploration_kind,
            "chosen": self.chosen_arm_id,
            "propensity": _enc(self.propensity),
            "reason": self.reason,
            "arm_id": [a[0] for a in arms],
            "status": [int(a[1]) for a in arms],
            "arms_f64": _b64(np.array([a[2:10] for a in arms], dtype="<f8").reshape(-1)),
        }
        lazy = arms[0][10] if arms else None
        if isinstance(lazy, _LazyContributions) and all(
            a[10] is lazy and a[11] == i for i, a in enumerate(arms)
        ):
            doc["slots"] = list(lazy.names)
            doc["x_f64"] = _b64(np.asarray(lazy.values, dtype="<f8"))
            doc["contributions_f64"] = _b64(np.asarray(lazy.theta_x, dtype="<f8").reshape(-1))
        elif any(a.contributions for a in arms):
            doc["contributions"] = [
                [[c.name, _enc(c.value), _enc(c.contribution)] for c in a.contributions]
                for a in arms
            ]
        return json.dumps(doc, separators=(",", ":"), allow_nan=False)

    @classmethod
    def from_json(cls, text: str) -> Explanation:
        """The explanation ``to_json`` wrote (InvalidArgument for anything else)."""
        try:
            doc = json.loads(text)
            ids, statuses = doc["arm_id"], doc["status"]
            k = len(ids)
            block = _unb64(doc["arms_f64"], k * 8).reshape(k, 8).tolist()
            sources: list[tuple[Any, int]] = [((), -1)] * k
            if "slots" in doc:
                names = tuple(doc["slots"])
                values = _unb64(doc["x_f64"], len(names)).tolist()
                theta_x = _unb64(doc["contributions_f64"], k * len(names)).reshape(k, -1)
                lazy = _LazyContributions(names, values, theta_x)
                sources = [(lazy, i) for i in range(k)]
            elif "contributions" in doc:
                rows = doc["contributions"]
                if len(rows) != k:
                    raise ValueError(f"{len(rows)} rows of contributions for {k} arms")
                sources = [
                    (tuple(FeatureContribution(str(n), _dec(v), _dec(c)) for n, v, c in row), -1)
                    for row in rows
                ]
            new = tuple.__new__
            arms = tuple(
                new(ArmExplanation, (str(ids[i]), ArmStatus(statuses[i]), *block[i], *sources[i]))
                for i in range(k)
            )
            return cls(
                policy=str(doc["policy"]),
                exploration_kind=str(doc["kind"]),
                chosen_arm_id=str(doc["chosen"]),
                propensity=_dec(doc["propensity"]),
                reason=str(doc["reason"]),
                arms=arms,
            )
        except (KeyError, TypeError, ValueError, IndexError, binascii.Error) as exc:
            raise errors.InvalidArgument(f"explanation: not an explanation's JSON: {exc}") from None


def _same(a: float, b: float) -> bool:
    return a == b or (a != a and b != b)


# --- JSON helpers: strict JSON has no NaN or infinity ----------------------------------------

_NONFINITE = {"inf": math.inf, "-inf": -math.inf}


def _enc(v: float) -> float | str | None:
    """One float for strict JSON: NaN as null, infinities as "inf" / "-inf"."""
    if math.isfinite(v):
        return v
    if v != v:
        return None
    return "inf" if v > 0 else "-inf"


def _dec(v: float | str | None) -> float:
    if v is None:
        return math.nan
    if isinstance(v, str):
        return _NONFINITE[v]
    return float(v)


def _b64(a: np.ndarray) -> str:
    return base64.b64encode(a.tobytes()).decode("ascii")


def _unb64(text: str, n: int) -> np.ndarray:
    """``n`` little-endian float64 values from base64 (as native-order float64)."""
    a = np.frombuffer(base64.b64decode(text, validate=True), dtype="<f8")
    if a.size != n:
        raise ValueError(f"{a.size} numbers where {n} were expected")
    return a.astype(np.float64)


# --- explain_selection -----------------------------------------------------------------------

_ROWS = ("exploitation", "exploration", "mean", "posterior_mean", "posterior_sd", "probability")
_STATUS = (ArmStatus.EXCLUDED, ArmStatus.REMOVED)


def explain_selection(
    policy: Policy,
    x: np.ndarray | None,
    allowed: np.ndarray,
    removed: Sequence[bool],
    arm_ids: Sequence[str],
    slot_names: Sequence[str],
    selection: Selection,
) -> Explanation:
    """Explain ``selection``, what ``policy.select(x, allowed)`` just returned.

    Call it right after that select, under the same lock, before any other change to the
    policy. ``removed`` and ``arm_ids`` are per slot; ``slot_names`` name x's slots (the
    default context's ``DEFAULT_CONTEXT_SLOTS``, or the feature set's)."""
    k = len(arm_ids)
    if k != policy.n_arms or len(removed) != k:
        raise errors.invalid(
            "arm_ids", k, f"must have one id and one removed flag per slot ({policy.n_arms})"
        )
    if not 0 <= selection.arm < k:
        raise errors.invalid("selection.arm", selection.arm, f"must be a slot in 0..{k - 1}")
    raw = policy.explain(x, allowed, selection)
    config = policy.config
    cols = [raw[name].tolist() for name in _ROWS]
    pulls = raw["pulls"].tolist()
    scores = selection.scores.tolist()
    mask = allowed.tolist()
    theta_x = raw.get("theta_x")
    names: tuple[str, ...] = tuple(slot_names)
    values: list[float] = []
    if theta_x is not None:
        assert x is not None
        values = x.tolist()
        if len(names) != len(values):
            raise errors.invalid(
                "slot_names", len(names), f"must name every context slot ({len(values)})"
            )
    status = [
        ArmStatus.ELIGIBLE if m else _STATUS[bool(r)] for m, r in zip(mask, removed, strict=True)
    ]
    # Each arm's contributions: none, or its row of the one lazy block all arms share.
    src: list[Any] = [()] * k
    rows: Sequence[int] = [-1] * k
    if theta_x is not None:
        src, rows = [_LazyContributions(names, values, theta_x)] * k, range(k)
    make = partial(tuple.__new__, ArmExplanation)
    arms = tuple(map(make, zip(arm_ids, status, scores, *cols, pulls, src, rows, strict=True)))
    chosen = selection.arm
    reason = _REASONS.get(config.ONEOF, _BY_KIND[config.EXPLORATION])(
        _Why(config, arms, chosen, raw, names, values, theta_x)
    )
    return Explanation(
        policy=config.ONEOF,
        exploration_kind=config.EXPLORATION,
        chosen_arm_id=arm_ids[chosen],
        propensity=float(selection.propensity),
        reason=reason,
        arms=arms,
    )


# --- the one-line reason ---------------------------------------------------------------------


class _Why(NamedTuple):
    config: Any
    arms: tuple[ArmExplanation, ...]
    chosen: int
    raw: dict[str, Any]
    names: tuple[str, ...]
    values: list[float]
    theta_x: np.ndarray | None

    @property
    def arm(self) -> ArmExplanation:
        return self.arms[self.chosen]

    def head(self) -> str:
        return f"chose {self.arm.arm_id}: "

    def eligible(self) -> int:
        return sum(a.status == ArmStatus.ELIGIBLE for a in self.arms)

    def driver(self) -> str:
        """Linear policies: the slot with the largest |theta_i x_i| of the chosen arm."""
        if self.theta_x is None or not self.names:
            return ""
        row = self.theta_x[self.chosen].tolist()
        size = list(map(abs, row))
        j = size.index(max(size))
        return f", with {self.names[j]}={self.values[j]:.3g} contributing {_num(row[j], True)}"


def _num(v: float, sign: bool = False) -> str:
    """Two decimals, or two significant digits for small values."""
    if not math.isfinite(v):
        return "+inf" if v > 0 else ("-inf" if v < 0 else "nan")
    spec = ".2f" if v == 0.0 or abs(v) >= 0.01 else ".2g"
    return format(v, ("+" if sign else "") + spec)


_UNTRIED = "untried: every arm without a reward scores +inf"


def _ties(w: _Why) -> str:
    p = w.arm.probability
    if 0.0 < p < 1.0:
        return f" ({round(1.0 / p)} tied, drawn uniformly)"
    return ""


def _index(bound: str) -> Callable[[_Why], str]:
    """Optimism: the highest index won (``bound`` names it)."""

    def reason(w: _Why) -> str:
        a = w.arm
        if math.isinf(a.score):
            return w.head() + _UNTRIED + _ties(w)
        return (
            f"{w.head()}highest {bound} {_num(a.score)} = mean {_num(a.exploitation)}"
            f" + bonus {_num(a.exploration)}{w.driver()}{_ties(w)}"
        )

    return reason


def _draw(w: _Why) -> str:
    """Posterior: the highest draw won."""
    a = w.arm
    return (
        f"{w.head()}highest posterior draw {_num(a.score)} (posterior mean"
        f" {_num(a.posterior_mean)}, sd {_num(a.posterior_sd)}){w.driver()}"
    )


def _drawn(w: _Why) -> str:
    """Randomized, in general: drawn with its probability."""
    return f"{w.head()}drawn with probability {_num(w.arm.probability)}"


def _epsilon(w: _Why) -> str:
    a = w.arm
    best = max(b.score for b in w.arms if b.status == ArmStatus.ELIGIBLE)
    if a.score == best:
        why = _UNTRIED if math.isinf(a.score) else f"the highest mean {_num(a.mean)}"
        return f"{_drawn(w)} (exploiting: {why})"
    eps = float(w.raw.get("epsilon", math.nan))
    return f"{_drawn(w)} (exploring: epsilon {_num(eps)} spread over {w.eligible()} arms)"


def _exp3(w: _Why) -> str:
    a = w.arm
    return (
        f"{_drawn(w)} = weight share {_num(a.exploitation)} + exploration share"
        f" {_num(a.exploration)} (gamma {_num(w.config.gamma)} over {w.eligible()} arms)"
    )


def _softmax(w: _Why) -> str:
    a = w.arm
    mean = "untried, read as mean 1" if a.pulls == 0 else f"mean {_num(a.mean)}"
    return f"{_drawn(w)} (softmax of {mean} at temperature {_num(w.config.temperature)})"


_REASONS: dict[str, Callable[[_Why], str]] = {
    "epsilon_greedy": _epsilon,
    "ucb1": _index("upper bound"),
    "ucb_tuned": _index("upper bound"),
    "ucb_v": _index("upper bound"),
    "kl_ucb": _index("KL upper bound"),
    "discounted_ucb": _index("discounted upper bound"),
    "sliding_window_ucb": _index("windowed upper bound"),
    "thompson_beta": _draw,
    "thompson_gaussian": _draw,
    "exp3": _exp3,
    "softmax": _softmax,
    "lin_ucb": _index("upper bound"),
    "hybrid_lin_ucb": _index("upper bound"),
    "linear_thompson": _draw,
    "diagonal_thompson": _draw,
}
"""The reason's wording by policy (the config's ONEOF)."""

_BY_KIND: dict[str, Callable[[_Why], str]] = {
    "optimism": _index("upper bound"),
    "posterior": _draw,
    "randomized": _drawn,
}
"""The wording of a policy missing from ``_REASONS``, by its ``EXPLORATION``."""


# --- estimates -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ArmEstimate:
    """One arm's learned parameters. Context-free policies: ``mean``, its ``sd`` (the
    policy's own uncertainty: a posterior sd, or the standard error of the mean) and the 95 %
    interval mean +- 1.96 sd; linear policies: those NaN, and ``theta`` with ``theta_sd`` per
    context slot; EXP3 and softmax: ``probability`` of choosing the arm now (every arm not
    removed eligible)."""

    arm_id: str
    removed: bool
    pulls: float
    mean: float
    sd: float
    ci_low: float
    ci_high: float
    theta: tuple[float, ...] = ()
    theta_sd: tuple[float, ...] = ()
    probability: float = math.nan


@dataclass(frozen=True, slots=True)
class ArmEstimates:
    """What one bandit's policy has learned, per arm (slot order, removed ones included)."""

    bandit: str
    policy: str
    slot_names: tuple[str, ...]
    arms: tuple[ArmEstimate, ...]


def arm_estimates(
    bandit: str,
    policy: Policy,
    arm_ids: Sequence[str],
    removed: Sequence[bool],
    slot_names: Sequence[str],
) -> ArmEstimates:
    """Read ``policy``'s learned estimates per arm (call under the bandit's lock)."""
    k = len(arm_ids)
    if k != policy.n_arms or len(removed) != k:
        raise errors.invalid(
            "arm_ids", k, f"must have one id and one removed flag per slot ({policy.n_arms})"
        )
    allowed = np.array([not r for r in removed], dtype=np.uint8)
    est = policy.estimates(allowed)
    mean, sd, pulls = est["mean"], est["sd"], est["pulls"]
    low, high = (mean - CI_Z * sd).tolist(), (mean + CI_Z * sd).tolist()
    theta = est.get("theta")
    theta_sd = est.get("theta_sd")
    prob = est.get("probability")
    arms = tuple(
        ArmEstimate(
            arm_id=arm_ids[i],
            removed=bool(removed[i]),
            pulls=float(pulls[i]),
            mean=float(mean[i]),
            sd=float(sd[i]),
            ci_low=low[i],
            ci_high=high[i],
            theta=() if theta is None else tuple(theta[i].tolist()),
            theta_sd=() if theta_sd is None else tuple(theta_sd[i].tolist()),
            probability=math.nan if prob is None else float(prob[i]),
        )
        for i in range(k)
    )
    names = tuple(slot_names) if theta is not None else ()
    return ArmEstimates(bandit=bandit, policy=policy.config.ONEOF, slot_names=names, arms=arms)

"""Why a policy chose an arm, and what it has learned: the value types and their stored form.

``explain_selection`` turns a policy's raw explanation (``Policy.explain``: per-slot arrays from
the kernel, recomputed right after ``select``) into an ``Explanation``: every arm's score split
into its exploitation and exploration parts, its status, its probability, and for linear
policies its per-feature contributions theta_i x_i; plus a one-line reason. ``arm_estimates``
reads ``Policy.estimates`` into ``ArmEstimates`` (means and their 95 % intervals, or theta and
its sd). No grpc here: ``llmopt.api`` converts these to messages.

Speed: an explained selection is on the request path (budget: 0.2 ms at p99 for 10 arms over
20 slots, issue 25), so ``explain_selection`` keeps the kernel's arrays as they came
(``ExplanationColumns``: the arms' numbers, their statuses, theta_i x_i per arm and slot) and
builds no per-arm or per-feature Python value: ``ArmExplanation`` and ``FeatureContribution``
values are made from the arrays only when ``Explanation.arms`` (then ``contributions``) is
read. The decision log keeps ``Explanation.to_bytes`` (a small header, the names, the arrays'
bytes) and the SelectArm answer is written from the same arrays (``llmopt.api.wire``).

>>> import numpy as np
>>> from llmopt.bandits.policies import UCB1, make_policy
>>> p = make_policy(UCB1(), n_arms=2, dim=1, seed=0)
>>> p.update(0, 1.0, None)
>>> allowed = np.ones(2, dtype=np.uint8)
>>> e = explain_selection(p, None, allowed, [False, False], ["a", "b"], (), p.select(None, allowed))
>>> e.reason
'chose b: untried: every arm without a reward scores +inf'
>>> Explanation.from_bytes(e.to_bytes()).arms[1].exploration
inf
"""

from __future__ import annotations

import base64
import binascii
import enum
import json
import math
import struct
from collections.abc import Callable, Sequence
from dataclasses import FrozenInstanceError, dataclass
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


class _LazyContributions:
    """The per-feature contributions of every arm of one explanation, as the kernel wrote them
    (slots x dim), turned into ``FeatureContribution`` tuples row by row when first read."""

    __slots__ = ("names", "rows", "theta_x", "values", "x")

    def __init__(self, names: tuple[str, ...], x: np.ndarray, theta_x: np.ndarray) -> None:
        self.names = names
        self.x = x
        self.values: list[float] | None = None
        self.theta_x = theta_x
        self.rows: list[tuple[FeatureContribution, ...] | None] = [None] * len(theta_x)

    def row(self, i: int) -> tuple[FeatureContribution, ...]:
        got = self.rows[i]
        if got is None:
            if self.values is None:
                self.values = self.x.tolist()
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

    A tuple underneath rather than a frozen dataclass: a tuple is built in 0.2 us where a
    frozen dataclass of eleven fields takes 2 us; and ``contributions`` is built from the
    kernel's array only when read (see the module's note on speed). Equality is field by field
    with NaN equal to NaN (an unknown stays the same unknown through storage)."""

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


_STATUS_OF = (None, ArmStatus.ELIGIBLE, ArmStatus.EXCLUDED, ArmStatus.REMOVED)


class ExplanationColumns(NamedTuple):
    """An explanation's arms as arrays, what its wire and stored forms are written from (read
    them, never change them): ``arm_ids``; ``status`` one ``ArmStatus`` value per arm, as bytes;
    ``numbers`` float64 (8, arms), the float fields of ``ArmExplanation`` (score, exploitation,
    exploration, mean, posterior_mean, posterior_sd, probability, pulls) one row each. The
    contributions, either shared by every arm over one set of slots (linear policies:
    ``slot_names``, ``x`` float64 (slots,) and ``theta_x`` float64 (arms, slots)), or, for
    arms built by hand, ``per_arm``: each arm's own; or neither (both None)."""

    arm_ids: tuple[str, ...]
    status: bytes
    numbers: np.ndarray
    slot_names: tuple[str, ...] = ()
    x: np.ndarray | None = None
    theta_x: np.ndarray | None = None
    per_arm: tuple[tuple[FeatureContribution, ...], ...] | None = None

    def arms(self) -> tuple[ArmExplanation, ...]:
        """The arms as ``ArmExplanation`` values."""
        ids, status = self.arm_ids, self.status
        rows = self.numbers.T.tolist()
        new = tuple.__new__
        if self.theta_x is not None:
            assert self.x is not None
            lazy = _LazyContributions(self.slot_names, self.x, self.theta_x)
            return tuple(
                new(ArmExplanation, (ids[i], _STATUS_OF[status[i]], *rows[i], lazy, i))
                for i in range(len(ids))
            )
        per_arm = self.per_arm or ((),) * len(ids)
        return tuple(
            new(ArmExplanation, (ids[i], _STATUS_OF[status[i]], *rows[i], per_arm[i], -1))
            for i in range(len(ids))
        )


def _columns_of(arms: tuple[ArmExplanation, ...]) -> ExplanationColumns:
    """The columns of arms built one by one (by hand, or from a message)."""
    k = len(arms)
    ids = tuple(a[0] for a in arms)
    status = bytes(int(a[1]) for a in arms)
    numbers = np.array([a[2:10] for a in arms], dtype=np.float64).reshape(k, 8).T.copy()
    lazy = arms[0][10] if arms else None
    if (
        isinstance(lazy, _LazyContributions)
        and len(lazy.theta_x) == k
        and all(a[10] is lazy and a[11] == i for i, a in enumerate(arms))
    ):
        return ExplanationColumns(ids, status, numbers, lazy.names, lazy.x, lazy.theta_x)
    per_arm = tuple(a.contributions for a in arms)
    if not any(per_arm):
        return ExplanationColumns(ids, status, numbers)
    return ExplanationColumns(ids, status, numbers, per_arm=per_arm)


class Explanation:
    """Why one selection chose its arm: every arm (removed ones included, in slot order), the
    choice, its propensity and a one-line ``reason``. Immutable.

    Speed: ``explain_selection`` keeps the arms as the kernel's arrays (``columns()``), and the
    ``ArmExplanation`` values of ``arms`` are built from them when first read: a selection's
    explanation is stored (``to_bytes``) and answered (``llmopt.api.wire``) from the arrays."""

    __slots__ = (
        "_arms",
        "_cols",
        "chosen_arm_id",
        "exploration_kind",
        "policy",
        "propensity",
        "reason",
    )

    policy: str  # the config's ONEOF ("ucb1", "lin_ucb", ...)
    exploration_kind: str  # "optimism" | "posterior" | "randomized"
    chosen_arm_id: str
    propensity: float
    reason: str
    _arms: tuple[ArmExplanation, ...] | None  # built from _cols when first read
    _cols: ExplanationColumns | None  # made from _arms when first asked for

    def __init__(
        self,
        policy: str,
        exploration_kind: str,
        chosen_arm_id: str,
        propensity: float,
        reason: str,
        arms: Sequence[ArmExplanation],
    ) -> None:
        _set(self, "policy", policy)
        _set(self, "exploration_kind", exploration_kind)
        _set(self, "chosen_arm_id", chosen_arm_id)
        _set(self, "propensity", propensity)
        _set(self, "reason", reason)
        _set(self, "_arms", tuple(arms))
        _set(self, "_cols", None)

    @classmethod
    def of_columns(
        cls,
        policy: str,
        exploration_kind: str,
        chosen_arm_id: str,
        propensity: float,
        reason: str,
        columns: ExplanationColumns,
    ) -> Explanation:
        """An explanation whose arms are ``columns`` (kept as they are: never change them)."""
        e = cls.__new__(cls)
        _set(e, "policy", policy)
        _set(e, "exploration_kind", exploration_kind)
        _set(e, "chosen_arm_id", chosen_arm_id)
        _set(e, "propensity", propensity)
        _set(e, "reason", reason)
        _set(e, "_arms", None)
        _set(e, "_cols", columns)
        return e

    @property
    def arms(self) -> tuple[ArmExplanation, ...]:
        arms = self._arms
        if arms is None:
            assert self._cols is not None
            arms = self._cols.arms()
            _set(self, "_arms", arms)
        return arms

    def columns(self) -> ExplanationColumns:
        """The arms as arrays (read them, never change them)."""
        cols = self._cols
        if cols is None:
            assert self._arms is not None
            cols = _columns_of(self._arms)
            _set(self, "_cols", cols)
        return cols

    def _head(self) -> tuple[Any, ...]:
        return (self.policy, self.exploration_kind, self.chosen_arm_id, self.reason)

    def __setattr__(self, name: str, value: Any) -> None:
        raise FrozenInstanceError(f"cannot assign to field {name!r}")

    def __delattr__(self, name: str) -> None:
        raise FrozenInstanceError(f"cannot delete field {name!r}")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Explanation):
            return NotImplemented
        return (
            self._head() == other._head()
            and _same(self.propensity, other.propensity)
            and self.arms == other.arms
        )

    def __hash__(self) -> int:
        p = self.propensity
        return hash((*self._head(), None if p != p else p, self.arms))

    def __repr__(self) -> str:
        return (
            f"Explanation(policy={self.policy!r}, exploration_kind={self.exploration_kind!r},"
            f" chosen_arm_id={self.chosen_arm_id!r}, propensity={self.propensity!r},"
            f" reason={self.reason!r}, arms={self.arms!r})"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (Explanation, (*self._head()[:3], self.propensity, self.reason, self.arms))

    # -- the stored form ----------------------------------------------------------------------

    def to_bytes(self) -> bytes:
        """The compact binary form the decision log keeps (``from_bytes`` reads it back
        exactly, NaN and infinities included), all little-endian: ``MAGIC | arms u32 | slots
        u32 | mode u8 (0 no contributions, 1 shared, 2 per arm) | propensity f64``, the
        strings policy, kind, chosen arm and reason, then the arm ids and (shared) the slot
        names (each group: u32 lengths, then the utf-8), ``status u8[arms]``, ``numbers
        f64[8 x arms]`` (``ExplanationColumns.numbers``), and (shared) ``x f64[slots] |
        theta_x f64[arms x slots]``, or (per arm) ``counts u32[arms]``, the names as a string
        group, ``values f64[n] | contributions f64[n]``."""
        c = self.columns()
        k = len(c.arm_ids)
        mode = 0 if c.theta_x is None and c.per_arm is None else (1 if c.per_arm is None else 2)
        d = len(c.slot_names) if mode == 1 else 0
        parts = [
            _HEAD.pack(MAGIC, k, d, mode, self.propensity),
            _strings((self.policy, self.exploration_kind, self.chosen_arm_id, self.reason)),
            _names(c.arm_ids, c.slot_names if mode == 1 else ()),
            c.status,
            _f64(c.numbers),
        ]
        if mode == 1:
            parts += (_f64(c.x), _f64(c.theta_x))  # type: ignore[arg-type]
        elif mode == 2:
            rows = c.per_arm or ()
            flat = [f for row in rows for f in row]
            parts += (
                struct.pack(f"<{k}I", *map(len, rows)),
                _strings([f.name for f in flat]),
                np.array([f.value for f in flat], dtype="<f8").tobytes(),
                np.array([f.contribution for f in flat], dtype="<f8").tobytes(),
            )
        return b"".join(parts)

    @classmethod
    def from_bytes(cls, data: bytes) -> Explanation:
        """The explanation ``to_bytes`` wrote (InvalidArgument for anything else)."""
        try:
            r = _Reader(data)
            magic, k, d, mode, propensity = r.unpack(_HEAD)
            if magic != MAGIC or mode > 2 or (d and mode != 1):
                raise ValueError("not an explanation's stored form")
            policy, kind, chosen, reason = r.strings(4)
            got = r.strings(k + d)
            ids, names = tuple(got[:k]), tuple(got[k:])
            status = r.take(k)
            if status.strip(b"\x01\x02\x03"):
                raise ValueError("an arm status out of 1..3")
            numbers = r.f64(8 * k).reshape(8, k)
            x = theta_x = per_arm = None
            if mode == 1:
                x, theta_x = r.f64(d), r.f64(k * d).reshape(k, d)
            elif mode == 2:
                counts = r.unpack(struct.Struct(f"<{k}I"))
                n = sum(counts)
                names_n = r.strings(n)
                values, parts = r.f64(n).tolist(), r.f64(n).tolist()
                flat = list(map(FeatureContribution, names_n, values, parts))
                at = np.cumsum((0, *counts)).tolist()
                per_arm = tuple(tuple(flat[at[i] : at[i + 1]]) for i in range(k))
            r.end()
        except (ValueError, TypeError, struct.error) as exc:
            raise errors.InvalidArgument(f"explanation: not a stored explanation: {exc}") from None
        cols = ExplanationColumns(ids, bytes(status), numbers, names, x, theta_x, per_arm)
        return cls.of_columns(policy, kind, chosen, propensity, reason, cols)

    # -- JSON ---------------------------------------------------------------------------------

    def to_json(self) -> str:
        """Compact, strict JSON that round-trips exactly (NaN and infinities included).

        The names and words as JSON values; the numbers as base64 of little-endian float64
        blocks (exact): ``arms_f64`` the arms' float fields (arms x 8, in ``ArmExplanation``
        order), and for linear policies ``slots``, ``x_f64`` (the context vector) and
        ``contributions_f64`` (arms x slots). Arms whose contributions were built by hand over
        different slots are written as ``contributions``: per arm a list of [name, value,
        contribution]."""
        c = self.columns()
        doc: dict[str, Any] = {
            "v": 1,
            "policy": self.policy,
            "kind": self.exploration_kind,
            "chosen": self.chosen_arm_id,
            "propensity": _enc(self.propensity),
            "reason": self.reason,
            "arm_id": list(c.arm_ids),
            "status": list(c.status),
            "arms_f64": _b64(c.numbers.T),
        }
        if c.theta_x is not None:
            doc["slots"] = list(c.slot_names)
            doc["x_f64"] = _b64(c.x)  # type: ignore[arg-type]
            doc["contributions_f64"] = _b64(c.theta_x)
        elif c.per_arm is not None:
            doc["contributions"] = [
                [[f.name, _enc(f.value), _enc(f.contribution)] for f in row] for row in c.per_arm
            ]
        return json.dumps(doc, separators=(",", ":"), allow_nan=False)

    @classmethod
    def from_json(cls, text: str) -> Explanation:
        """The explanation ``to_json`` wrote (InvalidArgument for anything else)."""
        try:
            doc = json.loads(text)
            ids = tuple(str(i) for i in doc["arm_id"])
            status = bytes(doc["status"])
            k = len(ids)
            if len(status) != k or status.strip(b"\x01\x02\x03"):
                raise ValueError("an arm status out of 1..3")
            numbers = _unb64(doc["arms_f64"], k * 8).reshape(k, 8).T.copy()
            cols = ExplanationColumns(ids, status, numbers)
            if "slots" in doc:
                names = tuple(str(n) for n in doc["slots"])
                x = _unb64(doc["x_f64"], len(names))
                theta_x = _unb64(doc["contributions_f64"], k * len(names)).reshape(k, -1)
                cols = cols._replace(slot_names=names, x=x, theta_x=theta_x)
            elif "contributions" in doc:
                rows = doc["contributions"]
                if len(rows) != k:
                    raise ValueError(f"{len(rows)} rows of contributions for {k} arms")
                per_arm = tuple(
                    tuple(FeatureContribution(str(n), _dec(v), _dec(c)) for n, v, c in row)
                    for row in rows
                )
                cols = cols._replace(per_arm=per_arm)
            return cls.of_columns(
                str(doc["policy"]),
                str(doc["kind"]),
                str(doc["chosen"]),
                _dec(doc["propensity"]),
                str(doc["reason"]),
                cols,
            )
        except (KeyError, TypeError, ValueError, IndexError, binascii.Error) as exc:
            raise errors.InvalidArgument(f"explanation: not an explanation's JSON: {exc}") from None


_set = object.__setattr__


def _same(a: float, b: float) -> bool:
    return a == b or (a != a and b != b)


# --- the stored form's helpers -----------------------------------------------------------------

MAGIC = b"LXP1"
"""The first bytes of an explanation's stored form (``Explanation.to_bytes``)."""

_HEAD = struct.Struct("<4sIIBd")
_NAME_CACHE: dict[tuple[tuple[str, ...], tuple[str, ...]], bytes] = {}
_NAME_CACHE_SIZE = 256


def _strings(items: Sequence[str]) -> bytes:
    """A string group: u32 lengths, then the utf-8 of each."""
    data = [s.encode() for s in items]
    return struct.pack(f"<{len(data)}I", *map(len, data)) + b"".join(data)


def _names(ids: tuple[str, ...], slots: tuple[str, ...]) -> bytes:
    """The string group of the arm ids and slot names: the same for every decision of a
    bandit, so kept (a few hundred entries at most)."""
    key = (ids, slots)
    got = _NAME_CACHE.get(key)
    if got is None:
        got = _strings(ids + slots)
        if len(_NAME_CACHE) >= _NAME_CACHE_SIZE:
            _NAME_CACHE.clear()
        _NAME_CACHE[key] = got
    return got


def _f64(a: np.ndarray) -> bytes:
    if a.dtype.str != "<f8":
        a = a.astype("<f8")
    return a.tobytes()


class _Reader:
    """Reads a stored explanation front to back; ValueError past its end."""

    __slots__ = ("at", "data")

    def __init__(self, data: bytes) -> None:
        if not isinstance(data, bytes):
            raise TypeError(f"{type(data).__name__}, not bytes")
        self.data = data
        self.at = 0

    def take(self, n: int) -> bytes:
        end = self.at + n
        if n < 0 or end > len(self.data):
            raise ValueError(f"{n} bytes wanted at {self.at} of {len(self.data)}")
        got = self.data[self.at : end]
        self.at = end
        return got

    def unpack(self, s: struct.Struct) -> tuple[Any, ...]:
        return s.unpack(self.take(s.size))

    def strings(self, n: int) -> list[str]:
        lens = struct.unpack(f"<{n}I", self.take(4 * n))
        blob = self.take(sum(lens))
        out, at = [], 0
        for m in lens:
            out.append(blob[at : at + m].decode())
            at += m
        return out

    def f64(self, n: int) -> np.ndarray:
        return np.frombuffer(self.take(8 * n), dtype="<f8").astype(np.float64)

    def end(self) -> None:
        if self.at != len(self.data):
            raise ValueError(f"{len(self.data) - self.at} bytes after the end")


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
    return base64.b64encode(np.ascontiguousarray(a, dtype="<f8").tobytes()).decode("ascii")


def _unb64(text: str, n: int) -> np.ndarray:
    """``n`` little-endian float64 values from base64 (as native-order float64)."""
    a = np.frombuffer(base64.b64decode(text, validate=True), dtype="<f8")
    if a.size != n:
        raise ValueError(f"{a.size} numbers where {n} were expected")
    return a.astype(np.float64)


# --- explain_selection -----------------------------------------------------------------------

_ROWS = ("exploitation", "exploration", "mean", "posterior_mean", "posterior_sd", "probability")


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
    chosen = selection.arm
    if not 0 <= chosen < k:
        raise errors.invalid("selection.arm", chosen, f"must be a slot in 0..{k - 1}")
    raw = policy.explain(x, allowed, selection)
    config = policy.config
    g = raw.__getitem__
    numbers = np.concatenate(
        (selection.scores, *map(g, _ROWS), raw["pulls"]), dtype=np.float64
    ).reshape(8, k)
    mask = allowed.tobytes() if allowed.dtype.itemsize == 1 else (allowed != 0).tobytes()
    if b"\x00" not in mask:
        status = b"\x01" * k
    else:
        status = bytes(1 if m else 3 if r else 2 for m, r in zip(mask, removed, strict=True))
    ids = tuple(arm_ids)
    theta_x = raw.get("theta_x")
    if theta_x is None:
        cols = ExplanationColumns(ids, status, numbers)
    else:
        assert x is not None
        xv = np.array(x, dtype=np.float64)  # a copy: the explanation keeps it
        names = tuple(slot_names)
        if len(names) != len(xv):
            raise errors.invalid(
                "slot_names", len(names), f"must name every context slot ({len(xv)})"
            )
        cols = ExplanationColumns(ids, status, numbers, names, xv, theta_x)
    col = numbers[:, chosen].tolist()
    arm = tuple.__new__(ArmExplanation, (ids[chosen], ArmStatus.ELIGIBLE, *col, (), -1))
    reason = _REASONS.get(config.ONEOF, _BY_KIND[config.EXPLORATION])(
        _Why(config, arm, chosen, raw, cols)
    )
    return Explanation.of_columns(
        config.ONEOF, config.EXPLORATION, ids[chosen], float(selection.propensity), reason, cols
    )


# --- the one-line reason ---------------------------------------------------------------------


class _Why(NamedTuple):
    config: Any
    arm: ArmExplanation  # the chosen arm (its contributions not filled in)
    chosen: int
    raw: dict[str, Any]
    cols: ExplanationColumns

    def head(self) -> str:
        return f"chose {self.arm[0]}: "

    def eligible(self) -> int:
        return self.cols.status.count(1)

    def best(self) -> float:
        """The highest score of an eligible arm."""
        c = self.cols
        return max(s for s, st in zip(c.numbers[0].tolist(), c.status, strict=True) if st == 1)

    def driver(self) -> str:
        """Linear policies: the slot with the largest |theta_i x_i| of the chosen arm."""
        c = self.cols
        if c.theta_x is None or not c.slot_names:
            return ""
        row = c.theta_x[self.chosen]
        j = int(abs(row).argmax())
        value = float(c.x[j])  # type: ignore[index]
        return f", with {c.slot_names[j]}={value:.3g} contributing {_num(float(row[j]), True)}"


def _num(v: float, sign: bool = False) -> str:
    """Two decimals, or two significant digits for small values."""
    if v != v:
        return "nan"
    if v == math.inf or v == -math.inf:
        return "+inf" if v > 0 else "-inf"
    if v >= 0.01 or v <= -0.01 or v == 0.0:
        return f"{v:+.2f}" if sign else f"{v:.2f}"
    return f"{v:+.2g}" if sign else f"{v:.2g}"


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
    if a.score == w.best():
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

"""A feature set compiled once into the op arrays the Cython kernel ``llmopt.native.features``
executes.

The slot layout is the features in declaration order, each taking its transform's width; the
names (``CompiledPlan.slot_names``) travel with every vector so a reader never guesses.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from llmopt.features.context import DEFAULT_CONTEXT_SLOTS, RequestContext
from llmopt.features.spec import (
    CONTEXT_PREFIX,
    Clip,
    Cyclical,
    Feature,
    FeatureSet,
    Hash,
    Identity,
    Log1p,
    MinMax,
    OneHot,
    Standardize,
)
from llmopt.native.features import INPUTS, OPS, Plan

# transform type -> (op name, p0, p1) from its parameters
_OPS: dict[type, Callable[[Any], tuple[str, float, float]]] = {
    Identity: lambda t: ("identity", 0.0, 0.0),
    Log1p: lambda t: ("log1p", 0.0, 0.0),
    Standardize: lambda t: ("affine", t.mean, t.std),
    MinMax: lambda t: ("affine", t.lo, t.hi - t.lo),
    Clip: lambda t: ("clip", t.lo, t.hi),
    Cyclical: lambda t: ("cyclical", t.period, 0.0),
    OneHot: lambda t: ("onehot", 0.0, 0.0),
    Hash: lambda t: ("onehot", 0.0, 0.0),
}


def _context_getter(source: str) -> Callable[[RequestContext], Any]:
    """How to read a feature's raw value from a request (None: the request does not say)."""
    rest = source[len(CONTEXT_PREFIX) :]
    if rest.startswith("features."):
        key = rest[len("features.") :]
        return lambda c: c.features.get(key)
    if rest.startswith("metadata."):
        key = rest[len("metadata.") :]
        return lambda c: c.metadata.get(key)
    if rest == "output_length":
        return lambda c: c.output_length.name if c.output_length else None
    return lambda c: getattr(c, rest) if getattr(c, rest) not in ("", None) else None


@dataclass(frozen=True)
class CompiledPlan:
    """One feature set's plan: run ``vectorize`` per request; safe to share between threads."""

    feature_set: str
    version: int
    slot_names: tuple[str, ...]
    kernel: Plan
    context_getters: tuple[tuple[str, Callable[[RequestContext], Any]], ...] = ()
    uses_store: bool = True
    features: tuple[Feature, ...] = field(default=(), repr=False)

    @property
    def width(self) -> int:
        return len(self.slot_names)

    def context_values(self, context: RequestContext | None) -> dict[str, Any]:
        if context is None:
            return {}
        return {name: get(context) for name, get in self.context_getters}

    def vectorize(
        self,
        stored: Mapping[str, tuple[Any, ...]],
        context: RequestContext | None = None,
        cutoff_us: int = -(2**63),
        out: np.ndarray | None = None,
    ) -> np.ndarray:
        """The float32 row. ``stored`` maps feature name -> (value, event_time_us, ...);
        values with event_time_us < cutoff_us (TTL) read as missing."""
        if out is None:
            out = np.empty(self.width, dtype=np.float32)
        self.kernel.gather_run(stored, self.context_values(context), cutoff_us, out)
        return out


def _default_code(feature: Feature) -> float:
    if feature.default is None:
        return math.nan if feature.type.numeric else -1.0
    t = feature.transform
    if isinstance(t, OneHot | Hash):
        return float(t.code(str(feature.default)))
    return float(feature.default)


def compile_plan(fs: FeatureSet) -> CompiledPlan:
    """Compile a validated feature set. Numeric features with no default read 0 when missing."""
    kinds, inps, slots, widths, p0s, p1s, dflts = [], [], [], [], [], [], []
    names: list[str] = []
    from_context: list[int] = []
    in_kind: list[int] = []
    vocab: list[dict[str, int] | None] = []
    oov: list[int] = []
    slot_names: list[str] = []
    getters = []
    for i, f in enumerate(fs.features):
        t = f.transform
        op, p0, p1 = _OPS[type(t)](t)
        kinds.append(OPS[op])
        inps.append(i)
        slots.append(len(slot_names))
        widths.append(t.width())
        p0s.append(p0)
        p1s.append(p1)
        default = _default_code(f)
        dflts.append(0.0 if f.type.numeric and math.isnan(default) else default)
        slot_names.extend(t.slot_names(f.name))
        names.append(f.name)
        from_context.append(1 if f.source else 0)
        if f.source:
            getters.append((f.name, _context_getter(f.source)))
        if isinstance(t, OneHot):
            in_kind.append(INPUTS["vocab"])
            vocab.append({v: j for j, v in enumerate(t.vocabulary)})
            oov.append(len(t.vocabulary))
        elif isinstance(t, Hash):
            in_kind.append(INPUTS["hash"])
            vocab.append(None)
            oov.append(t.buckets)
        else:
            in_kind.append(INPUTS["number"])
            vocab.append(None)
            oov.append(0)

    def ints(xs: list[int]) -> np.ndarray:
        return np.asarray(xs, dtype=np.intc)

    def dbls(xs: list[float]) -> np.ndarray:
        return np.asarray(xs, dtype=np.float64)

    kernel = Plan(
        len(slot_names), ints(kinds), ints(inps), ints(slots), ints(widths), dbls(p0s),
        dbls(p1s), dbls(dflts), names, ints(from_context), ints(in_kind), vocab, ints(oov),
    )  # fmt: skip
    return CompiledPlan(
        feature_set=fs.name,
        version=fs.version,
        slot_names=tuple(slot_names),
        kernel=kernel,
        context_getters=tuple(getters),
        uses_store=any(not f.source for f in fs.features),
        features=fs.features,
    )


def default_context_plan() -> Plan:
    """The built-in 10-dim context vector as a one-op plan over the six facts of
    ``RequestContext.facts`` (bit-exact with ``llmopt.features.context.default_context``)."""
    z = np.zeros(1, dtype=np.float64)
    return Plan(
        len(DEFAULT_CONTEXT_SLOTS),
        np.array([OPS["context"]], dtype=np.intc),
        np.zeros(1, dtype=np.intc),
        np.zeros(1, dtype=np.intc),
        np.array([len(DEFAULT_CONTEXT_SLOTS)], dtype=np.intc),
        z, z.copy(), z.copy(),
        [f"fact{i}" for i in range(6)],
        np.zeros(6, dtype=np.intc), np.zeros(6, dtype=np.intc), [None] * 6,
        np.zeros(6, dtype=np.intc),
    )  # fmt: skip

"""Fitting data-dependent transforms (standardize, minmax, one-hot vocabularies) from rows.

Only transforms left without parameters are fitted (``Standardize`` with std 0, ``MinMax`` with
lo == hi, ``OneHot`` with no vocabulary). Fitting is deterministic: sums are exact (``math.fsum``)
and vocabularies are ordered by descending count, then by value.

>>> from llmopt.features.spec import Feature, FeatureSet, Standardize
>>> fs = FeatureSet("s", "id", (Feature("x", transform=Standardize()),))
>>> fit(fs, [{"x": 1.0}, {"x": 3.0}]).features[0].transform
Standardize(mean=2.0, std=1.0)
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import replace

from llmopt import errors
from llmopt.features.spec import (
    MAX_VOCABULARY,
    Feature,
    FeatureSet,
    MinMax,
    OneHot,
    RawValue,
    Standardize,
    Transform,
)


def _numbers(values: list[RawValue]) -> list[float]:
    return [float(v) for v in values if not isinstance(v, str) and math.isfinite(float(v))]


def fit_transform(t: Transform, values: list[RawValue], where: str,
                  max_vocabulary: int = MAX_VOCABULARY) -> Transform:  # fmt: skip
    """A fitted copy of ``t`` (``t`` itself when it needs no fitting)."""
    if not t.unfitted():
        return t
    if isinstance(t, OneHot):
        texts = Counter(v if isinstance(v, str) else str(v) for v in values)
        if not texts:
            raise errors.FailedPrecondition(f"{where}: no stored values to fit a vocabulary from")
        ranked = sorted(texts.items(), key=lambda kv: (-kv[1], kv[0]))[:max_vocabulary]
        return OneHot(vocabulary=tuple(v for v, _ in ranked))
    xs = _numbers(values)
    if not xs:
        raise errors.FailedPrecondition(f"{where}: no stored numeric values to fit from")
    if isinstance(t, Standardize):
        mean = math.fsum(xs) / len(xs)
        std = math.sqrt(math.fsum((x - mean) ** 2 for x in xs) / len(xs))
        return Standardize(mean=mean, std=std if std > 0 else 1.0)
    if isinstance(t, MinMax):
        lo, hi = min(xs), max(xs)
        return MinMax(lo=lo, hi=hi if hi > lo else lo + 1.0)
    return t


def fit(fs: FeatureSet, rows: Iterable[Mapping[str, RawValue]]) -> FeatureSet:
    """A copy of ``fs`` whose unfitted transforms are fitted from ``rows`` (name -> raw value)."""
    todo = [f for f in fs.features if f.transform.unfitted()]
    if not todo:
        return fs
    columns: dict[str, list[RawValue]] = {f.name: [] for f in todo}
    for row in rows:
        for name, column in columns.items():
            v = row.get(name)
            if v is not None:
                column.append(v)
    fitted: list[Feature] = []
    for i, f in enumerate(fs.features):
        if f.name in columns:
            t = fit_transform(f.transform, columns[f.name], f"feature_set.features[{i}].transform")
            f = replace(f, transform=t)
        fitted.append(f)
    return replace(fs, features=tuple(fitted))

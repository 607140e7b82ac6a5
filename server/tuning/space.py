"""The search space of a study and its encoding into the unit cube.

A study tunes floats (optionally on a log scale), integers (optionally on a log scale) and
categories. The optimizer works on rows of ``[0, 1]^dim``:

* a float is one column, ``(v - low) / (high - low)``, or the same in ``log`` space;
* a linear integer is one column in which every integer owns an equal cell: ``v`` sits at the
  cell centre ``(v - low + 0.5) / (high - low + 1)``, and any point of the cell decodes to ``v``;
* a log integer is one column over ``[log(low - 0.5), log(high + 0.5)]``: ``v`` owns
  ``[log(v - 0.5), log(v + 0.5)]`` (a share that shrinks as ``v`` grows, as a log scale means)
  and sits at ``log(v)``;
* a categorical is one column per choice, one-hot; any row decodes to its largest column.

``snap`` maps rows of the relaxed cube to the rows that values encode to, which is how the
optimizer keeps its suggestions on the lattice of integers and choices.

>>> space = SearchSpace([FloatParam("temperature", 0.0, 2.0), IntParam("max_tokens", 16, 1024,
...     log=True), CategoricalParam("prompt", ("short", "long"))])
>>> space.dim
4
>>> row = space.encode({"temperature": 0.5, "max_tokens": 256, "prompt": "long"})
>>> space.decode(row)
{'temperature': 0.5, 'max_tokens': 256, 'prompt': 'long'}
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from llmopt import errors, naming

ParamValue = float | int | str

MAX_PARAMS = 32
MAX_CHOICES = 64
MAX_CHOICE_CHARS = 256


@dataclass(frozen=True)
class FloatParam:
    name: str
    low: float
    high: float
    log: bool = False


@dataclass(frozen=True)
class IntParam:
    name: str
    low: int
    high: int
    log: bool = False


@dataclass(frozen=True)
class CategoricalParam:
    name: str
    choices: tuple[str, ...]


Param = FloatParam | IntParam | CategoricalParam


def _is_real(value: object) -> bool:
    return isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool)


def _check_param(i: int, param: object) -> None:
    field = f"study.parameters[{i}]"
    if not isinstance(param, FloatParam | IntParam | CategoricalParam):
        raise errors.invalid(field, param, "a FloatParam, IntParam or CategoricalParam")
    naming.check(f"{field}.name", param.name)
    if isinstance(param, FloatParam):
        for bound in ("low", "high"):
            value = getattr(param, bound)
            if not _is_real(value) or not math.isfinite(value):
                raise errors.invalid(f"{field}.{bound}", value, "a finite number")
        if not param.low < param.high:
            raise errors.invalid(f"{field}.high", param.high, f"greater than low ({param.low})")
        if param.log and param.low <= 0:
            raise errors.invalid(f"{field}.low", param.low, "greater than 0 on a log scale")
    elif isinstance(param, IntParam):
        for bound in ("low", "high"):
            value = getattr(param, bound)
            if not isinstance(value, int | np.integer) or isinstance(value, bool):
                raise errors.invalid(f"{field}.{bound}", value, "an integer")
        if not param.low < param.high:
            raise errors.invalid(f"{field}.high", param.high, f"greater than low ({param.low})")
        if param.log and param.low < 1:
            raise errors.invalid(f"{field}.low", param.low, "at least 1 on a log scale")
    else:
        choices = param.choices
        if not isinstance(choices, tuple | list) or not 1 <= len(choices) <= MAX_CHOICES:
            raise errors.invalid(f"{field}.choices", choices, f"1 to {MAX_CHOICES} choices")
        for j, choice in enumerate(choices):
            if not isinstance(choice, str) or not 1 <= len(choice) <= MAX_CHOICE_CHARS:
                raise errors.invalid(
                    f"{field}.choices[{j}]",
                    naming.shown(choice),
                    f"a non-empty string of at most {MAX_CHOICE_CHARS} characters",
                )
        if len(set(choices)) != len(choices):
            raise errors.invalid(f"{field}.choices", choices, "distinct choices")


class SearchSpace:
    """The parameters of a study, validated, and their unit-cube encoding (see the module)."""

    def __init__(self, params: Sequence[Param]) -> None:
        params = tuple(params)
        if not 1 <= len(params) <= MAX_PARAMS:
            raise errors.invalid("study.parameters", len(params), f"1 to {MAX_PARAMS} parameters")
        seen: set[str] = set()
        for i, param in enumerate(params):
            _check_param(i, param)
            if param.name in seen:
                raise errors.invalid(f"study.parameters[{i}].name", param.name, "a unique name")
            seen.add(param.name)
        self.params: tuple[Param, ...] = tuple(
            CategoricalParam(p.name, tuple(p.choices)) if isinstance(p, CategoricalParam) else p
            for p in params
        )
        offsets = []
        dim = 0
        for p in self.params:
            offsets.append(dim)
            dim += len(p.choices) if isinstance(p, CategoricalParam) else 1
        self.dim: int = dim
        self._offsets = tuple(offsets)
        # The [a, b] interval each numeric column spans, in linear or log space.
        spans = []
        for p in self.params:
            if isinstance(p, FloatParam):
                spans.append(
                    (math.log(p.low), math.log(p.high)) if p.log else (float(p.low), float(p.high))
                )
            elif isinstance(p, IntParam):
                spans.append(
                    (math.log(p.low - 0.5), math.log(p.high + 0.5))
                    if p.log
                    else (p.low - 0.5, p.high + 0.5)
                )
            else:
                spans.append((0.0, 1.0))
        self._spans = tuple(spans)

    def __repr__(self) -> str:
        return f"SearchSpace({list(self.params)!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SearchSpace) and self.params == other.params

    def __hash__(self) -> int:
        return hash(self.params)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.params)

    def encode(self, values: Mapping[str, ParamValue], field: str = "params") -> np.ndarray:
        """One float64 row of ``[0, 1]^dim`` for a complete set of values (validated)."""
        if not isinstance(values, Mapping):
            raise errors.invalid(field, values, "a mapping of parameter names to values")
        known = set(self.names)
        for name in values:
            if name not in known:
                raise errors.invalid(
                    f"{field}.{naming.shown(name)}", values[name], "a parameter of the space"
                )
        row = np.zeros(self.dim)
        for p, off, (a, b) in zip(self.params, self._offsets, self._spans, strict=True):
            where = f"{field}.{p.name}"
            if p.name not in values:
                raise errors.invalid(where, None, "a value (every parameter needs one)")
            v = values[p.name]
            if isinstance(p, CategoricalParam):
                if not isinstance(v, str) or v not in p.choices:
                    raise errors.invalid(where, naming.shown(v), f"one of {list(p.choices)}")
                row[off + p.choices.index(v)] = 1.0
                continue
            if isinstance(v, str) or not _is_real(v) or not math.isfinite(float(v)):
                raise errors.invalid(where, v, "a finite number")
            number = float(v)
            if isinstance(p, IntParam) and number != math.floor(number):
                raise errors.invalid(where, v, "an integer")
            if not p.low <= number <= p.high:
                raise errors.invalid(where, v, f"between {p.low} and {p.high}")
            t = math.log(number) if p.log else number
            row[off] = min(1.0, max(0.0, (t - a) / (b - a)))
        return row

    def _columns(self, X: np.ndarray) -> list[np.ndarray]:
        """Per parameter: the numeric value (as float) or the index of the choice, of every row."""
        X = np.clip(np.atleast_2d(np.asarray(X, dtype=float)), 0.0, 1.0)
        out = []
        for p, off, (a, b) in zip(self.params, self._offsets, self._spans, strict=True):
            if isinstance(p, CategoricalParam):
                out.append(np.argmax(X[:, off : off + len(p.choices)], axis=1))
                continue
            t = a + X[:, off] * (b - a)
            v = np.exp(t) if p.log else t
            if isinstance(p, IntParam):
                v = np.clip(np.floor(v + 0.5), p.low, p.high)
            else:
                v = np.clip(v, p.low, p.high)
            out.append(v)
        return out

    def decode(self, x: np.ndarray) -> dict[str, ParamValue]:
        """The values of one row (clipped to the cube; ints rounded, categories by argmax)."""
        x = np.asarray(x, dtype=float).reshape(-1)
        if x.shape != (self.dim,):
            raise errors.invalid("x", x.shape, f"a row of {self.dim} values")
        columns = self._columns(x)
        values: dict[str, ParamValue] = {}
        for p, col in zip(self.params, columns, strict=True):
            if isinstance(p, CategoricalParam):
                values[p.name] = p.choices[int(col[0])]
            elif isinstance(p, IntParam):
                values[p.name] = int(col[0])
            else:
                values[p.name] = float(col[0])
        return values

    def snap(self, X: np.ndarray) -> np.ndarray:
        """Every row replaced by ``encode(decode(row))``: ints at their cell's point, one-hot
        exact, floats only clipped."""
        X = np.clip(np.atleast_2d(np.asarray(X, dtype=float)), 0.0, 1.0)
        out = X.copy()
        columns = self._columns(X)
        for p, off, (a, b), col in zip(
            self.params, self._offsets, self._spans, columns, strict=True
        ):
            if isinstance(p, CategoricalParam):
                k = len(p.choices)
                out[:, off : off + k] = 0.0
                out[np.arange(len(X)), off + col] = 1.0
            elif isinstance(p, IntParam):
                t = np.log(col) if p.log else col
                out[:, off] = np.clip((t - a) / (b - a), 0.0, 1.0)
        return out

    def from_unit(self, U: np.ndarray) -> np.ndarray:
        """Snapped encoded rows from points of ``[0, 1)^len(params)``, one coordinate per
        parameter (a categorical's coordinate picks choice ``floor(u * k)``): how the initial
        designs and the random candidates spread over every parameter, a categorical included."""
        U = np.clip(np.atleast_2d(np.asarray(U, dtype=float)), 0.0, 1.0)
        X = np.zeros((len(U), self.dim))
        for i, (p, off) in enumerate(zip(self.params, self._offsets, strict=True)):
            if isinstance(p, CategoricalParam):
                k = len(p.choices)
                idx = np.minimum((U[:, i] * k).astype(int), k - 1)
                X[np.arange(len(U)), off + idx] = 1.0
            else:
                X[:, off] = U[:, i]
        return self.snap(X)

    def continuous_mask(self) -> np.ndarray:
        """True for the float and int columns (the ones a gradient step may move)."""
        mask = np.zeros(self.dim, dtype=bool)
        for p, off in zip(self.params, self._offsets, strict=True):
            if not isinstance(p, CategoricalParam):
                mask[off] = True
        return mask

    def categorical_blocks(self) -> list[tuple[int, int]]:
        """``(offset, number of choices)`` of every categorical's one-hot block."""
        return [
            (off, len(p.choices))
            for p, off in zip(self.params, self._offsets, strict=True)
            if isinstance(p, CategoricalParam)
        ]

    def column_groups(self) -> np.ndarray:
        """The parameter of every column (``(dim,)`` ints): a categorical's one-hot columns
        share one length scale in the GP, so a space of wide categoricals keeps one
        hyperparameter per parameter."""
        groups = np.zeros(self.dim, dtype=np.intp)
        for i, (p, off) in enumerate(zip(self.params, self._offsets, strict=True)):
            width = len(p.choices) if isinstance(p, CategoricalParam) else 1
            groups[off : off + width] = i
        return groups

    def to_json(self) -> list[dict[str, Any]]:
        """Plain JSON-able dicts, one per parameter, for storage."""
        out: list[dict[str, Any]] = []
        for p in self.params:
            if isinstance(p, FloatParam):
                out.append(
                    {"type": "float", "name": p.name, "low": p.low, "high": p.high, "log": p.log}
                )
            elif isinstance(p, IntParam):
                out.append(
                    {"type": "int", "name": p.name, "low": p.low, "high": p.high, "log": p.log}
                )
            else:
                out.append({"type": "categorical", "name": p.name, "choices": list(p.choices)})
        return out

    @classmethod
    def from_json(cls, data: Sequence[Mapping[str, Any]]) -> SearchSpace:
        """The space ``to_json`` wrote (validated again)."""
        if not isinstance(data, Sequence) or isinstance(data, str):
            raise errors.invalid("space", data, "a list of parameters")
        params: list[Param] = []
        for i, item in enumerate(data):
            kind = item.get("type") if isinstance(item, Mapping) else None
            try:
                if kind == "float":
                    params.append(
                        FloatParam(
                            item["name"],
                            float(item["low"]),
                            float(item["high"]),
                            bool(item.get("log", False)),
                        )
                    )
                elif kind == "int":
                    params.append(
                        IntParam(
                            item["name"], item["low"], item["high"], bool(item.get("log", False))
                        )
                    )
                elif kind == "categorical":
                    params.append(CategoricalParam(item["name"], tuple(item["choices"])))
                else:
                    raise errors.invalid(
                        f"study.parameters[{i}].type", kind, "'float', 'int' or 'categorical'"
                    )
            except (KeyError, TypeError, ValueError) as exc:
                raise errors.invalid(
                    f"study.parameters[{i}]", item, f"a stored parameter ({exc})"
                ) from exc
        return cls(params)

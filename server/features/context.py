"""Request contexts and the default 10-dim context vector (DESIGN.md, bit-exact).

The arithmetic runs in the Cython kernel ``llmopt.native.context``; this module validates the
request facts and maps strings to the codes the definition gives.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from enum import IntEnum

import numpy as np

from llmopt import errors
from llmopt.native.context import (
    DEFAULT_CONTEXT_DIM,
    context_vector,
    default_context_matrix,
    default_context_vector,
)

DEFAULT_CONTEXT_SLOTS: tuple[str, ...] = (
    "input_length_log",
    "output_length",
    "priority",
    "hour_cos",
    "hour_sin",
    "day_cos",
    "day_sin",
    "task_type",
    "bias",
    "padding",
)
assert len(DEFAULT_CONTEXT_SLOTS) == DEFAULT_CONTEXT_DIM

# Task codes of the reference definition; any other task type is 0.5.
TASK_CODES: dict[str, float] = {
    "classification": 0.0,
    "generation": 0.33,
    "extraction": 0.67,
    "summarization": 1.0,
}
OTHER_TASK_CODE = 0.5


class OutputLength(IntEnum):
    """Expected output size: SHORT < 100 tokens, MEDIUM 100-500, LONG > 500."""

    UNSPECIFIED = 0
    SHORT = 1
    MEDIUM = 2
    LONG = 3

    @property
    def code(self) -> float:
        return _OUTPUT_CODES[self]


_OUTPUT_CODES = {
    OutputLength.UNSPECIFIED: 0.5,  # unknown is read as MEDIUM
    OutputLength.SHORT: 0.0,
    OutputLength.MEDIUM: 0.5,
    OutputLength.LONG: 1.0,
}
_OUTPUT_CODE_BY_VALUE = tuple(_OUTPUT_CODES[o] for o in sorted(OutputLength))


@dataclass(frozen=True)
class RequestContext:
    """What is known about a request before it is routed."""

    user_id: str = ""
    task_type: str = ""
    input_length: int = 0
    output_length: OutputLength = OutputLength.UNSPECIFIED
    priority: int = 5
    region: str = ""
    hour_of_day: int | None = None
    day_of_week: int | None = None
    language: str = ""
    metadata: dict[str, str] = field(default_factory=dict)
    features: dict[str, float] = field(default_factory=dict)

    def validate(self) -> RequestContext:
        """Raise InvalidArgument naming the first field out of range; return self otherwise."""
        if self.input_length < 0:
            raise errors.invalid("context.input_length", self.input_length, "must be >= 0")
        if not 1 <= self.priority <= 10:
            raise errors.invalid("context.priority", self.priority, "must be in 1..10")
        if self.hour_of_day is not None and not 0 <= self.hour_of_day <= 23:
            raise errors.invalid("context.hour_of_day", self.hour_of_day, "must be in 0..23")
        if self.day_of_week is not None and not 0 <= self.day_of_week <= 6:
            raise errors.invalid(
                "context.day_of_week", self.day_of_week, "must be in 0..6 (0 = Monday)"
            )
        return self

    def facts(
        self, now: dt.datetime | None = None
    ) -> tuple[float, float, float, float, float, float]:
        """The six numbers the default vector is computed from; unset time fields read ``now``."""
        if self.hour_of_day is None or self.day_of_week is None:
            now = now or dt.datetime.now(dt.UTC)
        hour = self.hour_of_day if self.hour_of_day is not None else now.hour  # type: ignore[union-attr]
        day = self.day_of_week if self.day_of_week is not None else now.weekday()  # type: ignore[union-attr]
        task = TASK_CODES.get(self.task_type.strip().lower(), OTHER_TASK_CODE)
        return (
            float(self.input_length),
            self.output_length.code,
            float(self.priority),
            float(hour),
            float(day),
            task,
        )


def default_context(context: RequestContext, now: dt.datetime | None = None) -> np.ndarray:
    """The 10-dim default context vector of one request, float64.

    >>> ctx = RequestContext(task_type="summarization", input_length=0, priority=10,
    ...                      hour_of_day=0, day_of_week=0)
    >>> default_context(ctx).tolist()
    [0.0, 0.5, 1.0, 1.0, 0.0, 1.0, 0.0, 1.0, 1.0, 0.0]
    """
    if now is None:  # the request path: one native call
        out = context_vector(context, TASK_CODES, OTHER_TASK_CODE, _OUTPUT_CODE_BY_VALUE)
        if out is not None:
            return out
    out = np.empty(DEFAULT_CONTEXT_DIM, dtype=np.float64)
    default_context_vector(*context.validate().facts(now), out)
    return out


def default_context_batch(
    contexts: list[RequestContext], now: dt.datetime | None = None
) -> np.ndarray:
    """Vectors of many requests as an (n, 10) float64 matrix, computed in one kernel call."""
    now = now or dt.datetime.now(dt.UTC)
    facts = np.array([c.validate().facts(now) for c in contexts], dtype=np.float64).reshape(-1, 6)
    out = np.empty((len(contexts), DEFAULT_CONTEXT_DIM), dtype=np.float64)
    default_context_matrix(facts, out)
    return out

"""Arms: the LLM configurations a bandit routes requests to (DESIGN.md, "Arm")."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

from llmopt import errors

ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/@+-]{0,127}")
ID_RULE = "1-128 characters: letters, digits and . _ : / @ + - (starting with a letter or digit)"


def check_id(field_name: str, value: str) -> str:
    """``value`` when it is a well-formed name (bandit, arm or decision id); InvalidArgument if not.

    >>> check_id("arm.arm_id", "gpt-4o/t0.2")
    'gpt-4o/t0.2'
    >>> check_id("arm.arm_id", "")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    llmopt.errors.InvalidArgument: arm.arm_id: '' is invalid: 1-128 characters: ...
    """
    if not isinstance(value, str) or not ID_PATTERN.fullmatch(value):
        raise errors.invalid(field_name, value, ID_RULE)
    return value


def _check_range(field_name: str, value: float, lo: float, hi: float) -> None:
    if not (math.isfinite(value) and lo <= value <= hi):
        raise errors.invalid(field_name, value, f"must be in [{lo:g}, {hi:g}]")


@dataclass(frozen=True)
class LLMConfig:
    """Model and sampling parameters of one arm; ``extra`` passes provider parameters through."""

    model: str
    temperature: float = 0.0
    top_p: float = 0.0
    max_tokens: int = 0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    system_prompt: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def validate(self, field_name: str = "arm.config") -> LLMConfig:
        if not self.model.strip():
            raise errors.invalid(f"{field_name}.model", self.model, "must name a model")
        if len(self.model) > 256:
            raise errors.invalid(
                f"{field_name}.model", self.model[:32] + "...", "at most 256 chars"
            )
        _check_range(f"{field_name}.temperature", self.temperature, 0.0, 2.0)
        _check_range(f"{field_name}.top_p", self.top_p, 0.0, 1.0)
        if self.max_tokens < 0:
            raise errors.invalid(f"{field_name}.max_tokens", self.max_tokens, "must be >= 0")
        _check_range(f"{field_name}.presence_penalty", self.presence_penalty, -2.0, 2.0)
        _check_range(f"{field_name}.frequency_penalty", self.frequency_penalty, -2.0, 2.0)
        return self


@dataclass(frozen=True)
class Arm:
    """A named LLM configuration plus free string metadata (prices, owner, ...).

    >>> arm = Arm("fast", LLMConfig(model="gpt-4o-mini", temperature=0.2)).validate()
    >>> Arm.from_json(arm.to_json()) == arm
    True
    """

    arm_id: str
    config: LLMConfig
    metadata: dict[str, str] = field(default_factory=dict)

    def validate(self, field_name: str = "arm") -> Arm:
        check_id(f"{field_name}.arm_id", self.arm_id)
        self.config.validate(f"{field_name}.config")
        return self

    def to_json(self) -> dict[str, Any]:
        c = self.config
        return {
            "arm_id": self.arm_id,
            "config": {
                "model": c.model,
                "temperature": c.temperature,
                "top_p": c.top_p,
                "max_tokens": c.max_tokens,
                "presence_penalty": c.presence_penalty,
                "frequency_penalty": c.frequency_penalty,
                "system_prompt": c.system_prompt,
                "extra": c.extra,
            },
            "metadata": self.metadata,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Arm:
        return cls(data["arm_id"], LLMConfig(**data["config"]), dict(data["metadata"]))

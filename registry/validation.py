"""Checks on everything a caller names or attaches: each failure names the field and the value."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence

import numpy as np

from llmopt import errors, naming
from llmopt.registry.types import TensorSpec, VersionMetadata

# semver.org 2.0.0, with an optional leading "v".
SEMVER = re.compile(
    r"v?(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    r"(?:-((?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?"
    r"(?:\+([0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?"
)
SHA256 = re.compile(r"[0-9a-f]{64}")

# "latest" resolves to the newest version in lookups; it cannot be set.
RESERVED_ALIASES = frozenset({"latest"})

MAX_TAGS = 64
MAX_KEY = 128
MAX_TAG_VALUE = 4096
MAX_METRICS = 256
MAX_DESCRIPTION = 16_384
MAX_REASON = 1024
MAX_ACTOR = 256
# A background sample: the baseline of explanations, kept with its version.
MAX_BACKGROUND_ROWS = 1000
BACKGROUND_FIELD = "metadata.background"


_shown = naming.shown


def model_name(value: str, field: str = "model") -> str:
    """A model name follows the one naming rule of ``llmopt.naming``."""
    return naming.check(field, value)


def alias_name(value: str, field: str = "alias", *, settable: bool = True) -> str:
    naming.check_alias(field, value)
    if settable and value in RESERVED_ALIASES:
        raise errors.invalid(field, value, "reserved: it always means the newest version")
    return value


def version_number(value: int, field: str = "version") -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise errors.invalid(field, value, "versions are integers from 1")
    return value


def _printable_key(value: object, field: str) -> str:
    if not isinstance(value, str) or not 1 <= len(value) <= MAX_KEY:
        raise errors.invalid(field, _shown(value), f"a key is 1 to {MAX_KEY} characters")
    if any(not ch.isprintable() for ch in value):
        raise errors.invalid(field, value, "a key has no control or non-printable characters")
    return value


def _text(value: object, field: str, limit: int) -> str:
    if not isinstance(value, str):
        raise errors.invalid(field, type(value).__name__, "a string")
    if len(value) > limit:
        raise errors.invalid(field, f"{len(value)} characters", f"at most {limit} characters")
    if "\x00" in value:
        raise errors.invalid(field, value, "no NUL characters")
    return value


def tags(value: Mapping[str, str], field: str = "tags") -> dict[str, str]:
    if len(value) > MAX_TAGS:
        raise errors.invalid(field, f"{len(value)} tags", f"at most {MAX_TAGS} tags")
    out: dict[str, str] = {}
    for key, val in value.items():
        _printable_key(key, f"{field} key")
        out[key] = _text(val, f"{field}[{key!r}]", MAX_TAG_VALUE)
    return out


def metrics(value: Mapping[str, float], field: str = "metrics") -> dict[str, float]:
    if len(value) > MAX_METRICS:
        raise errors.invalid(field, f"{len(value)} metrics", f"at most {MAX_METRICS} metrics")
    out: dict[str, float] = {}
    for key, val in value.items():
        _printable_key(key, f"{field} key")
        if isinstance(val, bool) or not isinstance(val, int | float) or not math.isfinite(val):
            raise errors.invalid(f"{field}[{key!r}]", val, "a finite number")
        out[key] = float(val)
    return out


def description(value: str, field: str = "description") -> str:
    return _text(value, field, MAX_DESCRIPTION)


def reason(value: str, field: str = "reason") -> str:
    return _text(value, field, MAX_REASON)


def actor(value: str, field: str = "actor") -> str:
    return _text(value, field, MAX_ACTOR)


def semver(value: str, field: str = "semver") -> str:
    if value and (not isinstance(value, str) or not SEMVER.fullmatch(value)):
        raise errors.invalid(
            field, _shown(value), "empty or a semantic version such as 1.2.0 (semver.org)"
        )
    return value


def sha256(value: str, field: str = "sha256") -> str:
    if value and (not isinstance(value, str) or not SHA256.fullmatch(value.lower())):
        raise errors.invalid(field, _shown(value), "empty or 64 hexadecimal digits")
    return value.lower()


def background(value: object, field: str = BACKGROUND_FIELD) -> np.ndarray | None:
    """A background sample as float64 rows: floats, 2-D, 1 to MAX_BACKGROUND_ROWS rows of at
    least one column, every value finite (None: no sample)."""
    if value is None:
        return None
    try:
        array = np.asarray(value)
    except Exception:
        raise errors.invalid(field, type(value).__name__, "an array of floats") from None
    if array.dtype.kind != "f":
        raise errors.invalid(field, f"dtype {array.dtype}", "a float tensor [rows, features]")
    if array.ndim != 2:
        raise errors.invalid(field, f"shape {list(array.shape)}", "2-D: [rows, features]")
    rows, cols = array.shape
    if not 1 <= rows <= MAX_BACKGROUND_ROWS:
        raise errors.invalid(field, f"{rows} rows", f"1 to {MAX_BACKGROUND_ROWS} rows")
    if cols < 1:
        raise errors.invalid(field, f"shape {list(array.shape)}", "at least one feature column")
    out = np.ascontiguousarray(array, dtype=np.float64)
    if not np.isfinite(out).all():
        bad = np.argwhere(~np.isfinite(out))[0]
        raise errors.invalid(
            field,
            f"{out[bad[0], bad[1]]} at row {bad[0]}, column {bad[1]}",
            "finite values only",
        )
    return out


def background_fits(
    sample: np.ndarray, inputs: Sequence[TensorSpec], field: str = BACKGROUND_FIELD
) -> None:
    """The sample has as many columns as the model's one float input of shape [rows, features]."""
    if len(inputs) != 1 or inputs[0].dtype not in ("float16", "float32", "float64"):
        got = ", ".join(f"{s.name} ({s.dtype})" for s in inputs) or "none"
        raise errors.invalid(
            field,
            f"shape {list(sample.shape)}",
            f"a model with one float input to explain (its inputs: {got})",
        )
    spec = inputs[0]
    if len(spec.shape) != 2:
        raise errors.invalid(
            field,
            f"shape {list(sample.shape)}",
            f"a model whose input {spec.name!r} is [rows, features] "
            f"(its shape: {list(spec.shape)})",
        )
    width = spec.shape[1]
    if width >= 0 and sample.shape[1] != width:
        raise errors.invalid(
            field,
            f"{sample.shape[1]} columns",
            f"{width} columns, as many as the model's input {spec.name!r} has features",
        )
    with np.errstate(over="ignore"):
        narrowed = sample.astype(spec.dtype)
    if not np.isfinite(narrowed).all():
        row, col = np.argwhere(~np.isfinite(narrowed))[0]
        raise errors.invalid(
            field,
            f"{sample[row, col]} at row {row}, column {col}",
            f"values that {spec.dtype} (the model's input) can hold",
        )


def version_metadata(meta: VersionMetadata) -> VersionMetadata:
    """The uploader's metadata, checked field by field, with its text normalised."""
    if meta.parent_version is not None:
        version_number(meta.parent_version, "parent_version")
    if meta.alias:
        alias_name(meta.alias)
    if (
        isinstance(meta.size_bytes, bool)
        or not isinstance(meta.size_bytes, int)
        or meta.size_bytes < 0
    ):
        raise errors.invalid("size_bytes", meta.size_bytes, "0 (unknown) or the artifact's size")
    return VersionMetadata(
        semver=semver(meta.semver),
        parent_version=meta.parent_version,
        metrics=metrics(meta.metrics),
        tags=tags(meta.tags),
        description=description(meta.description),
        sha256=sha256(meta.sha256),
        alias=meta.alias,
        size_bytes=meta.size_bytes,
        background=background(meta.background),
    )

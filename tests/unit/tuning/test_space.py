"""SearchSpace: validation, the unit-cube encoding and its round trips, snapping, JSON."""

from __future__ import annotations

import doctest
import math
from typing import Any

import numpy as np
import pytest

from llmopt import errors
from llmopt.tuning.space import (
    MAX_CHOICES,
    MAX_PARAMS,
    CategoricalParam,
    FloatParam,
    IntParam,
    SearchSpace,
)


def llm_space() -> SearchSpace:
    return SearchSpace(
        [
            FloatParam("temperature", 0.0, 2.0),
            FloatParam("lr", 1e-5, 1e-1, log=True),
            IntParam("max_tokens", 16, 1024, log=True),
            IntParam("beams", 1, 4),
            CategoricalParam("prompt", ("short", "long", "cot")),
        ]
    )


def test_dim_mask_and_blocks() -> None:
    space = llm_space()
    assert space.dim == 7
    assert space.continuous_mask().tolist() == [True, True, True, True, False, False, False]
    assert space.categorical_blocks() == [(4, 3)]
    assert space.column_groups().tolist() == [0, 1, 2, 3, 4, 4, 4]


def test_encode_decode_round_trip() -> None:
    space = llm_space()
    values = {"temperature": 0.7, "lr": 3e-4, "max_tokens": 300, "beams": 3, "prompt": "cot"}
    row = space.encode(values)
    assert row.shape == (7,) and np.all((row >= 0) & (row <= 1))
    assert row[4:].tolist() == [0.0, 0.0, 1.0]
    back = space.decode(row)
    assert back["prompt"] == "cot" and back["beams"] == 3 and back["max_tokens"] == 300
    assert isinstance(back["beams"], int) and isinstance(back["max_tokens"], int)
    assert math.isclose(back["temperature"], 0.7, rel_tol=1e-12)
    assert math.isclose(back["lr"], 3e-4, rel_tol=1e-12)
    # An integral float is accepted for an int.
    assert space.encode({**values, "beams": 3.0}).tolist() == row.tolist()


def test_bounds_encode_to_the_cube_and_back() -> None:
    space = llm_space()
    low = {"temperature": 0.0, "lr": 1e-5, "max_tokens": 16, "beams": 1, "prompt": "short"}
    high = {"temperature": 2.0, "lr": 1e-1, "max_tokens": 1024, "beams": 4, "prompt": "long"}
    assert space.decode(space.encode(low)) == pytest.approx(low)
    assert space.decode(space.encode(high)) == pytest.approx(high)
    assert space.encode(low)[0] == 0.0 and space.encode(high)[1] == 1.0


def test_every_linear_int_owns_an_equal_cell() -> None:
    space = SearchSpace([IntParam("n", -3, 3)])
    u = (np.arange(70_000) + 0.5) / 70_000
    decoded = [space.decode(np.array([x]))["n"] for x in u[::100]]
    counts = np.bincount(np.array(decoded) + 3)
    assert counts.tolist() == [100] * 7
    for v in range(-3, 4):
        assert space.encode({"n": v})[0] == pytest.approx((v + 3 + 0.5) / 7)


def test_every_log_int_round_trips() -> None:
    space = SearchSpace([IntParam("n", 1, 1000, log=True)])
    for v in range(1, 1001):
        assert space.decode(space.encode({"n": v}))["n"] == v
    # A log scale gives small values a larger share of the cube.
    u = np.linspace(0, 1, 1001)
    decoded = np.array([space.decode(np.array([x]))["n"] for x in u])
    assert (decoded <= 31).mean() > 0.45


def test_decode_clips_and_takes_the_largest_category() -> None:
    space = llm_space()
    values = space.decode(np.array([-1.0, 2.0, 0.5, 0.99, 0.2, 0.9, 0.3]))
    assert values["temperature"] == 0.0 and values["lr"] == pytest.approx(1e-1)
    assert values["beams"] == 4 and values["prompt"] == "long"


def test_snap_is_encode_of_decode_and_idempotent() -> None:
    space = llm_space()
    X = np.random.default_rng(0).uniform(-0.2, 1.2, (200, space.dim))
    snapped = space.snap(X)
    for x, s in zip(X, snapped, strict=True):
        np.testing.assert_allclose(s, space.encode(space.decode(x)), rtol=0, atol=1e-12)
    np.testing.assert_array_equal(space.snap(snapped), snapped)
    # Floats are only clipped.
    np.testing.assert_array_equal(snapped[:, 0], np.clip(X[:, 0], 0, 1))


def test_from_unit_spreads_over_choices() -> None:
    space = SearchSpace([CategoricalParam("c", ("a", "b", "c", "d")), FloatParam("x", 0, 1)])
    U = (np.arange(400)[:, None] + 0.5) / 400 * np.ones((1, 2))
    X = space.from_unit(U)
    assert np.bincount(X[:, :4].argmax(1)).tolist() == [100] * 4
    assert np.all(X[:, :4].sum(1) == 1.0)


def test_json_round_trip() -> None:
    space = llm_space()
    data = space.to_json()
    assert data[0] == {
        "type": "float",
        "name": "temperature",
        "low": 0.0,
        "high": 2.0,
        "log": False,
    }
    assert data[4] == {"type": "categorical", "name": "prompt", "choices": ["short", "long", "cot"]}
    again = SearchSpace.from_json(data)
    assert again == space and again.dim == space.dim


def test_from_json_refuses_unknown_types() -> None:
    with pytest.raises(errors.InvalidArgument, match=r"study\.parameters\[0\]\.type"):
        SearchSpace.from_json([{"type": "complex", "name": "z"}])
    with pytest.raises(errors.InvalidArgument, match=r"study\.parameters\[0\]"):
        SearchSpace.from_json([{"type": "float", "name": "z"}])


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ([], "study.parameters"),
        ([FloatParam(f"p{i}", 0, 1) for i in range(MAX_PARAMS + 1)], "study.parameters"),
        ([FloatParam("a/b", 0, 1)], r"study.parameters\[0\].name"),
        ([FloatParam("x", 0, 1), IntParam("x", 0, 3)], r"study.parameters\[1\].name"),
        ([FloatParam("x", 1, 1)], r"study.parameters\[0\].high"),
        ([FloatParam("x", 0, math.inf)], r"study.parameters\[0\].high"),
        ([FloatParam("x", math.nan, 1)], r"study.parameters\[0\].low"),
        ([FloatParam("x", 0, 1, log=True)], r"study.parameters\[0\].low"),
        ([IntParam("n", 3, 2)], r"study.parameters\[0\].high"),
        ([IntParam("n", 0, 8, log=True)], r"study.parameters\[0\].low"),
        ([IntParam("n", 0.5, 8)], r"study.parameters\[0\].low"),  # type: ignore[arg-type]
        ([CategoricalParam("c", ())], r"study.parameters\[0\].choices"),
        ([CategoricalParam("c", ("a", "a"))], r"study.parameters\[0\].choices"),
        ([CategoricalParam("c", ("a", ""))], r"study.parameters\[0\].choices\[1\]"),
        ([CategoricalParam("c", ("x" * 257,))], r"study.parameters\[0\].choices\[0\]"),
        (
            [CategoricalParam("c", tuple(str(i) for i in range(MAX_CHOICES + 1)))],
            r"study.parameters\[0\].choices",
        ),
        (["temperature"], r"study.parameters\[0\]"),
    ],
)
def test_invalid_spaces_name_the_field(params: list[Any], field: str) -> None:
    with pytest.raises(errors.InvalidArgument, match=field):
        SearchSpace(params)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"temperature": 2.5}, "params.temperature"),
        ({"temperature": math.nan}, "params.temperature"),
        ({"temperature": "hot"}, "params.temperature"),
        ({"beams": 2.5}, "params.beams"),
        ({"beams": 0}, "params.beams"),
        ({"beams": True}, "params.beams"),
        ({"prompt": "medium"}, "params.prompt"),
        ({"seed": 3}, "params.seed"),
    ],
)
def test_invalid_values_name_the_field_and_value(change: dict[str, Any], field: str) -> None:
    values = {"temperature": 0.7, "lr": 3e-4, "max_tokens": 300, "beams": 3, "prompt": "cot"}
    with pytest.raises(errors.InvalidArgument, match=field) as info:
        llm_space().encode({**values, **change})
    assert repr(next(iter(change.values())))[:4] in str(info.value)


def test_a_missing_value_is_named() -> None:
    with pytest.raises(errors.InvalidArgument, match=r"trial\.params\.prompt"):
        llm_space().encode(
            {"temperature": 0.7, "lr": 3e-4, "max_tokens": 300, "beams": 3}, field="trial.params"
        )


def test_docstring_examples() -> None:
    import llmopt.tuning.space as module

    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0

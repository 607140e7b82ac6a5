from __future__ import annotations

import numpy as np
import pytest

from llmopt import errors
from llmopt.inference.signature import (
    IOSpec,
    Signature,
    row_count,
    signature_from,
    validate_inputs,
    warm_up_inputs,
)

SPECS = (IOSpec("x", np.dtype(np.float32), (-1, 4)), IOSpec("k", np.dtype(np.int64), (-1,)))


def ok_inputs(rows: int = 3) -> dict[str, np.ndarray]:
    return {"x": np.zeros((rows, 4), np.float32), "k": np.zeros(rows, np.int64)}


def test_valid_inputs_pass_and_rows_are_counted() -> None:
    validate_inputs(SPECS, ok_inputs(5))
    assert row_count(ok_inputs(5)) == 5


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        (lambda d: d.update(extra=np.zeros(1)), "'extra'"),
        (lambda d: d.pop("k"), "input 'k' (int64[?]) is missing"),
        (lambda d: d.update(x=np.zeros((3, 4), np.float64)), "inputs['x'].dtype: 'float64'"),
        (lambda d: d.update(x=np.zeros((3, 4, 1), np.float32)), "inputs['x'].shape: [3, 4, 1]"),
        (lambda d: d.update(x=np.zeros((3, 5), np.float32)), "dimension 1 must be 4"),
    ],
)
def test_each_malformed_input_is_refused_naming_it(change, fragment: str) -> None:  # type: ignore[no-untyped-def]
    inputs = ok_inputs()
    change(inputs)
    with pytest.raises(errors.InvalidArgument) as info:
        validate_inputs(SPECS, inputs)
    assert fragment in str(info.value)


def test_signature_from_registry_specs_skips_non_tensors() -> None:
    class Spec:
        def __init__(self, name: str, dtype: str, shape: tuple[int, ...]) -> None:
            self.name, self.dtype, self.shape = name, dtype, shape

    sig = signature_from(
        [Spec("X", "float32", (-1, 16))],
        [Spec("label", "int64", (-1,)), Spec("probs", "sequence", ())],
    )
    assert sig == Signature(
        (IOSpec("X", np.dtype(np.float32), (-1, 16)),),
        (IOSpec("label", np.dtype(np.int64), (-1,)),),
    )


def test_warm_up_inputs_fill_dynamic_dims_with_one() -> None:
    feed = warm_up_inputs(SPECS)
    assert feed["x"].shape == (1, 4) and feed["x"].dtype == np.float32
    assert feed["k"].shape == (1,) and feed["k"].dtype == np.int64

"""A background sample stored with a version: round trip, validation, durability."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto, helper

from llmopt import errors
from llmopt.registry import Registry, VersionMetadata
from llmopt.registry.catalog import MIGRATIONS
from llmopt.registry.validation import MAX_BACKGROUND_ROWS
from tests.unit.registry.onnx_models import linear_model


@pytest.fixture
def reg(tmp_path: Path) -> Iterator[Registry]:
    r = Registry(tmp_path / "registry")
    r.create_model("m")
    yield r
    r.close()


def two_input_model() -> bytes:
    graph = helper.make_graph(
        [helper.make_node("Add", ["A", "B"], ["Y"])],
        "two",
        [
            helper.make_tensor_value_info("A", TensorProto.FLOAT, ["batch", 3]),
            helper.make_tensor_value_info("B", TensorProto.FLOAT, ["batch", 3]),
        ],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["batch", 3])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


def test_background_round_trip_and_rows_reported(reg: Registry) -> None:
    sample = np.random.default_rng(1).standard_normal((37, 4)).astype(np.float32)
    mv = reg.upload_version("m", linear_model(4), VersionMetadata(background=sample))
    assert mv.background_rows == 37
    assert reg.get_version("m", 1).background_rows == 37
    assert reg.list_versions("m").items[0].background_rows == 37
    stored = reg.background("m", 1)
    assert stored is not None and stored.dtype == np.float64 and stored.shape == (37, 4)
    np.testing.assert_array_equal(stored, sample.astype(np.float64))
    assert reg.background("m", alias="latest") is not None

    plain = reg.upload_version("m", linear_model(4, seed=2))
    assert plain.background_rows == 0
    assert reg.background("m", plain.version) is None
    with pytest.raises(errors.NotFound, match=r"no version 9"):
        reg.background("m", 9)


def test_background_survives_reopen(tmp_path: Path) -> None:
    sample = np.arange(12, dtype=np.float64).reshape(3, 4) / 7
    r = Registry(tmp_path / "r")
    r.create_model("m")
    r.upload_version("m", linear_model(4), VersionMetadata(background=sample))
    r.close()
    again = Registry(tmp_path / "r")
    try:
        assert again.get_version("m", 1).background_rows == 3
        np.testing.assert_array_equal(again.background("m", 1), sample)
    finally:
        again.close()


def test_catalog_of_an_older_schema_gains_the_columns(tmp_path: Path) -> None:
    """A registry written before backgrounds existed opens, its versions reporting none."""
    root = tmp_path / "old"
    r = Registry(root)
    r.create_model("m")
    r.upload_version("m", linear_model(4))
    r.close()
    with sqlite3.connect(root / "registry.db") as c:
        c.execute("ALTER TABLE versions DROP COLUMN background")
        c.execute("ALTER TABLE versions DROP COLUMN background_rows")
        c.execute("ALTER TABLE versions DROP COLUMN background_cols")
        c.execute(f"PRAGMA user_version = {len(MIGRATIONS) - 1}")
    again = Registry(root)
    try:
        assert again.get_version("m", 1).background_rows == 0
        assert again.background("m", 1) is None
    finally:
        again.close()


@pytest.mark.parametrize(
    ("sample", "problem"),
    [
        (np.ones((2, 4), np.int64), "dtype int64"),
        (np.ones(4, np.float32), "2-D"),
        (np.ones((2, 4, 1), np.float32), "2-D"),
        (np.ones((0, 4), np.float32), "0 rows"),
        (np.ones((MAX_BACKGROUND_ROWS + 1, 4), np.float32), f"{MAX_BACKGROUND_ROWS + 1} rows"),
        (np.array([[1.0, np.nan, 0.0, 0.0]]), "nan at row 0, column 1"),
        (np.array([[1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, np.inf]]), "inf at row 1, column 3"),
        (np.ones((2, 3), np.float32), "3 columns"),
        (np.array([[1.0, 0.0, 0.0, 1e300]]), "1e+300 at row 0, column 3"),
    ],
)
def test_bad_background_is_refused_and_nothing_is_stored(
    reg: Registry, sample: np.ndarray, problem: str
) -> None:
    with pytest.raises(errors.InvalidArgument, match=r"metadata.background") as caught:
        reg.upload_version("m", linear_model(4), VersionMetadata(background=sample))
    assert problem in str(caught.value)
    assert reg.get_model("m").latest_version == 0
    assert not list((reg.root / "artifacts").rglob("*.onnx"))


def test_background_needs_a_model_with_one_float_input(reg: Registry) -> None:
    with pytest.raises(errors.InvalidArgument, match=r"metadata.background.*one float input"):
        reg.upload_version("m", two_input_model(), VersionMetadata(background=np.ones((2, 3))))
    assert reg.get_model("m").latest_version == 0

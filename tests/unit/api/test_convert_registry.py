"""llmopt.api.convert_registry: every to_x/from_x pair round-trips; unset conventions hold."""

from __future__ import annotations

import pytest

from llmopt import errors
from llmopt.api import convert_registry as conv
from llmopt.gen.llmopt.v1 import common_pb2, registry_pb2
from llmopt.registry import AliasChange, Model, ModelTask, ModelVersion, TensorSpec, VersionMetadata


def test_model_round_trip() -> None:
    model = Model(
        "m", "d", ModelTask.RANKING, {"a": "b"}, 1700000000.25, 1700000001.5, {"champion": 3}, 4
    )
    assert conv.from_model(conv.to_model(model)) == model
    assert conv.to_model(model).task == registry_pb2.RANKING


def test_version_round_trip_with_and_without_parent() -> None:
    spec = TensorSpec("X", "float32", (-1, 4), ("batch", ""))
    for parent in (None, 2):
        mv = ModelVersion(
            "m",
            3,
            "ab" * 32,
            10,
            (spec,),
            (TensorSpec("Y", "int64", (-1,), ("n",)),),
            "1.0.0",
            parent,
            {"rmse": 0.5},
            {"k": "v"},
            "d",
            1700000000.0,
            ("champion",),
        )
        msg = conv.to_version(mv)
        assert msg.parent_version == (parent or 0)
        assert msg.inputs[0].dtype == common_pb2.FLOAT32
        assert conv.from_version(msg) == mv


def test_tensor_spec_dtypes_follow_the_table() -> None:
    for dtype, proto in conv.DATA_TYPE_BY_DTYPE.items():
        msg = conv.to_tensor_spec(TensorSpec("t", dtype, (2,), ("",)))
        assert msg.dtype == proto
        assert conv.from_tensor_spec(msg).dtype == dtype
    assert conv.to_tensor_spec(TensorSpec("z", "sequence", ())).dtype == 0


def test_alias_change_round_trip_maps_unset_to_zero() -> None:
    change = AliasChange(7, "m", "champion", None, 2, 1700000000.0, "why", "alice", "set")
    msg = conv.to_alias_change(change)
    assert (msg.from_version, msg.to_version, msg.kind) == (0, 2, "set")
    assert conv.from_alias_change(msg) == change


def test_upload_metadata_round_trip() -> None:
    meta = VersionMetadata("1.2.3", 4, {"auc": 0.9}, {"k": "v"}, "d", "0" * 64, "challenger", 99)
    assert conv.from_upload_metadata(conv.to_upload_metadata("m", meta)) == meta
    with pytest.raises(errors.InvalidArgument, match=r"metadata\.parent_version"):
        conv.from_upload_metadata(registry_pb2.UploadVersionMetadata(parent_version=-1))


def test_version_ref_needs_exactly_one() -> None:
    assert conv.from_version_ref(3, "") == (3, None)
    assert conv.from_version_ref(0, "champion") == (None, "champion")
    for version, alias in ((0, ""), (2, "champion"), (-1, "")):
        with pytest.raises(errors.InvalidArgument, match=r"^version: "):
            conv.from_version_ref(version, alias)


def test_unknown_task_is_invalid() -> None:
    with pytest.raises(errors.InvalidArgument, match=r"^task: 99"):
        conv.from_task(99)

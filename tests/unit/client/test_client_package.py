"""``llmopt.client`` stands alone: what importing it loads, its error table, its wire formats."""

from __future__ import annotations

import doctest
import json
import subprocess
import sys

import grpc
import numpy as np
import pytest

import llmopt.client
import llmopt.client.errors as errors
import llmopt.client.types as ct
from llmopt.gen.llmopt.v1 import common_pb2, registry_pb2

# What a client user need not have: the server's layers, its storage, its kernels, the runtime.
FORBIDDEN = (
    "llmopt.api",
    "llmopt.app",
    "llmopt.bandits",
    "llmopt.demo",
    "llmopt.errors",
    "llmopt.features",
    "llmopt.inference",
    "llmopt.native",
    "llmopt.registry",
    "llmopt.storage",
    "sqlite3",
    "_sqlite3",
    "onnxruntime",
)


def test_importing_the_client_loads_no_server_module() -> None:
    code = "import sys, json, llmopt.client; print(json.dumps(sorted(sys.modules)))"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    loaded = json.loads(done.stdout)
    assert "llmopt.client" in loaded and "llmopt.gen.llmopt.v1.registry_pb2" in loaded
    found = [m for m in loaded if any(m == f or m.startswith(f + ".") for f in FORBIDDEN)]
    assert found == []


# -- errors ---------------------------------------------------------------------------------------

EXPECTED_ERRORS = {
    grpc.StatusCode.NOT_FOUND: llmopt.client.NotFound,
    grpc.StatusCode.INVALID_ARGUMENT: llmopt.client.InvalidArgument,
    grpc.StatusCode.ALREADY_EXISTS: llmopt.client.AlreadyExists,
    grpc.StatusCode.FAILED_PRECONDITION: llmopt.client.FailedPrecondition,
    grpc.StatusCode.UNAVAILABLE: llmopt.client.Unavailable,
    grpc.StatusCode.PERMISSION_DENIED: llmopt.client.PermissionDenied,
    grpc.StatusCode.UNAUTHENTICATED: llmopt.client.Unauthenticated,
    grpc.StatusCode.RESOURCE_EXHAUSTED: llmopt.client.ResourceExhausted,
    grpc.StatusCode.DEADLINE_EXCEEDED: llmopt.client.DeadlineExceeded,
    grpc.StatusCode.UNIMPLEMENTED: llmopt.client.Unimplemented,
    grpc.StatusCode.INTERNAL: llmopt.client.Internal,
}


def test_error_table_maps_each_code_to_its_class() -> None:
    assert errors.ERRORS == EXPECTED_ERRORS
    assert len(set(errors.ERRORS.values())) == len(errors.ERRORS)


@pytest.mark.parametrize("code", list(grpc.StatusCode), ids=lambda c: c.name)
def test_every_code_raises_a_client_error_of_its_class(code: grpc.StatusCode) -> None:
    err = errors.error_from("GetModel", code, "no model 'm'")
    assert type(err) is EXPECTED_ERRORS.get(code, llmopt.client.ClientError)
    assert isinstance(err, llmopt.client.ClientError)
    assert (err.method, err.code, err.message) == ("GetModel", code, "no model 'm'")
    assert str(err) == f"GetModel: {code.name}: no model 'm'"


def test_every_error_class_is_exported_and_a_client_error() -> None:
    for cls in EXPECTED_ERRORS.values():
        assert issubclass(cls, llmopt.client.ClientError) and cls is not llmopt.client.ClientError
        assert getattr(llmopt.client, cls.__name__) is cls and cls.__name__ in llmopt.client.__all__


# -- tensors --------------------------------------------------------------------------------------

NUMERIC = [code for code in common_pb2.DataType.values() if code in ct.NUMPY_BY_DTYPE]


def test_the_dtype_table_covers_every_data_type() -> None:
    named = set(common_pb2.DataType.values()) - {common_pb2.DATA_TYPE_UNSPECIFIED}
    assert set(ct.DTYPE_NAMES) == named
    assert set(ct.NUMPY_BY_DTYPE) == named - {common_pb2.STRING}
    for code, name in ct.DTYPE_NAMES.items():
        assert name == common_pb2.DataType.Name(code).lower()
        assert ct.DTYPE_BY_NAME[name] == code


@pytest.mark.parametrize("code", NUMERIC, ids=common_pb2.DataType.Name)
def test_every_numeric_dtype_round_trips(code: int) -> None:
    dtype = ct.NUMPY_BY_DTYPE[code]
    array = (np.arange(12) % 2 == 1) if dtype.kind == "b" else np.arange(12).astype(dtype)
    array = array.reshape(3, 4)
    msg = ct.to_tensor(array, "x")
    assert (msg.name, msg.dtype, list(msg.shape)) == ("x", code, [3, 4])
    assert msg.raw_data == array.astype(dtype).tobytes()  # little-endian on the wire
    back = ct.from_tensor(msg)
    assert back.dtype == dtype.newbyteorder("=") and back.flags.writeable
    np.testing.assert_array_equal(back, array)
    swapped = array.astype(dtype.newbyteorder(">"))  # any byte order in, the wire's out
    assert ct.to_tensor(swapped).raw_data == msg.raw_data


def test_strings_round_trip() -> None:
    array = np.array([["a", "é"], ["", "long text"]])
    msg = ct.to_tensor(array)
    assert msg.dtype == common_pb2.STRING
    back = ct.from_tensor(msg)
    assert back.dtype == object and back.tolist() == array.tolist()


def test_a_dtype_without_a_data_type_is_refused() -> None:
    with pytest.raises(TypeError, match="complex128"):
        ct.to_tensor(np.zeros(2, dtype=np.complex128))


# -- registry values, both ways -------------------------------------------------------------------


def test_registry_messages_round_trip_through_the_value_types() -> None:
    when = 1_700_000_000.123456
    version = registry_pb2.ModelVersion(
        model="m",
        version=3,
        sha256="ab" * 32,
        size_bytes=123,
        inputs=[
            registry_pb2.TensorSpec(
                name="input", dtype=common_pb2.FLOAT32, shape=[-1, 4], dim_names=["batch", ""]
            )
        ],
        outputs=[registry_pb2.TensorSpec(name="label", dtype=common_pb2.STRING, shape=[-1])],
        semver="1.2.0",
        parent_version=2,
        metrics={"rmse": 0.25},
        tags={"stage": "dev"},
        description="d",
        create_time=ct.to_timestamp(when),
        aliases=["champion"],
    )
    assert ct.to_version(ct.from_version(version)) == version
    model = registry_pb2.Model(
        name="m",
        task=registry_pb2.CLASSIFICATION,
        tags={"a": "b"},
        create_time=ct.to_timestamp(when),
        update_time=ct.to_timestamp(when + 1),
        aliases={"champion": 3},
        latest_version=3,
    )
    assert ct.to_model(ct.from_model(model)) == model
    change = registry_pb2.AliasChange(
        id=9,
        model="m",
        alias="champion",
        from_version=2,
        to_version=3,
        kind="promote",
        reason="r",
        actor="ci",
        time=ct.to_timestamp(when),
    )
    assert ct.to_alias_change(ct.from_alias_change(change)) == change
    unset = registry_pb2.AliasChange(id=1, model="m", alias="x", time=ct.to_timestamp(0.0))
    assert ct.from_alias_change(unset).to_version is None
    assert ct.to_alias_change(ct.from_alias_change(unset)) == unset


def test_timestamps_survive_seconds_as_floats() -> None:
    rng = np.random.default_rng(0)
    for seconds in rng.uniform(0, 2e9, 500).tolist():
        ts = ct.to_timestamp(seconds)
        assert ct.to_timestamp(ts.seconds + ts.nanos / 1e9) == ts


def test_types_docstring_examples() -> None:
    failures, tried = doctest.testmod(ct, optionflags=doctest.ELLIPSIS)
    assert tried > 0 and failures == 0

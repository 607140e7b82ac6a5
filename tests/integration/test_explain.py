"""Explain and GetFeatureImportance through the real server process, with the Python client."""

from __future__ import annotations

import subprocess
import sys
import uuid
import warnings
from collections.abc import Iterator

import grpc
import numpy as np
import pytest

from llmopt.api.convert import to_tensor
from llmopt.client import Client, FailedPrecondition, InvalidArgument, NotFound
from llmopt.gen.llmopt.v1 import inference_pb2, registry_pb2
from llmopt.registry.export import export_sklearn
from tests.support.inference_client import inference_stub, registry_stub

pytestmark = pytest.mark.integration

WIDTH = 8
NAMES = "age,income,tenure,visits,region,plan,usage,score"


@pytest.fixture(scope="module")
def client(server) -> Iterator[Client]:  # type: ignore[no-untyped-def]
    with Client(server.address) as c:
        yield c


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(4)
    X = rng.standard_normal((1500, WIDTH)).astype(np.float32)
    y = X @ np.linspace(2, 0.2, WIDTH) + 0.5 * np.tanh(X[:, 0] * X[:, 1])
    return X, y


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def fitted(kind: str, X: np.ndarray, y: np.ndarray):  # type: ignore[no-untyped-def]
    from sklearn.ensemble import GradientBoostingRegressor
    from sklearn.linear_model import LinearRegression
    from sklearn.neural_network import MLPRegressor

    estimator = {
        "linear": LinearRegression(),
        "trees": GradientBoostingRegressor(n_estimators=30, max_depth=3, random_state=0),
        "mlp": MLPRegressor(hidden_layer_sizes=(12,), max_iter=200, random_state=0),
    }[kind]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return estimator.fit(X[:400], y[:400])


def test_register_sklearn_model_keeps_a_background_from_the_sample(
    client: Client, data: tuple[np.ndarray, np.ndarray]
) -> None:
    X, y = data
    name = unique("lin")
    version = client.register_sklearn_model(
        name, fitted("linear", X, y), sample=X, alias="champion", tags={"feature_names": NAMES}
    )
    assert version.background_rows == 1000  # 1,500 rows of training data: a seeded 1,000
    assert client.get_version(name, 1).background_rows == 1000

    rows = X[1000:1010]
    got = client.explain(name, rows)
    assert (got.model, got.version, got.method) == (name, 1, "linear")
    assert got.feature_names == tuple(NAMES.split(","))
    assert got.contributions.shape == (10, WIDTH) and got.background_rows == 1000
    predictions = client.predict(name, rows).ravel()
    np.testing.assert_allclose(got.predictions, predictions, rtol=0, atol=1e-6)
    np.testing.assert_allclose(
        got.base_values + got.contributions.sum(axis=1), got.predictions, rtol=0, atol=1e-4
    )


def test_trees_and_kernel_over_the_wire(
    client: Client, data: tuple[np.ndarray, np.ndarray]
) -> None:
    X, y = data
    trees = unique("trees")
    client.register_sklearn_model(trees, fitted("trees", X, y), sample=X[:300], alias="champion")
    got = client.explain(trees, X[1100:1105])
    assert got.method == "tree_shap" and got.background_rows == 300
    np.testing.assert_allclose(
        got.base_values + got.contributions.sum(axis=1), got.predictions, rtol=0, atol=1e-5
    )

    mlp = unique("mlp")
    onnx = export_sklearn(fitted("mlp", X, y), sample=X[:50]).onnx_bytes
    client.create_model(mlp)
    uploaded = client.upload_onnx(mlp, onnx, alias="champion", background=X[:150])
    assert uploaded.background_rows == 150
    got = client.explain(mlp, X[1200:1204], samples=300, seed=7)
    assert (got.method, got.samples, got.seed, got.background_rows) == ("kernel_shap", 300, 7, 100)
    np.testing.assert_allclose(
        got.base_values + got.contributions.sum(axis=1), got.predictions, rtol=0, atol=1e-9
    )
    np.testing.assert_allclose(got.predictions, client.predict(mlp, X[1200:1204]).ravel())
    again = client.explain(mlp, X[1200:1204], samples=300, seed=7)
    np.testing.assert_array_equal(again.contributions, got.contributions)
    assert client.explain(mlp, X[1200:1201], method="kernel_shap").samples == 2048


def test_feature_importance_over_the_rows_served(
    client: Client, data: tuple[np.ndarray, np.ndarray]
) -> None:
    X, y = data
    name = unique("imp")
    client.register_sklearn_model(
        name,
        fitted("linear", X, y),
        sample=X[:200],
        alias="champion",
        tags={"feature_names": NAMES},
    )
    empty = client.get_feature_importance(name)
    assert (empty.version, empty.rows) == (1, 0)
    assert set(empty.features) == set(NAMES.split(",")) and not any(empty.features.values())
    for i in (0, 20, 40):
        client.predict(name, X[i : i + 20])
    explained = client.explain(name, X[:60])  # the same rows; Explain adds none of its own
    importance = client.get_feature_importance(name, version=1)
    assert importance.rows == 60
    expected = np.abs(explained.contributions).mean(axis=0)
    by_name = dict(zip(NAMES.split(","), expected, strict=True))
    assert list(importance.features) == sorted(by_name, key=lambda k: -by_name[k])
    for feature, value in importance.features.items():
        assert value == pytest.approx(by_name[feature], rel=1e-9)
    assert client.get_feature_importance(name, alias="champion") == importance


def test_bad_requests_get_the_right_codes_naming_the_field(
    client: Client, channel: grpc.Channel, data: tuple[np.ndarray, np.ndarray]
) -> None:
    X, y = data
    mlp = unique("bad")
    onnx = export_sklearn(fitted("mlp", X, y), sample=X[:50]).onnx_bytes
    client.create_model(mlp)
    client.upload_onnx(mlp, onnx, alias="champion", background=X[:20])
    bare = unique("bare")
    client.create_model(bare)
    client.upload_onnx(bare, onnx, alias="champion")

    with pytest.raises(NotFound, match=r"'nope-model'"):
        client.explain("nope-model", X[:1])
    with pytest.raises(NotFound):
        client.explain(mlp, X[:1], version=9)
    with pytest.raises(FailedPrecondition, match=f"'{bare}' version 1 has no background"):
        client.explain(bare, X[:1])
    with pytest.raises(FailedPrecondition, match=r"LINEAR.*not affine"):
        client.explain(mlp, X[:1], method="linear")
    with pytest.raises(InvalidArgument, match=r"samples: 70000"):
        client.explain(mlp, X[:1], samples=70000)
    with pytest.raises(InvalidArgument, match=r"output_name: 'nope'"):
        client.explain(mlp, X[:1], output_name="nope")
    with pytest.raises(InvalidArgument, match=r"inputs\['input'\].shape"):
        client.explain(mlp, X[:1, :3])
    with pytest.raises(NotFound):
        client.get_feature_importance(mlp, version=5)
    with pytest.raises(NotFound):
        client.get_feature_importance("nope-model")

    stub = inference_stub(channel)
    tensor = to_tensor(X[:1], "input")
    cases = [
        (inference_pb2.ExplainRequest(model=mlp, inputs=[tensor], method=99), "method: 99"),
        (inference_pb2.ExplainRequest(model=mlp, inputs=[tensor, tensor]), "inputs: "),
        (inference_pb2.ExplainRequest(model=mlp), "inputs: "),
        (inference_pb2.ExplainRequest(inputs=[tensor]), "model: "),
        (
            inference_pb2.ExplainRequest(model=mlp, inputs=[tensor], output_index=3),
            "output_index: 3",
        ),
    ]
    for request, field in cases:
        with pytest.raises(grpc.RpcError) as caught:
            stub.Explain(request)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, request
        assert field in caught.value.details()


def test_a_bad_background_is_refused_at_upload_and_nothing_is_stored(
    client: Client, channel: grpc.Channel, data: tuple[np.ndarray, np.ndarray]
) -> None:
    X, y = data
    name = unique("upload")
    onnx = export_sklearn(fitted("linear", X, y), sample=X[:50]).onnx_bytes
    client.create_model(name)
    bad = X[:5].copy()
    bad[2, 3] = np.nan
    for background, problem in (
        (bad, "nan at row 2, column 3"),
        (X[:5, :4], "4 columns"),
        (np.zeros((1001, WIDTH), np.float32), "1001 rows"),
    ):
        with pytest.raises(InvalidArgument, match=r"metadata.background") as caught:
            client.upload_onnx(name, onnx, background=background)
        assert problem in caught.value.message
    integers = registry_pb2.UploadVersionMetadata(
        model=name, background=to_tensor(np.ones((2, WIDTH), np.int64))
    )
    parts = iter(
        [
            registry_pb2.UploadVersionRequest(metadata=integers),
            registry_pb2.UploadVersionRequest(chunk=onnx),
        ]
    )
    with pytest.raises(grpc.RpcError) as refused:
        registry_stub(channel).UploadVersion(parts)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "metadata.background" in refused.value.details()
    assert client.get_model(name).latest_version == 0


def test_llmopt_registry_register_with_a_background_file(  # type: ignore[no-untyped-def]
    client: Client, server, data: tuple[np.ndarray, np.ndarray], tmp_path
) -> None:
    X, y = data
    name = unique("cli")
    model_file = tmp_path / "model.onnx"
    model_file.write_bytes(export_sklearn(fitted("linear", X, y), sample=X[:50]).onnx_bytes)
    sample_file = tmp_path / "background.npy"
    np.save(sample_file, X[:64])
    cli = [sys.executable, "-m", "llmopt.registry.cli", "--address", server.address]
    done = subprocess.run(
        [*cli, "register", name, str(model_file), "--create", "--alias", "champion",
         "--background", str(sample_file)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert client.get_version(name, 1).background_rows == 64
    assert client.explain(name, X[:2]).background_rows == 64

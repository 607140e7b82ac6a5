"""gRPC helpers for inference integration tests: register models, build Predict requests."""

from __future__ import annotations

import grpc
import numpy as np

from llmopt.api.convert import to_tensor
from llmopt.gen.llmopt.v1 import inference_pb2, inference_pb2_grpc, registry_pb2, registry_pb2_grpc


def register(channel: grpc.Channel, model: str, onnx: bytes, alias: str = "") -> int:
    """Create ``model`` if needed and upload ``onnx`` as its next version; the version number."""
    stub = registry_pb2_grpc.RegistryStub(channel)
    try:
        stub.CreateModel(registry_pb2.CreateModelRequest(name=model))
    except grpc.RpcError as exc:
        if exc.code() != grpc.StatusCode.ALREADY_EXISTS:
            raise
    parts = [
        registry_pb2.UploadVersionRequest(
            metadata=registry_pb2.UploadVersionMetadata(model=model, alias=alias)
        ),
        registry_pb2.UploadVersionRequest(chunk=onnx),
    ]
    return stub.UploadVersion(iter(parts)).version


def predict_request(
    model: str, X: np.ndarray, name: str = "X", **fields: object
) -> inference_pb2.PredictRequest:
    return inference_pb2.PredictRequest(model=model, inputs=[to_tensor(X, name)], **fields)  # type: ignore[arg-type]


def inference_stub(channel: grpc.Channel) -> inference_pb2_grpc.InferenceStub:
    return inference_pb2_grpc.InferenceStub(channel)


def registry_stub(channel: grpc.Channel) -> registry_pb2_grpc.RegistryStub:
    return registry_pb2_grpc.RegistryStub(channel)

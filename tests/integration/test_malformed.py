"""Every RPC of every service, fed an empty message and garbage bytes: a clear status, never a
crash or an UNKNOWN, and the server keeps serving."""

from __future__ import annotations

import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from llmopt.gen.inference import grpc_service_pb2
from llmopt.gen.llmopt.v1 import bandits_pb2, features_pb2, inference_pb2, registry_pb2

SERVICES = [
    registry_pb2.DESCRIPTOR.services_by_name["Registry"],
    inference_pb2.DESCRIPTOR.services_by_name["Inference"],
    bandits_pb2.DESCRIPTOR.services_by_name["Bandits"],
    features_pb2.DESCRIPTOR.services_by_name["Features"],
    grpc_service_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"],
]
METHODS = [(s.full_name, m) for s in SERVICES for m in s.methods]
GARBAGE = [b"\xff\xff\xff\xff\x0f\x01", b"\x0a\xff\xff\xff\xff\x0f", b"\x12\x05abc", b"\x08"]
# What a caller may be told about a request it got wrong; UNKNOWN would mean an escaped exception.
ACCEPTABLE = {
    grpc.StatusCode.OK,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.FAILED_PRECONDITION,
}


@pytest.fixture(scope="module")
def channel(tmp_path_factory):
    from tests.support.server import ServerProcess

    proc = ServerProcess(tmp_path_factory.mktemp("malformed") / "data").start()
    with proc.channel() as ch:
        yield ch
    # Nothing the requests did may keep the server from draining promptly on SIGTERM.
    started = time.monotonic()
    assert proc.terminate(timeout=30) == 0
    assert time.monotonic() - started < 8


def _call(channel: grpc.Channel, service: str, method, payload: bytes):
    path = f"/{service}/{method.name}"
    if method.client_streaming and method.server_streaming:
        return list(channel.stream_stream(path)(iter([payload, payload]), timeout=10))
    if method.client_streaming:
        return channel.stream_unary(path)(iter([payload, payload]), timeout=10)
    if method.server_streaming:
        return list(channel.unary_stream(path)(payload, timeout=10))
    return channel.unary_unary(path)(payload, timeout=10)


@pytest.mark.parametrize(("service", "method"), METHODS, ids=[f"{s}/{m.name}" for s, m in METHODS])
def test_empty_and_garbage_requests_get_a_clear_status(channel, service, method):
    try:  # an empty message is valid protobuf: whatever it means, the answer is a clear one
        _call(channel, service, method, b"")
    except grpc.RpcError as err:
        assert err.code() in ACCEPTABLE, (err.code(), err.details())
        assert err.details()
    for payload in GARBAGE:  # not protobuf at all
        with pytest.raises(grpc.RpcError) as err:
            _call(channel, service, method, payload)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, (payload, err.value.details())
        assert "not a valid message" in err.value.details()
    health = health_pb2_grpc.HealthStub(channel)
    status = health.Check(health_pb2.HealthCheckRequest(), timeout=5).status
    assert status == health_pb2.HealthCheckResponse.SERVING

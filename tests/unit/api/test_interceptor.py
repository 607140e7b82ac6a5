"""The interceptor on a real in-process grpc.server: unbuilt RPCs, bugs, domain errors, gate."""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest
from prometheus_client import CollectorRegistry

from llmopt import errors
from llmopt.api.interceptor import ServingInterceptor
from llmopt.gen.llmopt.v1 import registry_pb2, registry_pb2_grpc
from llmopt.metrics import RpcMetrics


class PartlyBuilt(registry_pb2_grpc.RegistryServicer):
    def GetModel(self, request, context):
        if request.name == "boom":
            raise RuntimeError("a bug")
        if request.name == "missing":
            raise errors.NotFound(f"name: {request.name!r} does not exist")
        return registry_pb2.Model(name=request.name)


@pytest.fixture
def served():
    ready = threading.Event()
    ready.set()
    metrics = RpcMetrics(CollectorRegistry())
    server = grpc.server(
        ThreadPoolExecutor(4), interceptors=[ServingInterceptor(metrics, ready.is_set)]
    )
    registry_pb2_grpc.add_RegistryServicer_to_server(PartlyBuilt(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    yield registry_pb2_grpc.RegistryStub(channel), ready, metrics
    channel.close()
    server.stop(None)


def test_declared_but_unbuilt_rpc_answers_unimplemented_and_says_so(served):
    stub, _, _ = served
    with pytest.raises(grpc.RpcError) as err:
        stub.ListModels(registry_pb2.ListModelsRequest(), timeout=5)
    assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert "/llmopt.v1.Registry/ListModels is declared but not built yet" in err.value.details()


def test_unexpected_exception_is_internal_with_a_logged_request_id(served, caplog):
    stub, _, _ = served
    with (
        caplog.at_level(logging.ERROR, logger="llmopt.rpc"),
        pytest.raises(grpc.RpcError) as err,
    ):
        stub.GetModel(registry_pb2.GetModelRequest(name="boom"), timeout=5)
    assert err.value.code() == grpc.StatusCode.INTERNAL
    request_id = err.value.details().split("request id ")[1].split(")")[0]
    assert any(request_id in r.getMessage() and r.exc_info for r in caplog.records)
    assert "a bug" not in err.value.details()  # internals stay in the log
    assert stub.GetModel(registry_pb2.GetModelRequest(name="ok"), timeout=5).name == "ok"


def test_domain_error_keeps_its_message(served):
    stub, _, metrics = served
    with pytest.raises(grpc.RpcError) as err:
        stub.GetModel(registry_pb2.GetModelRequest(name="missing"), timeout=5)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert err.value.details() == "name: 'missing' does not exist"
    value = metrics.registry.get_sample_value(
        "llmopt_rpc_total", {"method": "/llmopt.v1.Registry/GetModel", "code": "NOT_FOUND"}
    )
    assert value == 1.0


def test_not_ready_answers_unavailable(served):
    stub, ready, _ = served
    ready.clear()
    with pytest.raises(grpc.RpcError) as err:
        stub.GetModel(registry_pb2.GetModelRequest(name="ok"), timeout=5)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE

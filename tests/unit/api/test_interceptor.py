"""The interceptor on a real in-process grpc.server: unbuilt RPCs, bugs, domain errors, gate,
limits, ended streams."""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from prometheus_client import CollectorRegistry

from llmopt import errors
from llmopt.api.interceptor import Lanes, ServingInterceptor
from llmopt.gen.llmopt.v1 import registry_pb2, registry_pb2_grpc
from llmopt.metrics import RpcMetrics


class PartlyBuilt(registry_pb2_grpc.RegistryServicer):
    def __init__(self) -> None:
        self.release = threading.Event()
        self.received = threading.Event()

    def GetModel(self, request, context):
        if request.name == "boom":
            raise RuntimeError("a bug")
        if request.name == "missing":
            raise errors.NotFound(f"name: {request.name!r} does not exist")
        if request.name == "hold":
            self.release.wait(30)
        return registry_pb2.Model(name=request.name)

    def UploadVersion(self, request_iterator, context):
        for _ in request_iterator:  # as every client-streaming servicer reads its requests
            self.received.set()
        return registry_pb2.ModelVersion()

    def DownloadVersion(self, request, context):
        while True:  # far more than any window: the send waits until the client reads
            yield registry_pb2.DownloadVersionResponse(chunk=b"x" * (1 << 20))


def serve(interceptor: ServingInterceptor, servicer: PartlyBuilt, pool: ThreadPoolExecutor):
    server = grpc.server(pool, interceptors=[interceptor])
    registry_pb2_grpc.add_RegistryServicer_to_server(servicer, server)
    health_pb2_grpc.add_HealthServicer_to_server(health.HealthServicer(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return server, grpc.insecure_channel(f"127.0.0.1:{port}")


@pytest.fixture
def served():
    ready = threading.Event()
    ready.set()
    metrics = RpcMetrics(CollectorRegistry())
    interceptor = ServingInterceptor(metrics, ready.is_set)
    server, channel = serve(interceptor, PartlyBuilt(), ThreadPoolExecutor(4))
    yield registry_pb2_grpc.RegistryStub(channel), ready, metrics
    channel.close()
    server.stop(None)
    interceptor.close()


@pytest.fixture
def limited():
    """Lanes of 2 unary RPCs and 2 streams; a stream idle for 0.5 s ends."""
    ready = threading.Event()
    ready.set()
    metrics = RpcMetrics(CollectorRegistry())
    lanes = Lanes.create(workers=2, max_unary=2, max_streams=2)
    interceptor = ServingInterceptor(metrics, ready.is_set, lanes, stream_idle_seconds=0.5)
    servicer = PartlyBuilt()
    server, channel = serve(interceptor, servicer, lanes.unary.pool)
    yield registry_pb2_grpc.RegistryStub(channel), servicer, lanes, metrics, channel
    servicer.release.set()
    channel.close()
    server.stop(None)
    interceptor.close()
    lanes.shutdown(wait=True)


def wait_for(condition, what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"still waiting for {what}"
        time.sleep(0.01)


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


def test_unary_limit_refuses_at_once_naming_it_and_health_still_answers(limited):
    stub, servicer, lanes, metrics, channel = limited
    held = [stub.GetModel.future(registry_pb2.GetModelRequest(name="hold"), timeout=30)]
    held.append(stub.GetModel.future(registry_pb2.GetModelRequest(name="hold"), timeout=30))
    wait_for(lambda: lanes.unary.pool.held == 2, "both calls to be in progress")
    with pytest.raises(grpc.RpcError) as err:  # the two unary threads are both held
        stub.GetModel(registry_pb2.GetModelRequest(name="ok"), timeout=5)
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert err.value.details() == (
        "too many RPCs in progress: the limit is 2 (--max-concurrent-rpcs); retry later"
    )
    check = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
    assert check.status == health_pb2.HealthCheckResponse.SERVING
    servicer.release.set()
    assert [f.result().name for f in held] == ["hold", "hold"]
    wait_for(lambda: lanes.unary.pool.held == 0, "the held calls to finish")
    assert stub.GetModel(registry_pb2.GetModelRequest(name="ok"), timeout=5).name == "ok"
    refused = metrics.registry.get_sample_value(
        "llmopt_rpc_total",
        {"method": "/llmopt.v1.Registry/GetModel", "code": "RESOURCE_EXHAUSTED"},
    )
    assert refused == 1.0


def test_a_cancelled_stream_is_no_error_in_the_log(limited, caplog):
    stub, servicer, _, metrics, _ = limited
    release = threading.Event()

    def requests():
        yield registry_pb2.UploadVersionRequest(chunk=b"x")
        release.wait(30)

    with caplog.at_level(logging.DEBUG, logger="llmopt.rpc"):
        future = stub.UploadVersion.future(requests(), timeout=30)
        assert servicer.received.wait(10)
        future.cancel()
        release.set()
        method = "/llmopt.v1.Registry/UploadVersion"
        labels = {"method": method, "code": "CANCELLED"}
        wait_for(
            lambda: metrics.registry.get_sample_value("llmopt_rpc_total", labels) == 1.0,
            "the cancelled call to be counted",
        )
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert any("cancelled" in r.getMessage() for r in caplog.records)  # at debug level


def test_a_stream_whose_client_reads_nothing_ends_idle(limited):
    stub, _, _, _, _ = limited
    answers = stub.DownloadVersion(registry_pb2.DownloadVersionRequest(model="m"), timeout=30)
    time.sleep(1.5)  # reads nothing for three times the idle limit, then everything
    with pytest.raises(grpc.RpcError) as err:
        list(answers)
    assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert err.value.details() == (
        "stream idle: waited 0.5 s for the client to read the last answer "
        "(--stream-idle-seconds 0.5)"
    )

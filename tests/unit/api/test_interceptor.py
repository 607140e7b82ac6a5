"""The interceptor on a real in-process grpc.server: unbuilt RPCs, bugs, domain errors, gate,
limits, ended streams, authentication and scopes, the audit record of admin RPCs."""

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
from llmopt.audit import AuditLog
from llmopt.gen.llmopt.v1 import registry_pb2, registry_pb2_grpc
from llmopt.metrics import RpcMetrics
from llmopt.security import Authenticator, current_actor, hash_token


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


# -- who is calling, what they may do, and the audit trail ---------------------------------

READER, ADMIN = "reader-token", "admin-token"
DELETE_MODEL = "/llmopt.v1.Registry/DeleteModel"
UPLOAD = "/llmopt.v1.Registry/UploadVersion"


class Guarded(PartlyBuilt):
    """Answers with who it saw calling (``current_actor``), to show the principal reached it."""

    def __init__(self) -> None:
        super().__init__()
        self.deleted: list[str] = []

    def GetModel(self, request, context):
        if request.name == "whoami":
            return registry_pb2.Model(name=current_actor())
        return super().GetModel(request, context)

    def DeleteModel(self, request, context):
        self.deleted.append(request.name)
        return registry_pb2.DeleteModelResponse(versions_deleted=len(current_actor()))


def bearer(token: str) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {token}")]


@pytest.fixture
def secured(tmp_path):
    """Auth on (a token file: reader holds read, admin holds read and admin) and an audit log."""
    tokens = tmp_path / "tokens"
    tokens.write_text(
        f"# test tokens\n{hash_token(READER)} reader read\n{hash_token(ADMIN)} admin read,admin\n"
    )
    ready = threading.Event()
    ready.set()
    audit = AuditLog(tmp_path / "audit")
    interceptor = ServingInterceptor(
        RpcMetrics(CollectorRegistry()),
        ready.is_set,
        authenticator=Authenticator.from_files(tokens, None),
        audit=audit,
    )
    servicer = Guarded()
    server, channel = serve(interceptor, servicer, ThreadPoolExecutor(4))
    yield registry_pb2_grpc.RegistryStub(channel), servicer, audit, channel
    channel.close()
    server.stop(None)
    interceptor.close()
    audit.close()


def refused(call, *args, **kwargs) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as err:
        call(*args, timeout=5, **kwargs)
    return err.value


def test_without_a_token_every_kind_of_rpc_is_unauthenticated_before_its_handler(secured):
    stub, servicer, _, _ = secured
    # "boom" would be INTERNAL if the handler ran
    err = refused(stub.GetModel, registry_pb2.GetModelRequest(name="boom"))
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "bearer" in err.details().lower()
    err = refused(stub.GetModel, registry_pb2.GetModelRequest(name="boom"), metadata=bearer("x"))
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED
    upload = iter([registry_pb2.UploadVersionRequest(chunk=b"x")])
    assert refused(stub.UploadVersion, upload).code() == grpc.StatusCode.UNAUTHENTICATED
    assert not servicer.received.is_set()  # no message was read
    answers = stub.DownloadVersion(registry_pb2.DownloadVersionRequest(model="m"), timeout=5)
    with pytest.raises(grpc.RpcError) as stream_err:
        next(answers)
    assert stream_err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert servicer.deleted == []


def test_health_stays_open_with_auth_on(secured):
    _, _, _, channel = secured
    check = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
    assert check.status == health_pb2.HealthCheckResponse.SERVING


def test_the_handler_sees_the_principal_and_a_missing_scope_is_permission_denied(secured):
    stub, servicer, _, _ = secured
    answer = stub.GetModel(registry_pb2.GetModelRequest(name="whoami"), metadata=bearer(READER))
    assert answer.name == "reader"
    delete = registry_pb2.DeleteModelRequest(name="m")
    err = refused(stub.DeleteModel, delete, metadata=bearer(READER))
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "'admin'" in err.details() and "reader" in err.details()
    assert servicer.deleted == []
    upload = iter([registry_pb2.UploadVersionRequest(chunk=b"x")])
    err = refused(stub.UploadVersion, upload, metadata=bearer(READER))
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED
    done = stub.DeleteModel(registry_pb2.DeleteModelRequest(name="m"), metadata=bearer(ADMIN))
    assert done.versions_deleted == len("admin")  # the handler saw "admin"
    assert servicer.deleted == ["m"]


def test_every_admin_rpc_is_audited_with_its_outcome_refusals_included(secured):
    stub, _, audit, _ = secured
    refused(stub.DeleteModel, registry_pb2.DeleteModelRequest(name="m1"))
    refused(stub.DeleteModel, registry_pb2.DeleteModelRequest(name="m2"), metadata=bearer(READER))
    stub.DeleteModel(registry_pb2.DeleteModelRequest(name="m3"), metadata=bearer(ADMIN))
    upload = iter(
        [registry_pb2.UploadVersionRequest(metadata=registry_pb2.UploadVersionMetadata(model="m4"))]
    )
    stub.UploadVersion(upload, metadata=bearer(ADMIN), timeout=5)
    stub.GetModel(registry_pb2.GetModelRequest(name="whoami"), metadata=bearer(ADMIN))  # read
    entries, _ = audit.query(page_size=100)
    seen = sorted((e.target, e.principal, e.method, e.code) for e in entries)
    assert seen == [
        ("m1", "", DELETE_MODEL, "UNAUTHENTICATED"),
        ("m2", "reader", DELETE_MODEL, "PERMISSION_DENIED"),
        ("m3", "admin", DELETE_MODEL, "OK"),
        ("m4", "admin", UPLOAD, "OK"),
    ]


def test_with_auth_off_admin_rpcs_are_still_audited_without_a_principal(tmp_path):
    ready = threading.Event()
    ready.set()
    audit = AuditLog(tmp_path / "audit")
    interceptor = ServingInterceptor(None, ready.is_set, audit=audit)
    server, channel = serve(interceptor, Guarded(), ThreadPoolExecutor(2))
    try:
        stub = registry_pb2_grpc.RegistryStub(channel)
        assert stub.DeleteModel(registry_pb2.DeleteModelRequest(name="m"), timeout=5)
        assert stub.GetModel(registry_pb2.GetModelRequest(name="whoami"), timeout=5).name == ""
        entries, _ = audit.query()
        assert [(e.principal, e.method, e.target, e.code) for e in entries] == [
            ("", DELETE_MODEL, "m", "OK")
        ]
    finally:
        channel.close()
        server.stop(None)
        interceptor.close()
        audit.close()

"""Streams against the real server: limits of their own, idle streams ended, shutdown with
streams open. Small limits make each case cheap: 4 unary RPCs, 4 streams."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from llmopt.gen.llmopt.v1 import (
    common_pb2,
    features_pb2,
    features_pb2_grpc,
    inference_pb2,
    inference_pb2_grpc,
    registry_pb2,
    registry_pb2_grpc,
)
from tests.support.server import ServerProcess
from tests.unit.registry.onnx_models import linear_model

pytestmark = pytest.mark.integration

LIMITS = ("--max-concurrent-rpcs", "4", "--max-concurrent-streams", "4")
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class Silence:
    """A request stream that sends ``first`` and then nothing until released."""

    def __init__(self, *first: Any) -> None:
        self.release = threading.Event()
        self._messages = self._send(first)

    def _send(self, first: tuple[Any, ...]) -> Iterator[Any]:
        yield from first
        self.release.wait(60)

    def __iter__(self) -> Iterator[Any]:
        return self

    def __next__(self) -> Any:
        return next(self._messages)


def _server(tmp_path_factory: pytest.TempPathFactory, name: str, *args: str) -> ServerProcess:
    return ServerProcess(tmp_path_factory.mktemp(name) / "data", args).start()


@pytest.fixture(scope="module")
def held(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """Small limits; idle streams are held for a minute, longer than any test here."""
    proc = _server(tmp_path_factory, "held", *LIMITS, "--stream-idle-seconds", "60")
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def idle(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """Small limits and a stream that waits 1 s on its client ends."""
    proc = _server(tmp_path_factory, "idle", *LIMITS, "--stream-idle-seconds", "1")
    yield proc
    proc.stop()


def vector_request() -> features_pb2.GetFeatureVectorRequest:
    return features_pb2.GetFeatureVectorRequest(context=common_pb2.RequestContext())


def error_of(call: Callable[[], Any]) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        call()
    return info.value


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"still waiting for {what}"
        time.sleep(0.02)


def open_streams(ch: grpc.Channel, n: int, stream: Callable[..., Any]) -> list[Silence]:
    """``n`` silent streams of the kind ``stream`` opens; returns their request streams, with
    the calls on ``.call``."""
    silences = []
    for _ in range(n):
        silence = Silence()
        silence.call = stream(ch, silence)  # type: ignore[attr-defined]
        silences.append(silence)
    return silences


def silent_upload(ch: grpc.Channel, requests: Silence) -> grpc.Future:
    return registry_pb2_grpc.RegistryStub(ch).UploadVersion.future(requests, timeout=60)


def silent_predict_stream(ch: grpc.Channel, requests: Silence) -> Any:
    return inference_pb2_grpc.InferenceStub(ch).PredictStream(requests, timeout=60)


def reflection_lists_services(ch: grpc.Channel) -> set[str]:
    stub = reflection_pb2_grpc.ServerReflectionStub(ch)
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    answers = stub.ServerReflectionInfo(iter([request]), timeout=5)
    return {s.name for r in answers for s in r.list_services_response.service}


def everything_else_answers(ch: grpc.Channel) -> None:
    """Health (Check, List, Watch), reflection and unary domain calls answer at once."""
    health = health_pb2_grpc.HealthStub(ch)
    assert health.Check(health_pb2.HealthCheckRequest(), timeout=5).status == SERVING
    assert health.List(health_pb2.HealthListRequest(), timeout=5).statuses[""].status == SERVING
    watch = health.Watch(health_pb2.HealthCheckRequest(service="llmopt.v1.Registry"), timeout=5)
    assert next(watch).status == SERVING
    watch.cancel()
    assert "llmopt.v1.Registry" in reflection_lists_services(ch)
    features = features_pb2_grpc.FeaturesStub(ch)
    assert len(features.GetFeatureVector(vector_request(), timeout=5).values) == 10


def test_silent_predict_streams_take_only_the_stream_limit(held: ServerProcess) -> None:
    """10 PredictStreams that send nothing: 4 are open, 6 are refused at once naming the
    limit, and health, reflection and unary calls still answer (grpc's limit refused all)."""
    with held.channel() as ch:
        silences = open_streams(ch, 10, silent_predict_stream)
        # a refused stream ends at once; an open one waits for its client
        wait_for(lambda: sum(s.call.done() for s in silences) == 6, "6 refusals")
        refused = [(s.call.code(), s.call.details()) for s in silences if s.call.done()]
        assert (
            refused
            == [
                (
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    "too many streams in progress: the limit is 4 (--max-concurrent-streams); "
                    "retry later",
                )
            ]
            * 6
        )
        everything_else_answers(ch)
        for s in silences:
            s.call.cancel()
        # their threads come back: a stream is admitted again
        wait_for(lambda: _stream_admitted(ch), "a stream slot to come back")


def _stream_admitted(ch: grpc.Channel) -> bool:
    request = inference_pb2.PredictRequest(id="probe", model="no-such-model")
    stub = inference_pb2_grpc.InferenceStub(ch)
    try:
        answers = list(stub.PredictStream(iter([request]), timeout=5))
    except grpc.RpcError as err:
        assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        return False
    return [a.id for a in answers] == ["probe"]


def test_fifty_silent_uploads_cannot_starve_download_watch_or_reflection(
    held: ServerProcess,
) -> None:
    with held.channel() as ch:
        registry = registry_pb2_grpc.RegistryStub(ch)
        registry.CreateModel(
            registry_pb2.CreateModelRequest(name="silent-uploads", task=registry_pb2.REGRESSION),
            timeout=5,
        )
        metadata = registry_pb2.UploadVersionMetadata(model="silent-uploads")
        first = registry_pb2.UploadVersionRequest(metadata=metadata)
        chunk = registry_pb2.UploadVersionRequest(chunk=linear_model())
        registry.UploadVersion(iter([first, chunk]), timeout=10)
        silences = open_streams(ch, 50, silent_upload)
        wait_for(lambda: sum(s.call.done() for s in silences) == 46, "46 refusals")
        refused = [s.call for s in silences if s.call.done()]
        assert {f.code() for f in refused} == {grpc.StatusCode.RESOURCE_EXHAUSTED}
        everything_else_answers(ch)
        # DownloadVersion is a stream too: refused at once while the lane is full, not hung
        download = registry_pb2.DownloadVersionRequest(model="silent-uploads", version=1)
        err = error_of(lambda: list(registry.DownloadVersion(download, timeout=5)))
        assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "--max-concurrent-streams" in err.details()
        for s in silences:
            s.call.cancel()

        def downloads() -> bool:
            try:
                parts = list(registry.DownloadVersion(download, timeout=5))
            except grpc.RpcError as e:
                assert e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
                return False
            return b"".join(p.chunk for p in parts[1:]) == linear_model()

        wait_for(downloads, "DownloadVersion once the uploads are gone")
    assert held.faults() == []  # refused and cancelled streams are not server faults


def test_health_and_reflection_are_never_refused(held: ServerProcess) -> None:
    """Far more Watch streams and reflection calls than either limit allows all answer."""
    with held.channel() as ch:
        health = health_pb2_grpc.HealthStub(ch)
        watches = [health.Watch(health_pb2.HealthCheckRequest(), timeout=30) for _ in range(20)]
        assert [next(w).status for w in watches] == [SERVING] * 20
        for _ in range(10):
            assert "grpc.health.v1.Health" in reflection_lists_services(ch)
        everything_else_answers(ch)
        for w in watches:
            w.cancel()


def _silent_calls() -> dict[str, Callable[[grpc.Channel, Silence], Any]]:
    def predict(ch: grpc.Channel, s: Silence) -> Any:
        return list(inference_pb2_grpc.InferenceStub(ch).PredictStream(s, timeout=30))

    def write(ch: grpc.Channel, s: Silence) -> Any:
        return features_pb2_grpc.FeaturesStub(ch).WriteFeaturesStream(s, timeout=30)

    def upload(ch: grpc.Channel, s: Silence) -> Any:
        return registry_pb2_grpc.RegistryStub(ch).UploadVersion(s, timeout=30)

    def reflect(ch: grpc.Channel, s: Silence) -> Any:
        return list(
            reflection_pb2_grpc.ServerReflectionStub(ch).ServerReflectionInfo(s, timeout=30)
        )

    return {"PredictStream": predict, "WriteFeaturesStream": write, "UploadVersion": upload,
            "ServerReflectionInfo": reflect}  # fmt: skip


@pytest.mark.parametrize("rpc", sorted(_silent_calls()))
def test_a_stream_that_receives_nothing_ends_naming_the_idle_limit(
    idle: ServerProcess, rpc: str
) -> None:
    with idle.channel() as ch:
        silence = Silence()
        err = error_of(lambda: _silent_calls()[rpc](ch, silence))
        silence.release.set()
    assert err.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert err.details() == (
        "stream idle: waited 1 s for the client's next message (--stream-idle-seconds 1)"
    )


def test_a_stream_idles_between_messages_too(idle: ServerProcess) -> None:
    """Answered, then silent: the wait counts from the last message, and the answer arrived."""
    with idle.channel() as ch:
        silence = Silence(inference_pb2.PredictRequest(id="one", model="no-such-model"))
        call = inference_pb2_grpc.InferenceStub(ch).PredictStream(silence, timeout=30)
        assert next(call).id == "one"
        err = error_of(lambda: next(call))
        silence.release.set()
    assert err.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert "--stream-idle-seconds 1" in err.details()


def test_watch_never_idles(idle: ServerProcess) -> None:
    """Watch waits on nothing from its client: it stays open past the idle limit."""
    with idle.channel() as ch:
        health = health_pb2_grpc.HealthStub(ch)
        watch = health.Watch(health_pb2.HealthCheckRequest(), timeout=30)
        assert next(watch).status == SERVING
        silence = Silence()  # a silent stream opened after the Watch ends idle meanwhile
        error_of(lambda: list(inference_pb2_grpc.InferenceStub(ch).PredictStream(silence)))
        assert watch.is_active()
        watch.cancel()


def test_cancelled_and_idle_streams_leave_no_fault_in_the_log(idle: ServerProcess) -> None:
    with idle.channel() as ch:
        calls = []
        for i in range(3):
            silence = Silence(inference_pb2.PredictRequest(id=str(i), model="no-such-model"))
            call = inference_pb2_grpc.InferenceStub(ch).PredictStream(silence, timeout=30)
            assert next(call).id == str(i)
            calls.append((call, silence))
        metadata = registry_pb2.UploadVersionMetadata(model="no-such-model")
        upload = Silence(registry_pb2.UploadVersionRequest(metadata=metadata))
        future = registry_pb2_grpc.RegistryStub(ch).UploadVersion.future(upload, timeout=30)
        for call, silence in calls:
            call.cancel()
            silence.release.set()
        future.cancel()
        upload.release.set()
        everything_else_answers(ch)
        # every slot is free again (each cancelled stream has been handled): four new silent
        # streams are all admitted, and all end idle rather than refused
        wait_for(lambda: _all_four_admitted(ch), "the cancelled streams to be handled")
    assert idle.faults() == []


def _all_four_admitted(ch: grpc.Channel) -> bool:
    silences = open_streams(ch, 4, silent_predict_stream)
    codes = {s.call.code() for s in silences}  # each ends: refused at once, or idle after 1 s
    for s in silences:
        s.release.set()
    assert codes <= {grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.RESOURCE_EXHAUSTED}
    return codes == {grpc.StatusCode.DEADLINE_EXCEEDED}


def test_sigterm_ends_watch_and_waiting_streams_at_once_with_unavailable(server_factory) -> None:
    """With ten minutes of grace, a Watch and a stream waiting on its client end at once, the
    Watch after NOT_SERVING; the process exits 0 long before the grace is over."""
    proc = server_factory(*LIMITS, "--grace-seconds", "600")
    ch = proc.channel()
    watch = health_pb2_grpc.HealthStub(ch).Watch(health_pb2.HealthCheckRequest(), timeout=120)
    assert next(watch).status == SERVING
    silence = Silence(inference_pb2.PredictRequest(id="one", model="no-such-model"))
    stream = inference_pb2_grpc.InferenceStub(ch).PredictStream(silence, timeout=120)
    assert next(stream).id == "one"  # open, and now waiting on this client
    proc.proc.send_signal(15)
    assert next(watch).status == NOT_SERVING
    watch_end = error_of(lambda: next(watch))
    stream_end = error_of(lambda: next(stream))
    silence.release.set()
    assert (watch_end.code(), watch_end.details()) == (
        grpc.StatusCode.UNAVAILABLE,
        "server is shutting down",
    )
    assert stream_end.code() == grpc.StatusCode.UNAVAILABLE
    assert "shutting down" in stream_end.details()
    ch.close()
    assert proc.proc.wait(60) == 0  # not the 600 s of grace
    assert proc.faults() == []


def test_a_stream_still_busy_when_the_grace_is_over_ends_saying_so(server_factory) -> None:
    """A client that keeps its stream busy does not keep the server up past the grace, and
    its stream ends with UNAVAILABLE naming the grace rather than grpc's bare CANCELLED."""
    proc = server_factory("--grace-seconds", "1")
    ch = proc.channel()
    reflection = reflection_pb2_grpc.ServerReflectionStub(ch)
    stop = threading.Event()

    def busy() -> Iterator[reflection_pb2.ServerReflectionRequest]:
        while not stop.is_set():
            yield reflection_pb2.ServerReflectionRequest(list_services="")

    answers = reflection.ServerReflectionInfo(busy(), timeout=60)
    assert next(answers).list_services_response.service
    proc.proc.send_signal(15)
    err = error_of(lambda: [a for a in answers])  # answers keep coming until the grace is over
    stop.set()
    assert err.code() == grpc.StatusCode.UNAVAILABLE
    assert err.details() == "server is shutting down: the 1 s grace period is over"
    ch.close()
    assert proc.proc.wait(60) == 0
    assert proc.faults() == []

"""The real server process: health, reflection, errors, metrics, limits, shutdown."""

from __future__ import annotations

import queue
import re
import threading
import time
import urllib.request

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from llmopt.gen.llmopt.v1 import common_pb2, features_pb2, features_pb2_grpc, registry_pb2_grpc
from tests.support.grpcurl import grpcurl

SERVICES = [
    "inference.GRPCInferenceService",
    "llmopt.v1.Bandits",
    "llmopt.v1.Features",
    "llmopt.v1.Inference",
    "llmopt.v1.Registry",
]
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def feature_vector_request(**context) -> features_pb2.GetFeatureVectorRequest:
    return features_pb2.GetFeatureVectorRequest(context=common_pb2.RequestContext(**context))


@pytest.mark.parametrize("service", ["", *SERVICES])
def test_health_serving_for_every_service(channel, service):
    stub = health_pb2_grpc.HealthStub(channel)
    assert stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5).status == SERVING


def test_health_unknown_service_is_not_found(channel):
    stub = health_pb2_grpc.HealthStub(channel)
    with pytest.raises(grpc.RpcError) as err:
        stub.Check(health_pb2.HealthCheckRequest(service="nope.Service"), timeout=5)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


def test_health_watch_streams_the_current_status(channel):
    stub = health_pb2_grpc.HealthStub(channel)
    stream = stub.Watch(health_pb2.HealthCheckRequest(service="llmopt.v1.Bandits"), timeout=5)
    assert next(stream).status == SERVING
    stream.cancel()


def test_grpcurl_lists_every_service_through_reflection(server):
    out = grpcurl(server.address, "list")
    assert out.returncode == 0, out.stderr
    listed = set(out.stdout.split())
    assert set(SERVICES) <= listed
    assert {
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
    } <= listed


@pytest.mark.parametrize("service", SERVICES)
def test_grpcurl_describes_every_service(server, service):
    out = grpcurl(server.address, "describe", service)
    assert out.returncode == 0, out.stderr
    assert f"{service} is a service" in out.stdout


def test_grpcurl_calls_a_method_without_proto_files(server):
    out = grpcurl(
        server.address,
        "llmopt.v1.Features/GetFeatureVector",
        data={"context": {"task_type": "summarization", "hour_of_day": 0, "day_of_week": 0}},
    )
    assert out.returncode == 0, out.stderr
    assert '"bias"' in out.stdout


def test_reflection_v1_answers_like_v1alpha(channel):
    from llmopt.gen.grpc.reflection.v1 import reflection_pb2 as v1_pb2
    from llmopt.gen.grpc.reflection.v1 import reflection_pb2_grpc as v1_grpc

    v1 = v1_grpc.ServerReflectionStub(channel)
    alpha = reflection_pb2_grpc.ServerReflectionStub(channel)
    v1_names = {
        s.name
        for r in v1.ServerReflectionInfo(iter([v1_pb2.ServerReflectionRequest(list_services="")]))
        for s in r.list_services_response.service
    }
    alpha_names = {
        s.name
        for r in alpha.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")])
        )
        for s in r.list_services_response.service
    }
    assert v1_names == alpha_names
    assert set(SERVICES) <= v1_names


def test_domain_error_maps_to_its_code_and_names_the_field(channel):
    stub = features_pb2_grpc.FeaturesStub(channel)
    with pytest.raises(grpc.RpcError) as err:
        stub.GetFeatureVector(feature_vector_request(priority=42), timeout=5)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "context.priority" in err.value.details() and "42" in err.value.details()


@pytest.mark.parametrize(
    "method", ["/llmopt.v1.Features/GetFeatureVector", "/llmopt.v1.Registry/GetModel"]
)
def test_garbage_bytes_are_refused_and_the_server_keeps_serving(channel, method):
    raw = channel.unary_unary(method)  # no serializers: send raw bytes
    with pytest.raises(grpc.RpcError) as err:
        raw(b"\xff\xff\xff\xff\x0f garbage that is not protobuf", timeout=5)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "not a valid message" in err.value.details()
    stub = features_pb2_grpc.FeaturesStub(channel)
    assert len(stub.GetFeatureVector(feature_vector_request(), timeout=5).values) == 10


def test_unknown_method_is_unimplemented(channel):
    with pytest.raises(grpc.RpcError) as err:
        channel.unary_unary("/llmopt.v1.Nope/Nothing")(b"", timeout=5)
    assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED


def _metric(text: str, method: str, code: str) -> float:
    pattern = rf'llmopt_rpc_total\{{code="{code}",method="{re.escape(method)}"\}} (\S+)'
    match = re.search(pattern, text)
    return float(match.group(1)) if match else 0.0


def test_metrics_count_per_method_and_code(server_factory):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = server_factory("--metrics-port", str(port))
    url = f"http://127.0.0.1:{port}/metrics"
    method = "/llmopt.v1.Features/GetFeatureVector"
    before = urllib.request.urlopen(url, timeout=5).read().decode()
    with proc.channel() as ch:
        stub = features_pb2_grpc.FeaturesStub(ch)
        for _ in range(3):
            stub.GetFeatureVector(feature_vector_request(), timeout=5)
        with pytest.raises(grpc.RpcError):
            stub.GetFeatureVector(feature_vector_request(priority=99), timeout=5)
    after = urllib.request.urlopen(url, timeout=5).read().decode()
    assert _metric(after, method, "OK") - _metric(before, method, "OK") == 3
    assert (
        _metric(after, method, "INVALID_ARGUMENT") - _metric(before, method, "INVALID_ARGUMENT")
        == 1
    )
    assert "llmopt_rpc_duration_seconds_bucket" in after


def test_watch_streams_do_not_count_against_the_unary_limit(server_factory):
    """grpc's own limit counted open Watch streams: two of them refused every other RPC."""
    proc = server_factory("--max-concurrent-rpcs", "2")
    with proc.channel() as ch:
        health = health_pb2_grpc.HealthStub(ch)
        watches = [health.Watch(health_pb2.HealthCheckRequest(), timeout=30) for _ in range(5)]
        for w in watches:
            assert next(w).status == SERVING
        stub = features_pb2_grpc.FeaturesStub(ch)
        for _ in range(5):
            assert len(stub.GetFeatureVector(feature_vector_request(), timeout=5).values) == 10
            assert health.Check(health_pb2.HealthCheckRequest(), timeout=5).status == SERVING
        for w in watches:
            w.cancel()


def test_sigterm_lets_a_busy_stream_finish_refuses_new_rpcs_and_exits_0(server_factory):
    """A stream whose client keeps it busy drains like an in-flight unary call (a stream that
    waits on its client ends at once instead: tests/integration/test_streams.py)."""
    from grpc_reflection.v1alpha import reflection_pb2 as r_pb2

    proc = server_factory("--grace-seconds", "20")
    ch = proc.channel()
    ask: queue.Queue = queue.Queue()

    def request_stream():
        while (request := ask.get(timeout=30)) is not None:
            yield request

    stub = reflection_pb2_grpc.ServerReflectionStub(ch)
    responses = stub.ServerReflectionInfo(request_stream(), timeout=60)

    def busy() -> None:  # one more request and its answer: the stream never waits on us long
        ask.put(r_pb2.ServerReflectionRequest(file_containing_symbol="llmopt.v1.Registry"))
        assert next(responses).file_descriptor_response.file_descriptor_proto

    busy()  # the stream is now in flight
    fresh = grpc.insecure_channel(proc.address)
    health = health_pb2_grpc.HealthStub(fresh)
    assert health.Check(health_pb2.HealthCheckRequest(), timeout=3).status == SERVING
    busy()
    proc.proc.send_signal(15)  # SIGTERM
    deadline = time.monotonic() + 10
    while health.Check(health_pb2.HealthCheckRequest(), timeout=3).status != NOT_SERVING:
        busy()
        assert time.monotonic() < deadline
    for service in SERVICES:  # every status turned NOT_SERVING
        busy()
        status = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=3).status
        assert status == NOT_SERVING
    busy()
    with pytest.raises(grpc.RpcError) as err:  # new RPCs are refused while the stream drains
        features_pb2_grpc.FeaturesStub(fresh).GetFeatureVector(feature_vector_request(), timeout=3)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    fresh.close()
    for _ in range(20):  # the busy stream goes on answering while the server drains
        busy()
    assert proc.proc.poll() is None  # still draining: the stream holds it open
    ask.put(None)
    assert list(responses) == []
    ch.close()
    assert proc.proc.wait(30) == 0
    assert "stopped" in proc.log()


def test_sigterm_under_load_cuts_no_rpc_midway(server_factory):
    proc = server_factory()
    outcomes: dict[str, int] = {}
    lock = threading.Lock()
    stop = threading.Event()

    def load():
        with grpc.insecure_channel(proc.address) as ch:
            stub = features_pb2_grpc.FeaturesStub(ch)
            while not stop.is_set():
                try:
                    stub.GetFeatureVector(feature_vector_request(input_length=10), timeout=10)
                    key = "OK"
                except grpc.RpcError as err:
                    key = err.code().name
                with lock:
                    outcomes[key] = outcomes.get(key, 0) + 1
                if key != "OK":
                    return  # refused: a well-behaved client goes elsewhere

    threads = [threading.Thread(target=load) for _ in range(8)]
    for t in threads:
        t.start()
    time.sleep(1.0)
    assert proc.terminate(timeout=30) == 0
    for t in threads:
        t.join(30)
    assert outcomes.get("UNAVAILABLE", 0) == len(threads)  # each was refused cleanly in the end
    stop.set()
    for t in threads:
        t.join(30)
    assert outcomes.get("OK", 0) > 0
    # Refused before they started (UNAVAILABLE) is fine; cut off mid-way (CANCELLED etc.) is not.
    assert set(outcomes) <= {"OK", "UNAVAILABLE"}, outcomes


def test_a_second_server_on_the_same_data_dir_refuses_to_start(server, server_factory):
    proc = server_factory(data_dir=server.data_dir, start=False)
    with pytest.raises(RuntimeError, match="in use by another"):
        proc.start(timeout=30)


def test_port_in_use_is_a_clear_error(server, server_factory, tmp_path):
    port = server.address.rsplit(":", 1)[1]
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-m", "llmopt", "--port", port, "--data-dir", str(tmp_path / "p")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 1
    assert "cannot listen on" in out.stderr


def test_json_logs_are_one_object_per_line(server_factory):
    import json

    proc = server_factory("--log-format", "json")
    assert proc.terminate() == 0
    lines = [json.loads(line) for line in proc.log().splitlines() if line.strip()]
    assert any("listening on" in entry["message"] for entry in lines)
    assert all({"time", "level", "logger", "message"} <= entry.keys() for entry in lines)


def test_registry_unimplemented_call_through_stub_keeps_channel_usable(channel):
    from llmopt.gen.llmopt.v1 import registry_pb2

    stub = registry_pb2_grpc.RegistryStub(channel)
    try:
        stub.GetModel(registry_pb2.GetModelRequest(name="nope"), timeout=5)
    except grpc.RpcError as err:
        assert err.code() in (grpc.StatusCode.UNIMPLEMENTED, grpc.StatusCode.NOT_FOUND)
    health = health_pb2_grpc.HealthStub(channel)
    assert health.Check(health_pb2.HealthCheckRequest(), timeout=5).status == SERVING


def test_open_streams_cannot_starve_unary_calls(server_factory):
    """Streams run on pools of their own: with one unary thread, three open health Watch streams
    and a held reflection stream still leave unary calls answering (one shared pool would hang)."""
    from grpc_reflection.v1alpha import reflection_pb2 as r_pb2

    proc = server_factory("--workers", "1", "--max-concurrent-streams", "8")
    ch = proc.channel()
    health = health_pb2_grpc.HealthStub(ch)
    watches = [health.Watch(health_pb2.HealthCheckRequest(), timeout=60) for _ in range(3)]
    for w in watches:  # each Watch is open and holds a thread
        assert next(w).status == health_pb2.HealthCheckResponse.SERVING
    release = threading.Event()

    def held_requests():
        yield r_pb2.ServerReflectionRequest(list_services="")
        release.wait(30)

    reflection = reflection_pb2_grpc.ServerReflectionStub(ch).ServerReflectionInfo(
        held_requests(), timeout=60
    )
    assert next(reflection).list_services_response.service
    for _ in range(20):  # unary calls, one thread for them, still answered at once
        vector = features_pb2_grpc.FeaturesStub(ch).GetFeatureVector(
            feature_vector_request(), timeout=5
        )
        assert len(vector.values) == 10
        status = health.Check(health_pb2.HealthCheckRequest(), timeout=5).status
        assert status == health_pb2.HealthCheckResponse.SERVING
    release.set()
    assert list(reflection) == []
    for w in watches:
        w.cancel()
    ch.close()

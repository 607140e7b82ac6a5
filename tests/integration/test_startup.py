"""Start-up, in-process: NOT_SERVING (domain RPCs refused) until every component is warm."""

from __future__ import annotations

import threading
import urllib.error
import urllib.request

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from llmopt.app import create_app
from llmopt.config import Settings
from llmopt.gen.llmopt.v1 import common_pb2, features_pb2, features_pb2_grpc
from tests.support.server import free_port


class SlowComponent:
    def __init__(self) -> None:
        self.release = threading.Event()
        self.warming = threading.Event()
        self.closed = False

    def warm_up(self) -> None:
        self.warming.set()
        assert self.release.wait(30)

    def close(self) -> None:
        self.closed = True


def http_status(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def test_not_serving_until_components_are_warm(tmp_path):
    port = free_port()
    app = create_app(Settings(port=0, data_dir=tmp_path / "data", metrics_port=port))
    slow = SlowComponent()
    app.context.components.append(slow)
    starter = threading.Thread(target=app.start)
    starter.start()
    try:
        assert slow.warming.wait(30)
        with grpc.insecure_channel(app.address) as ch:
            health = health_pb2_grpc.HealthStub(ch)
            for service in ["", *app.service_names]:
                status = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
                assert status.status == health_pb2.HealthCheckResponse.NOT_SERVING
            features = features_pb2_grpc.FeaturesStub(ch)
            request = features_pb2.GetFeatureVectorRequest(context=common_pb2.RequestContext())
            with pytest.raises(grpc.RpcError) as err:
                features.GetFeatureVector(request, timeout=5)
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE
            # the HTTP probes: alive, not ready, and saying which services are not serving
            assert http_status(f"http://127.0.0.1:{port}/livez") == (200, "ok\n")
            status, body = http_status(f"http://127.0.0.1:{port}/readyz")
            assert status == 503
            assert body.startswith("not ready: (server) NOT_SERVING, ")
            assert all(f"{name} NOT_SERVING" in body for name in app.service_names)
            slow.release.set()
            starter.join(30)
            assert http_status(f"http://127.0.0.1:{port}/readyz") == (200, "ready\n")
            assert health.Check(health_pb2.HealthCheckRequest(), timeout=5).status == (
                health_pb2.HealthCheckResponse.SERVING
            )
            assert len(features.GetFeatureVector(request, timeout=5).values) == 10
    finally:
        slow.release.set()
        starter.join(30)
        app.stop(grace=1)
    assert slow.closed

"""Probes of the real server: gRPC health (Check, List) and the HTTP port's /metrics, /livez,
/readyz (and 404 elsewhere, so that a probe of a wrong path fails)."""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Iterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.support.server import ServerProcess, free_port

pytestmark = pytest.mark.integration

SERVICES = [
    "",
    "inference.GRPCInferenceService",
    "llmopt.v1.Audit",
    "llmopt.v1.Bandits",
    "llmopt.v1.Features",
    "llmopt.v1.Inference",
    "llmopt.v1.Registry",
    "llmopt.v1.Tuning",
]
SERVING = health_pb2.HealthCheckResponse.SERVING


@pytest.fixture(scope="module")
def probed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, int]]:
    port = free_port()
    proc = ServerProcess(tmp_path_factory.mktemp("probes") / "data", ["--metrics-port", str(port)])
    yield proc.start(), port
    proc.stop()


def get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def test_health_list_names_every_service_serving(probed: tuple[ServerProcess, int]) -> None:
    proc, _ = probed
    with proc.channel() as ch:
        listed = health_pb2_grpc.HealthStub(ch).List(health_pb2.HealthListRequest(), timeout=5)
    assert {name: s.status for name, s in listed.statuses.items()} == dict.fromkeys(
        SERVICES, SERVING
    )


def test_check_of_an_unknown_service_names_the_services_there_are(
    probed: tuple[ServerProcess, int],
) -> None:
    proc, _ = probed
    with proc.channel() as ch, pytest.raises(grpc.RpcError) as err:
        health_pb2_grpc.HealthStub(ch).Check(
            health_pb2.HealthCheckRequest(service="nope.Service"), timeout=5
        )
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    details = err.value.details()
    assert details.startswith("service: 'nope.Service' is not served here; the services are ")
    for name in SERVICES:
        assert repr(name) in details


def test_metrics_livez_and_readyz_answer_on_their_paths(probed: tuple[ServerProcess, int]) -> None:
    proc, port = probed
    with proc.channel() as ch:  # one RPC, so that the metrics text has a sample
        health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=5)
    status, text = get(port, "/metrics")
    assert status == 200
    assert 'llmopt_rpc_total{code="OK",method="/grpc.health.v1.Health/Check"}' in text
    assert get(port, "/livez") == (200, "ok\n")
    assert get(port, "/readyz") == (200, "ready\n")


@pytest.mark.parametrize("path", ["/", "/healthz", "/health", "/ready", "/metricsx", "/livez/x"])
def test_every_other_path_is_404(probed: tuple[ServerProcess, int], path: str) -> None:
    _, port = probed
    status, text = get(port, path)
    assert status == 404
    assert "/metrics, /livez, /readyz" in text

"""Builds the gRPC server: servicers, health, reflection, interceptor, metrics.

``create_app`` builds everything and binds the port (port 0 picks a free one) without starting;
``App.start`` starts serving and flips health to SERVING once every component is warm;
``App.stop`` drains. Tests and ``server.__main__`` share this code.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from prometheus_client import CollectorRegistry

from server import __version__
from server.api.features import FeaturesServicer
from server.api.interceptor import ServingInterceptor
from server.config import Settings
from server.gen.inference import grpc_service_pb2, grpc_service_pb2_grpc
from server.gen.llmopt.v1 import (
    bandits_pb2,
    bandits_pb2_grpc,
    features_pb2,
    features_pb2_grpc,
    inference_pb2,
    inference_pb2_grpc,
    registry_pb2,
    registry_pb2_grpc,
)
from server.metrics import MetricsHttpServer, RpcMetrics
from server.reflection import enable_reflection
from server.storage import DataDir

log = logging.getLogger("llmopt.server")

MIB = 1024 * 1024


class Component(Protocol):
    """A domain part the server owns: warmed before SERVING, closed after draining."""

    def warm_up(self) -> None: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class ServiceBinding:
    name: str
    add_to_server: Callable[[Any, grpc.Server], None]
    servicer: Any


def _service_name(pb2_module: Any, service: str) -> str:
    return pb2_module.DESCRIPTOR.services_by_name[service].full_name


class App:
    """One server process's gRPC server and the components behind it."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._ready = threading.Event()
        self._stopped = False
        self.data_dir = DataDir(settings.data_dir)
        self.components: list[Component] = []
        try:
            self.metrics_registry = CollectorRegistry()
            self.metrics = RpcMetrics(self.metrics_registry)
            self._executor = ThreadPoolExecutor(settings.workers, thread_name_prefix="rpc")
            self.server = grpc.server(
                self._executor,
                interceptors=[ServingInterceptor(self.metrics, self._ready.is_set)],
                maximum_concurrent_rpcs=settings.max_concurrent_rpcs,
                options=[
                    ("grpc.max_send_message_length", settings.max_message_mb * MIB),
                    ("grpc.max_receive_message_length", settings.max_message_mb * MIB),
                    # Without this a second server could bind the same port and steal traffic.
                    ("grpc.so_reuseport", 0),
                ],
            )
            self.health = health.HealthServicer(experimental_non_blocking=True)
            health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
            self.bindings = self._bindings()
            for binding in self.bindings:
                binding.add_to_server(binding.servicer, self.server)
            self.service_names = [b.name for b in self.bindings]
            for name in ["", *self.service_names]:
                self.health.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
            enable_reflection(self.server, [*self.service_names, health.SERVICE_NAME])
            try:
                self.port = self.server.add_insecure_port(settings.address)
            except RuntimeError as exc:
                raise OSError(f"cannot listen on {settings.address}: {exc}") from None
            if self.port == 0:
                raise OSError(f"cannot listen on {settings.address} (address in use or invalid)")
        except BaseException:
            self.data_dir.close()
            raise
        self.metrics_http: MetricsHttpServer | None = None

    def _bindings(self) -> list[ServiceBinding]:
        """Every service on the port. Servicers not built yet are the generated bases:
        their RPCs answer UNIMPLEMENTED through the interceptor."""
        return [
            ServiceBinding(
                _service_name(registry_pb2, "Registry"),
                registry_pb2_grpc.add_RegistryServicer_to_server,
                registry_pb2_grpc.RegistryServicer(),
            ),
            ServiceBinding(
                _service_name(inference_pb2, "Inference"),
                inference_pb2_grpc.add_InferenceServicer_to_server,
                inference_pb2_grpc.InferenceServicer(),
            ),
            ServiceBinding(
                _service_name(bandits_pb2, "Bandits"),
                bandits_pb2_grpc.add_BanditsServicer_to_server,
                bandits_pb2_grpc.BanditsServicer(),
            ),
            ServiceBinding(
                _service_name(features_pb2, "Features"),
                features_pb2_grpc.add_FeaturesServicer_to_server,
                FeaturesServicer(),
            ),
            ServiceBinding(
                _service_name(grpc_service_pb2, "GRPCInferenceService"),
                grpc_service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server,
                grpc_service_pb2_grpc.GRPCInferenceServiceServicer(),
            ),
        ]

    @property
    def address(self) -> str:
        host = self.settings.address.rsplit(":", 1)[0]
        return f"{host}:{self.port}"

    def start(self) -> None:
        """Listen, warm every component, then report SERVING for "" and every service."""
        self.server.start()
        if self.settings.metrics_port:
            self.metrics_http = MetricsHttpServer(
                self.metrics_registry, self.settings.host, self.settings.metrics_port
            )
            log.info("metrics on http://%s:%d/metrics", self.settings.host, self.metrics_http.port)
        for component in self.components:
            component.warm_up()
        self._ready.set()
        for name in ["", *self.service_names]:
            self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        log.info("llmopt-server %s serving on %s (data dir %s)", __version__, self.address,
                 self.data_dir.root)

    def stop(self, grace: float | None = None) -> None:
        """NOT_SERVING at once, refuse new RPCs, let in-flight ones finish, close the stores."""
        if self._stopped:
            return
        self._stopped = True
        grace = self.settings.grace_seconds if grace is None else grace
        self._ready.clear()
        self.health.enter_graceful_shutdown()
        log.info("draining: in-flight RPCs have %.1f s to finish", grace)
        self.server.stop(grace).wait()
        self._executor.shutdown(wait=True)
        for component in reversed(self.components):
            try:
                component.close()
            except Exception:
                log.exception("closing %s failed", type(component).__name__)
        if self.metrics_http is not None:
            self.metrics_http.close()
        self.data_dir.close()
        log.info("stopped")


def create_app(settings: Settings) -> App:
    """Build the server bound to ``settings.address`` (port 0: a free port, see ``App.port``)."""
    return App(settings)

"""Builds the gRPC server: servicers, health, reflection, interceptor, metrics.

The stores and domain services come from the composition root (``llmopt.composition.compose``);
each service module in ``llmopt.api`` only binds its service to a servicer.
``create_app`` builds everything and binds the port (port 0 picks a free one) without starting;
``App.start`` starts serving and flips health to SERVING once every component is warm;
``App.stop`` drains. Where each RPC runs, the limits on RPCs and streams, and idle streams are the
interceptor's (``llmopt.api.interceptor``), and so are authentication, authorization and the
audit record of admin RPCs. With ``--tls-cert``/``--tls-key`` the port speaks TLS only
(``ReloadingCertificates``: files re-read when they change; ``--tls-client-ca``: mTLS).
Tests and ``llmopt.__main__`` share this code.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from prometheus_client import CollectorRegistry

from llmopt import __version__, errors
from llmopt.api import audit as audit_api
from llmopt.api import bandits as bandits_api
from llmopt.api import features as features_api
from llmopt.api import inference as inference_api
from llmopt.api import oip as oip_api
from llmopt.api import registry as registry_api
from llmopt.api import tuning as tuning_api
from llmopt.api.interceptor import Lanes, ServingInterceptor
from llmopt.composition import compose
from llmopt.config import Settings, SettingsError, tune_gc
from llmopt.demo import seed_demo
from llmopt.metrics import MetricsHttpServer, RpcMetrics
from llmopt.reflection import enable_reflection
from llmopt.security import Authenticator
from llmopt.storage import DataDir

log = logging.getLogger("llmopt.server")

MIB = 1024 * 1024
# After SIGTERM, how long new RPCs keep getting a clean UNAVAILABLE before the listener closes,
# so that clients and load balancers that saw NOT_SERVING have moved away.
DRAIN_SETTLE_SECONDS = 0.5


# The services the server registers, in this order (health and reflection list them so).
SERVICE_MODULES = (
    registry_api,
    features_api,
    bandits_api,
    inference_api,
    oip_api,
    audit_api,
    tuning_api,
)
SERVING = health_pb2.HealthCheckResponse.SERVING


class HealthService(health.HealthServicer):
    """grpcio-health-checking's servicer (Check, Watch, graceful shutdown), plus ``List`` (its
    1.85 declares it but answers UNIMPLEMENTED) and a Check of an unknown service that names
    the services there are. The statuses are kept here too, as ``set`` records them, so that
    nothing reads the base class's private state."""

    def __init__(self) -> None:
        super().__init__(experimental_non_blocking=True)
        self._statuses: dict[str, int] = {health.OVERALL_HEALTH: SERVING}
        self._statuses_lock = threading.Lock()
        self._final = False

    def set(self, service: str, status: int) -> None:
        with self._statuses_lock:
            if not self._final:
                self._statuses[service] = status
        super().set(service, status)

    def enter_graceful_shutdown(self) -> None:
        with self._statuses_lock:
            self._statuses = dict.fromkeys(
                self._statuses, health_pb2.HealthCheckResponse.NOT_SERVING
            )
            self._final = True
        super().enter_graceful_shutdown()

    def statuses(self) -> dict[str, int]:
        """Every service's status now ("" is the server as a whole)."""
        with self._statuses_lock:
            return dict(self._statuses)

    def not_serving(self) -> dict[str, str]:
        """The services that are not SERVING now, with their status's name."""
        name = health_pb2.HealthCheckResponse.ServingStatus.Name
        return {s: name(v) for s, v in self.statuses().items() if v != SERVING}

    def Check(self, request, context):  # type: ignore[no-untyped-def]
        status = self.statuses().get(request.service)
        if status is None:
            known = ", ".join(repr(s) for s in self.statuses())
            raise errors.NotFound(
                f"service: {request.service!r} is not served here; the services are {known}"
            )
        return health_pb2.HealthCheckResponse(status=status)

    def List(self, request, context):  # type: ignore[no-untyped-def]
        return health_pb2.HealthListResponse(
            statuses={
                service: health_pb2.HealthCheckResponse(status=status)
                for service, status in self.statuses().items()
            }
        )


class ReloadingCertificates:
    """The server's TLS credentials, re-read when the certificate, key or client CA file changes.

    grpc asks ``fetch`` at each new TLS handshake (``grpc.dynamic_ssl_server_credentials``); it
    answers None (keep the current pair) unless a file's mtime or size changed, and then the new
    pair. Connections already open keep theirs, so RPCs in progress are never dropped. A pair
    caught half-written (unreadable, or a key that is not the certificate's) is not taken: the
    current one stays until the files are consistent again.
    """

    def __init__(self, cert: Path, key: Path, client_ca: Path | None = None) -> None:
        self.cert, self.key, self.client_ca = cert, key, client_ca
        self._lock = threading.Lock()
        self._seen = self._stamp()
        self._rejected: tuple[tuple[int, int], ...] | None = None
        problem, config = self._load()
        if config is None:
            raise SettingsError(problem)
        self._initial = config

    @property
    def files(self) -> tuple[Path, ...]:
        return (self.cert, self.key, *([self.client_ca] if self.client_ca else []))

    def credentials(self) -> grpc.ServerCredentials:
        return grpc.dynamic_ssl_server_credentials(
            self._initial,
            self.fetch,
            require_client_authentication=self.client_ca is not None,
        )

    def _stamp(self) -> tuple[tuple[int, int], ...]:
        stamps = []
        for path in self.files:
            try:
                st = os.stat(path)
                stamps.append((st.st_mtime_ns, st.st_size))
            except OSError:
                stamps.append((-1, -1))
        return tuple(stamps)

    def fetch(self) -> object | None:
        """The new certificate configuration when the files changed; None to keep the current."""
        stamp = self._stamp()
        if stamp == self._seen:
            return None
        with self._lock:
            if stamp == self._seen or stamp == self._rejected:
                return None
            problem, config = self._load()
            if config is None:
                self._rejected = stamp
                log.warning(
                    "TLS files changed but cannot be used yet (%s); keeping the current "
                    "certificate",
                    problem,
                )
                return None
            self._seen, self._rejected = stamp, None
        log.info("TLS certificate reloaded from %s", self.cert)
        return config

    def _load(self) -> tuple[str, object | None]:
        """(problem, None) or ("", the configuration) from the files as they are now."""
        try:
            cert, key = self.cert.read_bytes(), self.key.read_bytes()
            ca = self.client_ca.read_bytes() if self.client_ca else None
        except OSError as exc:
            return f"cannot read {exc.filename}: {exc.strerror}", None
        problem = _pair_problem(cert, key, self.cert, self.key)
        if problem:
            return problem, None
        return "", grpc.ssl_server_certificate_configuration([(key, cert)], root_certificates=ca)


def _pair_problem(cert_pem: bytes, key_pem: bytes, cert_path: Path, key_path: Path) -> str:
    """Why the certificate and key cannot serve together, "" when they can."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    try:
        cert = x509.load_pem_x509_certificates(cert_pem)[0]
    except ValueError as exc:
        return f"{cert_path}: not a PEM certificate ({exc})"
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError) as exc:
        return f"{key_path}: not an unencrypted PEM private key ({exc})"
    public = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    if cert.public_key().public_bytes(*public) != key.public_key().public_bytes(*public):
        return f"{key_path} is not the key of the certificate in {cert_path}"
    return ""


class App:
    """One server process's gRPC server and the components behind it."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._ready = threading.Event()
        self._stopped = False
        # Auth and TLS files first: a bad one stops the start before any store is opened.
        # Raises llmopt.security.AuthConfigError (exit 2 in __main__).
        self.authenticator = Authenticator.from_files(
            settings.auth_tokens,
            settings.auth_jwt_key,
            settings.auth_jwt_issuer,
            settings.auth_jwt_audience,
        )
        self.certificates: ReloadingCertificates | None = None
        if settings.tls_cert is not None and settings.tls_key is not None:
            self.certificates = ReloadingCertificates(
                settings.tls_cert, settings.tls_key, settings.tls_client_ca
            )
        self.data_dir = DataDir(settings.data_dir)
        try:
            self.context = compose(settings, self.data_dir)
        except BaseException:
            self.data_dir.close()
            raise
        try:
            self.metrics_registry = CollectorRegistry()
            self.metrics = RpcMetrics(self.metrics_registry)
            # Unary calls run on a few threads (see ``--workers``); each stream on a thread of
            # its own; health and reflection apart from both (``Lanes``). The interceptor
            # enforces both limits, not grpc's ``maximum_concurrent_rpcs``, which would refuse
            # health checks too.
            self.lanes = Lanes.create(
                settings.workers, settings.max_concurrent_rpcs, settings.max_concurrent_streams
            )
            self._interceptor = ServingInterceptor(
                self.metrics,
                self._ready.is_set,
                lanes=self.lanes,
                stream_idle_seconds=settings.stream_idle_seconds,
                authenticator=self.authenticator,
                audit=getattr(self.context.services, "audit", None),
                reflection_auth=settings.reflection == "auth",
            )
            self.server = grpc.server(
                self.lanes.unary.pool,
                interceptors=[self._interceptor],
                options=[
                    ("grpc.max_send_message_length", settings.max_message_mb * MIB),
                    ("grpc.max_receive_message_length", settings.max_message_mb * MIB),
                    # Without this a second server could bind the same port and steal traffic.
                    ("grpc.so_reuseport", 0),
                ],
            )
            self.health = HealthService()
            health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
            self.bindings = [module.bind(self.context.services) for module in SERVICE_MODULES]
            for binding in self.bindings:
                binding.add_to_server(binding.servicer, self.server)
            self.service_names = [b.name for b in self.bindings]
            for name in ["", *self.service_names]:
                self.health.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
            if settings.reflection != "off":
                enable_reflection(self.server, [*self.service_names, health.SERVICE_NAME])
            try:
                if self.certificates is not None:
                    self.port = self.server.add_secure_port(
                        settings.address, self.certificates.credentials()
                    )
                else:
                    self.port = self.server.add_insecure_port(settings.address)
            except RuntimeError as exc:
                raise OSError(f"cannot listen on {settings.address}: {exc}") from None
            if self.port == 0:
                raise OSError(f"cannot listen on {settings.address} (address in use or invalid)")
        except BaseException:
            if hasattr(self, "_interceptor"):
                self._interceptor.close()
            self.context.close()
            self.data_dir.close()
            raise
        self.metrics_http: MetricsHttpServer | None = None

    @property
    def address(self) -> str:
        host = self.settings.address.rsplit(":", 1)[0]
        return f"{host}:{self.port}"

    def start(self) -> None:
        """Listen, warm every component, then report SERVING for "" and every service."""
        self.server.start()
        self._warn_if_exposed()
        if self.certificates is not None:
            mode = "mTLS" if self.settings.tls_client_ca else "TLS"
            log.info("%s with certificate %s", mode, self.settings.tls_cert)
        log.info("listening on %s", self.address)
        if self.settings.metrics_port:
            self.metrics_http = MetricsHttpServer(
                self.metrics_registry,
                self.settings.host,
                self.settings.metrics_port,
                not_ready=self.health.not_serving,
            )
            log.info(
                "metrics and probes on http://%s:%d (/metrics, /livez, /readyz)",
                self.settings.host,
                self.metrics_http.port,
            )
        for component in self.context.components:
            component.warm_up()
        if self.settings.demo:
            seed_demo(self.context)
        tune_gc(self.settings)
        self._ready.set()
        for name in ["", *self.service_names]:
            self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        log.info(
            "llmopt-server %s serving on %s (data dir %s)",
            __version__,
            self.address,
            self.data_dir.root,
        )

    def _warn_if_exposed(self) -> None:
        """A loud warning when other machines can reach a port without TLS or without auth."""
        if self.settings.loopback:
            return
        missing = [
            *([] if self.certificates else ["TLS (--tls-cert, --tls-key): traffic is plaintext"]),
            *(
                []
                if self.authenticator
                else [
                    "auth (--auth-tokens, --auth-jwt-key): anyone who reaches the port can call "
                    "every RPC, DeleteModel and Promote included"
                ]
            ),
        ]
        for what in missing:
            log.warning(
                "SECURITY WARNING: serving on non-loopback address %s without %s",
                self.settings.host,
                what,
            )

    def stop(self, grace: float | None = None) -> None:
        """NOT_SERVING at once, refuse new RPCs, let in-flight ones finish, close the stores.

        Health ``Watch`` streams see NOT_SERVING, then end with UNAVAILABLE at once; a stream
        waiting on its client ends with UNAVAILABLE too (see ``ServingInterceptor.begin_drain``);
        unary calls and streams busy with a message get up to ``grace`` seconds to finish.
        """
        if self._stopped:
            return
        self._stopped = True
        grace = self.settings.grace_seconds if grace is None else grace
        deadline = time.monotonic() + grace
        self._ready.clear()
        self.health.enter_graceful_shutdown()
        self._interceptor.begin_drain()
        log.info("draining: in-flight RPCs have %.1f s to finish", grace)
        # First let the domain RPCs in progress finish while the server still answers new ones
        # (UNAVAILABLE, through the interceptor): grpc's own stop() cancels calls that reached
        # the server but were not yet handed to a thread, and a client cannot tell those apart
        # from calls cut off mid-way.
        if not self._interceptor.wait_idle(grace):
            # Streams still busy when the grace is over end with a status that says why,
            # rather than the bare CANCELLED of grpc's stop().
            self._interceptor.streams.end_all(
                errors.Unavailable(f"server is shutting down: the {grace:g} s grace period is over")
            )
        time.sleep(min(DRAIN_SETTLE_SECONDS, max(0.0, deadline - time.monotonic())))
        stopped = self.server.stop(max(0.0, deadline - time.monotonic())).wait(grace + 5.0)
        if not stopped:  # a call grpc never finished: exit anyway rather than hang on SIGTERM
            log.error("grpc did not finish stopping within %.1f s; closing anyway", grace + 5.0)
        self._interceptor.close()
        self.lanes.shutdown(wait=stopped)
        self.context.close()
        if self.metrics_http is not None:
            self.metrics_http.close()
        self.data_dir.close()
        log.info("stopped")


def create_app(settings: Settings) -> App:
    """Build the server bound to ``settings.address`` (port 0: a free port, see ``App.port``)."""
    return App(settings)

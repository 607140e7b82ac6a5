"""Prometheus metrics: per-RPC counters and latency histograms, served on --metrics-port."""

from __future__ import annotations

import threading
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server

# Fine at the low end: most RPCs here take tens of microseconds to a few milliseconds.
LATENCY_BUCKETS = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)


class RpcMetrics:
    """Counts RPCs by method and status code and records their latency."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self._calls = Counter(
            "llmopt_rpc_total",
            "RPCs handled, by full method name and status code",
            ["method", "code"],
            registry=registry,
        )
        self._latency = Histogram(
            "llmopt_rpc_duration_seconds",
            "RPC handling time in seconds, by full method name",
            ["method"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        # labels() parses kwargs and locks each call; the children never change, so keep them.
        self._children: dict[tuple[str, str], tuple[Any, Any]] = {}
        self._lock = threading.Lock()

    def observe(self, method: str, code: str, seconds: float) -> None:
        key = (method, code)
        children = self._children.get(key)
        if children is None:
            with self._lock:
                children = (self._calls.labels(method, code), self._latency.labels(method))
                self._children[key] = children
        children[0].inc()
        children[1].observe(seconds)


class MetricsHttpServer:
    """``GET /metrics`` in Prometheus text format on its own port (prometheus-client's server)."""

    def __init__(self, registry: CollectorRegistry, host: str, port: int) -> None:
        self._httpd, self._thread = start_http_server(port, addr=host, registry=registry)
        self.port: int = self._httpd.server_port

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

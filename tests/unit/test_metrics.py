"""RPC metrics: per-thread tallies summed on scrape, in prometheus-client's exposition."""

from __future__ import annotations

import threading

from prometheus_client import CollectorRegistry, generate_latest

from llmopt.metrics import LATENCY_BUCKETS, RpcMetrics

GET = "/llmopt.v1.Registry/GetModel"
PUT = "/llmopt.v1.Registry/UploadVersion"


def sample(metrics: RpcMetrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def test_counts_and_buckets_sum_every_thread_while_being_scraped() -> None:
    metrics = RpcMetrics(CollectorRegistry())
    latencies = [0.00005, 0.0003, 0.002, 0.07, 20.0]  # first bucket, middle ones, +Inf
    stop = threading.Event()
    scrapes = []

    def scrape() -> None:  # reading while every thread writes must neither fail nor block them
        while not stop.is_set():
            scrapes.append(generate_latest(metrics.registry))

    def work(k: int) -> None:
        for i in range(2000):
            metrics.observe(GET, "OK" if i % 4 else "NOT_FOUND", latencies[(i + k) % 5])
        metrics.observe(PUT, "OK", 1.0)

    scraper = threading.Thread(target=scrape)
    scraper.start()
    workers = [threading.Thread(target=work, args=(k,)) for k in range(8)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    stop.set()
    scraper.join()
    assert scrapes
    assert sample(metrics, "llmopt_rpc_total", method=GET, code="OK") == 8 * 1500
    assert sample(metrics, "llmopt_rpc_total", method=GET, code="NOT_FOUND") == 8 * 500
    assert sample(metrics, "llmopt_rpc_total", method=PUT, code="OK") == 8
    count = sample(metrics, "llmopt_rpc_duration_seconds_count", method=GET)
    assert count == 16000
    le = {
        b: sample(metrics, "llmopt_rpc_duration_seconds_bucket", method=GET, le=str(b))
        for b in (0.0001, 0.0005, 0.0025, 0.1, 10.0)
    }
    # Each latency is one fifth of the calls; buckets are cumulative ("less or equal").
    assert le == {0.0001: 3200, 0.0005: 6400, 0.0025: 9600, 0.1: 12800, 10.0: 12800}
    assert sample(metrics, "llmopt_rpc_duration_seconds_bucket", method=GET, le="+Inf") == count
    total = sample(metrics, "llmopt_rpc_duration_seconds_sum", method=GET)
    assert abs(total - 3200 * sum(latencies)) < 1e-6
    text = generate_latest(metrics.registry).decode()
    assert f'llmopt_rpc_total{{code="OK",method="{PUT}"}} 8.0' in text
    put_buckets = [
        line for line in text.splitlines()
        if line.startswith("llmopt_rpc_duration_seconds_bucket") and PUT in line
    ]  # fmt: skip
    assert len(put_buckets) == len(LATENCY_BUCKETS) + 1  # every bound, and +Inf


def test_a_bound_itself_falls_in_its_bucket() -> None:
    metrics = RpcMetrics(CollectorRegistry())
    metrics.observe(GET, "OK", 0.001)
    assert sample(metrics, "llmopt_rpc_duration_seconds_bucket", method=GET, le="0.0005") == 0
    assert sample(metrics, "llmopt_rpc_duration_seconds_bucket", method=GET, le="0.001") == 1


def test_http_serves_metrics_liveness_readiness_and_404_elsewhere() -> None:
    import urllib.error
    import urllib.request

    from llmopt.metrics import MetricsHttpServer

    metrics = RpcMetrics(CollectorRegistry())
    metrics.observe(GET, "OK", 0.001)
    waiting = {"": "NOT_SERVING", "llmopt.v1.Bandits": "NOT_SERVING"}
    server = MetricsHttpServer(metrics.registry, "127.0.0.1", 0, not_ready=lambda: dict(waiting))

    def get(path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{server.port}{path}", timeout=5) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as err:
            return err.code, err.read().decode()

    try:
        status, text = get("/metrics")
        assert status == 200
        assert f'llmopt_rpc_total{{code="OK",method="{GET}"}} 1.0' in text
        assert get("/livez") == (200, "ok\n")
        assert get("/readyz") == (
            503,
            "not ready: (server) NOT_SERVING, llmopt.v1.Bandits NOT_SERVING\n",
        )
        waiting.clear()  # every service SERVING now
        assert get("/readyz") == (200, "ready\n")
        for path in ("/", "/healthz", "/metrics/x", "/readyz/"):
            status, text = get(path)
            assert status == 404, path
            assert "/metrics, /livez, /readyz" in text
    finally:
        server.close()

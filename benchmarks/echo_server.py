"""The baseline: a bare grpcio server that echoes the request bytes back.

Same thread pool size, concurrency limit, channel options and garbage-collector settings as
the real server (``llmopt.app``, ``llmopt.config.Settings`` defaults) but no interceptor, no
protobuf and no domain code: what the Python gRPC framework costs by itself per call.
``python -m benchmarks.echo_server --port 0`` logs ``listening on HOST:PORT`` and serves until
SIGTERM. ``--busy-us N`` makes the handler run N microseconds of plain Python before it
answers: what a servicer's own work costs end to end (``e2e.handler_budget``).
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import grpc

from llmopt.config import Settings, tune_gc

SERVICE = "bench.Echo"
METHOD = f"/{SERVICE}/Echo"
MIB = 1024 * 1024


def _echo(request: bytes, context: grpc.ServicerContext) -> bytes:
    return request


def _busy_echo(busy_us: float) -> Callable[[bytes, grpc.ServicerContext], bytes]:
    seconds = busy_us / 1e6
    clock = time.perf_counter

    def echo(request: bytes, context: grpc.ServicerContext) -> bytes:
        end = clock() + seconds
        while clock() < end:  # interpreted work holding the GIL, as a servicer's would
            pass
        return request

    return echo


def create_echo_server(
    address: str, settings: Settings | None = None, busy_us: float = 0.0
) -> tuple[grpc.Server, int]:
    """Build (not start) the echo server bound to ``address``; returns it and its port."""
    settings = settings or Settings()
    server = grpc.server(
        ThreadPoolExecutor(settings.workers, thread_name_prefix="rpc"),
        maximum_concurrent_rpcs=settings.max_concurrent_rpcs,
        options=[
            ("grpc.max_send_message_length", settings.max_message_mb * MIB),
            ("grpc.max_receive_message_length", settings.max_message_mb * MIB),
            ("grpc.so_reuseport", 0),
        ],
    )
    handler = grpc.method_handlers_generic_handler(
        SERVICE,
        {"Echo": grpc.unary_unary_rpc_method_handler(_busy_echo(busy_us) if busy_us else _echo)},
    )
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port(address)
    if port == 0:
        raise OSError(f"cannot listen on {address}")
    return server, port


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.echo_server")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--busy-us", type=float, default=0.0, help="Python work per call, in us")
    args = parser.parse_args(argv)
    server, port = create_echo_server(f"{args.host}:{args.port}", busy_us=args.busy_us)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    server.start()
    tune_gc(Settings())
    print(f"listening on {args.host}:{port}", flush=True)
    try:
        stop.wait()
    finally:
        server.stop(1).wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())

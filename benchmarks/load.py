"""End-to-end load generator: grpc.aio clients in separate processes, closed or open loop.

Closed loop: ``concurrency`` calls in flight, each caller sends its next call when the last one
answers; this measures the most the server can do (throughput) and latency at that concurrency.
Open loop: calls start on a fixed schedule at ``rate`` req/s whatever the answers do, and each
latency is measured from the call's *scheduled* start, so a stalled server shows up as latency
instead of silently slowing the sender (no coordinated omission).

Works for any unary RPC: give the method path and serialized request bytes (cycled). The clients
send bytes and, unless ``response_type`` names a message class, do not parse the reply, to keep
their CPU cost (which shares the machine with the server) low.

The parent process samples the server's CPU time and RSS from /proc over the measured window.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import math
import multiprocessing as mp
import os
import sys
import time
from array import array
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any, Protocol

from benchmarks.harness import Percentiles, percentiles_ns
from benchmarks.procs import client_cores

MIB = 1024 * 1024
CALL_TIMEOUT_S = 10.0
MAX_IN_FLIGHT_OPEN_LOOP = 4096  # per client process; beyond it a scheduled call is dropped


class LoadTarget(Protocol):
    """What the generator needs of a server: where it listens and its /proc readings
    (``benchmarks.procs.ServerProc`` is one)."""

    @property
    def address(self) -> str: ...

    def cpu_seconds(self) -> float: ...

    def rss_bytes(self) -> int: ...


@dataclass(frozen=True)
class Rpc:
    """A unary RPC to drive: ``method`` ("/pkg.Service/Method") and serialized requests, cycled.

    ``response_type`` ("module:Message"), if set, makes the clients parse every reply.
    """

    method: str
    requests: tuple[bytes, ...]
    response_type: str = ""
    label: str = ""

    @classmethod
    def of(cls, method: str, *messages: Any, response_type: type | None = None) -> Rpc:
        """From protobuf messages (serialized here, once)."""
        if not messages:
            raise ValueError("at least one request message is needed")
        rtype = _import_path(response_type) if response_type is not None else ""
        return cls(method, tuple(m.SerializeToString() for m in messages), rtype)

    @classmethod
    def echo(cls, payload_bytes: int) -> Rpc:
        """The echo baseline's RPC with a payload of ``payload_bytes`` bytes."""
        from benchmarks.echo_server import METHOD

        return cls(METHOD, (b"\x2a" * payload_bytes,), label="echo")

    @property
    def name(self) -> str:
        return self.label or self.method.rsplit("/", 1)[-1]

    @property
    def payload_bytes(self) -> int:
        return len(self.requests[0])


@dataclass
class LoadReport:
    """What one load run measured over its window (after warm-up)."""

    rpc: str
    mode: str  # "closed" or "open"
    concurrency: int
    rate: float | None
    window_s: float
    ok: int
    errors: dict[str, int]
    latency: Percentiles
    server_cpu_s: float
    rss_idle_bytes: int
    rss_peak_bytes: int
    clients: int
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def throughput(self) -> float:
        return self.ok / self.window_s if self.window_s > 0 else math.nan

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    @property
    def cpu_us_per_req(self) -> float:
        return self.server_cpu_s / self.ok * 1e6 if self.ok else math.nan

    def summary(self) -> dict[str, Any]:
        """Flat figures, for ``Result.extra``."""
        return {
            "mode": self.mode,
            "concurrency": self.concurrency,
            "rate_rps": self.rate,
            "throughput_rps": round(self.throughput, 1),
            "p50_us": round(self.latency.p50, 1),
            "p95_us": round(self.latency.p95, 1),
            "p99_us": round(self.latency.p99, 1),
            "ok": self.ok,
            "errors": self.error_count,
            "error_codes": dict(self.errors),
            "cpu_us_per_req": round(self.cpu_us_per_req, 1),
            "server_cpu_util": round(self.server_cpu_s / self.window_s, 3),
            "rss_idle_mib": round(self.rss_idle_bytes / MIB, 1),
            "rss_load_mib": round(self.rss_peak_bytes / MIB, 1),
            "window_s": round(self.window_s, 2),
            "clients": self.clients,
            **self.extra,
        }


def default_clients(concurrency: int, rate: float | None) -> int:
    """Client processes: one for a single caller, else two (enough to load one Python server)."""
    if rate is None and concurrency <= 1:
        return 1
    return max(1, min(2, os.cpu_count() or 1))


def run_load(
    server: LoadTarget,
    rpc: Rpc,
    *,
    concurrency: int,
    duration: float,
    warmup: float,
    rate: float | None = None,
    clients: int | None = None,
    client_cpus: set[int] | None = None,
) -> LoadReport:
    """Drive ``rpc`` against ``server``; see the module docstring. ``client_cpus`` pins the
    client processes; by default they keep off the cores of a pinned server (its ``cpus``)."""
    if client_cpus is None:
        client_cpus = client_cores(getattr(server, "cpus", None))
    if concurrency < 1:
        raise ValueError(f"concurrency must be >= 1, got {concurrency}")
    if rate is not None and rate <= 0:
        raise ValueError(f"rate must be > 0, got {rate}")
    n = clients or default_clients(concurrency, rate)
    n = min(n, concurrency) if rate is None else n
    per_client_conc = [concurrency // n + (1 if i < concurrency % n else 0) for i in range(n)]
    per_client_rate = [None if rate is None else rate / n] * n
    ctx = mp.get_context("spawn")  # never fork a process that has gRPC threads
    pipes: list[Connection] = []
    procs = []
    for i in range(n):
        parent, child = ctx.Pipe()
        proc = ctx.Process(
            target=_client_main,
            args=(
                child,
                server.address,
                rpc,
                per_client_conc[i],
                per_client_rate[i],
                sorted(client_cpus) if client_cpus else None,
            ),
            daemon=True,
        )
        proc.start()
        child.close()
        pipes.append(parent)
        procs.append(proc)
    try:
        for pipe in pipes:
            _expect(pipe, "ready", 60.0)
        rss_idle = server.rss_bytes()
        start = time.monotonic_ns() + 50_000_000
        measure_from = start + int(warmup * 1e9)
        measure_to = measure_from + int(duration * 1e9)
        for pipe in pipes:
            pipe.send((start, measure_from, measure_to))
        _sleep_until(measure_from)
        cpu0 = server.cpu_seconds()
        rss_peak = server.rss_bytes()
        while time.monotonic_ns() < measure_to:
            rss_peak = max(rss_peak, server.rss_bytes())
            time.sleep(min(0.1, max(0.0, (measure_to - time.monotonic_ns()) / 1e9)))
        cpu1 = server.cpu_seconds()
        rss_peak = max(rss_peak, server.rss_bytes())
        latencies = array("q")
        lags = array("q")
        errors: Counter[str] = Counter()
        ok = scheduled = 0
        for pipe in pipes:
            reply = _expect(pipe, "done", duration + 60.0)
            latencies.frombytes(reply["latencies"])
            lags.frombytes(reply["lags"])
            scheduled += reply["scheduled"]
            errors.update(reply["errors"])
            ok += reply["ok"]
    finally:
        for proc in procs:
            proc.join(10)
            if proc.is_alive():
                proc.kill()
                proc.join()
        for pipe in pipes:
            pipe.close()
    return LoadReport(
        rpc=rpc.name,
        mode="closed" if rate is None else "open",
        concurrency=concurrency,
        rate=rate,
        window_s=(measure_to - measure_from) / 1e9,
        ok=ok,
        errors=dict(errors),
        latency=percentiles_ns(latencies),
        server_cpu_s=cpu1 - cpu0,
        rss_idle_bytes=rss_idle,
        rss_peak_bytes=rss_peak,
        clients=n,
        extra={"send_lag_p99_us": round(percentiles_ns(lags).p99, 1), "scheduled": scheduled}
        if rate is not None
        else {},
    )


def _sleep_until(deadline_ns: int) -> None:
    while (left := deadline_ns - time.monotonic_ns()) > 0:
        time.sleep(left / 1e9)


def _expect(pipe: Connection, kind: str, timeout: float) -> Any:
    if not pipe.poll(timeout):
        raise TimeoutError(f"load client sent no {kind!r} within {timeout:.0f}s")
    try:
        message = pipe.recv()
    except EOFError:
        raise RuntimeError(f"load client died before {kind!r}") from None
    if isinstance(message, dict) and message.get("kind") == "failed":
        raise RuntimeError(f"load client failed: {message['error']}")
    if not (isinstance(message, dict) and message.get("kind") == kind):
        raise RuntimeError(f"load client sent {message!r}, expected {kind!r}")
    return message


def _import_path(cls: type) -> str:
    """ "module:Class" under which ``cls`` can be imported again (protobuf classes report a
    ``__module__`` that is not their import path, so look the class up where it is loaded)."""
    for name, module in list(sys.modules.items()):
        if module is not None and getattr(module, cls.__name__, None) is cls:
            return f"{name}:{cls.__name__}"
    return f"{cls.__module__}:{cls.__qualname__}"


# -- the client process -------------------------------------------------------------------------


def _resolve(path: str) -> Callable[[bytes], Any] | None:
    if not path:
        return None
    module, _, qualname = path.partition(":")
    obj: Any = importlib.import_module(module)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj.FromString  # type: ignore[no-any-return]


def _client_main(
    pipe: Connection,
    address: str,
    rpc: Rpc,
    concurrency: int,
    rate: float | None,
    cpus: Sequence[int] | None,
) -> None:
    try:
        if cpus:
            os.sched_setaffinity(0, cpus)
        asyncio.run(_client(pipe, address, rpc, concurrency, rate))
    except BaseException as exc:
        with contextlib.suppress(OSError):
            pipe.send({"kind": "failed", "error": f"{type(exc).__name__}: {exc}"})
        raise
    finally:
        pipe.close()


async def _client(
    pipe: Connection, address: str, rpc: Rpc, concurrency: int, rate: float | None
) -> None:
    import grpc

    async with grpc.aio.insecure_channel(address) as channel:
        await asyncio.wait_for(channel.channel_ready(), 30)
        call = channel.unary_unary(rpc.method, response_deserializer=_resolve(rpc.response_type))
        pipe.send({"kind": "ready"})
        start, measure_from, measure_to = pipe.recv()
        latencies = array("q")
        errors: Counter[str] = Counter()
        requests = rpc.requests
        clock = time.monotonic_ns

        lags = array("q")
        sent = 0

        async def one(index: int, scheduled: int) -> None:
            if rate is not None and scheduled >= measure_from:
                lags.append(clock() - scheduled)
            try:
                await call(requests[index % len(requests)], timeout=CALL_TIMEOUT_S)
                code = ""
            except grpc.aio.AioRpcError as exc:
                code = exc.code().name
            done = clock()
            # Closed loop counts what completes inside the window (throughput); open loop
            # counts every call *scheduled* inside it, however late it answers (its tail).
            if measure_from <= scheduled and (
                done <= measure_to if rate is None else scheduled < measure_to
            ):
                if code:
                    errors[code] += 1
                else:
                    latencies.append(done - scheduled)

        while clock() < start:
            await asyncio.sleep((start - clock()) / 1e9)
        if rate is None:

            async def caller(offset: int) -> None:
                i = offset
                while (t0 := clock()) < measure_to:
                    await one(i, t0)
                    i += concurrency

            await asyncio.gather(*(caller(k) for k in range(concurrency)))
        else:
            interval = 1e9 / rate
            in_flight: set[asyncio.Task[None]] = set()
            i = 0
            while (scheduled := start + int(i * interval)) < measure_to:
                now = clock()
                if scheduled > now:
                    await asyncio.sleep((scheduled - now) / 1e9)
                if scheduled >= measure_from:
                    sent += 1
                if len(in_flight) >= MAX_IN_FLIGHT_OPEN_LOOP:
                    if scheduled >= measure_from:
                        errors["CLIENT_BACKLOG"] += 1
                else:
                    task = asyncio.create_task(one(i, scheduled))
                    in_flight.add(task)
                    task.add_done_callback(in_flight.discard)
                i += 1
            if in_flight:
                await asyncio.wait(in_flight, timeout=CALL_TIMEOUT_S + 1)
        pipe.send(
            {
                "kind": "done",
                "latencies": latencies.tobytes(),
                "errors": dict(errors),
                "ok": len(latencies),
                "lags": lags.tobytes(),
                "scheduled": sent,
            }
        )

"""What TLS and a bearer token cost SelectArm: p50 and p99 over TLS with a token against
plaintext without, in the same run, on loopback, both servers pinned to the server core.

Issue 20's target: p50 overhead <= 10 %. One client in this process calls each server in turn,
one call at a time, in alternating rounds, so drift (frequency, other load) falls on both alike.
The certificates are made for the run (``tests/support/certs.py``, ``cryptography``).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

from benchmarks.harness import Context, Percentiles, Result, latency_result, percentiles_ns

BANDIT = "bench-security"
TOKEN = "bench-security-token"
TARGET_OVERHEAD_PCT = 10.0


def overhead_rows(plain: Percentiles, secured: Percentiles) -> list[Result]:
    """The rows: each side's latency (information) and the p50 overhead of TLS + token, in %,
    against the target (p99's overhead goes into ``extra``)."""
    overhead = 100.0 * (secured.p50 / plain.p50 - 1.0)
    return [
        latency_result("security.SelectArm.plaintext", plain, metric="p50",
                       note="no TLS, no auth"),
        latency_result("security.SelectArm.tls_token", secured, metric="p50",
                       note="TLS + bearer token (token file)"),
        Result(
            name="security.SelectArm.tls_overhead",
            metric="p50 overhead",
            measured=overhead,
            unit="%",
            target=TARGET_OVERHEAD_PCT,
            better="lower",
            extra={
                "p50_plain_us": plain.p50,
                "p50_tls_us": secured.p50,
                "p99_plain_us": plain.p99,
                "p99_tls_us": secured.p99,
                "p99_overhead_pct": 100.0 * (secured.p99 / plain.p99 - 1.0),
            },
            note="TLS + token over plaintext, same run, alternating rounds",
        ),
    ]  # fmt: skip


def _pki(directory: Path) -> tuple[Path, Path, Path, Path]:
    """CA file, server certificate and key, token file."""
    from tests.support.certs import SERVER_HOSTS, make_ca, make_cert, write_ca, write_pair

    ca = make_ca("bench-ca")
    cert, key = write_pair(directory, *make_cert(ca, "server", hosts=SERVER_HOSTS))
    tokens = directory / "tokens"
    tokens.write_text(f"{hashlib.sha256(TOKEN.encode()).hexdigest()} bench admin,decide,read\n")
    return write_ca(directory, ca), cert, key, tokens


def benchmarks(ctx: Context) -> Iterator[Result]:
    if not ctx.wants("security.SelectArm"):
        return
    from benchmarks.procs import ServerProc
    from llmopt.client import Arm, Client
    from llmopt.client import Context as RequestContext

    pki = ctx.scratch("pki")
    ca, cert, key, tokens = _pki(pki)
    secure_args = ["--tls-cert", str(cert), "--tls-key", str(key), "--auth-tokens", str(tokens)]
    cpus = ctx.server_cpus()
    rounds, per_round = (4, 250) if ctx.quick else (10, 2_000)
    with ExitStack() as stack:
        servers = []
        for name, args in (("plain", []), ("tls", secure_args)):
            proc = ServerProc.real(ctx.scratch(f"server-{name}"), args=args, cpus=cpus)
            proc.health = False  # its health wait speaks plaintext; wait_ready below speaks TLS
            stack.callback(proc.stop)
            servers.append(proc.start())
        plain_client = stack.enter_context(Client(servers[0].address))
        tls_client = stack.enter_context(Client(servers[1].address, tls_ca=ca, token=TOKEN))
        context = RequestContext(task_type="classification", input_length=250)
        calls = []
        for client in (plain_client, tls_client):
            client.wait_ready(timeout=60)
            client.create_bandit(BANDIT, [Arm(f"arm{i}", model=f"m{i}") for i in range(4)],
                                 policy="lin_ucb", seed=0)  # fmt: skip
            calls.append(lambda c=client: c.select_arm(BANDIT, context))
        samples: list[list[int]] = [[], []]
        clock = time.perf_counter_ns
        for call in calls:  # warm-up: connections, handshakes, caches
            for _ in range(per_round // 2):
                call()
        for _ in range(rounds):
            for side, call in enumerate(calls):
                for _ in range(per_round):
                    t0 = clock()
                    call()
                    samples[side].append(clock() - t0)
    yield from overhead_rows(percentiles_ns(samples[0]), percentiles_ns(samples[1]))

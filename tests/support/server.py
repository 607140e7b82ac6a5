"""Run the real server as a subprocess for integration tests."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

_LISTENING = re.compile(r"listening on ([\w.:\[\]-]+)")
# What a server log must never hold after clients cancelled or left streams idle.
SERVER_FAULTS = ("Traceback", "unexpected error", "Exception calling application")


def free_port() -> int:
    """A TCP port free now on 127.0.0.1 (for --metrics-port, which has no port-0 log line)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServerProcess:
    """``python -m llmopt`` on a free port with its own data dir; log in ``log_path``.

    ``credentials`` (``grpc.ssl_channel_credentials(...)``) for a server started with
    ``--tls-cert``: ``channel()`` and the health wait then speak TLS.
    """

    def __init__(
        self,
        data_dir: Path,
        args: Sequence[str] = (),
        env: dict[str, str] | None = None,
        credentials: grpc.ChannelCredentials | None = None,
    ):
        self.data_dir = Path(data_dir)
        self.args = list(args)
        self.env = env
        self.credentials = credentials
        self.log_path = self.data_dir.parent / f"{self.data_dir.name}-server.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.address = ""

    def start(self, timeout: float = 60.0, wait_serving: bool = True) -> ServerProcess:
        env = {**os.environ, **(self.env or {})}
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        offset = self._log.tell()
        cmd = [
            sys.executable,
            "-m",
            "llmopt",
            "--port",
            "0",
            "--data-dir",
            str(self.data_dir),
            *self.args,
        ]
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            match = _LISTENING.search(self.log_path.read_bytes()[offset:].decode(errors="replace"))
            if match:
                self.address = match.group(1)
                break
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log()}")
            time.sleep(0.05)
        else:
            raise TimeoutError(f"server did not listen within {timeout}s:\n{self.log()}")
        if wait_serving:
            self.wait_serving(deadline - time.monotonic())
        return self

    def wait_serving(self, timeout: float = 60.0, service: str = "") -> None:
        deadline = time.monotonic() + timeout
        with self.channel() as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            while time.monotonic() < deadline:
                try:
                    status = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=2)
                    if status.status == health_pb2.HealthCheckResponse.SERVING:
                        return
                except grpc.RpcError:
                    pass
                if self.proc is not None and self.proc.poll() is not None:
                    raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log()}")
                time.sleep(0.05)
        raise TimeoutError(f"server not SERVING within {timeout}s:\n{self.log()}")

    def channel(self, credentials: grpc.ChannelCredentials | None = None) -> grpc.Channel:
        """A channel to the server: TLS with ``credentials`` (or the server's own), else plain."""
        credentials = credentials or self.credentials
        if credentials is None:
            return grpc.insecure_channel(self.address)
        return grpc.secure_channel(self.address, credentials)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def faults(self) -> list[str]:
        """The log's lines that report a server fault (a traceback, an unexpected error)."""
        return [line for line in self.log().splitlines() if any(f in line for f in SERVER_FAULTS)]

    def terminate(self, timeout: float = 60.0) -> int:
        """SIGTERM and wait; returns the exit code."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout)
        self._log.close()
        return code

    def kill(self) -> None:
        """kill -9: no chance to flush or close anything."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(30)
        self._log.close()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            try:
                self.terminate(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()

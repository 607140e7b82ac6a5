"""Server processes under load: the real server and the echo baseline, with /proc readings.

Each runs in its own process (optionally pinned with ``taskset -c``), reached over TCP on a free
port. The readings (CPU seconds, RSS) come from ``/proc/<pid>`` so they are the server's alone.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

_LISTENING = re.compile(r"listening on (\S+)")
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of every thread of ``pid`` so far (``/proc/<pid>/stat``)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()  # the command name may hold spaces
    utime, stime = int(fields[11]), int(fields[12])  # fields 14 and 15 of proc(5)
    return (utime + stime) / _CLOCK_TICKS


def rss_bytes(pid: int) -> int:
    """Resident set size of ``pid`` now (``/proc/<pid>/statm``)."""
    return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * _PAGE


def taskset_prefix(cpus: str | None) -> list[str]:
    if cpus is None:
        return []
    taskset = shutil.which("taskset")
    if taskset is None:
        raise RuntimeError("taskset is not installed: cannot pin the server to cores " + cpus)
    return [taskset, "-c", cpus]


class ServerProc:
    """A server subprocess that logs ``listening on HOST:PORT``; ``health`` waits for SERVING."""

    def __init__(self, cmd: Sequence[str], workdir: Path, *, health: bool, cpus: str | None):
        self.cmd = [*taskset_prefix(cpus), *cmd]
        self.workdir = Path(workdir)
        self.health = health
        self.cpus = cpus
        self.log_path = self.workdir / "server.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.address = ""

    @classmethod
    def real(cls, workdir: Path, args: Sequence[str] = (), cpus: str | None = None) -> ServerProc:
        """``python -m llmopt --port 0 --data-dir <workdir>/data``."""
        cmd = [
            sys.executable,
            "-m",
            "server",
            "--port",
            "0",
            "--data-dir",
            str(Path(workdir) / "data"),
            *args,
        ]
        return cls(cmd, workdir, health=True, cpus=cpus)

    @classmethod
    def echo(cls, workdir: Path, cpus: str | None = None, busy_us: float = 0.0) -> ServerProc:
        """``python -m benchmarks.echo_server --port 0``: the bare grpcio baseline (with
        ``busy_us`` of Python work per call when given)."""
        cmd = [sys.executable, "-m", "benchmarks.echo_server", "--port", "0"]
        if busy_us:
            cmd += ["--busy-us", str(busy_us)]
        return cls(cmd, workdir, health=False, cpus=cpus)

    @property
    def pid(self) -> int:
        if self.proc is None:
            raise RuntimeError("server not started")
        return self.proc.pid  # taskset execs the server: same pid

    def start(self, timeout: float = 60.0) -> ServerProc:
        self.workdir.mkdir(parents=True, exist_ok=True)
        root = Path(__file__).resolve().parent.parent
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(
                filter(None, [str(root), os.environ.get("PYTHONPATH", "")])
            ),
        }
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                self.cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=root
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            match = _LISTENING.search(self.log())
            if match:
                self.address = match.group(1)
                break
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.cmd} exited with {self.proc.returncode}:\n{self.log()}")
            time.sleep(0.05)
        else:
            self.stop()
            raise TimeoutError(f"server did not listen within {timeout}s:\n{self.log()}")
        if self.health:
            self._wait_serving(deadline)
        return self

    def _wait_serving(self, deadline: float) -> None:
        import grpc
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        with grpc.insecure_channel(self.address) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            while time.monotonic() < deadline:
                try:
                    reply = stub.Check(health_pb2.HealthCheckRequest(), timeout=2)
                    if reply.status == health_pb2.HealthCheckResponse.SERVING:
                        return
                except grpc.RpcError:
                    pass
                if self.proc is not None and self.proc.poll() is not None:
                    raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log()}")
                time.sleep(0.05)
        self.stop()
        raise TimeoutError(f"server not SERVING in time:\n{self.log()}")

    def cpu_seconds(self) -> float:
        return cpu_seconds(self.pid)

    def rss_bytes(self) -> int:
        return rss_bytes(self.pid)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def stop(self, timeout: float = 30.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(30)

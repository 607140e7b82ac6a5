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
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
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


def tree_cpu_seconds(pid: int) -> float:
    """``cpu_seconds`` of ``pid`` and every live descendant (a server with worker processes,
    as MLServer's ``parallel_workers``), from ``/proc/<pid>/task/<tid>/children``."""
    total, todo, seen = 0.0, [pid], set()
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        try:
            total += cpu_seconds(current)
            for task in Path(f"/proc/{current}/task").iterdir():
                todo.extend(int(c) for c in (task / "children").read_text().split())
        except (FileNotFoundError, ProcessLookupError):
            continue  # it exited between the listing and the reading
    return total


def parse_cpu_list(text: str) -> set[int]:
    """The cores of a ``taskset -c`` list ("0", "0,2", "1-3,6").

    >>> sorted(parse_cpu_list("1-3,6"))
    [1, 2, 3, 6]
    """
    cores: set[int] = set()
    for part in text.split(","):
        low, _, high = part.strip().partition("-")
        if not low.isdigit() or (high and not high.isdigit()):
            raise ValueError(f"not a cpu list: {text!r}")
        cores.update(range(int(low), int(high or low) + 1))
    return cores


@dataclass(frozen=True)
class Pinning:
    """Where end-to-end runs put their processes: the server under test (``taskset -c``) on
    ``server`` and the load generator's clients on ``clients``, so that neither takes the
    other's core."""

    server: str
    clients: frozenset[int]


def split_cores(cores: Iterable[int] | None = None) -> Pinning | str:
    """The server on the first allowed core, the clients on the others; or the reason it cannot
    be done ("one core", no taskset), which end-to-end rows print as ``skipped: <reason>``.

    >>> split_cores([0, 1, 2]) == Pinning("0", frozenset({1, 2})) or shutil.which("taskset") is None
    True
    >>> split_cores([3])
    'one core'
    """
    allowed = sorted(os.sched_getaffinity(0) if cores is None else cores)
    if len(allowed) < 2:
        return "one core"
    if shutil.which("taskset") is None:
        return "taskset is not installed (util-linux): cannot pin the server to one core"
    return Pinning(str(allowed[0]), frozenset(allowed[1:]))


def client_cores(server_cpus: str | None) -> set[int] | None:
    """The allowed cores a pinned server does not use (None when it is not pinned, or when it
    holds every core)."""
    if not server_cpus:
        return None
    rest = set(os.sched_getaffinity(0)) - parse_cpu_list(server_cpus)
    return rest or None


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
            "llmopt",
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

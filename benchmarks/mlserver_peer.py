"""MLServer as a peer: its own virtual environment, a scikit-learn model, a pinned process.

``ensure_venv`` makes ``build/bench-venvs/mlserver`` (``mlserver==1.7.*`` and
``mlserver-sklearn==1.7.*`` from PyPI) once and reuses it; ``write_model`` fits the benchmark's
logistic regression inside that environment (so the joblib file matches its scikit-learn) and
writes ``settings.json`` and ``model-settings.json``; ``MLServerProc`` runs ``mlserver start``
pinned like our server and reads its CPU time over the process and its workers. Every step
raises ``PeerUnavailable`` with the reason the row prints as ``skipped: <reason>``.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks.procs import rss_bytes, taskset_prefix, tree_cpu_seconds

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / "build" / "bench-venvs" / "mlserver"
REQUIREMENTS = ("mlserver==1.7.*", "mlserver-sklearn==1.7.*", "uvloop<0.22")
"""uvloop 0.22 made ``asyncio.get_event_loop`` raise where no loop runs, which MLServer 1.7's
workers call at start: with it, ``parallel_workers`` >= 1 never starts."""
MARKER = "llmopt-bench-requirements.txt"
VERSION_PREFIX = "1.7."
INSTALL_TIMEOUT_S = 900.0
MODEL = "lr16"

_FIT = """
import sys, joblib, numpy as np
from sklearn.linear_model import LogisticRegression
X, y = np.load(sys.argv[1]), np.load(sys.argv[2])
joblib.dump(LogisticRegression(max_iter=500).fit(X, y), sys.argv[3])
"""


class PeerUnavailable(RuntimeError):
    """The peer cannot be measured here; the message says why."""


def _python(venv: Path) -> Path:
    return venv / "bin" / "python"


def installed_version(venv: Path = VENV) -> str | None:
    """MLServer's version in ``venv`` when it and mlserver-sklearn import there, else None."""
    if not _python(venv).exists():
        return None
    probe = subprocess.run(
        [
            str(_python(venv)),
            "-c",
            "import mlserver, mlserver_sklearn; print(mlserver.__version__)",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    return probe.stdout.strip() if probe.returncode == 0 else None


def ensure_venv(venv: Path = VENV) -> str:
    """The venv with MLServer 1.7 (made and installed when missing or made from other
    requirements); its MLServer version."""
    marker = venv / MARKER
    wanted = "\n".join(REQUIREMENTS) + "\n"
    version = installed_version(venv)
    made = marker.exists() and marker.read_text() == wanted
    if made and version and version.startswith(VERSION_PREFIX):
        return version
    steps = [
        [sys.executable, "-m", "venv", "--clear", str(venv)],
        [str(_python(venv)), "-m", "pip", "install", "--quiet", *REQUIREMENTS],
    ]
    for step in steps:
        try:
            done = subprocess.run(step, capture_output=True, text=True, timeout=INSTALL_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            raise PeerUnavailable(f"install timed out after {INSTALL_TIMEOUT_S:.0f} s") from None
        if done.returncode != 0:
            last = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
            raise PeerUnavailable(f"install failed ({' '.join(step[2:4])}): {last[0][:160]}")
    version = installed_version(venv)
    if not version or not version.startswith(VERSION_PREFIX):
        raise PeerUnavailable(f"install gave MLServer {version!r}, not {VERSION_PREFIX}x")
    marker.write_text(wanted)
    return version


def free_port() -> int:
    """A TCP port free right now on 127.0.0.1 (MLServer takes ports, not port 0)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def write_model(
    folder: Path, X: np.ndarray, y: np.ndarray, *, parallel_workers: int, venv: Path = VENV
) -> int:
    """MLServer's model repository in ``folder``: the logistic regression fitted on ``X``, ``y``
    by the venv's scikit-learn, ``model-settings.json`` and ``settings.json``; its gRPC port."""
    model_dir = folder / MODEL
    model_dir.mkdir(parents=True, exist_ok=True)
    np.save(folder / "X.npy", X)
    np.save(folder / "y.npy", y)
    fit = subprocess.run(
        [
            str(_python(venv)),
            "-c",
            _FIT,
            str(folder / "X.npy"),
            str(folder / "y.npy"),
            str(model_dir / "model.joblib"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    if fit.returncode != 0:
        raise PeerUnavailable(f"fitting the model in the MLServer venv failed: {fit.stderr[-200:]}")
    (model_dir / "model-settings.json").write_text(
        json.dumps(
            {
                "name": MODEL,
                "implementation": "mlserver_sklearn.SKLearnModel",
                "parameters": {"uri": "./model.joblib"},
            }
        )
    )
    grpc_port = free_port()
    (folder / "settings.json").write_text(
        json.dumps(
            {
                "grpc_port": grpc_port,
                "http_port": free_port(),
                "metrics_port": free_port(),
                "parallel_workers": parallel_workers,
                "debug": False,
            }
        )
    )
    return grpc_port


class MLServerProc:
    """``mlserver start <folder>`` pinned with ``taskset -c cpus``; a ``LoadTarget``."""

    def __init__(self, folder: Path, grpc_port: int, cpus: str | None, venv: Path = VENV):
        self.folder = folder
        self.address = f"127.0.0.1:{grpc_port}"
        self.cpus = cpus
        self.cmd = [*taskset_prefix(cpus), str(venv / "bin" / "mlserver"), "start", str(folder)]
        self.log_path = folder / "mlserver.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 120.0) -> MLServerProc:
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                self.cmd,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.folder,
                start_new_session=True,  # its workers go down with it
                env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
            )
        try:
            self._wait_ready(time.monotonic() + timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self, deadline: float) -> None:
        import grpc

        from llmopt.gen.inference import grpc_service_pb2 as service_pb2
        from llmopt.gen.inference import grpc_service_pb2_grpc as service_pb2_grpc

        with grpc.insecure_channel(self.address) as channel:
            stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
            while time.monotonic() < deadline:
                if self.proc is not None and self.proc.poll() is not None:
                    raise PeerUnavailable(
                        f"did not start (exit {self.proc.returncode}): " + self.log_tail()
                    )
                try:
                    request = service_pb2.ModelReadyRequest(name=MODEL)
                    if stub.ModelReady(request, timeout=2).ready:
                        return
                except grpc.RpcError:
                    pass
                time.sleep(0.2)
        raise PeerUnavailable("did not start: model not ready in time; " + self.log_tail())

    def log_tail(self, lines: int = 2) -> str:
        try:
            text = self.log_path.read_text(errors="replace").strip().splitlines()
        except FileNotFoundError:
            return "no log"
        return " | ".join(text[-lines:])[:300] or "empty log"

    @property
    def pid(self) -> int:
        if self.proc is None:
            raise RuntimeError("mlserver not started")
        return self.proc.pid

    def cpu_seconds(self) -> float:
        return tree_cpu_seconds(self.pid)

    def rss_bytes(self) -> int:
        return rss_bytes(self.pid)

    def stop(self, timeout: float = 20.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        with contextlib.suppress(ProcessLookupError):  # a worker left behind
            os.killpg(self.proc.pid, signal.SIGKILL)

"""kill -9 in the middle of uploads and alias changes, then restart on the same data dir:
every acknowledged change is there, no half-written version is visible, every artifact verifies."""

from __future__ import annotations

import contextlib
import hashlib
import re
import threading
import time
from collections.abc import Callable, Iterator

import grpc
import pytest

from llmopt.gen.llmopt.v1 import common_pb2, registry_pb2, registry_pb2_grpc
from tests.support.server import ServerProcess
from tests.unit.registry.onnx_models import large_model, linear_model

pytestmark = pytest.mark.integration

MODEL = "crashy"


def upload_requests(
    data: bytes, chunk: int, pause: float = 0.0, started: threading.Event | None = None
) -> Iterator[registry_pb2.UploadVersionRequest]:
    yield registry_pb2.UploadVersionRequest(
        metadata=registry_pb2.UploadVersionMetadata(model=MODEL)
    )
    for n, i in enumerate(range(0, len(data), chunk)):
        yield registry_pb2.UploadVersionRequest(chunk=data[i : i + chunk])
        if started is not None and n == 10:  # well under way on the server by now
            started.set()
        if pause:
            time.sleep(pause)


def test_kill_9_during_uploads_and_alias_changes(
    server_factory: Callable[..., ServerProcess],
) -> None:
    server = server_factory()
    channel = server.channel()
    stub = registry_pb2_grpc.RegistryStub(channel)
    stub.CreateModel(registry_pb2.CreateModelRequest(name=MODEL))

    acked_versions: dict[int, str] = {}
    acked_alias: list[int] = []  # champion targets, in acknowledgement order
    pending_alias: list[int] = []  # the SetAlias sent last, maybe unacknowledged
    stop = threading.Event()
    big_started = threading.Event()

    def uploader() -> None:
        seed = 0
        try:
            while not stop.is_set():
                data = linear_model(seed=seed)
                seed += 1
                v = stub.UploadVersion(upload_requests(data, 64), timeout=30)
                assert v.sha256 == hashlib.sha256(data).hexdigest()
                acked_versions[v.version] = v.sha256
                pending_alias.append(v.version)
                stub.SetAlias(
                    registry_pb2.SetAliasRequest(model=MODEL, alias="champion", version=v.version),
                    timeout=30,
                )
                acked_alias.append(v.version)
        except grpc.RpcError:
            pass  # the server died under us

    def big_uploader() -> None:
        with contextlib.suppress(grpc.RpcError):
            stub.UploadVersion(
                upload_requests(large_model(megabytes=8), 64 << 10, 0.05, big_started), timeout=60
            )

    threads = [threading.Thread(target=uploader), threading.Thread(target=big_uploader)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 60
    while (len(acked_alias) < 6 or not big_started.is_set()) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert len(acked_alias) >= 6, server.log()
    server.kill()
    stop.set()
    for t in threads:
        t.join(60)
    channel.close()

    restarted = server_factory(data_dir=server.data_dir)
    with restarted.channel() as channel:
        stub = registry_pb2_grpc.RegistryStub(channel)
        listed = stub.ListVersions(
            registry_pb2.ListVersionsRequest(
                model=MODEL, page=common_pb2.PageRequest(page_size=1000)
            )
        ).versions
        numbers = sorted(v.version for v in listed)
        # Every acknowledged upload is there; at most the one in flight at the kill is extra;
        # numbering has no gaps.
        assert set(acked_versions) <= set(numbers)
        assert len(numbers) - len(acked_versions) <= 1
        assert numbers == list(range(1, len(numbers) + 1))
        for v in listed:
            if v.version in acked_versions:
                assert v.sha256 == acked_versions[v.version]
            parts = list(
                stub.DownloadVersion(
                    registry_pb2.DownloadVersionRequest(model=MODEL, version=v.version)
                )
            )
            body = b"".join(p.chunk for p in parts[1:])
            assert hashlib.sha256(body).hexdigest() == v.sha256 and len(body) == v.size_bytes
        # The champion is the last acknowledged one, or the change in flight at the kill.
        champion = stub.GetModel(registry_pb2.GetModelRequest(name=MODEL)).aliases["champion"]
        assert champion in {acked_alias[-1], pending_alias[-1]}
        history = stub.GetAliasHistory(
            registry_pb2.GetAliasHistoryRequest(model=MODEL, alias="champion")
        ).changes
        assert history[0].to_version == champion

    # The big upload was cut mid-stream: its temp file was swept on restart, never visible.
    assert re.search(r"registry recovery: removed [1-9]\d* temp", restarted.log())
    # No leftovers: no temp files, and exactly one file per distinct stored hash.
    artifacts = restarted.data_dir / "registry" / "artifacts"
    assert list((artifacts / "tmp").iterdir()) == []
    stored = {p.stem for p in (artifacts / "sha256").glob("*/*.onnx")}
    assert stored == {v.sha256 for v in listed}

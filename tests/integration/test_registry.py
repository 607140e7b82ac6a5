"""llmopt.v1.Registry through the real server process (shared server; each test its own model)."""

from __future__ import annotations

import hashlib
import itertools
import json
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from llmopt.gen.llmopt.v1 import common_pb2, registry_pb2, registry_pb2_grpc
from tests.support.server import ServerProcess
from tests.unit.registry.onnx_models import failing_checker_model, large_model, linear_model

pytestmark = pytest.mark.integration

CHUNK = 1 << 20


@pytest.fixture
def stub(channel: grpc.Channel) -> registry_pb2_grpc.RegistryStub:
    return registry_pb2_grpc.RegistryStub(channel)


@pytest.fixture
def model(stub: registry_pb2_grpc.RegistryStub) -> str:
    name = f"m-{uuid.uuid4().hex[:12]}"
    stub.CreateModel(registry_pb2.CreateModelRequest(name=name, task=registry_pb2.REGRESSION))
    return name


def requests(
    model: str, data: bytes, chunk: int = CHUNK, **meta: object
) -> Iterator[registry_pb2.UploadVersionRequest]:
    yield registry_pb2.UploadVersionRequest(
        metadata=registry_pb2.UploadVersionMetadata(model=model, **meta)  # type: ignore[arg-type]
    )
    for i in range(0, len(data), chunk):
        yield registry_pb2.UploadVersionRequest(chunk=data[i : i + chunk])


def upload(
    stub: registry_pb2_grpc.RegistryStub, model: str, data: bytes, actor: str = "", **meta: object
) -> registry_pb2.ModelVersion:
    md = (("x-llmopt-actor", actor),) if actor else ()
    return stub.UploadVersion(requests(model, data, **meta), timeout=60, metadata=md)


def download(
    stub: registry_pb2_grpc.RegistryStub, model: str, **ref: object
) -> tuple[registry_pb2.ModelVersion, bytes]:
    parts = list(stub.DownloadVersion(registry_pb2.DownloadVersionRequest(model=model, **ref)))
    assert parts[0].WhichOneof("part") == "metadata"
    return parts[0].metadata, b"".join(p.chunk for p in parts[1:])


def code_of(call: object) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as info:
        call()  # type: ignore[operator]
    return info.value.code(), info.value.details()


def test_upload_download_round_trip(stub: registry_pb2_grpc.RegistryStub, model: str) -> None:
    data = linear_model(seed=11)
    v = upload(
        stub,
        model,
        data,
        chunk=50,
        semver="1.0.0",
        metrics={"rmse": 0.25},
        tags={"stage": "dev"},
        sha256=hashlib.sha256(data).hexdigest(),
        alias="champion",
    )
    assert (v.version, v.size_bytes, v.sha256) == (1, len(data), hashlib.sha256(data).hexdigest())
    assert v.inputs[0].dtype == common_pb2.FLOAT32
    assert list(v.inputs[0].shape) == [-1, 4] and v.inputs[0].dim_names[0] == "batch"
    meta, body = download(stub, model, alias="champion", chunk_size=64)
    assert body == data
    assert meta.version == 1 and list(meta.aliases) == ["champion"]
    got = stub.GetVersion(registry_pb2.GetVersionRequest(model=model, version=1))
    assert dict(got.metrics) == {"rmse": 0.25} and got.semver == "1.0.0"


def test_upload_of_50_mb_streams_in_chunks(
    stub: registry_pb2_grpc.RegistryStub, model: str
) -> None:
    data = large_model(megabytes=52)
    assert len(data) >= 50 * (1 << 20)
    v = upload(stub, model, data, size_bytes=len(data))
    assert v.sha256 == hashlib.sha256(data).hexdigest()
    _, body = download(stub, model, version=v.version, chunk_size=2 << 20)
    assert body == data


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"not an onnx model at all", "cannot parse"),
        (linear_model()[: len(linear_model()) // 2], "artifact"),
        (failing_checker_model(), "onnx.checker"),
    ],
    ids=["non-onnx", "truncated", "checker"],
)
def test_invalid_uploads_store_nothing(
    stub: registry_pb2_grpc.RegistryStub, model: str, data: bytes, reason: str
) -> None:
    code, details = code_of(lambda: upload(stub, model, data, chunk=16))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert details.startswith("artifact: ") and reason in details
    listed = stub.ListVersions(registry_pb2.ListVersionsRequest(model=model))
    assert list(listed.versions) == []
    assert upload(stub, model, linear_model()).version == 1


def test_malformed_streams_are_refused(stub: registry_pb2_grpc.RegistryStub, model: str) -> None:
    code, details = code_of(
        lambda: stub.UploadVersion(
            iter([registry_pb2.UploadVersionRequest(chunk=b"x")]), timeout=10
        )
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT and details.startswith("metadata:")
    code, details = code_of(lambda: stub.UploadVersion(iter([]), timeout=10))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    twice = [
        *requests(model, linear_model()),
        registry_pb2.UploadVersionRequest(metadata=registry_pb2.UploadVersionMetadata(model=model)),
    ]
    code, details = code_of(lambda: stub.UploadVersion(iter(twice), timeout=10))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "requests[" in details
    code, details = code_of(lambda: upload(stub, "no-such-model", linear_model()))
    assert code == grpc.StatusCode.NOT_FOUND and "no-such-model" in details
    code, details = code_of(lambda: upload(stub, model, linear_model(), sha256="f" * 64))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and details.startswith("sha256:")


def test_errors_name_field_and_value(stub: registry_pb2_grpc.RegistryStub, model: str) -> None:
    cases = [
        (
            lambda: stub.CreateModel(registry_pb2.CreateModelRequest(name="bad name")),
            grpc.StatusCode.INVALID_ARGUMENT,
            "name: 'bad name'",
        ),
        (
            lambda: stub.CreateModel(registry_pb2.CreateModelRequest(name=model)),
            grpc.StatusCode.ALREADY_EXISTS,
            model,
        ),
        (
            lambda: stub.GetVersion(registry_pb2.GetVersionRequest(model=model, version=9)),
            grpc.StatusCode.NOT_FOUND,
            "no version 9",
        ),
        (
            lambda: stub.GetVersion(registry_pb2.GetVersionRequest(model=model)),
            grpc.StatusCode.INVALID_ARGUMENT,
            "version: 0",
        ),
        (
            lambda: stub.SetAlias(
                registry_pb2.SetAliasRequest(model=model, alias="BAD", version=1)
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            "alias: 'BAD'",
        ),
        (
            lambda: stub.ListVersions(
                registry_pb2.ListVersionsRequest(
                    model=model, page=common_pb2.PageRequest(page_size=-1)
                )
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            "page.page_size: -1",
        ),
        (
            lambda: stub.Promote(registry_pb2.PromoteRequest(model=model)),
            grpc.StatusCode.FAILED_PRECONDITION,
            "challenger",
        ),
        (
            lambda: stub.Rollback(registry_pb2.RollbackRequest(model=model)),
            grpc.StatusCode.FAILED_PRECONDITION,
            "roll back",
        ),
        (
            lambda: stub.DownloadVersion(
                registry_pb2.DownloadVersionRequest(model=model, version=1, chunk_size=-5)
            ).next(),
            grpc.StatusCode.INVALID_ARGUMENT,
            "chunk_size: -5",
        ),
    ]
    for call, code, text in cases:
        got_code, details = code_of(call)
        assert (got_code, text in details) == (code, True), details


def test_concurrent_uploads_have_no_gaps(stub: registry_pb2_grpc.RegistryStub, model: str) -> None:
    got: list[int] = []
    lock = threading.Lock()

    def one(i: int) -> None:
        v = upload(stub, model, linear_model(seed=100 + i), chunk=64)
        with lock:
            got.append(v.version)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(got) == list(range(1, 9))


def test_concurrent_alias_moves(stub: registry_pb2_grpc.RegistryStub, model: str) -> None:
    for i in range(3):
        upload(stub, model, linear_model(seed=i))

    def mover(i: int) -> None:
        for j in range(5):
            stub.SetAlias(
                registry_pb2.SetAliasRequest(
                    model=model, alias="champion", version=1 + (i + j) % 3
                ),
                metadata=(("x-llmopt-actor", f"thread-{i}"),),
            )

    threads = [threading.Thread(target=mover, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    history = stub.GetAliasHistory(
        registry_pb2.GetAliasHistoryRequest(
            model=model, alias="champion", page=common_pb2.PageRequest(page_size=1000)
        )
    ).changes
    current = stub.GetModel(registry_pb2.GetModelRequest(name=model)).aliases["champion"]
    assert current == history[0].to_version
    assert all(c.actor.startswith("thread-") for c in history)
    for newer, older in itertools.pairwise(history):
        assert newer.from_version == older.to_version


def test_promote_rollback_and_history(stub: registry_pb2_grpc.RegistryStub, model: str) -> None:
    upload(stub, model, linear_model(seed=1), alias="champion")
    upload(stub, model, linear_model(seed=2), alias="challenger", parent_version=1)
    actor = (("x-llmopt-actor", "alice@example.com"),)
    promoted = stub.Promote(
        registry_pb2.PromoteRequest(model=model, reason="wins A/B"), metadata=actor
    )
    assert (promoted.champion.from_version, promoted.champion.to_version) == (1, 2)
    assert promoted.champion.actor == "alice@example.com"
    assert promoted.challenger_removed.to_version == 0
    champion = stub.GetVersion(registry_pb2.GetVersionRequest(model=model, alias="champion"))
    assert champion.version == 2 and champion.parent_version == 1
    back = stub.Rollback(registry_pb2.RollbackRequest(model=model, reason="regression"))
    assert (back.from_version, back.to_version, back.kind) == (2, 1, "rollback")
    history = stub.GetAliasHistory(registry_pb2.GetAliasHistoryRequest(model=model)).changes
    assert [(c.alias, c.kind) for c in history] == [
        ("champion", "rollback"),
        ("challenger", "promote"),
        ("champion", "promote"),
        ("challenger", "upload"),
        ("champion", "upload"),
    ]
    assert history[0].reason == "regression" and history[2].reason == "wins A/B"


def test_deletion_rules(stub: registry_pb2_grpc.RegistryStub, model: str) -> None:
    upload(stub, model, linear_model(seed=1), alias="champion")
    upload(stub, model, linear_model(seed=2))
    code, details = code_of(
        lambda: stub.DeleteVersion(registry_pb2.DeleteVersionRequest(model=model, version=1))
    )
    assert code == grpc.StatusCode.FAILED_PRECONDITION and "'champion'" in details
    stub.DeleteVersion(registry_pb2.DeleteVersionRequest(model=model, version=2))
    code, _ = code_of(
        lambda: stub.GetVersion(registry_pb2.GetVersionRequest(model=model, version=2))
    )
    assert code == grpc.StatusCode.NOT_FOUND
    code, details = code_of(lambda: stub.DeleteModel(registry_pb2.DeleteModelRequest(name=model)))
    assert code == grpc.StatusCode.FAILED_PRECONDITION and "force" in details
    done = stub.DeleteModel(registry_pb2.DeleteModelRequest(name=model, force=True))
    assert done.versions_deleted == 1
    code, _ = code_of(lambda: stub.GetModel(registry_pb2.GetModelRequest(name=model)))
    assert code == grpc.StatusCode.NOT_FOUND


def test_list_paging_and_tag_filter(stub: registry_pb2_grpc.RegistryStub, model: str) -> None:
    data = linear_model()
    for i in range(7):
        upload(stub, model, data, tags={"even": str(i % 2 == 1).lower()})
    seen: list[int] = []
    token = ""
    while True:
        page = stub.ListVersions(
            registry_pb2.ListVersionsRequest(
                model=model, page=common_pb2.PageRequest(page_size=3, page_token=token)
            )
        )
        seen.extend(v.version for v in page.versions)
        token = page.next_page_token
        if not token:
            break
    assert seen == [7, 6, 5, 4, 3, 2, 1]
    even = stub.ListVersions(
        registry_pb2.ListVersionsRequest(model=model, tag_filter={"even": "true"})
    )
    assert [v.version for v in even.versions] == [6, 4, 2]
    tagged = f"t-{uuid.uuid4().hex[:8]}"
    stub.CreateModel(registry_pb2.CreateModelRequest(name=tagged, tags={"owner": tagged}))
    listed = stub.ListModels(registry_pb2.ListModelsRequest(tag_filter={"owner": tagged}))
    assert [m.name for m in listed.models] == [tagged]


def cli(server: ServerProcess, *args: str) -> subprocess.CompletedProcess[str]:
    """The installed command line, in its own process."""
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "llmopt.registry.cli",
            "--address",
            server.address,
            "--actor",
            "ci",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_cli_register_alias_promote_history(
    server: ServerProcess, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import joblib
    import numpy as np
    from sklearn.linear_model import LogisticRegression

    from llmopt.registry.cli import main

    def run(*args: str) -> tuple[int, str, str]:
        code = main(["--address", server.address, "--actor", "ci", *args])
        out, err = capsys.readouterr()
        return code, out, err

    name = f"cli-{uuid.uuid4().hex[:8]}"
    onnx_file = tmp_path / "m.onnx"
    onnx_file.write_bytes(linear_model(n_in=3, seed=5))
    x = np.random.default_rng(0).standard_normal((60, 3))
    est_file = tmp_path / "est.joblib"
    joblib.dump(LogisticRegression().fit(x, (x[:, 0] > 0).astype(int)), est_file)

    r = cli(
        server,
        "register",
        name,
        str(onnx_file),
        "--create",
        "--alias",
        "champion",
        "--metric",
        "rmse=0.3",
        "--json",
    )
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["version"] == "1"
    code, out, err = run("register", name, str(est_file), "--alias", "challenger", "--parent", "1")
    assert code == 0, err
    assert "exported LogisticRegression" in out
    code, out, err = run("promote", name, "--reason", "cli test", "--json")
    assert code == 0, err
    assert json.loads(out)["champion"]["to_version"] == "2"
    code, out, _ = run("history", name, "--json")
    changes = json.loads(out)["changes"]
    assert changes[0]["actor"] == "ci" and changes[0]["kind"] == "promote"
    code, out, _ = run("versions", name)
    assert code == 0 and "@champion" in out
    back = tmp_path / "back.onnx"
    code, _, err = run("download", name, "@champion", "-o", str(back))
    assert code == 0, err
    assert back.stat().st_size > 0
    code, _, err = run("delete-version", name, "2")
    assert code == 1 and "FAILED_PRECONDITION" in err and "champion" in err
    code, _, err = run("rollback", name)
    assert code == 0, err
    code, out, _ = run("model", name, "--json")
    assert json.loads(out)["aliases"] == {"champion": "1"}


def test_cli_help_for_every_subcommand(capsys: pytest.CaptureFixture[str]) -> None:
    from llmopt.registry.cli import build_parser, main

    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    assert {
        "register",
        "models",
        "versions",
        "set-alias",
        "delete-alias",
        "promote",
        "rollback",
        "history",
    } <= set(commands)
    for command in commands:
        with pytest.raises(SystemExit) as exited:
            main([command, "--help"])
        assert exited.value.code == 0
        assert f"usage: llmopt-registry {command}" in capsys.readouterr().out
    r = subprocess.run(
        [sys.executable, "-m", "llmopt.registry.cli", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0 and "promote" in r.stdout


def test_cancelled_upload_leaves_nothing(
    server: ServerProcess, stub: registry_pb2_grpc.RegistryStub, model: str
) -> None:
    data = linear_model(seed=21)

    def broken() -> Iterator[registry_pb2.UploadVersionRequest]:
        parts = requests(model, data, chunk=32)
        yield next(parts)
        yield next(parts)
        raise RuntimeError("client gave up")

    with pytest.raises(grpc.RpcError):
        stub.UploadVersion(broken(), timeout=10)
    tmp = server.data_dir / "registry" / "artifacts" / "tmp"
    deadline = time.monotonic() + 10
    while list(tmp.iterdir()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert list(tmp.iterdir()) == []
    assert list(stub.ListVersions(registry_pb2.ListVersionsRequest(model=model)).versions) == []


def test_corrupted_artifact_is_refused_not_served(
    server: ServerProcess, stub: registry_pb2_grpc.RegistryStub, model: str
) -> None:
    data = linear_model(seed=31)
    v = upload(stub, model, data)
    path = server.data_dir / "registry" / "artifacts" / "sha256" / v.sha256[:2] / f"{v.sha256}.onnx"
    path.chmod(0o644)
    path.write_bytes(data[:-1] + bytes([data[-1] ^ 0xFF]))
    try:
        code, details = code_of(lambda: download(stub, model, version=v.version))
        assert code == grpc.StatusCode.DATA_LOSS
        assert v.sha256 in details and "refusing to serve" in details
    finally:
        path.write_bytes(data)

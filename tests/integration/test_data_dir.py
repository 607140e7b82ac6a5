"""What a server leaves in its data dir: every folder 0700, every file 0600 (artifacts 0400),
whatever the umask it was started with, and a demo data dir of a few megabytes."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from llmopt.client import Arm, Client, Feature
from tests.support import onnx_models
from tests.support.server import ServerProcess

pytestmark = pytest.mark.integration

Factory = Callable[..., ServerProcess]


def modes(root: Path) -> Iterator[tuple[Path, int, bool]]:
    """(path, permission bits, is a folder) of the root and everything under it."""
    yield root, stat.S_IMODE(root.stat().st_mode), True
    for folder, dirs, files in os.walk(root):
        for name in dirs:
            path = Path(folder, name)
            yield path, stat.S_IMODE(path.stat().st_mode), True
        for name in files:
            path = Path(folder, name)
            yield path, stat.S_IMODE(path.lstat().st_mode), False


def wrong_modes(root: Path) -> list[str]:
    wrong = []
    for path, mode, is_folder in modes(root):
        artifact = path.suffix == ".onnx" and "sha256" in path.parts
        expected = 0o700 if is_folder else 0o400 if artifact else 0o600
        if mode != expected:
            wrong.append(f"{path.relative_to(root)}: {oct(mode)}, expected {oct(expected)}")
    return wrong


def size_of(root: Path) -> int:
    return sum(path.stat().st_size for path, _, is_folder in modes(root) if not is_folder)


def every_kind_of_write(proc: ServerProcess) -> None:
    lr = onnx_models.logistic_regression(0)
    with Client(proc.address) as client:
        client.create_bandit("dd-bandit", [Arm("a", model="m-a"), Arm("b", model="m-b")])
        for _ in range(20):
            decision = client.select_arm("dd-bandit")
            client.record_reward(decision.decision_id, 0.5)
        client.create_feature_set(
            "dd-users", [Feature("score", "float"), Feature("age", "float")], entity_key="uid"
        )
        client.write_features("dd-users", {f"u{i}": {"score": i, "age": 30} for i in range(50)})
        client.create_model("dd-model")
        client.upload_onnx("dd-model", lr.onnx, alias="champion")
        client.upload_onnx("dd-model", onnx_models.logistic_regression(1).onnx, alias="challenger")
        client.set_traffic_policy("dd-model", "split", 10)
        client.promote("dd-model")
        client.predict("dd-model", lr.X[:2])


def test_every_file_the_server_writes_is_private_whatever_the_umask(
    server_factory: Factory, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    old = os.umask(0)  # the server inherits it: the modes must not come from the umask
    try:
        proc = server_factory("--demo", data_dir=data)
    finally:
        os.umask(old)
    every_kind_of_write(proc)
    kinds = {p.name.rsplit("-", 1)[-1] for p, _, _ in modes(data)}
    assert {"LOCK", "bandits.db-wal", "features.db-shm"} <= {p.name for p, _, _ in modes(data)}
    assert any(name.endswith(".journal") for name in kinds)
    assert any(name.endswith(".onnx") for name in kinds)
    assert wrong_modes(data) == []  # while running: -wal and -shm files included
    proc.terminate()
    assert wrong_modes(data) == []


def test_a_fresh_demo_data_dir_takes_a_few_megabytes(server_factory: Factory) -> None:
    proc = server_factory("--demo")
    every_kind_of_write(proc)
    size = size_of(proc.data_dir)
    # Two journals begin at 1 MiB each (they were 64 MiB each, preallocated).
    assert size < 8 << 20, f"{size / 2**20:.1f} MiB"
    journals = [p for p, _, _ in modes(proc.data_dir) if p.suffix == ".journal"]
    assert len(journals) >= 2 and all(p.stat().st_size == 1 << 20 for p in journals)

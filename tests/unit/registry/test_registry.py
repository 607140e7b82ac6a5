"""The registry as a library: storage, validation, numbering, aliases, deletion, integrity."""

from __future__ import annotations

import hashlib
import io
import itertools
import logging
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from llmopt import errors
from llmopt.registry import (
    AliasEvent,
    ArtifactCorrupted,
    ModelTask,
    Registry,
    TensorSpec,
    VersionMetadata,
)
from tests.unit.registry.onnx_models import failing_checker_model, linear_model


@pytest.fixture
def reg(tmp_path: Path) -> Iterator[Registry]:
    r = Registry(tmp_path / "registry")
    yield r
    r.close()


def stored_files(root: Path) -> list[Path]:
    return sorted(p for p in (root / "artifacts").rglob("*") if p.is_file())


def test_create_get_list_models(reg: Registry) -> None:
    made = reg.create_model("quality", "predicts quality", ModelTask.REGRESSION, {"team": "ml"})
    reg.create_model("cost")
    assert reg.get_model("quality") == made
    assert [m.name for m in reg.list_models()] == ["cost", "quality"]
    assert [m.name for m in reg.list_models({"team": "ml"})] == ["quality"]
    with pytest.raises(errors.AlreadyExists, match="'quality'"):
        reg.create_model("quality")
    with pytest.raises(errors.NotFound, match="'nope'"):
        reg.get_model("nope")
    with pytest.raises(errors.InvalidArgument, match="name: '-bad'"):
        reg.create_model("-bad")


def test_upload_round_trip_and_signature(reg: Registry) -> None:
    reg.create_model("m")
    data = linear_model(n_in=4, n_out=2)
    meta = VersionMetadata(
        semver="1.0.0", metrics={"rmse": 0.5}, tags={"data": "d1"}, description="first"
    )
    v = reg.upload_version("m", data, meta)
    assert v.version == 1
    assert v.sha256 == hashlib.sha256(data).hexdigest()
    assert v.size_bytes == len(data)
    assert v.inputs == (TensorSpec("X", "float32", (-1, 4), ("batch", "")),)
    assert v.outputs == (TensorSpec("Y", "float32", (-1, 2), ("batch", "")),)
    assert reg.read_artifact("m", 1) == data
    assert reg.get_version("m", 1) == v
    assert reg.get_version("m", alias="latest") == v
    got = reg.get_version("m", 1)
    assert (got.semver, got.metrics, got.tags, got.description) == (
        "1.0.0",
        {"rmse": 0.5},
        {"data": "d1"},
        "first",
    )


def test_upload_from_chunks_and_file_object(reg: Registry) -> None:
    reg.create_model("m")
    data = linear_model(seed=3)
    v1 = reg.upload_version("m", (data[i : i + 7] for i in range(0, len(data), 7)))
    v2 = reg.upload_version("m", io.BytesIO(data))
    assert v1.sha256 == v2.sha256 == hashlib.sha256(data).hexdigest()
    assert reg.read_artifact("m", 2) == data


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"definitely not onnx", "cannot parse"),
        (linear_model()[:-20], "artifact"),
        (failing_checker_model(), "onnx.checker"),
        (b"", "no bytes"),
    ],
    ids=["junk", "truncated", "checker", "empty"],
)
def test_invalid_upload_stores_nothing(reg: Registry, data: bytes, reason: str) -> None:
    reg.create_model("m")
    with pytest.raises(errors.InvalidArgument, match=reason):
        reg.upload_version("m", data)
    assert reg.list_versions("m").items == []
    assert stored_files(reg.root) == []
    assert reg.get_model("m").latest_version == 0
    assert reg.upload_version("m", linear_model()).version == 1  # no number was used up


def test_checksum_and_size_mismatch_store_nothing(reg: Registry) -> None:
    reg.create_model("m")
    data = linear_model()
    with pytest.raises(errors.InvalidArgument, match="sha256"):
        reg.upload_version("m", data, VersionMetadata(sha256="0" * 64))
    with pytest.raises(errors.InvalidArgument, match="size_bytes"):
        reg.upload_version("m", data, VersionMetadata(size_bytes=len(data) + 1))
    assert stored_files(reg.root) == []
    ok = reg.upload_version(
        "m", data, VersionMetadata(sha256=hashlib.sha256(data).hexdigest(), size_bytes=len(data))
    )
    assert ok.version == 1


def test_upload_checks_model_and_parent(reg: Registry) -> None:
    with pytest.raises(errors.NotFound, match="'ghost'"):
        reg.upload_version("ghost", linear_model())
    reg.create_model("m")
    with pytest.raises(errors.InvalidArgument, match="parent_version"):
        reg.upload_version("m", linear_model(), VersionMetadata(parent_version=1))
    reg.upload_version("m", linear_model())
    v2 = reg.upload_version("m", linear_model(seed=1), VersionMetadata(parent_version=1))
    assert v2.parent_version == 1


def test_artifact_too_large_is_refused(tmp_path: Path) -> None:
    small = Registry(tmp_path / "r", max_artifact_bytes=100)
    try:
        small.create_model("m")
        with pytest.raises(errors.InvalidArgument, match="at most 100 bytes"):
            small.upload_version("m", linear_model(n_in=64))
        assert stored_files(small.root) == []
    finally:
        small.close()


def test_concurrent_uploads_number_without_gaps(reg: Registry) -> None:
    reg.create_model("m")
    results: list[int] = []
    lock = threading.Lock()

    def upload(i: int) -> None:
        v = reg.upload_version("m", linear_model(seed=i))
        with lock:
            results.append(v.version)

    threads = [threading.Thread(target=upload, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == list(range(1, 9))
    assert [v.version for v in reg.list_versions("m").items] == list(range(8, 0, -1))


def test_concurrent_alias_moves_end_on_last_history_entry(reg: Registry) -> None:
    reg.create_model("m")
    for i in range(4):
        reg.upload_version("m", linear_model(seed=i))
    seen: list[AliasEvent] = []
    reg.subscribe(seen.append)

    def mover(i: int) -> None:
        for j in range(10):
            reg.set_alias("m", "champion", 1 + (i + j) % 4, actor=f"t{i}")

    threads = [threading.Thread(target=mover, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    history = reg.alias_history("m", "champion", page_size=1000).items
    assert reg.aliases("m")["champion"] == history[0].to_version
    # The history is a chain: each change starts where the one before it ended.
    for newer, older in itertools.pairwise(history):
        assert newer.from_version == older.to_version
        assert newer.id > older.id
    # Subscribers heard every recorded change, in commit order.
    assert [(e.from_version, e.to_version) for e in seen] == [
        (c.from_version, c.to_version) for c in reversed(history)
    ]


def test_promote_and_rollback_sequence(reg: Registry) -> None:
    reg.create_model("m")
    for i in range(3):
        reg.upload_version("m", linear_model(seed=i))
    with pytest.raises(errors.FailedPrecondition, match="no 'challenger'"):
        reg.promote("m")
    with pytest.raises(errors.FailedPrecondition, match="roll back"):
        reg.rollback("m")
    reg.set_alias("m", "champion", 1)
    for challenger in (2, 3):
        reg.set_alias("m", "challenger", challenger)
        champion, removed = reg.promote("m", reason="better", actor="alice")
        assert (champion.from_version, champion.to_version) == (challenger - 1, challenger)
        assert (removed.alias, removed.to_version) == ("challenger", None)
        assert reg.aliases("m") == {"champion": challenger}
    back = reg.rollback("m", actor="bob")
    assert (back.from_version, back.to_version, back.kind, back.actor) == (3, 2, "rollback", "bob")
    assert reg.rollback("m").to_version == 1  # rollbacks stack, like undo
    with pytest.raises(errors.FailedPrecondition, match="no earlier version"):
        reg.rollback("m")
    reg.set_alias("m", "challenger", 1)
    with pytest.raises(errors.FailedPrecondition, match="both point at version 1"):
        reg.promote("m")


def test_rollback_to_deleted_version_is_refused(reg: Registry) -> None:
    reg.create_model("m")
    reg.upload_version("m", linear_model(seed=0), VersionMetadata(alias="champion"))
    reg.upload_version("m", linear_model(seed=1))
    reg.set_alias("m", "champion", 2)
    reg.delete_version("m", 1)
    with pytest.raises(errors.FailedPrecondition, match="version 1, which was deleted"):
        reg.rollback("m")
    assert reg.aliases("m") == {"champion": 2}


def test_set_alias_validation_and_idempotence(reg: Registry) -> None:
    reg.create_model("m")
    reg.upload_version("m", linear_model())
    with pytest.raises(errors.NotFound, match="no version 5"):
        reg.set_alias("m", "champion", 5)
    with pytest.raises(errors.InvalidArgument, match="alias: 'Champion'"):
        reg.set_alias("m", "Champion", 1)
    with pytest.raises(errors.InvalidArgument, match="reserved"):
        reg.set_alias("m", "latest", 1)
    first = reg.set_alias("m", "champion", 1, reason="initial")
    again = reg.set_alias("m", "champion", 1, reason="again")
    assert again == first
    assert len(reg.alias_history("m").items) == 1
    with pytest.raises(errors.NotFound, match="no alias 'canary'"):
        reg.delete_alias("m", "canary")
    removed = reg.delete_alias("m", "champion", reason="retired")
    assert (removed.from_version, removed.to_version, removed.kind) == (1, None, "delete")
    with pytest.raises(errors.NotFound, match="no alias 'champion'"):
        reg.get_version("m", alias="champion")


def test_delete_version_rules_and_artifact_lifetime(reg: Registry) -> None:
    reg.create_model("m")
    shared = linear_model(seed=7)
    reg.upload_version("m", shared, VersionMetadata(alias="champion"))
    reg.upload_version("m", shared)
    reg.upload_version("m", linear_model(seed=8))
    with pytest.raises(errors.FailedPrecondition, match="'champion'"):
        reg.delete_version("m", 1)
    reg.delete_version("m", 2)
    assert reg.read_artifact("m", 1) == shared  # still used by version 1
    reg.delete_version("m", 3)
    assert len(stored_files(reg.root)) == 1
    with pytest.raises(errors.NotFound):
        reg.get_version("m", 3)
    assert reg.upload_version("m", linear_model(seed=9)).version == 4  # 2, 3 never reused


def test_delete_model_needs_force_and_tells_subscribers(reg: Registry) -> None:
    reg.create_model("m")
    reg.create_model("empty")
    assert reg.delete_model("empty") == 0
    reg.upload_version("m", linear_model(), VersionMetadata(alias="champion"))
    with pytest.raises(errors.FailedPrecondition, match="force"):
        reg.delete_model("m")
    events: list[AliasEvent] = []
    reg.subscribe(events.append)
    assert reg.delete_model("m", force=True) == 1
    assert [(e.alias, e.from_version, e.to_version) for e in events] == [("champion", 1, None)]
    assert stored_files(reg.root) == []
    with pytest.raises(errors.NotFound):
        reg.get_model("m")


def test_corrupted_artifact_is_never_served(reg: Registry) -> None:
    reg.create_model("m")
    v = reg.upload_version("m", linear_model())
    path = reg.artifact_path("m", 1)
    path.chmod(0o644)
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ArtifactCorrupted, match=v.sha256):
        reg.read_artifact("m", 1)
    with pytest.raises(ArtifactCorrupted):
        reg.open_artifact("m", 1)
    assert len(reg.verify()) == 1
    path.unlink()
    with pytest.raises(ArtifactCorrupted, match="missing"):
        reg.read_artifact("m", 1)


def test_reopen_keeps_state_and_removes_orphans(tmp_path: Path) -> None:
    root = tmp_path / "registry"
    r = Registry(root)
    r.create_model("m")
    r.upload_version("m", linear_model(), VersionMetadata(alias="champion"))
    r.close()
    # What a crash between placing a file and committing its row would leave behind.
    orphan = root / "artifacts" / "sha256" / "ab" / ("ab" * 32 + ".onnx")
    orphan.parent.mkdir(parents=True, exist_ok=True)
    orphan.write_bytes(b"half an upload")
    (root / "artifacts" / "tmp" / "x.part").write_bytes(b"partial")
    r = Registry(root)
    try:
        assert not orphan.exists()
        assert list((root / "artifacts" / "tmp").iterdir()) == []
        assert r.aliases("m") == {"champion": 1}
        assert r.verify() == []
    finally:
        r.close()


def test_list_versions_pages_and_tag_filter(reg: Registry) -> None:
    reg.create_model("m")
    data = linear_model()
    for i in range(25):
        reg.upload_version("m", data, VersionMetadata(tags={"parity": str(i % 2)}))
    seen: list[int] = []
    token = ""
    while True:
        page = reg.list_versions("m", page_size=10, page_token=token)
        seen.extend(v.version for v in page.items)
        token = page.next_page_token
        if not token:
            break
    assert seen == list(range(25, 0, -1))
    odd = reg.list_versions("m", page_size=100, tag_filter={"parity": "0"}).items
    assert [v.version for v in odd] == list(range(25, 0, -2))
    with pytest.raises(errors.InvalidArgument, match=r"page\.page_token"):
        reg.list_versions("m", page_token="garbage!")
    with pytest.raises(errors.InvalidArgument, match=r"page\.page_size"):
        reg.list_versions("m", page_size=5000)
    models_token = reg.list_models_page(page_size=1).next_page_token
    assert models_token == ""  # one model: no next page


def test_history_pages_and_filters(reg: Registry) -> None:
    reg.create_model("m")
    reg.upload_version("m", linear_model(seed=0))
    reg.upload_version("m", linear_model(seed=1))
    for i in range(6):
        reg.set_alias("m", "champion", 1 + i % 2)
    reg.set_alias("m", "challenger", 1)
    assert len(reg.alias_history("m").items) == 7
    first = reg.alias_history("m", "champion", page_size=4)
    rest = reg.alias_history("m", "champion", page_size=4, page_token=first.next_page_token)
    ids = [c.id for c in first.items + rest.items]
    assert ids == sorted(ids, reverse=True) and len(ids) == 6
    assert rest.next_page_token == ""


def test_subscribers_see_committed_state_and_failures_stay_contained(
    reg: Registry, caplog: pytest.LogCaptureFixture
) -> None:
    reg.create_model("m")
    reg.upload_version("m", linear_model())
    observed: list[dict[str, int]] = []

    def reads_back(event: AliasEvent) -> None:
        observed.append(reg.aliases(event.model))

    def explodes(event: AliasEvent) -> None:
        raise RuntimeError("subscriber bug")

    unsubscribe = reg.subscribe(reads_back)
    reg.subscribe(explodes)
    with caplog.at_level(logging.ERROR, logger="llmopt.registry"):
        change = reg.set_alias("m", "champion", 1, actor="ci")
    assert observed == [{"champion": 1}]
    assert change.to_version == 1
    assert "subscriber bug" in caplog.text
    unsubscribe()
    reg.delete_alias("m", "champion")
    assert observed == [{"champion": 1}]


def test_get_version_argument_checks(reg: Registry) -> None:
    reg.create_model("m")
    with pytest.raises(errors.InvalidArgument, match="exactly one"):
        reg.get_version("m")
    with pytest.raises(errors.InvalidArgument, match="exactly one"):
        reg.get_version("m", 1, "champion")
    with pytest.raises(errors.InvalidArgument, match="version: 0"):
        reg.get_version("m", 0)
    with pytest.raises(errors.NotFound, match="no versions"):
        reg.get_version("m", alias="latest")


def test_registry_files_are_private_and_artifacts_read_only(tmp_path: Path) -> None:
    import os
    import stat

    old = os.umask(0)  # modes must not be left to the umask
    try:
        r = Registry(tmp_path / "registry")
        r.create_model("m")
        r.upload_version("m", linear_model(), VersionMetadata(alias="champion"))
        r.close()
    finally:
        os.umask(old)
    root = tmp_path / "registry"
    for path in [root, *root.rglob("*")]:
        mode = stat.S_IMODE(path.stat().st_mode)
        if path.is_dir():
            assert mode == 0o700, path
        elif path.suffix == ".onnx":
            assert mode == 0o400, path  # immutable, and nobody else's to read
        else:
            assert mode == 0o600, path
    assert (root / "registry.db").is_file() and len(stored_files(root)) == 1

"""The model repository: Triton's layout read into a real Registry, in temporary directories."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from llmopt import errors
from llmopt.composition import compose
from llmopt.config import Settings, parse_settings
from llmopt.inference import InferenceEngine
from llmopt.model_repository import ModelRepository
from llmopt.registry import CHAMPION, Registry
from llmopt.storage import DataDir
from tests.support.onnx_models import linear_regression, logistic_regression

LOGREG = logistic_regression(seed=1).onnx
LOGREG2 = logistic_regression(seed=2).onnx
LINREG = linear_regression(seed=3).onnx


@pytest.fixture
def reg(tmp_path: Path) -> Iterator[Registry]:
    r = Registry(tmp_path / "registry")
    yield r
    r.close()


@pytest.fixture
def root(tmp_path: Path) -> Path:
    path = tmp_path / "models"
    path.mkdir()
    return path


def put(root: Path, model: str, version: int | str, data: bytes, name: str = "model.onnx") -> Path:
    folder = root / model / str(version)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_bytes(data)
    return folder / name


def config(root: Path, model: str, text: str) -> None:
    (root / model).mkdir(parents=True, exist_ok=True)
    (root / model / "config.pbtxt").write_text(text)


def champion(reg: Registry, model: str) -> int | None:
    return reg.aliases(model).get(CHAMPION)


def versions(reg: Registry, model: str) -> list[int]:
    return sorted(v.version for v in reg.list_versions(model).items)


def test_layout_lands_each_model_with_the_highest_version_as_champion(
    reg: Registry, root: Path
) -> None:
    put(root, "simple", 1, LOGREG)
    put(root, "simple", 3, LOGREG2)
    put(root, "linear", 2, LINREG)
    (root / ".hidden").mkdir()
    (root / "README.txt").write_text("not a model")
    repo = ModelRepository(reg, root)
    assert repo.models() == ["linear", "simple"]
    repo.warm_up()
    # Triton's default version policy serves the latest version only; its number is kept
    assert versions(reg, "simple") == [3]
    assert champion(reg, "simple") == 3
    assert reg.get_version("simple", 3).sha256 == hashlib.sha256(LOGREG2).hexdigest()
    assert reg.get_version("simple", 3).tags["repository.version"] == "3"
    assert reg.read_artifact("simple", 3) == LOGREG2
    assert versions(reg, "linear") == [2] and champion(reg, "linear") == 2
    assert repo.problems() == {}
    assert repo.batching("simple") is None
    repo.close()


def test_landing_again_changes_nothing(reg: Registry, root: Path, tmp_path: Path) -> None:
    put(root, "simple", 1, LOGREG)
    put(root, "simple", 2, LOGREG2)
    config(root, "simple", "version_policy: { all: {} }")
    ModelRepository(reg, root).warm_up()
    history = reg.alias_history("simple").items
    before = [(v.version, v.sha256, v.created_at) for v in reg.list_versions("simple").items]
    reg.close()
    again = Registry(tmp_path / "registry")  # a restart over the same data dir and directory
    try:
        ModelRepository(again, root).warm_up()
        after = [(v.version, v.sha256, v.created_at) for v in again.list_versions("simple").items]
        assert after == before and [v for v, _, _ in after] == [2, 1]
        assert again.alias_history("simple").items == history
        assert champion(again, "simple") == 2
    finally:
        again.close()


def test_bytes_the_registry_holds_are_not_uploaded_again(reg: Registry, root: Path) -> None:
    reg.create_model("simple")
    reg.upload_version("simple", LOGREG)  # version 1, uploaded through the API
    reg.upload_version("simple", LINREG)  # version 2
    put(root, "simple", 1, LOGREG)
    ModelRepository(reg, root).warm_up()
    assert versions(reg, "simple") == [1, 2]
    assert champion(reg, "simple") == 1
    # a new directory whose number was used already gets the next number
    put(root, "simple", 2, LOGREG2)
    ModelRepository(reg, root).warm_up()
    assert versions(reg, "simple") == [1, 2, 3]
    assert champion(reg, "simple") == 3
    assert reg.get_version("simple", 3).tags["repository.version"] == "2"


def test_config_pbtxt_is_honoured(reg: Registry, root: Path) -> None:
    for v, data in ((1, LOGREG), (2, LOGREG2), (3, LINREG)):
        put(root, "simple", v, data, name="classifier.onnx")
    config(
        root,
        "simple",
        """
        name: "simple"
        platform: "onnxruntime_onnx"
        default_model_filename: "classifier.onnx"
        max_batch_size: 8
        version_policy: { specific: { versions: [1, 2] } }
        input [ { name: "X", data_type: TYPE_FP32, dims: [16] } ]
        output [ { name: "label", data_type: TYPE_INT64, dims: [1] } ]
        dynamic_batching { preferred_batch_size: [4, 8] max_queue_delay_microseconds: 500 }
        instance_group [ { count: 1, kind: KIND_CPU } ]
        """,
    )
    repo = ModelRepository(reg, root)
    repo.warm_up()
    assert repo.problems() == {}
    assert versions(reg, "simple") == [1, 2]  # 3 is outside the policy
    assert champion(reg, "simple") == 2  # the highest allowed
    assert repo.batching("simple") == (8, 500, (4, 8))
    parsed = repo.config("simple")
    assert parsed is not None and parsed.max_batch_size == 8


def test_latest_n_policy(reg: Registry, root: Path) -> None:
    for v, data in ((1, LOGREG), (2, LOGREG2), (3, LINREG)):
        put(root, "m", v, data)
    config(root, "m", "version_policy: { latest: { num_versions: 2 } }")
    ModelRepository(reg, root).warm_up()
    assert versions(reg, "m") == [2, 3] and champion(reg, "m") == 3


def test_max_batch_size_without_dynamic_batching_is_not_batched(reg: Registry, root: Path) -> None:
    put(root, "m", 1, LOGREG)
    config(root, "m", "max_batch_size: 16")
    repo = ModelRepository(reg, root)
    repo.warm_up()
    assert repo.batching("m") is None and champion(reg, "m") == 1


def test_bad_files_are_reported_per_model_and_the_rest_lands(
    reg: Registry, root: Path, caplog: pytest.LogCaptureFixture
) -> None:
    put(root, "good", 1, LOGREG)
    put(root, "junk", 1, b"this is not onnx")
    put(root, "mixed", 1, LOGREG)
    put(root, "mixed", "v2", LOGREG2)  # not a number
    put(root, "mixed", 0, LOGREG2)  # versions start at 1
    put(root, "unparsable", 1, LOGREG)
    config(root, "unparsable", "max_batch_size: [not a number")
    put(root, "renamed", 1, LOGREG)
    config(root, "renamed", 'name: "other"')
    put(root, "wrong-input", 1, LOGREG)
    config(root, "wrong-input", 'input [ { name: "INPUT0" } ]')
    put(root, "tensorflow", 1, LOGREG)
    config(root, "tensorflow", 'platform: "tensorflow_savedmodel"')
    put(root, "no-file", 1, LOGREG, name="other.onnx")
    (root / "empty").mkdir()
    put(root, "no-policy-match", 1, LOGREG)
    config(root, "no-policy-match", "version_policy: { specific: { versions: [7] } }")
    repo = ModelRepository(reg, root)
    repo.warm_up()
    problems = repo.problems()
    assert set(problems) == {
        "junk",
        "mixed",
        "unparsable",
        "renamed",
        "wrong-input",
        "tensorflow",
        "no-file",
        "empty",
        "no-policy-match",
    }
    assert "not an ONNX model" in problems["junk"]
    assert "v2: not a version" in problems["mixed"] and "0: not a version" in problems["mixed"]
    assert "config.pbtxt: does not parse" in problems["unparsable"]
    assert "'other' is not the model directory's name 'renamed'" in problems["renamed"]
    assert "input 'INPUT0' not in the ONNX graph, whose inputs are 'X'" in problems["wrong-input"]
    assert "platform 'tensorflow_savedmodel'" in problems["tensorflow"]
    assert "no model.onnx in" in problems["no-file"]
    assert "no version directory" in problems["empty"]
    assert "allows none of the versions present (1)" in problems["no-policy-match"]
    # what could land did; the rest left nothing in the registry
    assert champion(reg, "good") == 1 and champion(reg, "mixed") == 1
    for name in ("junk", "unparsable", "renamed", "wrong-input", "tensorflow", "no-file", "empty"):
        with pytest.raises(errors.NotFound):
            reg.get_model(name)
    assert "not an ONNX model" in caplog.text
    # fixing the files clears the problem at the next reading
    (root / "wrong-input" / "config.pbtxt").write_text('input [ { name: "X" } ]')
    assert repo.load("wrong-input") is True
    assert "wrong-input" not in repo.problems() and champion(reg, "wrong-input") == 1


def test_explicit_mode_lands_only_what_load_names(reg: Registry, root: Path) -> None:
    put(root, "a", 1, LOGREG)
    put(root, "b", 1, LINREG)
    put(root, "broken", 1, b"nope")
    repo = ModelRepository(reg, root, mode="explicit")
    repo.warm_up()
    assert reg.list_models() == []
    assert repo.load("a") is True
    assert [m.name for m in reg.list_models()] == ["a"] and champion(reg, "a") == 1
    assert repo.load("a") is True and versions(reg, "a") == [1]  # again: nothing new
    assert repo.load("absent") is False
    assert repo.load("../a") is False
    with pytest.raises(errors.FailedPrecondition, match=r"failed to load 'broken'.*not an ONNX"):
        repo.load("broken")
    repo.close()


def test_a_champion_an_operator_chose_among_allowed_versions_stays(
    reg: Registry, root: Path
) -> None:
    put(root, "m", 1, LOGREG)
    put(root, "m", 2, LOGREG2)
    config(root, "m", "version_policy: { all: {} }")
    ModelRepository(reg, root).warm_up()
    reg.set_alias("m", CHAMPION, 1)
    ModelRepository(reg, root).warm_up()
    assert champion(reg, "m") == 1
    # a policy that no longer allows the operator's choice moves the champion
    (root / "m" / "config.pbtxt").write_text("version_policy: { specific: { versions: [2] } }")
    ModelRepository(reg, root).warm_up()
    assert champion(reg, "m") == 2


def test_poll_lands_a_new_version(reg: Registry, root: Path) -> None:
    put(root, "m", 1, LOGREG)
    prepared: list[str] = []
    repo = ModelRepository(reg, root, mode="poll", poll_seconds=0.05, prepare=prepared.append)
    repo.warm_up()
    try:
        assert champion(reg, "m") == 1 and prepared == ["m"]
        put(root, "m", 2, LOGREG2)
        put(root, "n", 1, LINREG)
        deadline = time.monotonic() + 30
        while (champion(reg, "m") != 2 or "n" not in {m.name for m in reg.list_models()}) and (
            time.monotonic() < deadline
        ):
            time.sleep(0.05)
        assert champion(reg, "m") == 2 and versions(reg, "m") == [1, 2]
        assert champion(reg, "n") == 1
        while "n" not in prepared and time.monotonic() < deadline:
            time.sleep(0.05)
        assert "n" in prepared  # the new model is loaded at once, not at its first request
    finally:
        repo.close()


def test_scan_reads_only_changed_models(reg: Registry, root: Path) -> None:
    put(root, "a", 1, LOGREG)
    put(root, "b", 1, LINREG)
    repo = ModelRepository(reg, root, mode="poll", poll_seconds=3600)
    assert repo.scan() == ["a", "b"]
    assert repo.scan() == []
    put(root, "b", 2, LOGREG2)
    assert repo.scan() == ["b"] and champion(reg, "b") == 2
    # a half-copied file is a problem until it is whole
    half = put(root, "a", 2, LOGREG2[: len(LOGREG2) // 2])
    assert repo.scan() == ["a"] and "a" in repo.problems() and champion(reg, "a") == 1
    half.write_bytes(LOGREG2)
    assert repo.scan() == ["a"] and "a" not in repo.problems() and champion(reg, "a") == 2


def test_settings_are_checked(reg: Registry, root: Path) -> None:
    with pytest.raises(errors.InvalidArgument, match="model_control_mode"):
        ModelRepository(reg, root, mode="sometimes")
    with pytest.raises(errors.InvalidArgument, match="repository_poll_seconds"):
        ModelRepository(reg, root, poll_seconds=0)


def test_a_missing_directory_lands_nothing_and_starts(
    reg: Registry, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    repo = ModelRepository(reg, tmp_path / "absent")
    repo.warm_up()
    assert reg.list_models() == [] and "not a directory" in caplog.text
    repo.close()


# -- settings and composition -----------------------------------------------------------------


def refused(capsys: pytest.CaptureFixture[str], argv: list[str], environ: dict[str, str]) -> str:
    with pytest.raises(SystemExit) as exit_:
        parse_settings(argv, environ=environ)
    assert exit_.value.code == 2
    return capsys.readouterr().err.strip()


def test_settings_flags_and_environment(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    s = parse_settings([], environ={})
    assert (s.model_repository, s.model_control_mode, s.repository_poll_seconds) == (
        None,
        "none",
        15.0,
    )
    env = {"LLMOPT_MODEL_REPOSITORY": str(root), "LLMOPT_MODEL_CONTROL_MODE": "POLL"}
    s = parse_settings(["--repository-poll-seconds", "2.5"], environ=env)
    assert (s.model_repository, s.model_control_mode, s.repository_poll_seconds) == (
        root,
        "poll",
        2.5,
    )
    missing = str(root / "absent")
    assert f"{missing}: not a directory" in refused(capsys, ["--model-repository", missing], {})
    assert "expected one of none, poll, explicit" in refused(
        capsys, ["--model-repository", str(root), "--model-control-mode", "always"], {}
    )
    assert "--model-control-mode explicit needs --model-repository" in refused(
        capsys, ["--model-control-mode", "explicit"], {}
    )


def test_composition_builds_the_repository_after_the_engine(root: Path, tmp_path: Path) -> None:
    put(root, "m", 1, LOGREG)
    data_dir = DataDir(tmp_path / "data")
    ctx = compose(Settings(data_dir=tmp_path / "data"), data_dir)
    assert ctx.services.repository is None
    ctx.close()
    settings = Settings(data_dir=tmp_path / "data", model_repository=root)
    ctx = compose(settings, data_dir)
    try:
        repo = ctx.services.repository
        assert isinstance(repo, ModelRepository) and repo.root == root
        kinds = [type(c) for c in ctx.components]
        assert kinds.index(ModelRepository) > kinds.index(InferenceEngine)
        for component in ctx.components:
            component.warm_up()
        # landed, and loaded and warmed before the server would report SERVING
        assert ctx.services.registry.aliases("m") == {CHAMPION: 1}
        assert ("m", 1) in ctx.services.inference.loaded_versions()
    finally:
        ctx.close()
        data_dir.close()


def test_a_default_model_filename_must_be_a_file_name_not_a_path(reg: Registry, root: Path) -> None:
    put(root, "escape", 1, LOGREG)
    (root / "outside.onnx").write_bytes(LOGREG)
    config(root, "escape", 'default_model_filename: "../../outside.onnx"')
    repo = ModelRepository(reg, root)
    repo.warm_up()
    assert "default_model_filename" in repo.problems()["escape"]
    assert "escape" not in {m.name for m in reg.list_models()}
